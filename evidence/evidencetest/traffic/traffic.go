// Package traffic makes realistic evidence for store benchmarks: the
// records a mesh of a few hundred edges produces, built by the same code a
// Check runs (authz.Server.RecordOf, then stamped) from CheckRequests as
// Envoy sends them, peer certificates (include_peer_certificate) and XFCC
// included. It is test code: nothing in the product imports it.
package traffic

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// The mesh's shape: Namespaces x Services workloads, each calling
// CallsPerWorkload others, so Edges edges.
const (
	Namespaces       = 10
	Services         = 6
	CallsPerWorkload = 5
	Edges            = Namespaces * Services * CallsPerWorkload
)

type workload struct {
	id, host, addr string
	svid           *authztest.SVID
}

// kind is what an edge's connection is; fixed per edge, as in a mesh
// (a workload outside the mesh stays outside).
type kind int

const (
	mtls          kind = iota // client certificate, its PEM, Istio's XFCC
	tlsServerOnly             // TLS to a server certificate, no client one
	plaintext                 // no TLS identity
	mismatch                  // mTLS, XFCC naming another workload (suspect)
	unverified                // no client certificate, an XFCC header (suspect)
)

type edge struct {
	src, dst *workload
	kind     kind
}

// Mesh makes the records; not safe for concurrent use.
type Mesh struct {
	rng     *rand.Rand
	srv     *authz.Server
	edges   []edge
	rev     string
	replica string
}

// Paths are the request paths, each with an id where an API has one.
var Paths = []string{"/api/v1/orders/%d", "/api/v1/orders/%d/items", "/api/v1/customers/%d", "/api/v2/payments/%d",
	"/api/v1/cart", "/healthz", "/grpc.health.v1.Health/Check", "/metrics"}

var methods = []string{"GET", "GET", "GET", "GET", "POST", "PUT", "DELETE"}

// New makes a mesh of Edges edges with a real SPIFFE certificate per
// workload (authztest's CA), seeded by seed, whose records are stamped for
// replica. The edges' kinds: 88% mtls, 5% tls_server_only, 4% plaintext,
// 2% mtls_mismatch, 1% xfcc_unverified (by edge count; requests pick edges
// uniformly).
func New(t testing.TB, seed uint64, replica string) *Mesh {
	ca := authztest.NewCA(t, "cluster.local")
	var ws []*workload
	for ns := range Namespaces {
		for svc := range Services {
			name, space := fmt.Sprintf("svc-%d", svc), fmt.Sprintf("ns-%d", ns)
			id := "spiffe://cluster.local/ns/" + space + "/sa/" + name
			ws = append(ws, &workload{id: id, host: name + "." + space + ".svc.cluster.local:8080",
				addr: fmt.Sprintf("10.%d.%d.%d", 20+ns, svc/250, 10+svc), svid: ca.Issue(t, id)})
		}
	}
	rng := rand.New(rand.NewPCG(seed, 15))
	m := &Mesh{rng: rng, replica: replica}
	for i, src := range ws {
		for c := range CallsPerWorkload {
			dst := ws[(i+1+c*7+rng.IntN(3))%len(ws)]
			k := mtls
			switch v := rng.IntN(100); {
			case v < 5:
				k = tlsServerOnly
			case v < 9:
				k = plaintext
			case v < 11:
				k = mismatch
			case v < 12:
				k = unverified
			}
			m.edges = append(m.edges, edge{src: src, dst: dst, kind: k})
		}
	}
	sum := sha256.Sum256([]byte("policy"))
	m.rev = hex.EncodeToString(sum[:])
	srv, err := authz.NewServer(authz.DefaultConfig(), nil, nil, zerolog.Nop(), nil)
	if err != nil {
		t.Fatalf("authz server: %v", err)
	}
	m.srv = srv
	return m
}

func (m *Mesh) uuid() string {
	a, b := m.rng.Uint64(), m.rng.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, a>>16&0xffff, a&0xfff, 0x8000|b>>48&0x3fff, b&0xffffffffffff)
}

