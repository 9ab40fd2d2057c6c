package kubernetes

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
)

// Checks of the pod that hold for the base and not the chart; the ones
// both hold to are deploy/internal/deploytest's.

func checkResources(t *testing.T, c corev1.Container) {
	r := c.Resources
	limit, ok := r.Limits[corev1.ResourceMemory]
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || !ok {
		t.Fatalf("resources %v: want CPU and memory requests and a memory limit", r)
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		v, ok := strings.CutSuffix(e.Value, "B") // Go writes MiB, Kubernetes Mi
		q, err := resource.ParseQuantity(v)
		if !ok || err != nil || q.Cmp(limit) >= 0 || q.Cmp(*r.Requests.Memory()) < 0 {
			t.Errorf("GOMEMLIMIT=%s: want a size in Go's form between the memory request and limit %s", e.Value, limit.String())
		}
		return
	}
	t.Error("no GOMEMLIMIT: with --gc-percent 400 the heap may pass the memory limit before a collection")
}

// checkNetworkPolicy: the shared check, and the base's sources are
// labelled namespaces only (no IP block), which the chart leaves to its
// values.
func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, podLabels map[string]string, c corev1.Container) {
	deploytest.CheckNetworkPolicy(t, np, podLabels, c)
	for _, rule := range np.Spec.Ingress {
		for _, peer := range rule.From {
			if peer.NamespaceSelector == nil || peer.IPBlock != nil ||
				len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("peer %+v: want labelled namespaces only", peer)
			}
		}
	}
}
