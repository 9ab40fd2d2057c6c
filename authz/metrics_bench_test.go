package authz

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproof/meshproof/evidence"
)

// BenchmarkCheckNamespaceCounts is what the namespace series add to a Check
// (both peers' namespaces looked up, two counters incremented), apart from
// the rest of the Check, whose time on a shared machine varies by more.
func BenchmarkCheckNamespaceCounts(b *testing.B) {
	m := newCheckMetrics(prometheus.NewRegistry())
	rec := &evidence.Record{
		Source:      evidence.Peer{SPIFFE: &evidence.SPIFFEID{Namespace: "mtls-pg"}},
		Destination: evidence.Peer{SPIFFE: &evidence.SPIFFEID{Namespace: "httpbin"}},
	}
	b.ReportAllocs()
	for b.Loop() {
		m.peersOf(rec, nil).count(0, evidence.MTLS)
	}
}