// Request is the next CheckRequest, at t, as the destination's sidecar
// sends it.
func (m *Mesh) Request(t time.Time) *authv3.CheckRequest {
	e := m.edges[m.rng.IntN(len(m.edges))]
	method := methods[m.rng.IntN(len(methods))]
	path := Paths[m.rng.IntN(len(Paths))]
	if len(path) > 2 && path[len(path)-2:] == "%d" || len(path) > 7 && path[len(path)-8:] == "%d/items" {
		path = fmt.Sprintf(path, 1+m.rng.IntN(10_000_000))
	}
	trace := fmt.Sprintf("%016x%016x", m.rng.Uint64(), m.rng.Uint64())
	opts := []authztest.Option{
		authztest.Method(method), authztest.Path(path),
		authztest.Header(":authority", e.dst.host),
		authztest.Header("x-request-id", m.uuid()),
		authztest.Header("traceparent", "00-"+trace+fmt.Sprintf("-%016x-01", m.rng.Uint64())),
		func(r *authv3.CheckRequest) {
			a := r.Attributes
			a.Source.Address = authztest.SocketAddress(e.src.addr, uint32(32768+m.rng.IntN(28232)))
			a.Destination.Address = authztest.SocketAddress(e.dst.addr, 8080)
			h := a.Request.Http
			h.Id, h.Host, h.Protocol = fmt.Sprint(m.rng.Uint64()), e.dst.host, "HTTP/2"
			if e.kind != plaintext {
				a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "outbound_.8080_._." + e.dst.host[:len(e.dst.host)-5]}
			}
		},
	}
	switch e.kind {
	case mtls:
		opts = append(opts, authztest.Principals(e.src.id, e.dst.id), authztest.PeerCertificate(e.src.svid),
			authztest.Header("x-forwarded-client-cert", authztest.XFCC(e.dst.svid, e.src.svid)))
	case mismatch:
		other := m.edges[(m.rng.IntN(len(m.edges)))].src
		opts = append(opts, authztest.Principals(e.src.id, e.dst.id), authztest.PeerCertificate(e.src.svid),
			authztest.Header("x-forwarded-client-cert", authztest.XFCC(e.dst.svid, other.svid)))
	case tlsServerOnly:
		opts = append(opts, authztest.Principals("", e.dst.id))
	case unverified:
		opts = append(opts, authztest.Header("x-forwarded-client-cert", "URI="+e.src.id))
	}
	return authztest.NewRequest(opts...)
}

// Record is the next record, at t, as a Check makes it: RecordOf the
// request, the decision (one in twenty denied by the policy, 403 with a
// reason), stamped. Not chained: the writer links it.
func (m *Mesh) Record(t time.Time) *evidence.Record {
	var u ulid.ULID
	if err := u.SetTime(ulid.Timestamp(t)); err != nil {
		panic(err)
	}
	var entropy [10]byte
	for i := range entropy {
		entropy[i] = byte(m.rng.Uint32())
	}
	_ = u.SetEntropy(entropy[:])
	id := u.String()
	rec := m.srv.RecordOf(id, t, m.Request(t))
	rec.Decision = evidence.Decision{Allowed: true, DecisionID: id, PolicyRevision: m.rev}
	if m.rng.IntN(20) == 0 {
		rec.Decision.Allowed, rec.Decision.HTTPStatus, rec.Decision.Reason = false, 403, "not on the allowlist"
	}
	recorder.Stamp(rec, m.replica)
	return rec
}

// Batch is the next n records, starting at t, step apart.
func (m *Mesh) Batch(t time.Time, step time.Duration, n int) []*evidence.Record {
	out := make([]*evidence.Record, n)
	for i := range out {
		out[i] = m.Record(t.Add(time.Duration(i) * step))
	}
	return out
}

// Part is one part of a record's JSON and what it costs: the mean bytes
// the record's JSON (evidence.MarshalJSON) loses without it.
type Part struct {
	Name string
	// PerEdge: the part is the same on every request of an edge (the same
	// source and destination over the same kind of connection), or takes
	// one of a few values; else it is unique per request.
	PerEdge bool
	Bytes   float64
}

