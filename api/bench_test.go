package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// benchStore is one store of 100,000 synthetic records over 30 days for
// every benchmark of a run (writing it takes a while).
var benchStore struct {
	once sync.Once
	s    *sqlite.Store
	now  time.Time
	err  error
}

func openBenchStore(b *testing.B) (*sqlite.Store, time.Time) {
	benchStore.once.Do(func() {
		dir, err := benchDir()
		if err != nil {
			benchStore.err = err
			return
		}
		benchStore.now = time.Now().Truncate(time.Minute)
		benchStore.s, benchStore.err = sqlite.Open(context.Background(), dir+"/bench.db", evidence.Options{})
		if benchStore.err == nil {
			appendChained(b, benchStore.s, meshRecords(100_000, benchStore.now, 30*24*time.Hour, 9))
		}
	})
	if benchStore.err != nil {
		b.Fatal(benchStore.err)
	}
	return benchStore.s, benchStore.now
}

// benchDir is a directory that outlives a single benchmark (b.TempDir is
// removed after each); TestMain removes it.
var benchDir = sync.OnceValues(func() (string, error) {
	return os.MkdirTemp("", "meshproof-api-bench-")
})

// benchServer serves the API over s on loopback, with token auth and the
// access log on, as in production.
func benchServer(b *testing.B, s evidence.Store) (*httptest.Server, *http.Client) {
	srv, err := New(s, Config{Tokens: []string{tokenA}}, zerolog.New(io.Discard).Level(zerolog.InfoLevel))
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(ts.Close)
	return ts, ts.Client()
}

func benchGet(b *testing.B, c *http.Client, url string) int64 {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tokenA)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return n
}

// BenchmarkListFiltered is /v1/evidence's filtered page (a source
// principal, a verdict, the last 24 hours, 100 rows) end to end over
// loopback, beside the store's Query alone: the difference is the API's
// cost (HTTP, parameters, auth, JSON, access log).
func BenchmarkListFiltered(b *testing.B) {
	s, now := openBenchStore(b)
	b.Run("store", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			f := evidence.Filter{Source: workloadID(i % 100), Verdicts: []evidence.Verdict{evidence.MTLS}, Since: now.Add(-24 * time.Hour)}
			if _, err := s.Query(context.Background(), f, evidence.PageRequest{Limit: 100}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("http", func(b *testing.B) {
		ts, c := benchServer(b, s)
		var bytes int64
		for i := 0; b.Loop(); i++ {
			bytes += benchGet(b, c, ts.URL+"/v1/evidence?verdict=mtls&since=24h&source="+workloadID(i%100))
		}
		b.ReportMetric(float64(bytes)/float64(b.N), "resp-bytes/op")
	})
}

// BenchmarkTLSCheck is the tls-check report over 30 days end to end,
// beside the store's Aggregate alone.
func BenchmarkTLSCheck(b *testing.B) {
	s, now := openBenchStore(b)
	b.Run("aggregate", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Aggregate(context.Background(), evidence.AggregateQuery{Since: now.Add(-30 * 24 * time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("report", func(b *testing.B) {
		for b.Loop() {
			if _, err := report.TLSCheck(context.Background(), s, report.Query{Since: now.Add(-30 * 24 * time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("http", func(b *testing.B) {
		ts, c := benchServer(b, s)
		for b.Loop() {
			benchGet(b, c, ts.URL+"/v1/reports/tls-check?since=30d")
		}
	})
}

// BenchmarkExport streams the newest 10,000 records or so per op as
// NDJSON, beside the store's Scan alone.
func BenchmarkExport(b *testing.B) {
	s, now := openBenchStore(b)
	f := evidence.Filter{Since: now.Add(-30 * 24 * time.Hour / 10)}
	records := 0
	if err := s.Scan(context.Background(), f, func(*evidence.Record) error { records++; return nil }); err != nil {
		b.Fatal(err)
	}
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			if err := s.Scan(context.Background(), f, func(*evidence.Record) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("http", func(b *testing.B) {
		ts, c := benchServer(b, s)
		for b.Loop() {
			benchGet(b, c, ts.URL+"/v1/export?since="+f.Since.Format(time.RFC3339Nano))
		}
		b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "records/s")
	})
}

// BenchmarkCount is `meshproof query --count` as the client runs it, over
// the 100,000 records of the bench store: the server's count
// (/v1/evidence/count) beside the export stream whose lines were counted
// before it, for every record and for a filtered share of them (not mtls,
// the last 10 days).
func BenchmarkCount(b *testing.B) {
	s, now := openBenchStore(b)
	ts, _ := benchServer(b, s)
	c, err := client.New(ts.URL, client.Options{Token: tokenA})
	if err != nil {
		b.Fatal(err)
	}
	no := false
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		f    client.Filter
	}{
		{"all", client.Filter{}},
		{"filtered", client.Filter{MTLS: &no, Since: client.Time(now.Add(-10 * 24 * time.Hour))}},
	} {
		want, err := c.Count(ctx, tc.f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name+"/count", func(b *testing.B) {
			for b.Loop() {
				if n, err := c.Count(ctx, tc.f); err != nil || n != want {
					b.Fatalf("Count = %d, %v; want %d", n, err, want)
				}
			}
			b.ReportMetric(float64(want), "records")
		})
		b.Run(tc.name+"/export-lines", func(b *testing.B) {
			for b.Loop() {
				var n int64
				if err := c.ExportLines(ctx, tc.f, func([]byte) error { n++; return nil }); err != nil || n != want {
					b.Fatalf("export lines = %d, %v; want %d", n, err, want)
				}
			}
			b.ReportMetric(float64(want), "records")
		})
	}
}
