package workload

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestLabels: a workload's labels come from its own pod while it runs,
// else from another running pod of the same Deployment, never from a
// terminated pod, another workload or another namespace.
func TestLabels(t *testing.T) {
	rs := replicaSet("cart-7d4b9c5f8", "5", controller("apps/v1", "Deployment", "cart"))
	owned := func(name, rv string, labels map[string]string, f ...func(*corev1.Pod)) *corev1.Pod {
		p := testPod(name, rv, "10.0.0."+rv)
		p.OwnerReferences = append(p.OwnerReferences, controller("apps/v1", "ReplicaSet", rs.Name))
		p.Labels = labels
		for _, g := range f {
			g(p)
		}
		return p
	}
	v1 := map[string]string{"app": "cart", "version": "v1"}
	v2 := map[string]string{"app": "cart", "version": "v2"}
	cart := func(pod string) Workload {
		return Workload{Namespace: "shop", Kind: KindDeployment, Name: "cart", Pod: pod}
	}
	elsewhere := func(p *corev1.Pod) { p.Namespace = "other" }
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		ask  Workload
		want map[string]string
	}{
		{"its own pod", []*corev1.Pod{owned("cart-a", "11", v1), owned("cart-b", "12", v2)}, cart("cart-b"), v2},
		{"its pod gone: a sibling", []*corev1.Pod{owned("cart-b", "12", v2)}, cart("cart-a"), v2},
		{"its pod terminated: a running sibling", []*corev1.Pod{owned("cart-a", "11", v1, phase(corev1.PodSucceeded)), owned("cart-b", "12", v2)}, cart("cart-a"), v2},
		{"only terminated pods", []*corev1.Pod{owned("cart-a", "11", v1, phase(corev1.PodFailed))}, cart("cart-a"), nil},
		{"another namespace's", []*corev1.Pod{owned("cart-a", "11", v1, elsewhere)}, cart("cart-a"), nil},
		{"another workload's", []*corev1.Pod{testPod("cart-a", "11", "10.0.0.11")}, cart("cart-a"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := NewIndex()
			ix.UpsertReplicaSet(rs)
			for _, p := range tc.pods {
				ix.UpsertPod(p)
			}
			if got := ix.Labels(tc.ask); !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("Labels(%+v) = %v, want %v", tc.ask, got, tc.want)
			}
		})
	}
}
