package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/internal/kubetest"
)

// TestServeKubernetes: serve --kubernetes --kubeconfig against a real API
// server records the workload of a Check's source pod, as the cluster
// named it when the Check was made, and why the destination has none.
func TestServeKubernetes(t *testing.T) {
	cs := kubetest.Clientset(t) // skips without a test API server
	kubeconfig := os.Getenv("MESHPROOF_TEST_KUBECONFIG")
	ns := kubetest.Namespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sleep"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The address authztest's requests come from; no other test's pod has it.
	const ip = "10.0.0.1"
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleep", Labels: map[string]string{"app": "sleep"}},
		Spec:       corev1.PodSpec{ServiceAccountName: "sleep", Containers: []corev1.Container{{Name: "sleep", Image: "curlimages/curl:8.10.1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Nothing collects a deleted namespace's pods here: this one's IP
		// must not outlive the test.
		_ = cs.CoreV1().Pods(ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	store := "sqlite:" + filepath.Join(t.TempDir(), "evidence.db")
	o, err := parseServe(t, "--store", store, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--replica", "r1", "--kubernetes", "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	addr, served := startServe(t, sctx, o)
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, authztest.NewRequest())
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue()
	if !informersRunning() {
		t.Fatal("no informer goroutine while serve runs: the check below would prove nothing")
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	// serve's Close waited for its informers.
	if informersRunning() {
		t.Error("informer goroutines left once serve --kubernetes returned")
	}

	s, err := evidence.Open(context.Background(), store, evidence.Options{Existing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	want := evidence.Workload{Namespace: ns, Kind: "Pod", Name: "sleep", Pod: "sleep", ServiceAccount: "sleep", App: "sleep"}
	if rec.Source.Workload == nil || *rec.Source.Workload != want {
		t.Errorf("stored source workload %+v, want %+v", rec.Source.Workload, want)
	}
	if !slices.ContainsFunc(rec.Reasons, func(r string) bool { return strings.HasPrefix(r, "destination workload: ") }) {
		t.Errorf("reasons %q: none says why the destination (10.0.0.2, no pod) has no workload", rec.Reasons)
	}
}

// TestServeKubernetesUnreachable: an API server that cannot be reached
// stops serve at start with the address and the flag to look at, within
// --kubernetes-sync-timeout.
func TestServeKubernetesUnreachable(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0") // a port nothing answers on once closed
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+dead+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseServe(t, "--store", "sqlite:"+filepath.Join(dir, "e.db"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--kubernetes", "--kubeconfig", kc, "--kubernetes-sync-timeout", "1s")
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), o, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), "--kubernetes-sync-timeout") {
		t.Fatalf("serve with an unreachable API server: %v, want an error naming %s and --kubernetes-sync-timeout", err, dead)
	}
}

// informersRunning reports whether a goroutine runs client-go's informer
// machinery (package tools/cache).
func informersRunning() bool {
	buf := make([]byte, 8<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("k8s.io/client-go/tools/cache."))
}

// TestWatchWorkloadsStop: the stop serve's Close calls returns only once
// the informers have, from an API server and from the demo's static
// cluster alike.
func TestWatchWorkloadsStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    func(t *testing.T) kubeOptions
	}{
		{"api server", func(t *testing.T) kubeOptions {
			kubetest.Config(t) // skips without a test API server
			return kubeOptions{Enabled: true, Kubeconfig: os.Getenv("MESHPROOF_TEST_KUBECONFIG"), SyncTimeout: time.Minute}
		}},
		{"demo", func(t *testing.T) kubeOptions {
			src := demoCluster().Sources()
			return kubeOptions{Enabled: true, SyncTimeout: time.Minute, static: &src}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.k(t)
			if informersRunning() {
				t.Fatal("informer goroutines before the watch")
			}
			_, stop, err := watchWorkloads(context.Background(), k, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if !informersRunning() {
				t.Fatal("no informer goroutine while watching: the check below would prove nothing")
			}
			stop()
			if informersRunning() {
				t.Error("informer goroutines left once stop returned")
			}
		})
	}
}
