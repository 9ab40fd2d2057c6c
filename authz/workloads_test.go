package authz_test

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/evidence"
)

// TestCheckRecordsWorkloads: with an index of the cluster's pods, a Check's
// record names both peers' workloads as the index holds them when the Check
// is made, says why a peer has none, and says when a source's SPIFFE
// identity is not its pod's. Without the index, records are as before.
func TestCheckRecordsWorkloads(t *testing.T) {
	ix := workload.NewIndex()
	controller := true
	ix.UpsertReplicaSet(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "frontend-6b7f9c5d8", UID: "rs-1",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "frontend", UID: "dep-1", Controller: &controller}}}})
	pod := func(name, sa, ip string, uid types.UID, owner *metav1.OwnerReference) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: uid, ResourceVersion: "10", Labels: map[string]string{"app": "frontend", "version": "v3"}},
			Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
		}
		if owner != nil {
			p.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		return p
	}
	ix.UpsertPod(pod("frontend-6b7f9c5d8-x2lqp", "frontend", "10.0.0.1", "pod-1",
		&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "frontend-6b7f9c5d8", UID: "rs-1", Controller: &controller}))

	f := newFixture(t, allowTrue, "", authz.DefaultConfig(), func(s *authz.Server) { s.ResolveWorkloads(ix) })
	frontend := &evidence.Workload{Namespace: "shop", Kind: "Deployment", Name: "frontend", Pod: "frontend-6b7f9c5d8-x2lqp",
		ServiceAccount: "frontend", App: "frontend", Version: "v3", Sidecar: true}

	// mTLS from the frontend's own identity: no identity reason; the
	// destination (10.0.0.2) is in no pod the index holds.
	_, rec := f.check(t, authztest.NewRequest(authztest.MTLS(srcID, dstID)))
	if rec.Source.Workload == nil || *rec.Source.Workload != *frontend {
		t.Errorf("source workload %+v, want %+v", rec.Source.Workload, frontend)
	}
	if rec.Destination.Workload != nil {
		t.Errorf("destination workload %+v, want none", rec.Destination.Workload)
	}
	if want := "destination workload: unknown address"; !slices.Contains(rec.Reasons, want) || slices.ContainsFunc(rec.Reasons, isIdentityReason) {
		t.Errorf("reasons %q, want %q and no identity reason", rec.Reasons, want)
	}

	// The same address presenting the backend's identity.
	_, rec = f.check(t, authztest.NewRequest(authztest.MTLS(dstID, srcID)))
	// The pod has held its address for long, and no other pod did.
	if !slices.ContainsFunc(rec.Reasons, func(r string) bool {
		return strings.HasPrefix(r, `source identity is not its workload's: service account differs: workload "frontend", SPIFFE ID "backend"; a workload presenting another's identity: pod shop/`)
	}) {
		t.Errorf("reasons %q, want the source's identity named as not its workload's", rec.Reasons)
	}

	// The pod is gone and its IP taken by a bare pod: the next Check names
	// the new one, the record before keeps the old.
	ix.DeletePod(pod("frontend-6b7f9c5d8-x2lqp", "frontend", "10.0.0.1", "pod-1", nil))
	ix.UpsertPod(pod("debug", "default", "10.0.0.1", "pod-2", nil))
	_, rec2 := f.check(t, authztest.NewRequest())
	if w := rec2.Source.Workload; w == nil || w.Kind != "Pod" || w.Name != "debug" {
		t.Errorf("after the IP's reuse: source workload %+v, want the bare pod debug", w)
	}
	if *rec.Source.Workload != *frontend {
		t.Errorf("an earlier record's workload changed to %+v", rec.Source.Workload)
	}

	// Without an index: no workload and no workload reason.
	plain := newFixture(t, allowTrue, "", authz.DefaultConfig())
	_, rec = plain.check(t, authztest.NewRequest())
	if rec.Source.Workload != nil || slices.ContainsFunc(rec.Reasons, isIdentityReason) || slices.Contains(rec.Reasons, "destination workload: unknown address") {
		t.Errorf("without --kubernetes: %+v, reasons %q", rec.Source.Workload, rec.Reasons)
	}
}

func isIdentityReason(r string) bool { return strings.Contains(r, "identity is not its workload's") }
