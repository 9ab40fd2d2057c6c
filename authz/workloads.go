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
	// Resolve returns the workload that holds addr, or nil and why none
	// does. The workload is shared by every record of that pod (one per
	// pod, not a copy per Check): records point at it and never change it.
	Resolve(addr string) (*evidence.Workload, string)
	// CheckIdentity says whether an Istio-style SPIFFE identity (its
	// namespace and service account) is w's own (the workload address
	// resolved to), and how it differs when not: which side, and whether
	// it looks like stale address data or a borrowed identity.
	CheckIdentity(address string, w *evidence.Workload, namespace, serviceAccount string) (bool, string)
}

// ResolveWorkloads makes every Check from now on record its peers'
// workloads. Call it before serving.
func (s *Server) ResolveWorkloads(w Workloads) { s.workloads = w }

// PeerModes gives a destination workload's configured PeerAuthentication
// mode on a port (STRICT, PERMISSIVE, DISABLE; "" when not known), for the
// metrics: serve --kubernetes's Istio watch. It is asked on every Check
// whose destination has a workload, so it answers from a cache.
type PeerModes interface {
	PeerMode(w *evidence.Workload, port uint32) string
}

// ResolvePeerModes makes every Check from now on count its destination's
// configured mode in meshproof_destination_checks_total's mode label (the
// alert on plaintext to a STRICT destination reads it). Call it before
// serving.
func (s *Server) ResolvePeerModes(m PeerModes) { s.peerModes = m }

// addWorkloads puts both peers' workloads into r, and into its reasons why
// one could not be named and where a source's SPIFFE identity is not its
// pod's (a workload presenting another's identity, or stale address data).
func addWorkloads(r *evidence.Record, ws Workloads) {
	var why []string
	why = addWorkload(&r.Source, "source", ws, why)
	why = addWorkload(&r.Destination, "destination", ws, why)
	if len(why) > 0 {
		// The reasons may be shared with other records (facts are cached).
		r.Reasons = append(slices.Clip(r.Reasons), why...)
	}
}

// addWorkload names p's workload, or appends to why the reason it has none
// or that its SPIFFE identity is not its workload's.
func addWorkload(p *evidence.Peer, side string, ws Workloads, why []string) []string {
	w, reason := ws.Resolve(p.Address)
	if w == nil {
		return append(why, side+" workload: "+reason)
	}
	p.Workload = w
	if id := p.SPIFFE; id != nil && id.Namespace != "" && id.ServiceAccount != "" {
		if ok, reason := ws.CheckIdentity(p.Address, w, id.Namespace, id.ServiceAccount); !ok {
			why = append(why, side+evidence.ReasonIdentityNotWorkload+": "+reason)
		}
	}
	return why
}
