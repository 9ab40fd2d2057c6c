package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

const token = "0123456789abcdef0123456789abcdef"

// serve runs the real API over a SQLite store holding fx, with a token.
func serve(t *testing.T, fx *evidencetest.Fixture) string {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	for _, b := range fx.Batches {
		if err := store.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := api.New(store, api.Config{Tokens: []string{token}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newClient(t *testing.T, url string, opts Options) *Client {
	t.Helper()
	c, err := New(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClient(t *testing.T) {
	fx := evidencetest.Varied(90, 25, 7)
	url := serve(t, fx)
	c := newClient(t, url+"/", Options{TokenFile: writeFile(t, "# token\n\n  "+token+"  \n")})
	ctx := context.Background()
	window := Filter{Since: Time(evidencetest.Base), Until: Time(evidencetest.Base.Add(6 * 24 * time.Hour))}
	all := evidencetest.IDs(evidencetest.NewestFirst(fx.Records, evidence.Filter{}))

	var paged []string
	cursor := ""
	for range 100 {
		p, err := c.List(ctx, window, cursor, 7)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, evidencetest.IDs(p.Records)...)
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if !slices.Equal(paged, all) {
		t.Errorf("List, 7 at a time: %d ids, want the %d newest first", len(paged), len(all))
	}
	var exported, lines []string
	if err := c.Export(ctx, window, func(r *evidence.Record) error { exported = append(exported, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.ExportLines(ctx, window, func(l []byte) error { lines = append(lines, string(l)); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(exported, all) || len(lines) != len(all) || !strings.Contains(lines[0], `"id":"`+all[0]+`"`) {
		t.Errorf("Export: %d ids, %d lines, want %d", len(exported), len(lines), len(all))
	}
	stop := errors.New("enough")
	if err := c.Export(ctx, window, func(*evidence.Record) error { return stop }); err != stop {
		t.Errorf("Export stops with fn's error: %v", err)
	}

	yes, no := true, false
	for _, tt := range []struct {
		name   string
		filter Filter
		oracle evidence.Filter
	}{
		{"not mtls", Filter{MTLS: &no}, evidence.Filter{NotVerdicts: []evidence.Verdict{evidence.MTLS}}},
		{"mtls", Filter{MTLS: &yes}, evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLS}}},
		{"verdicts, denied", Filter{Verdicts: []evidence.Verdict{evidence.Plaintext, evidence.XFCCUnverified}, Allowed: &no},
			evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext, evidence.XFCCUnverified}, Allowed: &no}},
		{"hostile source prefix, path", Filter{SourcePrefix: "'; DROP", PathPrefix: "/api/v1"},
			evidence.Filter{SourcePrefix: "'; DROP", PathPrefix: "/api/v1"}},
		{"host, method, namespace", Filter{Host: "100%_sure.example", Method: "POST", Namespace: "payments"},
			evidence.Filter{Host: "100%_sure.example", Method: "POST", Namespace: "payments"}},
		{"destination, trust domain, replica", Filter{Destination: "spiffe://cluster.local/ns/payments/sa/ledger", TrustDomain: "cluster.local", Replica: "replica-b"},
			evidence.Filter{Destination: "spiffe://cluster.local/ns/payments/sa/ledger", TrustDomain: "cluster.local", Replica: "replica-b"}},
		{"request id", Filter{RequestID: "req-shared", DestinationPrefix: "spiffe://"},
			evidence.Filter{RequestID: "req-shared", DestinationPrefix: "spiffe://"}},
		{"source", Filter{Source: "spiffe://cluster.local/ns/shop/sa/frontend"}, evidence.Filter{Source: "spiffe://cluster.local/ns/shop/sa/frontend"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			if err := c.Export(ctx, tt.filter, func(r *evidence.Record) error { got = append(got, r.ID); return nil }); err != nil {
				t.Fatal(err)
			}
			want := evidencetest.IDs(evidencetest.NewestFirst(fx.Records, tt.oracle))
			if !slices.Equal(got, want) || len(want) == 0 {
				t.Errorf("got %d ids, want %d: %v", len(got), len(want), tt.filter.Values())
			}
		})
	}

	r, err := c.Get(ctx, all[3])
	if err != nil || r.ID != all[3] || r.Chain.Hash == "" {
		t.Errorf("Get: %+v, %v", r, err)
	}
	var ae *Error
	if _, err := c.Get(ctx, "01NOSUCH/..%2F"); !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Message != "no such record" {
		t.Errorf("Get unknown: %v", err)
	}

	since, until := Time(evidencetest.Base), Time(evidencetest.Base.Add(6*24*time.Hour))
	tc, err := c.TLSCheck(ctx, since, until, "", "")
	if err != nil || len(tc.Rows) == 0 || !tc.Since.Equal(evidencetest.Base) {
		t.Errorf("TLSCheck: %+v, %v", tc, err)
	}
	var total int64
	for _, row := range tc.Rows {
		total += row.Total
	}
	sr, err := c.StrictReadiness(ctx, "ledger.payments:8443", since, until)
	if err != nil || sr.Ready || sr.Total == 0 || len(sr.Blocking) == 0 || sr.Blocking[0].ExampleID == "" {
		t.Errorf("StrictReadiness: %+v, %v", sr, err)
	}
	st, err := c.Stats(ctx, "")
	if err != nil || st.Records != 90 || total != 90 || len(st.Replicas) != 3 {
		t.Errorf("Stats: %+v, %v; tls-check total %d", st, err, total)
	}
}

func TestErrors(t *testing.T) {
	url := serve(t, evidencetest.Varied(3, 3, 1))
	ctx := context.Background()
	c := newClient(t, url, Options{Token: token})
	var ae *Error
	_, err := c.List(ctx, Filter{Source: "a\x00b"}, "", 0)
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Parameter != "source" || err.Error() != "source: contains a NUL byte (HTTP 400)" {
		t.Errorf("NUL in a filter: %v", err)
	}
	_, err = c.List(ctx, Filter{}, "", 5000)
	if !errors.As(err, &ae) || ae.Parameter != "limit" {
		t.Errorf("limit 5000: %v", err)
	}
	_, err = c.StrictReadiness(ctx, "", "", "")
	if !errors.As(err, &ae) || ae.Parameter != "destination" {
		t.Errorf("no destination: %v", err)
	}
	_, err = newClient(t, url, Options{Token: "wrong-token-wrong-token"}).Stats(ctx, "")
	if !errors.As(err, &ae) || ae.StatusCode != 401 || !strings.Contains(err.Error(), "not accepted (HTTP 401)") {
		t.Errorf("wrong token: %v", err)
	}
	_, err = newClient(t, url, Options{}).Stats(ctx, "")
	if !errors.As(err, &ae) || ae.StatusCode != 401 {
		t.Errorf("no token: %v", err)
	}

	down := httptest.NewServer(nil)
	down.Close()
	var ue *UnreachableError
	if _, err := newClient(t, down.URL, Options{}).Stats(ctx, ""); !errors.As(err, &ue) || ue.URL != down.URL ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("server down: %v", err)
	}

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer slow.Close()
	if _, err := newClient(t, slow.URL, Options{Timeout: 50 * time.Millisecond}).Stats(ctx, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow server: %v", err)
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	if _, err := newClient(t, proxy.URL, Options{}).Stats(ctx, ""); !errors.As(err, &ae) || ae.StatusCode != 502 ||
		!strings.Contains(err.Error(), "not a meshproof API answer: <html>bad gateway</html>") {
		t.Errorf("a proxy's answer: %v", err)
	}
}

// TestExportCutShort: a stream the server aborts is an error, never taken
// for a whole one. (The real API aborts when its store fails mid-stream,
// which a test cannot make the store do on cue.)
func TestExportCutShort(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Write([]byte(`{"id":"a"}` + "\n" + `{"id":"b"}` + "\n"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer ts.Close()
	var got []string
	err := newClient(t, ts.URL, Options{}).Export(context.Background(), Filter{}, func(r *evidence.Record) error {
		got = append(got, r.ID)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "export cut short") || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("got %v, %v", got, err)
	}
}

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		url  string
		opts Options
		want string
	}{
		{"127.0.0.1:8181", Options{}, "want http://host:port"},
		{"ftp://x", Options{}, "want http://host:port"},
		{"http://x?a=b", Options{}, "no query"},
		{"http://x", Options{TokenFile: filepath.Join(t.TempDir(), "none")}, "token file: open "},
		{"http://x", Options{TokenFile: writeFile(t, "# only a comment\n\n")}, "no token in it"},
		{"http://x", Options{TokenFile: writeFile(t, "two words\n")}, "holds a space"},
		{"http://x", Options{CAFile: "ca.pem"}, "needs an https:// URL"},
		{"https://x", Options{CertFile: "c.pem"}, "go together"},
		{"https://x", Options{CAFile: writeFile(t, "not PEM")}, "no PEM certificate"},
		{"https://x", Options{CertFile: writeFile(t, "x"), KeyFile: writeFile(t, "y")}, "client certificate "},
	} {
		if _, err := New(tt.url, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q, %+v): %v, want %q", tt.url, tt.opts, err, tt.want)
		}
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"90s", now.Add(-90 * time.Second)},
		{"1h", now.Add(-time.Hour)},
		{"7d", now.Add(-7 * 24 * time.Hour)},
		{"1d12h", now.Add(-36 * time.Hour)},
		{"2025-03-03T10:00:00Z", time.Date(2025, 3, 3, 10, 0, 0, 0, time.UTC)},
		{"2025-03-03T10:00:00.5+01:00", time.Date(2025, 3, 3, 9, 0, 0, 5e8, time.UTC)},
	} {
		if got, err := ParseTime(tt.in, now); err != nil || !got.Equal(tt.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "-1h", "d", "1d-1h", "yesterday", "1x", "99999999999999d"} {
		if _, err := ParseTime(bad, now); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}
