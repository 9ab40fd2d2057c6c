package authz

import (
	"slices"

	"github.com/meshproof/meshproof/evidence"
)

// Workloads resolves a peer's address to the Kubernetes workload that holds
// it (serve --kubernetes; cluster/workload's Index). It is asked while the
// Check is recorded: pod IPs are reused within minutes, so an answer given
// later could name another pod.
type Workloads interface {
	// Resolve returns the workload that holds addr (shared: read-only), or
	// nil and why none does.
	Resolve(addr string) (*evidence.Workload, string)
	// CheckIdentity says whether an Istio-style SPIFFE identity (its
	// namespace and service account) is w's own, and how it differs when
	// not.
	CheckIdentity(w *evidence.Workload, namespace, serviceAccount string) (bool, string)
}

// ResolveWorkloads makes every Check from now on record its peers'
// workloads. Call it before serving.
func (s *Server) ResolveWorkloads(w Workloads) { s.workloads = w }

// addWorkloads puts both peers' workloads into r, and into its reasons why
// one could not be named and where a source's SPIFFE identity is not its
// pod's (a workload presenting another's identity, or stale address data).
func addWorkloads(r *evidence.Record, ws Workloads) {
	var why []string
	for _, p := range []struct {
		side string
		peer *evidence.Peer
	}{{"source", &r.Source}, {"destination", &r.Destination}} {
		w, reason := ws.Resolve(p.peer.Address)
		if w == nil {
			why = append(why, p.side+" workload: "+reason)
			continue
		}
		p.peer.Workload = w
		if id := p.peer.SPIFFE; id != nil && id.Namespace != "" && id.ServiceAccount != "" {
			if ok, reason := ws.CheckIdentity(w, id.Namespace, id.ServiceAccount); !ok {
				why = append(why, p.side+" identity is not its workload's: "+reason)
			}
		}
	}
	if len(why) > 0 {
		// The reasons may be shared with other records (facts are cached).
		r.Reasons = append(slices.Clip(r.Reasons), why...)
	}
}
