package istio

import (
	"context"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/internal/kubetest"
)

// TestWatch keeps a Config current from a real API server (test/kube, with
// Istio's CRDs): a policy there before Watch is in the first Config, and
// each create, update and delete of either kind after it shows in a later
// one, waited for on Replaced (events, not polling). Leaving either
// informer out fails it. Once the context ends, Done closes: every
// goroutine of the watch has returned.
func TestWatch(t *testing.T) {
	cfg := kubetest.Config(t)
	ns := kubetest.Namespace(t, kubetest.Clientset(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sec, err := newRESTClient(cfg, securityv1.SchemeGroupVersion, securityv1.AddToScheme)
	if err != nil {
		t.Fatal(err)
	}
	net, err := newRESTClient(cfg, networkingv1.SchemeGroupVersion, networkingv1.AddToScheme)
	if err != nil {
		t.Fatal(err)
	}

	// Before the watch: a namespace-wide STRICT policy.
	ppol := pa(ns, "default", 0, nil, "STRICT", nil)
	ppol.TypeMeta = metav1.TypeMeta{APIVersion: securityv1.SchemeGroupVersion.String(), Kind: "PeerAuthentication"}
	create(ctx, t, sec, "peerauthentications", ns, ppol)

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	clients, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Watch(wctx, clients.Sources(), "")
	if err != nil {
		t.Fatal(err)
	}
	reviews := Workload{Namespace: ns, Labels: map[string]string{"app": "reviews"}}
	host := "reviews." + ns + ".svc." + ClusterDomain
	peer := func(c *Config) PeerDecision { return c.PeerMode(reviews, 9080) }
	client := func(c *Config) ClientDecision { return c.ClientTLS(ns, host, 9080) }
	if got, want := peer(w.Config()), (PeerDecision{Mode: "STRICT", Policy: "default." + ns, Scope: ScopeNamespace}); got != want {
		t.Fatalf("once Watch returned: %+v, want %+v", got, want)
	}

	// A DestinationRule created, then each object changed, then deleted.
	rule := dr(ns, "reviews", 0, "reviews", nil, "ISTIO_MUTUAL", nil)
	rule.TypeMeta = metav1.TypeMeta{APIVersion: networkingv1.SchemeGroupVersion.String(), Kind: "DestinationRule"}
	create(ctx, t, net, "destinationrules", ns, rule)
	waitFor(ctx, t, w, "the new DestinationRule", func(c *Config) bool {
		return client(c) == ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "reviews." + ns}
	})

	// A workload policy: PERMISSIVE for app=reviews only, DISABLE on 9080.
	wpol := pa(ns, "reviews", 0, map[string]string{"app": "reviews"}, "PERMISSIVE", map[uint32]string{9080: "DISABLE"})
	wpol.TypeMeta = ppol.TypeMeta
	create(ctx, t, sec, "peerauthentications", ns, wpol)
	waitFor(ctx, t, w, "the workload policy", func(c *Config) bool {
		return peer(c) == PeerDecision{Mode: "DISABLE", Policy: "reviews." + ns, Scope: ScopePort} &&
			c.PeerMode(reviews, 8080) == PeerDecision{Mode: "PERMISSIVE", Policy: "reviews." + ns, Scope: ScopeWorkload}
	})

	var got networkingv1.DestinationRule
	if err := net.Get().Namespace(ns).Resource("destinationrules").Name("reviews").Do(ctx).Into(&got); err != nil {
		t.Fatal(err)
	}
	got.Spec.TrafficPolicy.Tls = tlsSettings("DISABLE")
	update(ctx, t, net, "destinationrules", ns, "reviews", &got)
	waitFor(ctx, t, w, "the updated DestinationRule", func(c *Config) bool {
		return client(c) == ClientDecision{Mode: "DISABLE", Rule: "reviews." + ns}
	})

	remove(ctx, t, sec, "peerauthentications", ns, "reviews")
	waitFor(ctx, t, w, "the workload policy's delete", func(c *Config) bool {
		return peer(c) == PeerDecision{Mode: "STRICT", Policy: "default." + ns, Scope: ScopeNamespace}
	})
	remove(ctx, t, sec, "peerauthentications", ns, "default")
	remove(ctx, t, net, "destinationrules", ns, "reviews")
	waitFor(ctx, t, w, "both deletes", func(c *Config) bool {
		return peer(c) == PeerDecision{Mode: "PERMISSIVE", Scope: ScopeDefault} && client(c) == ClientDecision{}
	})

	stop()
	select {
	case <-w.Done():
	case <-ctx.Done():
		t.Fatal("the watch's goroutines still run after its context ended")
	}
}

// TestWatchStopsBeforeSync: a context that ends before the first list makes
// Watch fail, naming what was not listed.
func TestWatchStopsBeforeSync(t *testing.T) {
	cfg := kubetest.Config(t)
	clients, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Watch(ctx, clients.Sources(), ""); err == nil {
		t.Fatal("Watch with an ended context succeeded")
	}
}

// waitFor waits until the current Config satisfies ok, waking on each
// replacement, for at most 30 seconds.
func waitFor(ctx context.Context, t *testing.T, w *Watcher, what string, ok func(*Config) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c := w.Config()
		if ok(c) {
			return
		}
		select {
		case <-c.Replaced():
		case <-ctx.Done():
			t.Fatalf("the configuration never showed %s: %d PeerAuthentications, %d DestinationRules", what, c.PeerAuthentications, c.DestinationRules)
		}
	}
}

