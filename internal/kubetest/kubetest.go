// Package kubetest connects tests to a real kube-apiserver and etcd, the
// throwaway control plane test/kube starts, never to a fake: what the
// informers of meshproof see must be what an API server serves (defaults,
// validation, the status subresource, resource versions).
//
// No controller manager runs there, so nothing makes the "default"
// ServiceAccount, runs a ReplicaSet's Pods or empties a deleted namespace:
// a test creates its own ServiceAccounts, owners and Pod status.
package kubetest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// EnvKubeconfig names the kubeconfig of the API server the tests use
	// (test/kube start prints its path).
	EnvKubeconfig = "MESHPROOF_TEST_KUBECONFIG"
	// EnvRequire=1 makes a test without an API server fail instead of
	// skip, so that a run meant to include them cannot pass without them.
	EnvRequire = "MESHPROOF_REQUIRE_KUBE"
)

// howToRun is what a test without an API server says.
const howToRun = "no API server: set " + EnvKubeconfig + " to the kubeconfig test/kube prints, e.g. " +
	"export " + EnvKubeconfig + "=$(test/kube start /tmp/mp-kube) (from the repository root; " +
	"test/kube stop /tmp/mp-kube afterwards; see DEVELOPERS.md)"

// Config returns the client configuration of the API server named by
// MESHPROOF_TEST_KUBECONFIG. Without it the test skips, saying how to start
// one, or fails when MESHPROOF_REQUIRE_KUBE=1.
func Config(t testing.TB) *rest.Config {
	t.Helper()
	path := os.Getenv(EnvKubeconfig)
	if path == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s=1 but %s", EnvRequire, howToRun)
		}
		t.Skip(howToRun)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("%s=%s: %v", EnvKubeconfig, path, err)
	}
	// client-go's default of 5 requests a second would make a test that
	// creates a few dozen objects wait on the client, not on the server.
	cfg.QPS = 200
	cfg.Burst = 400
	cfg.UserAgent = "meshproof-test/" + t.Name()
	return cfg
}

// Clientset is Config's Kubernetes clientset.
func Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(Config(t))
	if err != nil {
		t.Fatalf("kubernetes clientset: %v", err)
	}
	return cs
}

// Namespace creates a namespace of its own for the test, named after it,
// and deletes it at cleanup. The namespace is only marked for deletion:
// without a controller manager its objects stay until test/kube stop, and
// no later test sees them, as each has a namespace of its own.
func Namespace(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: namePrefix(t.Name()),
			Labels:       map[string]string{"meshproof.io/test": "true"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create a namespace for %s: %v", t.Name(), err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// maxPrefix leaves room in a namespace name (a DNS label, at most 63
// characters) for the 5 random characters the API server appends to a
// generateName.
const maxPrefix = 63 - 5

// namePrefix turns a test's name into a namespace's generateName: lower
// case letters, digits and dashes, no dash first, ending in one dash.
func namePrefix(test string) string {
	var b strings.Builder
	dash := true // no leading dash, no two in a row
	for _, r := range strings.ToLower(test) {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.TrimRight(b.String(), "-")
	if len(s) > maxPrefix-1 {
		s = strings.TrimRight(s[:maxPrefix-1], "-")
	}
	if s == "" {
		s = "test"
	}
	return s + "-"
}
