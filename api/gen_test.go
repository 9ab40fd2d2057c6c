package api

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// meshRecords makes n records of a synthetic mesh, oldest first, evenly
// over [end-span, end): 100 workloads in 10 namespaces calling 20 services,
// nine in ten requests over mTLS, the rest plaintext, TLS without a client
// certificate or suspect. Records are about 1 KB of JSON, as Envoy's are.
func meshRecords(n int, end time.Time, span time.Duration, seed uint64) []*evidence.Record {
	rng := rand.New(rand.NewPCG(seed, 3))
	step := span / time.Duration(n)
	out := make([]*evidence.Record, n)
	for i := range out {
		at := end.Add(-span + time.Duration(i)*step)
		src, svc := rng.IntN(100), rng.IntN(20)
		srcID, dstID := workloadID(src), fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/svc-%d", svc%10, svc)
		host := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:8080", svc, svc%10)
		r := &evidence.Record{
			ID: fmt.Sprintf("01J%011X%012X", at.UnixMilli(), rng.Uint64()&0xffffffffffff), Time: at,
			RequestID: fmt.Sprintf("%016x-%016x", rng.Uint64(), rng.Uint64()), Replica: "bench",
			Source:      evidence.Peer{Address: fmt.Sprintf("10.0.%d.%d", src/250, src%250), Port: uint32(30000 + rng.IntN(30000))},
			Destination: evidence.Peer{Address: fmt.Sprintf("10.1.0.%d", svc), Port: 8080, Principal: dstID, SPIFFE: spiffeOf(dstID, fmt.Sprintf("ns-%d", svc%10), fmt.Sprintf("svc-%d", svc))},
			TLS:         evidence.TLS{SNI: host},
			Request:     evidence.Request{Method: []string{"GET", "GET", "POST", "PUT"}[rng.IntN(4)], Host: host, Path: fmt.Sprintf("/api/v1/items/%d", rng.IntN(1000)), Protocol: "HTTP/2"},
			Headers:     map[string]string{"user-agent": "Go-http-client/2.0", "x-tenant": fmt.Sprintf("tenant-%d", rng.IntN(5))},
			Decision:    evidence.Decision{Allowed: rng.IntN(20) > 0, PolicyRevision: "rev-3", DecisionID: fmt.Sprintf("%016x", rng.Uint64())},
		}
		switch v := rng.IntN(100); {
		case v < 90:
			r.Source.Principal, r.Source.SPIFFE = srcID, spiffeOf(srcID, fmt.Sprintf("ns-%d", src%10), fmt.Sprintf("workload-%d", src))
			r.Verdict, r.Reasons = evidence.MTLS, []string{"client certificate presented", "xfcc agrees with connection"}
			r.XFCC = &evidence.XFCC{Raw: "By=" + dstID + ";Hash=" + fmt.Sprintf("%064x", src) + ";URI=" + srcID,
				Elements: []evidence.XFCCElement{{By: []string{dstID}, Hash: fmt.Sprintf("%064x", src), URI: []string{srcID}}}}
		case v < 93:
			r.Source.Principal = srcID
			r.Verdict, r.Reasons = evidence.MTLSMismatch, []string{"client certificate presented", "xfcc uri differs from source principal"}
		case v < 96:
			r.Verdict, r.Reasons = evidence.TLSServerOnly, []string{"server certificate presented", "no client certificate"}
		case v < 99:
			r.Destination.Principal, r.Destination.SPIFFE = "", nil
			r.Verdict, r.Reasons = evidence.Plaintext, []string{"no TLS identity on either side"}
		default:
			r.Verdict, r.Reasons = evidence.XFCCUnverified, []string{"no client certificate", "xfcc header without client certificate"}
			r.XFCC = &evidence.XFCC{Raw: "URI=" + srcID}
		}
		if !r.Decision.Allowed {
			r.Decision.HTTPStatus, r.Decision.Reason = 403, "not on the allowlist"
		}
		out[i] = r
	}
	return out
}

func workloadID(i int) string {
	return fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/workload-%d", i%10, i)
}

func spiffeOf(id, ns, sa string) *evidence.SPIFFEID {
	return &evidence.SPIFFEID{ID: id, TrustDomain: "cluster.local", Path: "/ns/" + ns + "/sa/" + sa, Namespace: ns, ServiceAccount: sa}
}

// leanRecords makes n small mTLS records, one a millisecond up to end,
// with ids and request ids in time order: cheap to write, for tests that
// need many records rather than realistic ones.
func leanRecords(n int, end time.Time) []*evidence.Record {
	out := make([]*evidence.Record, n)
	start := end.Add(-time.Duration(n) * time.Millisecond)
	for i := range out {
		out[i] = &evidence.Record{
			ID: fmt.Sprintf("01LEAN%020d", i), Time: start.Add(time.Duration(i) * time.Millisecond), Replica: "lean",
			RequestID:   fmt.Sprintf("req-%010d", i),
			Source:      evidence.Peer{Address: "10.0.0.1", Principal: workloadID(i % 100)},
			Destination: evidence.Peer{Address: "10.1.0.1", Principal: "spiffe://cluster.local/ns/ns-0/sa/svc-0"},
			Request:     evidence.Request{Method: "GET", Host: "svc-0.ns-0:8080", Path: "/items"},
			Verdict:     evidence.MTLS, Reasons: []string{"client certificate presented"},
			Decision: evidence.Decision{Allowed: true},
		}
	}
	return out
}
