package postgres_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// BenchmarkAppend appends batches of ingestBatch records (made and chained outside
// the timed part) with the production indexes and rollups ("store"), and,
// as the baseline of the same run, COPYs the same rows (the store's own
// encoding of each record, made in the timed part as Append makes it)
// into a table with no index, no partition and no rollup ("bare-copy"):
// what the machine allows before the store's work. The records are
// realistic traffic (package traffic: 300 edges, a certificate per
// workload) or the varied records of benchGen, whose certificates are
// drawn anew for every record (no two mTLS records share a shape: the
// worst case of interning).
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	for _, kind := range []string{"traffic", "varied"} {
		b.Run(kind, func(b *testing.B) {
			s := open(b, postgrestest.DSN(b))
			// A sub-benchmark runs several times (b.N grows): its chain goes on.
			store, bare := newAppendGen(b, kind), newAppendGen(b, kind)
			b.Run("store", func(b *testing.B) {
				appendBench(b, store, func(batch []*evidence.Record) error { return s.Append(ctx, batch) })
			})
			b.Run("bare-copy", func(b *testing.B) {
				if _, err := s.Pool().Exec(ctx, "CREATE TABLE IF NOT EXISTS bare (LIKE records INCLUDING STORAGE)"); err != nil {
					b.Fatal(err)
				}
				appendBench(b, bare, func(batch []*evidence.Record) error { return s.CopyBare(ctx, "bare", batch) })
			})
		})
	}
}

// appendGen makes the chained batches of BenchmarkAppend.
type appendGen struct {
	batch func() []*evidence.Record
}

func newAppendGen(b *testing.B, kind string) *appendGen {
	start := time.Now().Add(-time.Hour).UTC()
	if kind == "varied" {
		g := newBenchGen(1, start, 10*time.Microsecond)
		return &appendGen{batch: func() []*evidence.Record { return g.batch("bench", &g.head, ingestBatch) }}
	}
	m := traffic.New(b, 1, "bench")
	var head evidence.Link
	at := start
	return &appendGen{batch: func() []*evidence.Record {
		recs := m.Batch(at, 10*time.Microsecond, ingestBatch)
		at = at.Add(time.Duration(ingestBatch) * 10 * time.Microsecond)
		head = evidencetest.Link(head, recs...)
		return recs
	}}
}

func appendBench(b *testing.B, gen *appendGen, write func([]*evidence.Record) error) {
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		batch := gen.batch()
		b.StartTimer()
		if err := write(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*ingestBatch)/b.Elapsed().Seconds(), "records/s")
}

// benchDSN is the database a large benchmark loads: MESHPROOF_BENCH_DSN
// (kept afterwards, and reused when it holds the records already) or a
// fresh one on the test cluster.
func benchDSN(b *testing.B) string {
	if dsn := os.Getenv("MESHPROOF_BENCH_DSN"); dsn != "" {
		return dsn
	}
	return postgrestest.DSN(b)
}

// load appends n records at a steady rate ending now, from writers
// replicas at once, in batches of ingestBatch, and returns how long the appends
// took (records are made outside the timing).
func load(b *testing.B, s *postgres.Store, n int, span time.Duration, writers int) time.Duration {
	ctx := context.Background()
	step := span / time.Duration(n)
	var mu sync.Mutex
	var busy time.Duration
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			// Each writer takes every writers-th time slot.
			gen := newBenchGen(uint64(w+1), time.Now().Add(-span).Add(time.Duration(w)*step).UTC(), step*time.Duration(writers))
			var head evidence.Link
			var mine time.Duration
			for done := 0; done < n/writers; done += ingestBatch {
				batch := gen.batch("replica-"+string(rune('a'+w)), &head, min(ingestBatch, n/writers-done))
				t0 := time.Now()
				if err := s.Append(ctx, batch); err != nil {
					errs <- err
					return
				}
				mine += time.Since(t0)
			}
			mu.Lock()
			busy = max(busy, mine)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return busy
}

