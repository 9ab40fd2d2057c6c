package sqlite_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// ingest appends n records of a synthetic mesh, spread evenly over the span
// ending now, in batches of size. The records are made and chained ahead,
// a block of batches at a time, while the clock is stopped: what it
// returns is the time spent in Append alone, on a machine not also busy
// making records (the Recorder hands batches over made and chained).
func ingest(t *testing.T, s *sqlite.Store, n, size int, span time.Duration) time.Duration {
	t.Helper()
	const block = 100_000 // records made ahead: some hundreds of MB
	m := newMesh(42)
	step := span / time.Duration(n)
	start := time.Now().Add(-span)
	var inAppend time.Duration
	for done := 0; done < n; {
		var batches [][]*evidence.Record
		for i := done; i < min(done+block, n); i += size {
			batches = append(batches, m.batch("bench", start.Add(time.Duration(i)*step), step, min(size, n-i)))
		}
		runtime.GC() // the making's garbage is not the store's
		for _, batch := range batches {
			st := time.Now()
			if err := s.Append(context.Background(), batch); err != nil {
				t.Fatalf("Append: %v", err)
			}
			inAppend += time.Since(st)
			done += len(batch)
		}
		t.Logf("%d records, %.0f records/s in Append so far", done, float64(done)/inAppend.Seconds())
	}
	return inAppend
}

// TestIngest1M writes 1,000,000 records in batches of the Recorder's
// default size and reports the sustained rate and the bytes each record
// takes on disk, twice: the records spread over a day (each minute holds
// some 700 records of 1,000 groups, so nearly every record is a rollup row
// of its own: the hard case), and timed as a mesh producing 50,000 a second
// would time them (20 µs apart). MESHPROOF_BENCH_INGEST=1 runs it.
func TestIngest1M(t *testing.T) {
	if os.Getenv("MESHPROOF_BENCH_INGEST") == "" {
		t.Skip("set MESHPROOF_BENCH_INGEST=1 to write 1,000,000 records")
	}
	const n = 1_000_000
	for _, tc := range []struct {
		name string
		span time.Duration
	}{{"day", 24 * time.Hour}, {"live", n * 20 * time.Microsecond}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ingest.db")
			s, err := sqlite.Open(context.Background(), path, evidence.Options{})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			inAppend := ingest(t, s, n, recorder.DefaultConfig().BatchSize, tc.span)
			wall := time.Since(start)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			size := fileSize(path) + fileSize(path+"-wal")
			t.Logf("ingest (%s): %d records over %s: %.0f records/s in Append, %.0f records/s end to end (making and chaining them included); %.0f bytes/record on disk (%d MB)",
				tc.name, n, tc.span, n/inAppend.Seconds(), n/wall.Seconds(), float64(size)/n, size>>20)
		})
	}
}

// TestQuery10M builds (or reuses) a 10,000,000-record store over 30 days
// and reports the latency of a filtered page (a source principal, a
// verdict, the last 24 hours, 100 rows) and of the rollup aggregate over
// 30 days. MESHPROOF_BENCH_10M=1 builds the store in a temporary
// directory; MESHPROOF_BENCH_10M=PATH builds it at PATH, or reuses it.
func TestQuery10M(t *testing.T) {
	where := os.Getenv("MESHPROOF_BENCH_10M")
	if where == "" {
		t.Skip("set MESHPROOF_BENCH_10M=1 (or =PATH to keep the store) to query 10,000,000 records")
	}
	n := 10_000_000
	if v, err := strconv.Atoi(os.Getenv("MESHPROOF_BENCH_10M_RECORDS")); err == nil {
		n = v
	}
	path := where
	if where == "1" {
		path = filepath.Join(t.TempDir(), "10m.db")
	}
	_, statErr := os.Stat(path)
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if statErr != nil {
		start := time.Now()
		inAppend := ingest(t, s, n, recorder.DefaultConfig().BatchSize, 30*24*time.Hour)
		t.Logf("built %d records in %s (%.0f records/s in Append)", n, time.Since(start).Round(time.Second), float64(n)/inAppend.Seconds())
	}
	st, err := s.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d records from %s to %s, %d MB", st.Records, st.Oldest.Format(time.RFC3339), st.Newest.Format(time.RFC3339), st.SizeBytes>>20)

	now := time.Now()
	var page []time.Duration
	rows := 0
	for i := range 1000 {
		f := evidence.Filter{Source: workload(i % 200), Verdicts: []evidence.Verdict{evidence.MTLS}, Since: now.Add(-24 * time.Hour)}
		qs := time.Now()
		res, err := s.Query(ctx, f, evidence.PageRequest{Limit: 100})
		page = append(page, time.Since(qs))
		if err != nil {
			t.Fatal(err)
		}
		rows += len(res.Records)
	}
	t.Logf("filtered page (principal + verdict + last 24 h, 100 rows): p50 %s, p99 %s, max %s over %d queries (%.1f rows per page)",
		pct(page, 50), pct(page, 99), pct(page, 100), len(page), float64(rows)/float64(len(page)))

	var agg []time.Duration
	groups := 0
	for range 20 {
		as := time.Now()
		g, err := s.Aggregate(ctx, evidence.AggregateQuery{Since: now.Add(-30 * 24 * time.Hour), Until: now})
		agg = append(agg, time.Since(as))
		if err != nil {
			t.Fatal(err)
		}
		groups = len(g)
	}
	t.Logf("aggregate over 30 days: p50 %s, p99 %s over %d runs (%d groups)", pct(agg, 50), pct(agg, 99), len(agg), groups)
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// TestSealAndVerify10M measures what rollup seals cost on a copy of a
// store TestQuery10M built and kept (MESHPROOF_BENCH_10M=PATH): Verify
// (and its rollups' part alone, one pass over every bucket), then the
// first retention, which seals the older half of its 30 days before
// removing their records, then Verify again.
func TestSealAndVerify10M(t *testing.T) {
	where := os.Getenv("MESHPROOF_BENCH_10M")
	if where == "" || where == "1" {
		t.Skip("set MESHPROOF_BENCH_10M=PATH of a store TestQuery10M built and kept")
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if out, err := exec.Command("cp", where, path).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	verify := func(when string) {
		t.Helper()
		start := time.Now()
		reports, err := evidence.Verify(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, rep := range reports {
			if rep.Broken != nil {
				t.Fatalf("%s: %s broken: %+v", when, rep.Replica, *rep.Broken)
			}
		}
		all := time.Since(start)
		start = time.Now()
		buckets := 0
		if err := s.RollupBuckets(ctx, math.MinInt64, math.MaxInt64, func(evidence.RollupBucket) error { buckets++; return nil }); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: Verify %s; reading its %d rollup buckets alone %s", when, all.Round(time.Millisecond), buckets, time.Since(start).Round(time.Millisecond))
	}
	verify(fmt.Sprintf("%d records", st.Records))
	cut := st.Oldest.Add(st.Newest.Sub(st.Oldest) / 2)
	start := time.Now()
	n, err := s.DeleteBefore(ctx, cut, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("retention sealing %s and removing %d records: %s", cut.Sub(st.Oldest).Round(time.Hour), n, time.Since(start).Round(time.Millisecond))
	verify("after retention")
}
