package workload_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/internal/kubetest"
)

// TestRBAC applies the kustomize base's ClusterRole and ClusterRoleBinding
// (deploy/kubernetes/base, whose tests check these files are what the base
// renders) to a real API server, RBAC on, for a service account of the
// test's namespace, and acts as that account (impersonation): Watch syncs
// and names a pod; every verb on every resource serve --kubernetes watches
// is allowed, anything else asked is forbidden; an account without the
// binding cannot list, and its Watch never syncs. A verb or resource missing
// from the role fails here.
func TestRBAC(t *testing.T) {
	cs := kubetest.Clientset(t)
	ns := kubetest.Namespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var role rbacv1.ClusterRole
	var binding rbacv1.ClusterRoleBinding
	readManifest(t, "clusterrole.yaml", &role)
	readManifest(t, "clusterrolebinding.yaml", &binding)
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Kind != rbacv1.ServiceAccountKind {
		t.Fatalf("the binding %+v to %+v does not bind the role %s to one service account", binding.RoleRef, binding.Subjects, role.Name)
	}
	// Cluster-wide names of the test's own, bound to an account of its
	// namespace, so that no other test's objects meet these.
	sa := binding.Subjects[0].Name
	role.Name = "meshproof-" + ns
	binding.Name, binding.RoleRef.Name = role.Name, role.Name
	binding.Subjects[0].Namespace = ns
	for _, sa := range []string{sa, "unbound", "reviews"} { // reviews: runPod's pod
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{}) })
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
	runPod(ctx, t, cs, ns, "reviews", nil, "10.244.9.1")

	bound, boundCS := as(t, ns, sa)

	// What it may do. RBAC's cache follows the new binding within moments
	// of its creation: the first review waits for it.
	type access struct{ group, resource, verb string }
	var allowed []access
	for _, r := range []access{
		{"", "pods", ""}, {"apps", "replicasets", ""}, {"batch", "jobs", ""},
		{"security.istio.io", "peerauthentications", ""}, {"networking.istio.io", "destinationrules", ""},
	} {
		for _, verb := range []string{"get", "list", "watch"} {
			allowed = append(allowed, access{r.group, r.resource, verb})
		}
	}
	forbidden := []access{
		{"", "secrets", "get"}, {"", "secrets", "list"}, {"", "configmaps", "list"}, {"", "nodes", "list"},
		{"", "pods", "create"}, {"", "pods", "delete"}, {"", "pods", "patch"}, {"", "serviceaccounts", "create"},
		{"apps", "deployments", "list"}, {"apps", "replicasets", "update"}, {"batch", "jobs", "create"},
		{"security.istio.io", "peerauthentications", "update"}, {"security.istio.io", "authorizationpolicies", "list"},
		{"networking.istio.io", "destinationrules", "delete"}, {"rbac.authorization.k8s.io", "clusterroles", "list"},
	}
	for want, accesses := range map[bool][]access{true: allowed, false: forbidden} {
		for _, a := range accesses {
			if got := mayDo(ctx, t, boundCS, a.group, a.resource, "", a.verb, want); got != want {
				t.Errorf("%s %s.%s: allowed %v, want %v", a.verb, a.resource, a.group, got, want)
			}
		}
	}
	for _, sub := range []string{"log", "exec", "status"} {
		if mayDo(ctx, t, boundCS, "", "pods", sub, "get", false) || mayDo(ctx, t, boundCS, "", "pods", sub, "create", false) {
			t.Errorf("pods/%s allowed", sub)
		}
	}
	if _, err := boundCS.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as the bound account: %v, want forbidden", err)
	}

	// Watch syncs as that account, and names the pod.
	clients, err := workload.NewClients(bound)
	if err != nil {
		t.Fatal(err)
	}
	ix := workload.NewIndex()
	wctx, stop := context.WithCancel(ctx)
	stopped, err := workload.Watch(wctx, clients.Sources(), ix)
	if err != nil {
		stop()
		t.Fatalf("Watch as the bound account: %v", err)
	}
	stop()
	<-stopped
	if w, why := ix.LookupString("10.244.9.1"); why != "" || w.Namespace != ns || w.Pod != "reviews" {
		t.Errorf("as the bound account: %+v (%q), want pod %s/reviews", w, why, ns)
	}

	// Without the binding: refused.
	unbound, unboundCS := as(t, ns, "unbound")
	if _, err := unboundCS.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing pods without the binding: %v, want forbidden", err)
	}
	clients, err = workload.NewClients(unbound)
	if err != nil {
		t.Fatal(err)
	}
	short, stopShort := context.WithTimeout(ctx, 3*time.Second)
	defer stopShort()
	if _, err := workload.Watch(short, clients.Sources(), workload.NewIndex()); err == nil {
		t.Error("Watch without the binding synced")
	}
}

// readManifest decodes deploy/kubernetes/base/file strictly into obj.
func readManifest(t *testing.T, file string, obj any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "base", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// as is the admin's configuration impersonating service account ns/name
// (the API server adds its groups), and its clientset.
func as(t *testing.T, ns, name string) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	cfg := rest.CopyConfig(kubetest.Config(t))
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + name}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, cs
}

// mayDo asks the API server (SelfSubjectAccessReview, as cs's user)
// whether verb on resource (and subresource) in every namespace is allowed.
// When the answer is not yet want, it asks again for a few seconds: the
// authorizer's view of a new binding lags its creation a little.
func mayDo(ctx context.Context, t *testing.T, cs kubernetes.Interface, group, resource, sub, verb string, want bool) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group: group, Resource: resource, Subresource: sub, Verb: verb,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed == want || time.Now().After(deadline) {
			return r.Status.Allowed
		}
		time.Sleep(50 * time.Millisecond)
	}
}
