package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// ingest appends n records of a synthetic mesh, spread evenly over the span
// ending now, in batches of size, with the records made and chained by a
// second goroutine as the Recorder's writer would hand them over. It
// returns the time spent in Append.
func ingest(t *testing.T, s *sqlite.Store, n, size int, span time.Duration) time.Duration {
	t.Helper()
	batches := make(chan []*evidence.Record, 4)
	go func() {
		defer close(batches)
		m := newMesh(42)
		step := span / time.Duration(n)
		start := time.Now().Add(-span)
		for i := 0; i < n; i += size {
			batches <- m.batch("bench", start.Add(time.Duration(i)*step), step, min(size, n-i))
		}
	}()
	var inAppend time.Duration
	done := 0
	for batch := range batches {
		st := time.Now()
		if err := s.Append(context.Background(), batch); err != nil {
			t.Fatalf("Append: %v", err)
		}
		inAppend += time.Since(st)
		if done += len(batch); done%(n/10) < size {
			t.Logf("%d records, %.0f records/s in Append so far", done, float64(done)/inAppend.Seconds())
		}
	}
	return inAppend
}

// TestIngest1M writes 1,000,000 records in batches of 1000 and reports the
// sustained rate and the bytes each record takes on disk.
// MESHPROOF_BENCH_INGEST=1 runs it.
func TestIngest1M(t *testing.T) {
	if os.Getenv("MESHPROOF_BENCH_INGEST") == "" {
		t.Skip("set MESHPROOF_BENCH_INGEST=1 to write 1,000,000 records")
	}
	const n = 1_000_000
	path := filepath.Join(t.TempDir(), "ingest.db")
	s, err := sqlite.Open(context.Background(), path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	inAppend := ingest(t, s, n, 1000, 24*time.Hour)
	wall := time.Since(start)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	size := fileSize(path) + fileSize(path+"-wal")
	t.Logf("ingest: %d records in %s: %.0f records/s end to end (making and chaining them on another goroutine), %.0f records/s in Append; %.0f bytes/record on disk (%d MB)",
		n, wall.Round(time.Millisecond), n/wall.Seconds(), n/inAppend.Seconds(), float64(size)/n, size>>20)
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
		inAppend := ingest(t, s, n, 10_000, 30*24*time.Hour)
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
		res, err := s.Query(ctx, f, evidence.Page{Limit: 100})
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
