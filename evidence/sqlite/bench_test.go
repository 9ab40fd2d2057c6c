package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"github.com/oklog/ulid/v2"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// mesh is a synthetic mesh for benchmarks: 200 workloads in 20
// namespaces, each calling 4 of 50 services (800 edges), mostly over mTLS,
// as Envoy reports them (XFCC on mTLS hops, no peer certificate), with
// request ids as random as Envoy's UUIDs.
type mesh struct {
	rng  *rand.Rand
	head evidence.Link
	seq  int
}

func newMesh(seed uint64) *mesh { return &mesh{rng: rand.New(rand.NewPCG(seed, 1))} }

func workload(i int) string {
	return fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/workload-%d", i%20, i)
}

// memo keeps the mesh's strings, made once: the generator runs beside the
// store in the ingest benchmarks and should cost it little CPU.
var memo sync.Map

func memoized(key string, make func() any) any {
	if v, ok := memo.Load(key); ok {
		return v
	}
	v, _ := memo.LoadOrStore(key, make())
	return v
}

func (m *mesh) peer(principal string, address string) evidence.Peer {
	p := evidence.Peer{Address: address, Port: uint32(1024 + m.rng.IntN(60000)), Principal: principal}
	if principal != "" {
		p.SPIFFE = memoized("spiffe "+principal, func() any {
			var ns, sa string
			fmt.Sscanf(principal, "spiffe://cluster.local/ns/%s", &ns)
			ns, sa, _ = cut(ns, "/sa/")
			return &evidence.SPIFFEID{ID: principal, TrustDomain: "cluster.local", Path: "/ns/" + ns + "/sa/" + sa, Namespace: ns, ServiceAccount: sa}
		}).(*evidence.SPIFFEID)
	}
	return p
}

// names are the mesh's strings, made once.
var names = func() (n struct {
	workload, srcHash [200]string
	host              [50]string
	addr              [5][200]string // 10.<kind>.x.y by source or service number
}) {
	for i := range n.workload {
		n.workload[i], n.srcHash[i] = workload(i), fmt.Sprintf("%064x", i)
	}
	for i := range n.host {
		n.host[i] = fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:8080", i, (i*4)%20)
	}
	for k := range n.addr {
		for i := range n.addr[k] {
			n.addr[k][i] = fmt.Sprintf("10.%d.%d.%d", k, i/250, i%250)
		}
	}
	return n
}()

func cut(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

var benchPaths = []string{"/api/v1/orders", "/api/v1/items/42", "/healthz", "/api/v2/payments", "/grpc.health.v1.Health/Check", "/metrics"}

// record makes the next record of replica at t, chained.
func (m *mesh) record(replica string, t time.Time) *evidence.Record {
	m.seq++
	src := m.rng.IntN(200)
	svc := (src*7 + m.rng.IntN(4)*13) % 50
	dst := names.workload[svc*4]
	host := names.host[svc]
	id := ulid.MustNew(ulid.Timestamp(t), ulid.DefaultEntropy()).String()
	r := &evidence.Record{
		ID: id, Time: t, RequestID: fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", m.rng.Uint32(), m.rng.IntN(1<<16), m.rng.IntN(1<<12), m.rng.IntN(1<<12), m.rng.Uint64()&0xffffffffffff),
		StreamID: fmt.Sprint(m.rng.Uint64()), Replica: replica,
		Request:  evidence.Request{Method: []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}[m.rng.IntN(6)], Host: host, Path: benchPaths[m.rng.IntN(len(benchPaths))], Protocol: "HTTP/2"},
		TLS:      evidence.TLS{SNI: host},
		Decision: evidence.Decision{Allowed: true, DecisionID: id, PolicyRevision: "rev-7"},
	}
	// A server listens on its port: only the client's port is the
	// request's own (a random destination port made one shape per record).
	r.Destination = m.peer(dst, names.addr[1][svc])
	r.Destination.Port = 8443
	switch v := m.rng.IntN(100); {
	case v < 90:
		r.Verdict, r.Reasons = evidence.MTLS, []string{"client certificate presented", "xfcc matches the connection"}
		r.Source = m.peer(names.workload[src], names.addr[0][src])
		r.XFCC = &evidence.XFCC{Raw: "By=" + dst + ";Hash=" + names.srcHash[src] + ";URI=" + names.workload[src],
			Elements: []evidence.XFCCElement{{By: []string{dst}, Hash: names.srcHash[src], URI: []string{names.workload[src]}}}}
	case v < 94:
		r.Verdict, r.Reasons = evidence.MTLSMismatch, []string{"client certificate presented", "xfcc: uri differs from the connection"}
		r.Source = m.peer(names.workload[src], names.addr[0][src])
	case v < 97:
		r.Verdict, r.Reasons = evidence.TLSServerOnly, []string{"no client certificate", "server certificate presented"}
		r.Source = m.peer("", names.addr[2][src])
	case v < 99:
		r.Verdict, r.Reasons = evidence.Plaintext, []string{"no TLS identity on either side"}
		r.Source = m.peer("", names.addr[3][src])
		r.Destination = m.peer("", r.Destination.Address)
		r.Destination.Port = 8080
	default:
		r.Verdict, r.Reasons = evidence.XFCCUnverified, []string{"no client certificate", "xfcc header on a connection without one"}
		r.Source = m.peer("", names.addr[4][src])
		r.XFCC = &evidence.XFCC{Raw: "URI=" + names.workload[src]}
	}
	if m.rng.IntN(20) == 0 {
		r.Decision = evidence.Decision{Allowed: false, HTTPStatus: 403, DecisionID: id, PolicyRevision: "rev-7", Reason: "not on the allowlist"}
	}
	m.head = m.head.Link(r)
	return r
}