// loadTraffic appends n records of package traffic's mesh ending now, as
// load does (writers replicas at once, each its own mesh).
func loadTraffic(b *testing.B, s *postgres.Store, n int, span time.Duration, writers int) {
	ctx := context.Background()
	step := span / time.Duration(n)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		m := traffic.New(b, uint64(w+1), "replica-"+string(rune('a'+w)))
		wg.Go(func() {
			at := time.Now().Add(-span).Add(time.Duration(w) * step).UTC()
			var head evidence.Link
			for done := 0; done < n/writers; done += ingestBatch {
				k := min(ingestBatch, n/writers-done)
				batch := m.Batch(at, step*time.Duration(writers), k)
				at = at.Add(time.Duration(k*writers) * step)
				head = evidencetest.Link(head, batch...)
				if err := s.Append(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// ingestBatch is the batch of the ingest benchmarks: the Recorder's cap,
// what a writer under sustained load commits.
var ingestBatch = recorder.DefaultConfig().BatchSize

// BenchmarkIngest1M writes 1,000,000 records (one writer, batches of ingestBatch)
// and reports records/s and bytes per record on disk. Run it with
// MESHPROOF_BENCH_INGEST=1 and -benchtime 1x (see DEVELOPERS.md).
func BenchmarkIngest1M(b *testing.B) {
	if os.Getenv("MESHPROOF_BENCH_INGEST") != "1" {
		b.Skip("set MESHPROOF_BENCH_INGEST=1 to write 1,000,000 records")
	}
	const n = 1_000_000
	ctx := context.Background()
	s := open(b, benchDSN(b))
	for range b.N {
		start := time.Now()
		busy := load(b, s, n, 3*time.Hour, 1)
		wall := time.Since(start)
		if _, err := s.Pool().Exec(ctx, "CHECKPOINT"); err != nil {
			b.Fatal(err)
		}
		st, err := s.Stats(ctx, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(n/busy.Seconds(), "records/s")
		b.ReportMetric(n/wall.Seconds(), "records/s-wall")
		b.ReportMetric(float64(st.SizeBytes)/float64(st.Records), "bytes/record")
		b.Logf("%d records in %s appending (%s with making them); %d MB on disk", st.Records, busy.Round(time.Millisecond), wall.Round(time.Millisecond), st.SizeBytes>>20)
	}
}

// BenchmarkIngestReplicas is a fleet's ingest into one PostgreSQL: replicas
// writers, each with a Store of its own (its own connection pool, as a
// separate meshproof process has) and its own chain, append 300,000 records
// between them at once, batches of ingestBatch. One writer alone ("replicas=1") is
// the baseline of the same run; the figures are records/s in all and per
// replica, and bytes per record on disk. Run it with
// MESHPROOF_BENCH_INGEST=1 and -benchtime 1x (see DEVELOPERS.md).
func BenchmarkIngestReplicas(b *testing.B) {
	if os.Getenv("MESHPROOF_BENCH_INGEST") != "1" {
		b.Skip("set MESHPROOF_BENCH_INGEST=1 to write 300,000 records per run")
	}
	const n = 300_000
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			ctx := context.Background()
			dsn := postgrestest.DSN(b) // a fresh database for each run
			stores := make([]*postgres.Store, replicas)
			for i := range stores {
				stores[i] = open(b, dsn)
			}
			for range b.N {
				wall := fleetLoad(b, stores, n)
				if _, err := stores[0].Pool().Exec(ctx, "CHECKPOINT"); err != nil {
					b.Fatal(err)
				}
				st, err := stores[0].Stats(ctx, time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(n/wall.Seconds(), "records/s")
				b.ReportMetric(n/wall.Seconds()/float64(replicas), "records/s/replica")
				b.ReportMetric(float64(st.SizeBytes)/float64(st.Records), "bytes/record")
			}
		})
	}
}

// fleetLoad appends n records, the same timeline shared by one writer per
// store (each its own replica and chain), all at once, and returns the wall
// time from the first append to the last commit. Batches are made before
// the clock starts.
func fleetLoad(b *testing.B, stores []*postgres.Store, n int) time.Duration {
	b.Helper()
	span := time.Hour
	step := span / time.Duration(n)
	per := n / len(stores)
	batches := make([][][]*evidence.Record, len(stores))
	for w := range stores {
		gen := newBenchGen(uint64(w+1), time.Now().Add(-span).Add(time.Duration(w)*step).UTC(), step*time.Duration(len(stores)))
		gen.idBase = int64(w+1) * 1e15
		replica := fmt.Sprintf("fleet-%d", w)
		var head evidence.Link
		for done := 0; done < per; done += ingestBatch {
			batches[w] = append(batches[w], gen.batch(replica, &head, min(ingestBatch, per-done)))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(stores))
	start := time.Now()
	for w, s := range stores {
		wg.Go(func() {
			for _, batch := range batches[w] {
				if err := s.Append(context.Background(), batch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return wall
}

// BenchmarkQuery10M measures, with 10,000,000 records of realistic
// traffic (package traffic: 300 edges) over 30 days from two replicas, a
// filtered page (one source principal, mtls or the rare mtls_mismatch, the
// last 24 hours, 100 records), the 30-day rollup aggregate, and request id
// lookups: p50 and p99. (benchGen's varied records, drawn with a new
// certificate each, would make every mTLS record a shape of its own: 9
// million shapes, the worst case of interning, not a mesh.) Run it
// with MESHPROOF_BENCH_10M=1 and -benchtime 1x (see DEVELOPERS.md).
func BenchmarkQuery10M(b *testing.B) {
	if os.Getenv("MESHPROOF_BENCH_10M") != "1" {
		b.Skip("set MESHPROOF_BENCH_10M=1 to load 10,000,000 records and query them")
	}
	const n = 10_000_000
	ctx := context.Background()
	s := open(b, benchDSN(b))
	st, err := s.Stats(ctx, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	if st.Records < n {
		start := time.Now()
		loadTraffic(b, s, n-int(st.Records), 30*24*time.Hour, 2)
		b.Logf("loaded %d records in %s", n-st.Records, time.Since(start).Round(time.Second))
		if _, err := s.Pool().Exec(ctx, "VACUUM ANALYZE"); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		var pages, aggs []time.Duration
		var rows, groups int
		for i := range 200 {
			// The common verdict and the rarest one a principal can have.
			v := []evidence.Verdict{evidence.MTLS, evidence.MTLSMismatch}[i%2]
			src := fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/svc-%d", i%traffic.Namespaces, i/traffic.Namespaces%traffic.Services)
			f := evidence.Filter{Source: src, Verdicts: []evidence.Verdict{v},
				Since: time.Now().Add(-24 * time.Hour)}
			t0 := time.Now()
			res, err := s.Query(ctx, f, evidence.PageRequest{Limit: 100})
			pages = append(pages, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			rows += len(res.Records)
		}
		for range 20 {
			t0 := time.Now()
			gs, err := s.Aggregate(ctx, evidence.AggregateQuery{Since: time.Now().Add(-30 * 24 * time.Hour)})
			aggs = append(aggs, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			groups = len(gs)
		}
		// Request ids as a person looks one up: one seen somewhere in the
		// 30 days (taken from a page ending at a random time) or one never
		// stored.
		var lookups []time.Duration
		found := 0
		for i := range 200 {
			id := uuid.NewString()
			if i%2 == 0 {
				until := time.Now().Add(-time.Duration(i) * 30 * 24 * time.Hour / 200)
				res, err := s.Query(ctx, evidence.Filter{Until: until}, evidence.PageRequest{Limit: 1})
				if err != nil || len(res.Records) == 0 {
					b.Fatalf("a record before %s: %v", until, err)
				}
				id = res.Records[0].RequestID
			}
			t0 := time.Now()
			res, err := s.Query(ctx, evidence.Filter{RequestID: id}, evidence.PageRequest{Limit: 100})
			lookups = append(lookups, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			found += len(res.Records)
		}
		report(b, "page", pages)
		report(b, "aggregate", aggs)
		report(b, "request", lookups)
		b.Logf("pages: %d rows in 200 queries; aggregate: %d groups; request ids: %d records for 100 stored and 100 never stored", rows, groups, found)
	}
}

// report adds the p50 and p99 of ds in milliseconds.
func report(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	at := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), "ms-p50-"+what)
	b.ReportMetric(at(0.99), "ms-p99-"+what)
}
