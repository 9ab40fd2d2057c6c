package postgres_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// A mesh for benchmarks: 200 workloads in 20 namespaces, each calling a
// few others (about 600 edges), with a production-like mix of verdicts and
// whole records (certificate, XFCC, reasons): about 1.3 KB of JSON each.
const (
	benchWorkloads = 200
	benchFanout    = 3
)

var benchVerdicts = []struct {
	v       evidence.Verdict
	percent int
	reasons []string
}{
	{evidence.MTLS, 90, []string{"client certificate presented", "xfcc matches the connection"}},
	{evidence.TLSServerOnly, 4, []string{"no client certificate", "server certificate presented"}},
	{evidence.Plaintext, 3, []string{"no TLS identity on either side"}},
	{evidence.XFCCUnverified, 2, []string{"no client certificate", "xfcc header on a connection without one"}},
	{evidence.MTLSMismatch, 1, []string{"client certificate presented", "xfcc: uri differs from the certificate"}},
}

func benchPrincipal(w int) string {
	return fmt.Sprintf("spiffe://cluster.local/ns/team-%02d/sa/svc-%03d", w%20, w)
}

// benchGen makes records at a steady rate from start.
type benchGen struct {
	rng    *rand.Rand
	start  time.Time
	step   time.Duration
	n      int64
	head   evidence.Link // for callers that keep one chain here
	idBase int64         // added to n in record ids, so that writers' ids differ
}

func newBenchGen(seed uint64, start time.Time, step time.Duration) *benchGen {
	return &benchGen{rng: rand.New(rand.NewPCG(seed, 7)), start: start, step: step}
}

// batch makes n records of replica, chained onto *head.
func (g *benchGen) batch(replica string, head *evidence.Link, n int) []*evidence.Record {
	recs := make([]*evidence.Record, n)
	for i := range recs {
		recs[i] = g.record(replica)
		*head = head.Link(recs[i])
	}
	return recs
}

func (g *benchGen) record(replica string) *evidence.Record {
	at := g.start.Add(time.Duration(g.n) * g.step)
	g.n++
	src := g.rng.IntN(benchWorkloads)
	dst := (src*7 + 1 + g.rng.IntN(benchFanout)*13) % benchWorkloads
	p := g.rng.IntN(100)
	vi := 0
	for p >= benchVerdicts[vi].percent {
		p -= benchVerdicts[vi].percent
		vi++
	}
	v := benchVerdicts[vi]
	id := fmt.Sprintf("01J%023d", g.idBase+g.n)
	r := &evidence.Record{
		ID: id, Time: at, Replica: replica,
		RequestID: fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", g.rng.Uint32(), g.rng.IntN(1<<16), g.rng.IntN(1<<12), g.rng.IntN(1<<12), g.rng.Int64N(1<<48)),
		StreamID:  fmt.Sprint(g.rng.Uint64()), TraceID: fmt.Sprintf("%016x%016x", g.rng.Uint64(), g.rng.Uint64()),
		Destination: peer(dst, 8443),
		TLS:         evidence.TLS{SNI: fmt.Sprintf("outbound_.8443_._.svc-%03d.team-%02d.svc.cluster.local", dst, dst%20)},
		Request: evidence.Request{Method: []string{"GET", "GET", "GET", "POST", "PUT"}[g.rng.IntN(5)],
			Host: fmt.Sprintf("svc-%03d.team-%02d.svc.cluster.local:8443", dst, dst%20),
			Path: fmt.Sprintf("/api/v1/items/%d", g.rng.IntN(100000)), Protocol: "HTTP/2"},
		Verdict: v.v, Reasons: v.reasons,
		Decision: evidence.Decision{Allowed: g.rng.IntN(100) < 97, DecisionID: fmt.Sprintf("%016x", g.rng.Uint64()), PolicyRevision: "rev-2026-11-20.3"},
	}
	if !r.Decision.Allowed {
		r.Decision.HTTPStatus, r.Decision.Reason = 403, "source not in the allowlist"
	}
	switch v.v {
	case evidence.MTLS, evidence.MTLSMismatch:
		r.Source = peer(src, uint32(30000+g.rng.IntN(30000)))
		r.Source.Certificate = &evidence.Certificate{
			SHA256: fmt.Sprintf("%016x%016x%016x%016x", g.rng.Uint64(), g.rng.Uint64(), g.rng.Uint64(), g.rng.Uint64()),
			Serial: fmt.Sprintf("%x", g.rng.Uint64()), Issuer: "O=cluster.local",
			NotBefore: at.Truncate(time.Hour).Add(-time.Hour).UTC(), NotAfter: at.Truncate(time.Hour).Add(23 * time.Hour).UTC(),
			URISANs: []string{r.Source.Principal},
		}
		r.XFCC = &evidence.XFCC{Raw: "By=" + r.Destination.Principal + ";Hash=" + r.Source.Certificate.SHA256 + ";URI=" + r.Source.Principal}
		r.XFCC.Elements = []evidence.XFCCElement{{By: []string{r.Destination.Principal}, Hash: r.Source.Certificate.SHA256, URI: []string{r.Source.Principal}}}
	default:
		// No identity: the source is one of the workload's three pods.
		r.Source = evidence.Peer{Address: fmt.Sprintf("10.%d.%d.%d", src%4, src/4, 10+g.rng.IntN(3)), Port: uint32(30000 + g.rng.IntN(30000))}
	}
	return r
}

func peer(w int, port uint32) evidence.Peer {
	p := benchPrincipal(w)
	td, path, _ := strings.Cut(strings.TrimPrefix(p, "spiffe://"), "/")
	return evidence.Peer{Address: fmt.Sprintf("10.%d.%d.%d", w%4, w/4, 10+w%200), Port: port, Principal: p,
		SPIFFE: &evidence.SPIFFEID{ID: p, TrustDomain: td, Path: "/" + path,
			Namespace: fmt.Sprintf("team-%02d", w%20), ServiceAccount: fmt.Sprintf("svc-%03d", w)}}
}