// parts removes one part of a copy of a record each.
var parts = []struct {
	name    string
	perEdge bool
	drop    func(*evidence.Record)
}{
	{"id", false, func(r *evidence.Record) { r.ID = "" }},
	{"request_id", false, func(r *evidence.Record) { r.RequestID = "" }},
	{"stream_id", false, func(r *evidence.Record) { r.StreamID = "" }},
	{"trace_id", false, func(r *evidence.Record) { r.TraceID = "" }},
	{"replica", true, func(r *evidence.Record) { r.Replica = "" }},
	{"source.address", true, func(r *evidence.Record) { r.Source.Address = "" }},
	{"source.port", false, func(r *evidence.Record) { r.Source.Port = 0 }},
	{"source.principal", true, func(r *evidence.Record) { r.Source.Principal = "" }},
	{"source.spiffe", true, func(r *evidence.Record) { r.Source.SPIFFE = nil }},
	{"source.certificate", true, func(r *evidence.Record) { r.Source.Certificate = nil }},
	{"destination.address+port", true, func(r *evidence.Record) { r.Destination.Address, r.Destination.Port = "", 0 }},
	{"destination.principal", true, func(r *evidence.Record) { r.Destination.Principal = "" }},
	{"destination.spiffe", true, func(r *evidence.Record) { r.Destination.SPIFFE = nil }},
	{"tls.sni", true, func(r *evidence.Record) { r.TLS.SNI = "" }},
	{"xfcc (raw and elements)", true, func(r *evidence.Record) { r.XFCC = nil }},
	{"request.method", true, func(r *evidence.Record) { r.Request.Method = "" }},
	{"request.host", true, func(r *evidence.Record) { r.Request.Host = "" }},
	{"request.path", false, func(r *evidence.Record) { r.Request.Path = "" }},
	{"request.protocol", true, func(r *evidence.Record) { r.Request.Protocol = "" }},
	{"verdict", true, func(r *evidence.Record) { r.Verdict = "" }},
	{"reasons", true, func(r *evidence.Record) { r.Reasons = nil }},
	{"decision.allowed/http_status/reason", true, func(r *evidence.Record) {
		r.Decision.Allowed, r.Decision.HTTPStatus, r.Decision.Reason = false, 0, ""
	}},
	{"decision.decision_id", false, func(r *evidence.Record) { r.Decision.DecisionID = "" }},
	{"decision.policy_revision", true, func(r *evidence.Record) { r.Decision.PolicyRevision = "" }},
	{"chain (seq, hash, version)", false, func(r *evidence.Record) { r.Chain = evidence.Chain{} }},
}

// Anatomy measures what each part of recs' JSON costs, in the order of
// parts above, and the mean JSON size. The parts overlap with the JSON's
// punctuation only: their sum plus the skeleton ({"source":{},...}) is the
// whole.
func Anatomy(recs []*evidence.Record) (mean float64, out []Part, err error) {
	size := func(r *evidence.Record) (int, error) {
		b, err := evidence.MarshalJSON(r)
		return len(b), err
	}
	out = make([]Part, len(parts))
	for i, p := range parts {
		out[i] = Part{Name: p.name, PerEdge: p.perEdge}
	}
	out = append(out, Part{Name: "time (always present: its key and value)"})
	for _, r := range recs {
		out[len(out)-1].Bytes += float64(len(`"time":"",`) + len(r.Time.Format(time.RFC3339Nano)))
		full, err := size(r)
		if err != nil {
			return 0, nil, err
		}
		mean += float64(full)
		for i, p := range parts {
			c := *r
			if r.XFCC != nil {
				x := *r.XFCC
				c.XFCC = &x
			}
			p.drop(&c)
			n, err := size(&c)
			if err != nil {
				return 0, nil, err
			}
			out[i].Bytes += float64(full - n)
		}
	}
	for i := range out {
		out[i].Bytes /= float64(len(recs))
	}
	return mean / float64(len(recs)), out, nil
}

// Written is what Write wrote.
type Written struct {
	Records   int
	JSONBytes int64 // the records' JSON (evidence.MarshalJSON), chained
	// Sample is the first records written, chained, for Anatomy.
	Sample []*evidence.Record
}

// SampleSize is how many records Written.Sample keeps.
const SampleSize = 10_000

// Write makes n records of m, step apart ending at end, and writes them to
// store through a Recorder of the default batch size in sync durability
// (each batch handed over returns once committed): stamped, chained and
// stored as serve stores them.
func Write(ctx context.Context, store evidence.Writer, m *Mesh, n int, end time.Time, step time.Duration) (Written, error) {
	cfg := recorder.DefaultConfig()
	cfg.Durability = recorder.Sync
	rec, err := recorder.New(ctx, cfg, m.replica, store, zerolog.Nop(), nil)
	if err != nil {
		return Written{}, err
	}
	var w Written
	start := end.Add(-time.Duration(n) * step)
	for w.Records < n {
		batch := m.Batch(start.Add(time.Duration(w.Records)*step), step, min(cfg.BatchSize, n-w.Records))
		if err := rec.RecordBatch(ctx, batch); err != nil {
			rec.Close(ctx)
			return w, err
		}
		// Committed: the recorder is done with them.
		for _, r := range batch {
			b, err := evidence.MarshalJSON(r)
			if err != nil {
				rec.Close(ctx)
				return w, err
			}
			w.JSONBytes += int64(len(b))
			if len(w.Sample) < SampleSize {
				w.Sample = append(w.Sample, r)
			}
		}
		w.Records += len(batch)
	}
	return w, rec.Close(ctx)
}
