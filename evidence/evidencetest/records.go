package evidencetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Base is when fixture records start: a midnight UTC, so that day, hour and
// minute boundaries fall on round offsets from it.
var Base = time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)

// Full returns a record with every field of evidence.Record set but
// Amends (see Amended; the read-back test fails when a field is left zero,
// so that a field added to the record is added here too), not yet chained.
func Full(id, replica string, t time.Time) *evidence.Record {
	cert := func(cn string) *evidence.Certificate {
		return &evidence.Certificate{
			SHA256: strings.Repeat("ab", 32), Serial: "0x1f2e3d", Subject: "CN=" + cn + ",O=Example",
			Issuer:    "CN=mesh-ca,O=Example",
			NotBefore: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 1, 1, 0, 0, 0, 123, time.UTC),
			URISANs: []string{"spiffe://cluster.local/ns/" + cn + "/sa/default"}, DNSSANs: []string{cn + ".svc", "*." + cn},
			Error: "trailing data after the certificate",
		}
	}
	return &evidence.Record{
		ID: id, Time: t, RequestID: "req-" + id, StreamID: "stream-17", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Replica: replica,
		Source: evidence.Peer{
			Address: "10.0.0.7", Port: 43210, Principal: "spiffe://cluster.local/ns/shop/sa/frontend",
			SPIFFE: &evidence.SPIFFEID{ID: "spiffe://cluster.local/ns/shop/sa/frontend", TrustDomain: "cluster.local",
				Path: "/ns/shop/sa/frontend", Namespace: "shop", ServiceAccount: "frontend"},
			Certificate: cert("shop"),
			Workload: &evidence.Workload{Namespace: "shop", Kind: "Deployment", Name: "frontend", Pod: "frontend-6b7f9c5d8-x2lqp",
				ServiceAccount: "frontend", App: "frontend", Version: "v3", Sidecar: true},
		},
		Destination: evidence.Peer{
			Address: "10.0.1.9", Port: 8443, Principal: "spiffe://cluster.local/ns/payments/sa/ledger",
			SPIFFE: &evidence.SPIFFEID{ID: "spiffe://cluster.local/ns/payments/sa/ledger", TrustDomain: "cluster.local",
				Path: "/ns/payments/sa/ledger", Namespace: "payments", ServiceAccount: "ledger"},
			Certificate: cert("payments"),
			Workload: &evidence.Workload{Namespace: "payments", Kind: "StatefulSet", Name: "ledger", Pod: "ledger-0",
				ServiceAccount: "ledger", App: "ledger", Version: "v1", Sidecar: true},
		},
		TLS: evidence.TLS{SNI: "ledger.payments.svc.cluster.local"},
		XFCC: &evidence.XFCC{
			Raw: `By=spiffe://cluster.local/ns/payments/sa/ledger;Hash=abab;URI=spiffe://cluster.local/ns/shop/sa/frontend;X-Extra="a,b"`,
			Elements: []evidence.XFCCElement{{
				By: []string{"spiffe://cluster.local/ns/payments/sa/ledger"}, Hash: strings.Repeat("ab", 32),
				Subject: "CN=shop", URI: []string{"spiffe://cluster.local/ns/shop/sa/frontend"}, DNS: []string{"shop.svc"},
				CertSHA256: strings.Repeat("cd", 32), Other: map[string][]string{"x-extra": {"a,b", "c"}},
			}},
			Error: "element 2: unterminated quote",
		},
		Request: evidence.Request{Method: "POST", Host: "ledger.payments:8443", Path: "/api/v1/transfers", Protocol: "HTTP/2"},
		Headers: map[string]string{"x-tenant": "acme", "user-agent": "curl/8.5 ünïcode ✓"},
		Verdict: evidence.MTLSMismatch,
		Reasons: []string{"client certificate presented", "xfcc: hash differs from the connection's certificate"},
		Decision: evidence.Decision{Allowed: true, HTTPStatus: 403, DecisionID: "dec-" + id, PolicyRevision: "rev-42",
			DryRun: true, Reason: "dry run: would deny", Error: "policy: undefined ref"},
		Truncated: true,
	}
}