// batch makes n records of replica, starting at t, step apart.
func (m *mesh) batch(replica string, t time.Time, step time.Duration, n int) []*evidence.Record {
	out := make([]*evidence.Record, n)
	for i := range out {
		out[i] = m.record(replica, t.Add(time.Duration(i)*step))
	}
	return out
}

var benchBatch = recorder.DefaultConfig().BatchSize

// BenchmarkAppend writes batches of the Recorder's default size (benchBatch
// records, one second of time apart) through Append, with the
// production indexes and rollups, into a store that grows as it runs; and,
// as the baseline of the same run ("bare"), the same records' JSON into a
// table with no index, no other column and no rollup, on the same pragmas:
// what SQLite (modernc) on this machine allows before the store's work.
func BenchmarkAppend(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "bare.db")
		if err := sqlite.CreatePrivate(path); err != nil {
			b.Fatal(err)
		}
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=page_size(16384)&_pragma=cache_size(-65536)"+
			"&_pragma=wal_autocheckpoint(32768)&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		if _, err := db.Exec(`CREATE TABLE bare (body BLOB NOT NULL)`); err != nil {
			b.Fatal(err)
		}
		const chunk = 64
		ins, err := db.Prepare(`INSERT OR FAIL INTO bare (body) VALUES ` + strings.TrimSuffix(strings.Repeat("(?),", chunk), ","))
		if err != nil {
			b.Fatal(err)
		}
		defer ins.Close()
		m := newMesh(1)
		t0 := time.Now().Add(-24 * time.Hour)
		var inAppend time.Duration
		args := make([]any, 0, chunk)
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			batch := m.batch("bench", t0.Add(time.Duration(i)*time.Second), time.Second/time.Duration(benchBatch), benchBatch)
			b.StartTimer()
			start := time.Now()
			tx, err := db.Begin()
			if err != nil {
				b.Fatal(err)
			}
			st := tx.Stmt(ins)
			for _, r := range batch {
				body, err := evidence.MarshalJSON(r)
				if err != nil {
					b.Fatal(err)
				}
				if args = append(args, body); len(args) == chunk {
					if _, err := st.Exec(args...); err != nil {
						b.Fatal(err)
					}
					args = args[:0]
				}
			}
			for _, body := range args {
				if _, err := tx.Exec(`INSERT INTO bare (body) VALUES (?)`, body); err != nil {
					b.Fatal(err)
				}
			}
			args = args[:0]
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			inAppend += time.Since(start)
		}
		b.ReportMetric(float64(b.N*benchBatch)/inAppend.Seconds(), "records/s")
	})
	for _, durable := range []bool{false, true} {
		b.Run(fmt.Sprintf("durable=%v", durable), func(b *testing.B) {
			s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), evidence.Options{Durable: durable})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			m := newMesh(1)
			t0 := time.Now().Add(-24 * time.Hour)
			var inAppend time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				batch := m.batch("bench", t0.Add(time.Duration(i)*time.Second), time.Second/time.Duration(benchBatch), benchBatch)
				b.StartTimer()
				start := time.Now()
				if err := s.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				if durable { // as the recorder does in fsync durability
					if err := s.Sync(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				inAppend += time.Since(start)
			}
			b.ReportMetric(float64(b.N*benchBatch)/inAppend.Seconds(), "records/s")
		})
	}
}
