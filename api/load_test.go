package api

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
	_ "github.com/meshproof/meshproof/evidence/postgres" // postgres:// stores
	_ "github.com/meshproof/meshproof/evidence/sqlite"   // sqlite: stores
)

// authTransport sends the bearer token with every request.
type authTransport struct {
	token string
	next  http.RoundTripper
}

func (a *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return a.next.RoundTrip(r)
}

// TestLoad measures the figures against a large store:
// MESHPROOF_BENCH_API names it, an SQLite path (build one with
// evidence/sqlite's TestQuery10M: MESHPROOF_BENCH_10M=PATH
// MESHPROOF_BENCH_10M_RECORDS=N) or a postgres:// DSN (evidence/postgres's
// BenchmarkQuery10M with MESHPROOF_BENCH_DSN). It serves the API on
// loopback with token auth and the access log on, or, with
// MESHPROOF_BENCH_API_URL, drives a running server instead (such as
// `meshproof serve --role query --store ... --api-token-file F`, its token
// in MESHPROOF_BENCH_API_TOKEN), with MESHPROOF_BENCH_API_CLIENTS
// concurrent clients (default 1, 4 and 16):
//   - /v1/evidence filtered page (a source principal + verdict=mtls +
//     since=24h, 100 rows): p50, p99, max and requests/s;
//   - the tls-check report over 30 days: p50, p99;
//   - export: records/s through HTTP, beside the store's Scan alone.
func TestLoad(t *testing.T) {
	path := os.Getenv("MESHPROOF_BENCH_API")
	if path == "" {
		t.Skip("set MESHPROOF_BENCH_API=PATH of a large SQLite store (or a postgres:// DSN) to measure the API under load")
	}
	dsn := path
	if !strings.HasPrefix(path, "postgres://") && !strings.HasPrefix(path, "postgresql://") {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%v: build a store with MESHPROOF_BENCH_10M=%s go test -run TestQuery10M ./evidence/sqlite/", err, path)
		}
		dsn = "sqlite:" + path
	}
	ctx := context.Background()
	store, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	st, err := store.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d records from %s to %s, %d MB", st.Records, st.Oldest.Format(time.RFC3339), st.Newest.Format(time.RFC3339), st.SizeBytes>>20)

	token := tokenA
	base := os.Getenv("MESHPROOF_BENCH_API_URL")
	if base != "" {
		token = os.Getenv("MESHPROOF_BENCH_API_TOKEN")
		t.Logf("driving the server at %s", base)
	} else {
		srv, err := New(store, Config{Tokens: []string{tokenA}}, zerolog.New(io.Discard).Level(zerolog.InfoLevel))
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(lis)
		defer hs.Close()
		base = "http://" + lis.Addr().String()
	}
	client := &http.Client{Transport: &authTransport{token: token, next: &http.Transport{MaxIdleConnsPerHost: 64}}}

	principals := sourcePrincipals(t, client, base)
	t.Logf("%d source principals seen in the last 24 h", len(principals))
	levels := []int{1, 4, 16}
	if n, err := strconv.Atoi(os.Getenv("MESHPROOF_BENCH_API_CLIENTS")); err == nil && n > 0 {
		levels = []int{n}
	}
	for _, clients := range levels {
		lat, rows, wall := loadLoop(t, client, clients, 2000, func(i int) string {
			return base + "/v1/evidence?verdict=mtls&since=24h&source=" + url.QueryEscape(principals[i%len(principals)])
		})
		t.Logf("filtered page, %2d clients: p50 %s, p99 %s, max %s; %.0f requests/s; %.1f KB per page",
			clients, pct(lat, 50), pct(lat, 99), pct(lat, 100), float64(len(lat))/wall.Seconds(), float64(rows)/float64(len(lat))/1024)
	}
	lat, _, _ := loadLoop(t, client, 1, 50, func(int) string { return base + "/v1/reports/tls-check?since=30d" })
	t.Logf("tls-check over 30 days: p50 %s, p99 %s, max %s over %d requests", pct(lat, 50), pct(lat, 99), pct(lat, 100), len(lat))

	since := "7d"
	if v := os.Getenv("MESHPROOF_BENCH_API_EXPORT_SINCE"); v != "" {
		since = v
	}
	start := time.Now()
	n, bytes := exportCount(t, client, base+"/v1/export?since="+since)
	wall := time.Since(start)
	t.Logf("export since=%s over HTTP: %d records, %d MB in %s: %.0f records/s, %.0f MB/s", since, n, bytes>>20, wall.Round(time.Millisecond),
		float64(n)/wall.Seconds(), float64(bytes)/wall.Seconds()/(1<<20))
	d, _ := params.ParseAgo(since)
	start = time.Now()
	scanned := 0
	if err := store.Scan(ctx, evidence.Filter{Since: time.Now().Add(-d)}, func(*evidence.Record) error { scanned++; return nil }); err != nil {
		t.Fatal(err)
	}
	wall = time.Since(start)
	t.Logf("store Scan alone, same filter: %d records in %s: %.0f records/s", scanned, wall.Round(time.Millisecond), float64(scanned)/wall.Seconds())
}

// loadLoop sends total requests from clients goroutines, each waiting for
// its answer before the next, and returns every latency, the bytes read
// and the wall time.
func loadLoop(t *testing.T, c *http.Client, clients, total int, url func(i int) string) ([]time.Duration, int64, time.Duration) {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	var bytes int64
	var wg sync.WaitGroup
	next := make(chan int, total)
	for i := range total {
		next <- i
	}
	close(next)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequest(http.MethodGet, url(i), nil)
				st := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(st)
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %d", url(i), resp.StatusCode)
					return
				}
				mu.Lock()
				lat, bytes = append(lat, d), bytes+n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, bytes, time.Since(start)
}

// sourcePrincipals lists source principals with mTLS traffic in the last
// day, from the API itself.
func sourcePrincipals(t *testing.T, c *http.Client, base string) []string {
	t.Helper()
	resp := do(t, c, http.MethodGet, base+"/v1/evidence?verdict=mtls&since=24h&limit=1000", "") // the client sends the token
	var p page
	resp.decode(t, &p)
	var out []string
	for _, r := range p.Records {
		out = append(out, r.Source.Principal)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		t.Fatal("no mTLS traffic in the last 24 hours: rebuild the store (its records end when it was built)")
	}
	return out
}

func exportCount(t *testing.T, c *http.Client, url string) (records, bytes int64) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %d", resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		bytes += int64(len(line))
		if err == io.EOF {
			return records, bytes
		}
		if err != nil && err != bufio.ErrBufferFull {
			t.Fatal(err)
		}
		if err == nil {
			records++
		}
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}