// Amended is Full made an amendment (Amends set: every field of the record
// is then set), which leaves the amended record's outcome as it was, so
// that it counts in no rollup (evidence.RollupDeltas). Full itself counts
// as any record.
func Amended(id, replica string, t time.Time) *evidence.Record {
	r := Full(id, replica, t)
	r.Amends = &evidence.Amends{ID: "amended-" + id, Allowed: true}
	return r
}

// Link chains recs in order onto head and returns the new head.
func Link(head evidence.Link, recs ...*evidence.Record) evidence.Link {
	for _, r := range recs {
		head = head.Link(r)
	}
	return head
}

// Fixture is a set of varied records, chained per replica.
type Fixture struct {
	Records []*evidence.Record   // every record, in append order
	Batches [][]*evidence.Record // one replica's chain in order per batch
	Heads   map[string]evidence.Link
}

// NextWorkloadRecords appends to w, per replica, one more record of the
// last stored edge whose source has a workload and no principal (keyed by
// its workload), a day past the fixture, chained after fx's heads: a
// migrated store's chains go on, and such a record lands on the edge or
// shape the migration made. It returns the records appended.
func NextWorkloadRecords(ctx context.Context, t testing.TB, w evidence.Writer, fx *Fixture) []*evidence.Record {
	t.Helper()
	var more []*evidence.Record
	for _, replica := range Replicas {
		var like *evidence.Record
		for _, r := range fx.Records {
			if r.Replica == replica && r.Source.Workload != nil && r.Source.Principal == "" {
				like = r
			}
		}
		if like == nil {
			t.Fatalf("the fixture has no record of %s keyed by its workload", replica)
		}
		r := *like
		r.ID, r.Time, r.Chain = replica+"-next", Base.Add(6*24*time.Hour), evidence.Chain{}
		Link(fx.Heads[replica], &r)
		if err := w.Append(ctx, []*evidence.Record{&r}); err != nil {
			t.Fatalf("Append after the migration: %v", err)
		}
		more = append(more, &r)
	}
	return more
}

// QueryMatchesOracle pages through r's records matching each filter, 25
// at a time, and fails unless they are the oracle's answer over recs
// (NewestFirst), and some; when says at what point of a test.
func QueryMatchesOracle(ctx context.Context, t testing.TB, r evidence.Reader, when string, recs []*evidence.Record, filters []evidence.Filter) {
	t.Helper()
	for _, f := range filters {
		var got []string
		page := evidence.PageRequest{Limit: 25}
		for {
			res, err := r.Query(ctx, f, page)
			if err != nil {
				t.Fatalf("Query(%+v): %v", f, err)
			}
			got = append(got, IDs(res.Records)...)
			if page.Cursor = res.Next; page.Cursor == "" {
				break
			}
		}
		want := IDs(NewestFirst(recs, f))
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("%s: %+v: got %d records, want %d (and some)", when, f, len(got), len(want))
		}
	}
}

// Replicas the fixtures write as.
var Replicas = []string{"replica-a", "replica-b", "replica-c"}

type peerSpec struct {
	principal, address string
}

