package main

import (
	"context"
	"testing"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/meshproof/meshproof/cluster/istio"
	"github.com/meshproof/meshproof/cluster/workload"
)

// TestDemoCluster: the demo's cluster holds together as an API server's
// would (each ReplicaSet's controller is a Deployment of the list, whose
// selector selects its pod), workload.Watch over its static sources names
// every address as the story does, and its Istio objects decide what the
// seed's tls-check showed: httpbin PERMISSIVE by httpbin.mtls-pg, clients
// ISTIO_MUTUAL by the DestinationRule.
func TestDemoCluster(t *testing.T) {
	a := demoAddrs{httpbin: "127.0.0.10", sleep: "127.0.0.11", legacy: "127.0.0.12", curl: "127.0.0.13", forger: "127.0.0.66"}
	if !a.distinct() {
		t.Fatal("distinct addresses are not distinct")
	}
	if (demoAddrs{httpbin: "127.0.0.1", sleep: "127.0.0.11", legacy: "127.0.0.12", curl: "127.0.0.13", forger: "127.0.0.66"}).distinct() {
		t.Error("127.0.0.1 (where a hand-typed curl comes from) taken for a pod's own")
	}
	c := demoClusterAt(a)

	for _, rs := range c.ReplicaSets.Items {
		ref := rs.OwnerReferences[0]
		found := false
		for _, d := range c.Deployments.Items {
			if d.UID == ref.UID && d.Name == ref.Name && d.Namespace == rs.Namespace {
				found = true
				sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
				for _, p := range c.Pods.Items {
					if len(p.OwnerReferences) > 0 && p.OwnerReferences[0].UID == rs.UID && !sel.Matches(labels.Set(p.Labels)) {
						t.Errorf("Deployment %s does not select its pod %s", d.Name, p.Name)
					}
				}
			}
		}
		if !found {
			t.Errorf("ReplicaSet %s's controller %s is not among the Deployments", rs.Name, ref.Name)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	ix := workload.NewIndex()
	stopped, err := workload.Watch(ctx, c.Sources(), ix)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		<-stopped
	}()
	for _, tc := range []struct {
		addr, want string // namespace/kind/name, sidecar
		sidecar    bool
	}{
		{a.httpbin, "mtls-pg/Deployment/httpbin", true},
		{a.sleep, "mtls-pg/Deployment/sleep", true},
		{a.legacy, "legacy/Deployment/legacy", false},
		{a.curl, "mtls-pg/Pod/curl", false},
		{a.forger, "legacy/Pod/forger", false},
	} {
		w, why := ix.LookupString(tc.addr)
		if got := w.Namespace + "/" + w.Kind + "/" + w.Name; why != "" || got != tc.want || w.Sidecar != tc.sidecar {
			t.Errorf("%s: %s sidecar %v (%q), want %s sidecar %v", tc.addr, got, w.Sidecar, why, tc.want, tc.sidecar)
		}
	}

	// The Istio watch can read the same way: an informer over the static
	// source lists the PeerAuthentication.
	inf := cache.NewSharedIndexInformer(workload.StaticSource(&c.PeerAuthentications), &securityv1.PeerAuthentication{}, 0, cache.Indexers{})
	ictx, icancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		inf.RunWithContext(ictx)
		close(done)
	}()
	synced := cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
	keys := inf.GetStore().ListKeys()
	icancel()
	<-done
	if !synced || len(keys) != 1 || keys[0] != "mtls-pg/httpbin" {
		t.Errorf("an informer over the static PeerAuthentications holds %q (synced %v), want [mtls-pg/httpbin]", keys, synced)
	}

	pod := func(name string) istio.Workload {
		for _, p := range c.Pods.Items {
			if p.Labels["app"] == name {
				return istio.Workload{Namespace: p.Namespace, Labels: p.Labels}
			}
		}
		t.Fatalf("no pod of %s", name)
		return istio.Workload{}
	}
	for _, tc := range []struct {
		workload             string
		wantMode, wantPolicy string
	}{
		{"httpbin", "PERMISSIVE", "httpbin.mtls-pg"},
		{"sleep", "PERMISSIVE", ""}, // not selected: Istio's default
	} {
		d := istio.EffectivePeerAuthentication(c.PeerAuthentications.Items, "", pod(tc.workload), 8000)
		if d.Mode != tc.wantMode || d.Policy != tc.wantPolicy {
			t.Errorf("PeerAuthentication of %s: %+v, want %s by %q", tc.workload, d, tc.wantMode, tc.wantPolicy)
		}
	}
	for _, ns := range []string{demoNamespace, demoLegacyNamespace} {
		d := istio.DestinationRuleTLS(c.DestinationRules.Items, "", ns, "httpbin.mtls-pg.svc.cluster.local", 8000)
		if d.Mode != "ISTIO_MUTUAL" || d.Rule != "httpbin.mtls-pg" {
			t.Errorf("DestinationRule for a client in %s: %+v, want ISTIO_MUTUAL by httpbin.mtls-pg", ns, d)
		}
	}
}