func create(ctx context.Context, t *testing.T, c *rest.RESTClient, resource, ns string, obj runtime.Object) {
	t.Helper()
	if err := c.Post().Namespace(ns).Resource(resource).Body(obj).Do(ctx).Error(); err != nil {
		t.Fatalf("create %s: %v", resource, err)
	}
}

func update(ctx context.Context, t *testing.T, c *rest.RESTClient, resource, ns, name string, obj runtime.Object) {
	t.Helper()
	if err := c.Put().Namespace(ns).Resource(resource).Name(name).Body(obj).Do(ctx).Error(); err != nil {
		t.Fatalf("update %s %s: %v", resource, name, err)
	}
}

func remove(ctx context.Context, t *testing.T, c *rest.RESTClient, resource, ns, name string) {
	t.Helper()
	if err := c.Delete().Namespace(ns).Resource(resource).Name(name).Do(ctx).Error(); err != nil {
		t.Fatalf("delete %s %s: %v", resource, name, err)
	}
}

// TestWatchStatic: fixed objects (workload.StaticSource, as the demo's
// cluster is fed) go through the same informers into the first Config,
// and Done closes once the context ends.
func TestWatchStatic(t *testing.T) {
	peers := &securityv1.PeerAuthenticationList{Items: []*securityv1.PeerAuthentication{
		pa("istio-system", "default", 0, nil, "STRICT", nil),
		pa("legacy", "default", 1, nil, "PERMISSIVE", nil),
	}}
	rules := &networkingv1.DestinationRuleList{Items: []*networkingv1.DestinationRule{
		dr("mtls-pg", "httpbin", 0, "httpbin", nil, "ISTIO_MUTUAL", nil),
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := Watch(ctx, Sources{PeerAuthentications: workload.StaticSource(peers), DestinationRules: workload.StaticSource(rules)}, "")
	if err != nil {
		t.Fatal(err)
	}
	c := w.Config()
	for _, tc := range []struct {
		ns   string
		want PeerDecision
	}{
		{"mtls-pg", PeerDecision{Mode: "STRICT", Policy: "default.istio-system", Scope: ScopeMesh}},
		{"legacy", PeerDecision{Mode: "PERMISSIVE", Policy: "default.legacy", Scope: ScopeNamespace}},
	} {
		if got := c.PeerMode(Workload{Namespace: tc.ns}, 8000); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.ns, got, tc.want)
		}
	}
	if got, want := c.ClientTLS("legacy", "httpbin.mtls-pg.svc.cluster.local", 8000), (ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "httpbin.mtls-pg"}); got != want {
		t.Errorf("client TLS %+v, want %+v", got, want)
	}
	cancel()
	select {
	case <-w.Done():
	case <-time.After(time.Minute):
		t.Fatal("the watch's informers still run a minute after its context ended")
	}
}

// TestServed: a real API server with Istio's CRDs (test/kube installs them)
// serves both groups Watch reads, and answers for a group nobody installed
// that it is not served, rather than an error: serve --kubernetes then runs
// without the Istio watch on a cluster that has no Istio.
func TestServed(t *testing.T) {
	ctx := context.Background()
	cs, err := NewClients(kubetest.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := cs.Served(ctx); !ok || err != nil {
		t.Fatalf("Served with Istio's CRDs installed = %v, %v; want true", ok, err)
	}
	absent := schema.GroupVersion{Group: "notinstalled.meshproof.example", Version: "v1"}
	if ok, err := served(ctx, cs.Security, absent); ok || err != nil {
		t.Fatalf("served(%s) = %v, %v; want false, no error", absent, ok, err)
	}
}