// The values fixtures draw from: SPIFFE and other principals, no
// principal, hostile strings, and prefixes of one another that are not
// path-segment aligned (shop, shop-admin).
var (
	sources = []peerSpec{
		{"spiffe://cluster.local/ns/shop/sa/frontend", "10.0.0.7"},
		{"spiffe://cluster.local/ns/shop-admin/sa/admin", "10.0.0.8"},
		{"spiffe://cluster.local/ns/payments/sa/api", "10.0.0.9"},
		{"spiffe://partner.example/ns/shop/sa/bridge", "192.0.2.4"},
		{"spiffe://cluster.local/ns/café/sa/ünï", "10.0.0.10"},
		{"CN=legacy-client,O=Example", "10.0.3.3"},
		{"'; DROP TABLE records; --", "10.0.6.6"},
		{"", "203.0.113.50"},
		{"", "203.0.113.51"},
	}
	destinations = []peerSpec{
		{"spiffe://cluster.local/ns/payments/sa/ledger", "10.0.1.9"},
		{"spiffe://cluster.local/ns/shop/sa/cart", "10.0.1.10"},
		{"spiffe://partner.example/ns/edge/sa/gw", "10.0.1.11"},
		{"", "10.0.1.12"},
	}
	hosts   = []string{"ledger.payments:8443", "cart.shop.svc.cluster.local", "api.example.com", "100%_sure.example", "'; DROP TABLE records; --"}
	paths   = []string{"/api/v1/items", "/api/v10/items", "/api/v_1/x", "/api/v1%2Fx", "/healthz", "/a%b", "/", "/API/v1/items"}
	methods = []string{"GET", "POST", "DELETE", "PUT"}
)

// Varied makes n records over five days, spread over the Replicas, each
// replica's chain in time order (several records of different replicas
// share a timestamp, to exercise the id tie-break), chained and cut into
// batches of up to batch records. seed makes them reproducible.
func Varied(n, batch int, seed uint64) *Fixture { return variedFixture(n, batch, seed, false) }

// VariedWorkloads is Varied's records with the Kubernetes workloads serve
// --kubernetes would have recorded for most of their peers (workloads):
// sources of their SPIFFE identity's namespace and service account, some
// that are not (a mismatch), plaintext clients of namespace legacy, a bare
// pod of the same name as a Deployment, and addresses none was found for.
// Varied itself stays as it was: files of earlier schemas were written
// from it.
func VariedWorkloads(n, batch int, seed uint64) *Fixture { return variedFixture(n, batch, seed, true) }

func variedFixture(n, batch int, seed uint64, workloads bool) *Fixture {
	rng := rand.New(rand.NewPCG(seed, 99))
	wrng := rand.New(rand.NewPCG(seed, 16))
	fx := &Fixture{Heads: map[string]evidence.Link{}}
	step := 5 * 24 * time.Hour / time.Duration(n/len(Replicas)+1)
	pending := map[string][]*evidence.Record{}
	for i := range n {
		replica := Replicas[i%len(Replicas)]
		k := i / len(Replicas)
		t := Base.Add(time.Duration(k)*step + time.Duration(k%5)*time.Nanosecond)
		r := varied(rng, randomID(rng), replica, t, i)
		if workloads {
			addWorkloads(wrng, r)
		}
		fx.Records = append(fx.Records, r)
		pending[replica] = append(pending[replica], r)
		if len(pending[replica]) == batch || i >= n-len(Replicas) {
			fx.Heads[replica] = Link(fx.Heads[replica], pending[replica]...)
			fx.Batches = append(fx.Batches, pending[replica])
			pending[replica] = nil
		}
	}
	return fx
}

