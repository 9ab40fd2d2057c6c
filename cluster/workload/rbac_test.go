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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/meshproof/meshproof/cluster/istio"
	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/internal/kubetest"
)

// TestRBAC applies the kustomize base's ClusterRole and ClusterRoleBinding
// (deploy/kubernetes/base, whose tests check these files are what the base
// renders) to a real API server, RBAC on, for a service account of the
// test's namespace, and acts as that account (impersonation): every verb on
// every resource serve --kubernetes watches is allowed, anything else asked
// is forbidden; then it runs what serve runs as that account: workload.Watch
// syncs and names a pod; istio.Clients.Served finds Istio's groups
// (discovery) and istio.Watch syncs, holds a policy created before it and
// sees a DestinationRule created after; each of the five sources these
// watches read lists and watches. An account without the binding cannot
// list, and neither watch syncs for it. A verb or resource missing from the
// role fails here, by access review and by the code that needs it.
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

	// The Istio watch as that account, as serve starts it (watchIstio):
	// discovery of both groups, then the informers, which list a policy
	// made before them and see a rule made after through their watch.
	admin := dynamic.NewForConfigOrDie(kubetest.Config(t))
	createIstio(ctx, t, admin, peerAuthentications, ns, map[string]any{
		"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
		"metadata": map[string]any{"name": "default", "namespace": ns},
		"spec":     map[string]any{"mtls": map[string]any{"mode": "STRICT"}},
	})
	ic, err := istio.NewClients(bound)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ic.Served(ctx); !ok || err != nil {
		t.Fatalf("Served as the bound account = %v, %v; want true (Istio's CRDs are installed)", ok, err)
	}
	// Bounded as serve bounds it (--kubernetes-sync-timeout), so that a
	// role without list fails here rather than at the test's deadline.
	ictx, stopIstio := context.WithTimeout(ctx, 30*time.Second)
	iw, err := istio.Watch(ictx, ic.Sources(), "")
	if err != nil {
		stopIstio()
		t.Fatalf("istio.Watch as the bound account: %v", err)
	}
	reviews := istio.Workload{Namespace: ns, Labels: map[string]string{"app": "reviews"}}
	if got, want := iw.Config().PeerMode(reviews, 9080), (istio.PeerDecision{Mode: "STRICT", Policy: "default." + ns, Scope: istio.ScopeNamespace}); got != want {
		t.Errorf("istio.Watch as the bound account, once synced: %+v, want %+v", got, want)
	}
	createIstio(ctx, t, admin, destinationRules, ns, map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": "reviews", "namespace": ns},
		"spec": map[string]any{"host": "reviews." + ns + ".svc.cluster.local",
			"trafficPolicy": map[string]any{"tls": map[string]any{"mode": "ISTIO_MUTUAL"}}},
	})
	for c := iw.Config(); c.ClientTLS(ns, "reviews."+ns+".svc.cluster.local", 9080).Mode != "ISTIO_MUTUAL"; c = iw.Config() {
		select {
		case <-c.Replaced():
		case <-ictx.Done():
			t.Fatal("istio.Watch as the bound account did not see the new DestinationRule within 30s")
		}
	}
	stopIstio()
	<-iw.Done()

	// Each source the two watches read, as that account: a list, then a
	// watch from it (an informer that may list but not watch syncs, and
	// then only relists, so Watch alone would not show a missing watch).
	sources := map[string]cache.ListerWatcher{
		"peerauthentications": ic.Sources().PeerAuthentications, "destinationrules": ic.Sources().DestinationRules,
	}
	ws := clients.Sources()
	sources["pods"], sources["replicasets"], sources["jobs"] = ws.Pods, ws.ReplicaSets, ws.Jobs
	for name, src := range sources {
		lw := cache.ToListerWatcherWithContext(src)
		list, err := lw.ListWithContext(ctx, metav1.ListOptions{})
		if err != nil {
			t.Errorf("listing %s as the bound account: %v", name, err)
			continue
		}
		lm, err := meta.ListAccessor(list)
		if err != nil {
			t.Fatal(err)
		}
		w, err := lw.WatchWithContext(ctx, metav1.ListOptions{ResourceVersion: lm.GetResourceVersion()})
		if err != nil {
			t.Errorf("watching %s as the bound account: %v", name, err)
			continue
		}
		w.Stop()
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
	// Discovery is every authenticated user's: Served still says yes, and
	// the Istio watch, which it then starts, never syncs.
	ic, err = istio.NewClients(unbound)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ic.Served(ctx); !ok || err != nil {
		t.Errorf("Served without the binding = %v, %v; want true (discovery needs no role)", ok, err)
	}
	short, stopShort = context.WithTimeout(ctx, 3*time.Second)
	defer stopShort()
	if w, err := istio.Watch(short, ic.Sources(), ""); err == nil {
		t.Error("istio.Watch without the binding synced")
		stopShort()
		<-w.Done()
	}
}

// Istio's two kinds, for the admin's dynamic client.
var (
	peerAuthentications = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	destinationRules    = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
)

// createIstio creates obj, of kind gvr, in namespace ns.
func createIstio(ctx context.Context, t *testing.T, c dynamic.Interface, gvr schema.GroupVersionResource, ns string, obj map[string]any) {
	t.Helper()
	if _, err := c.Resource(gvr).Namespace(ns).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating %s: %v", gvr.Resource, err)
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