func varied(rng *rand.Rand, id, replica string, t time.Time, i int) *evidence.Record {
	src, dst := sources[rng.IntN(len(sources))], destinations[rng.IntN(len(destinations))]
	r := &evidence.Record{
		ID: id, Time: t, Replica: replica,
		Source:      peer(src, uint32(30000+i)),
		Destination: peer(dst, 8443),
		Request: evidence.Request{Method: methods[rng.IntN(len(methods))], Host: hosts[rng.IntN(len(hosts))],
			Path: paths[rng.IntN(len(paths))], Protocol: "HTTP/1.1"},
		Decision: evidence.Decision{Allowed: rng.IntN(3) > 0, DecisionID: "dec-" + id},
	}
	if !r.Decision.Allowed {
		r.Decision.HTTPStatus = 403
	}
	switch i % 10 {
	case 0: // no request id
	case 1:
		r.RequestID = "req-shared"
	default:
		r.RequestID = fmt.Sprintf("req-%05d", i)
	}
	switch {
	case src.principal != "" && rng.IntN(4) == 0:
		r.Verdict, r.Reasons = evidence.MTLSMismatch, []string{"client certificate presented", "xfcc: uri differs"}
		r.XFCC = &evidence.XFCC{Raw: "By=x;URI=y", Elements: []evidence.XFCCElement{{By: []string{"x"}, URI: []string{"y"}}}}
	case src.principal != "":
		r.Verdict, r.Reasons = evidence.MTLS, []string{"client certificate presented"}
	case dst.principal != "" && rng.IntN(2) == 0:
		r.Verdict, r.Reasons = evidence.XFCCUnverified, []string{"no client certificate", "xfcc header on a connection without one"}
		r.XFCC = &evidence.XFCC{Raw: "URI=spiffe://forged/ns/x/sa/y"}
	case dst.principal != "":
		r.Verdict, r.Reasons = evidence.TLSServerOnly, []string{"no client certificate", "server certificate presented"}
	default:
		r.Verdict, r.Reasons = evidence.Plaintext, []string{"no TLS identity on either side"}
	}
	if i%7 == 0 {
		r.Headers = map[string]string{"x-tenant": fmt.Sprintf("t%d", i%3)}
	}
	return r
}

// The workloads of VariedWorkloads, by address; an address of several
// is one of them at random, nil for none found.
var workloads = map[string][]*evidence.Workload{
	"10.0.0.7": {wl("shop", "Deployment", "frontend", "frontend")},
	"10.0.0.8": {wl("shop-admin", "Deployment", "admin", "admin")},
	// payments/api's pods run as api-v2: their SPIFFE ID (sa api) is not
	// theirs.
	"10.0.0.9":  {wl("payments", "Deployment", "api", "api"), wl("payments", "Deployment", "api", "api-v2")},
	"192.0.2.4": {wl("edge", "Deployment", "bridge", "bridge"), nil}, // namespace differs
	"10.0.3.3":  {wl("legacy", "Deployment", "legacy-client", "default")},
	// Plaintext clients of namespace legacy, one address once a
	// Deployment's pod and once a bare pod of the same name.
	"203.0.113.50": {wl("legacy", "Deployment", "sleep", "sleep")},
	"203.0.113.51": {wl("legacy", "Pod", "sleep", "sleep"), nil},
	"10.0.1.9":     {wl("payments", "StatefulSet", "ledger", "ledger")},
	"10.0.1.10":    {wl("shop", "Deployment", "cart", "cart"), nil},
	"10.0.1.12":    {wl("legacy", "Deployment", "httpbin", "httpbin")},
}

func wl(ns, kind, name, sa string) *evidence.Workload {
	return &evidence.Workload{Namespace: ns, Kind: kind, Name: name, Pod: name + "-7d9f8-x2lqp", ServiceAccount: sa, App: name, Sidecar: ns != "legacy"}
}

// addWorkloads gives r's peers their workloads, or none, as the table says.
func addWorkloads(rng *rand.Rand, r *evidence.Record) {
	for _, p := range []*evidence.Peer{&r.Source, &r.Destination} {
		if ws := workloads[p.Address]; len(ws) > 0 {
			p.Workload = ws[rng.IntN(len(ws))]
		}
	}
}

func peer(p peerSpec, port uint32) evidence.Peer {
	out := evidence.Peer{Address: p.address, Port: port, Principal: p.principal}
	if rest, ok := strings.CutPrefix(p.principal, "spiffe://"); ok {
		td, path, _ := strings.Cut(rest, "/")
		id := &evidence.SPIFFEID{ID: p.principal, TrustDomain: td, Path: "/" + path}
		if parts := strings.Split(path, "/"); len(parts) == 4 && parts[0] == "ns" && parts[2] == "sa" {
			id.Namespace, id.ServiceAccount = parts[1], parts[3]
		}
		out.SPIFFE = id
	}
	return out
}

// randomID is a ULID-shaped id whose order says nothing about time, so that
// the (time, id) order is tested with ids in every order.
func randomID(rng *rand.Rand) string {
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	b := make([]byte, 26)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}
