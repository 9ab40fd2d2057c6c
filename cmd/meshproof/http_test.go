package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

const (
	readerToken = "reader-token-0123456789abcdef"
	ingestToken = "ingest-token-0123456789abcdef"
)

// lockedBuffer is a log sink read while the server writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHTTP serves o's HTTP listener (as serve builds it) on a free
// loopback port over a fresh SQLite store, and returns its base URL and
// log.
func startHTTP(t *testing.T, o httpOptions) (string, *lockedBuffer) {
	t.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs := &lockedBuffer{}
	hs, err := o.httpServer(store, prometheus.NewRegistry(), nil, nil, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serveHTTP(hs, lis)
	t.Cleanup(func() { hs.Close() })
	return "http://" + lis.Addr().String(), logs
}

func request(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPprofBehindAuth: with --debug-pprof the profiler is served to the
// API's readers only: /debug/pprof/cmdline shows the command line, the
// store's DSN and its password included. It used to be served to anyone.
func TestPprofBehindAuth(t *testing.T) {
	o := httpOptions{Addr: "127.0.0.1:0", Pprof: true,
		TokenFile: writeFile(t, "tokens", readerToken+"\n"), IngestTokenFile: writeFile(t, "ingest", ingestToken+"\n")}
	base, logs := startHTTP(t, o)
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/debug/pprof/cmdline", "", http.StatusUnauthorized},
		{"/debug/pprof/cmdline", "not-the-token-0123456789abcdef", http.StatusUnauthorized},
		{"/debug/pprof/cmdline", ingestToken, http.StatusForbidden},
		{"/debug/pprof/", "", http.StatusUnauthorized},
		{"/debug/pprof/goroutine?debug=1", "", http.StatusUnauthorized},
		{"/debug/pprof/cmdline", readerToken, http.StatusOK},
		{"/debug/pprof/goroutine?debug=1", readerToken, http.StatusOK},
	} {
		if code, body := request(t, http.MethodGet, base+tc.path, tc.token); code != tc.want {
			t.Errorf("GET %s (token %q): %d %.200s, want %d", tc.path, tc.token, code, body, tc.want)
		}
	}
	if !strings.Contains(logs.String(), `"path":"/debug/pprof/cmdline"`) {
		t.Errorf("profiler requests are not in the access log:\n%s", logs)
	}

	// Without --debug-pprof there is no profiler, whoever asks.
	o.Pprof = false
	base, _ = startHTTP(t, o)
	if code, _ := request(t, http.MethodGet, base+"/debug/pprof/cmdline", readerToken); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/cmdline without --debug-pprof: %d, want 404", code)
	}
}

// TestPprofRefusedOpenOffLoopback: the profiler on an API that
// --api-insecure opens to the network is refused at start; on loopback it
// is served as the API is, and --api-insecure is warned about in the log.
func TestPprofRefusedOpenOffLoopback(t *testing.T) {
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, addr := range []string{"0.0.0.0:8181", ":8181", "203.0.113.7:8181"} {
		o := httpOptions{Addr: addr, Pprof: true, Insecure: true}
		_, err := o.httpServer(store, prometheus.NewRegistry(), nil, nil, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), "--debug-pprof") || !strings.Contains(err.Error(), "password") {
			t.Errorf("--debug-pprof --api-insecure on %s: %v; want a refusal naming --debug-pprof", addr, err)
		}
	}

	base, logs := startHTTP(t, httpOptions{Addr: "127.0.0.1:0", Pprof: true, Insecure: true})
	if code, _ := request(t, http.MethodGet, base+"/debug/pprof/cmdline", ""); code != http.StatusOK {
		t.Errorf("GET /debug/pprof/cmdline on loopback with --api-insecure: %d, want 200", code)
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "--api-insecure: the evidence API is served without authentication") {
		t.Errorf("no warning about --api-insecure in the log:\n%s", logs)
	}
}

// TestIngestCredentials: /logs (OPA decision log uploads) takes the tokens
// of --ingest-token-file and not the readers' of --api-token-file, which
// used to write evidence; ingest tokens read nothing. With no ingest
// credential, /logs takes uploads only from an API open on loopback.
func TestIngestCredentials(t *testing.T) {
	uploads := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	readers, ingest := writeFile(t, "tokens", readerToken+"\n"), writeFile(t, "ingest", "# OPA\n"+ingestToken+"\n")
	type call struct {
		method, path, token string
		want                int
	}
	for _, tc := range []struct {
		name  string
		o     httpOptions
		calls []call
	}{
		{"reader tokens only", httpOptions{TokenFile: readers}, []call{
			{http.MethodPost, "/logs", readerToken, http.StatusForbidden},
			{http.MethodPost, "/logs", "", http.StatusForbidden},
			{http.MethodGet, "/v1/stats", readerToken, http.StatusOK},
		}},
		{"reader and ingest tokens", httpOptions{TokenFile: readers, IngestTokenFile: ingest}, []call{
			{http.MethodPost, "/logs", readerToken, http.StatusForbidden},
			{http.MethodPost, "/logs", "", http.StatusUnauthorized},
			{http.MethodPost, "/logs", ingestToken, http.StatusNoContent},
			{http.MethodGet, "/v1/stats", ingestToken, http.StatusForbidden},
			{http.MethodGet, "/v1/evidence", ingestToken, http.StatusForbidden},
			{http.MethodGet, "/metrics", ingestToken, http.StatusForbidden},
			{http.MethodGet, "/v1/stats", readerToken, http.StatusOK},
			{http.MethodGet, "/metrics", readerToken, http.StatusOK},
		}},
		{"open on loopback", httpOptions{}, []call{
			{http.MethodPost, "/logs", "", http.StatusNoContent},
		}},
		{"--api-insecure on loopback", httpOptions{Insecure: true}, []call{
			{http.MethodPost, "/logs", "", http.StatusNoContent},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Addr, o.logs = "127.0.0.1:0", uploads
			base, logs := startHTTP(t, o)
			for _, c := range tc.calls {
				code, body := request(t, c.method, base+c.path, c.token)
				if code != c.want {
					t.Errorf("%s %s (token %q): %d %s, want %d", c.method, c.path, c.token, code, body, c.want)
				}
				if c.path == "/logs" && code == http.StatusForbidden && !strings.Contains(body, "--ingest-token-file") {
					t.Errorf("%s %s (token %q): %s, want it to name --ingest-token-file", c.method, c.path, c.token, body)
				}
			}
			if strings.Contains(logs.String(), readerToken) || strings.Contains(logs.String(), ingestToken) {
				t.Errorf("a token is in the log:\n%s", logs)
			}
		})
	}
}

// TestIngestFlags: the ingest flags are serve's (the query role writes no
// evidence and refuses them), and --ingest-allow-spiffe needs client
// certificates; a bad ingest token file is an error naming it.
func TestIngestFlags(t *testing.T) {
	o := defaultServeOptions()
	fs := newFlagSet("serve")
	o.flags(fs)
	if err := parseOptions(fs, []string{"--role", "query", "--ingest-token-file", "t", "--ingest-allow-spiffe", "spiffe://td/ns/opa"}); err != nil {
		t.Fatal(err)
	}
	if err := o.checkRole(fs); err == nil || !strings.Contains(err.Error(), "--ingest-token-file") || !strings.Contains(err.Error(), "--ingest-allow-spiffe") {
		t.Errorf("--role query with the ingest flags: %v", err)
	}

	o, err := parseServe(t, "--ingest-allow-spiffe", "spiffe://td/ns/opa", "--ingest-allow-spiffe", "spiffe://td/ns/gatekeeper")
	if err != nil {
		t.Fatal(err)
	}
	if len(o.HTTP.IngestAllowSPIFFE) != 2 {
		t.Errorf("--ingest-allow-spiffe twice: %q", o.HTTP.IngestAllowSPIFFE)
	}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "ingest-allow-spiffe needs http-client-ca") {
		t.Errorf("--ingest-allow-spiffe without --http-client-ca: %v", err)
	}

	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bad := writeFile(t, "ingest", "short-secret\n")
	h := httpOptions{Addr: "127.0.0.1:0", IngestTokenFile: bad}
	if _, err := h.httpServer(store, prometheus.NewRegistry(), nil, nil, zerolog.Nop()); err == nil ||
		!strings.Contains(err.Error(), "ingest token file "+bad+", line 1") || strings.Contains(err.Error(), "short-secret") {
		t.Errorf("a short ingest token: %v", err)
	}
	same := writeFile(t, "same", readerToken+"\n")
	h = httpOptions{Addr: "127.0.0.1:0", TokenFile: same, IngestTokenFile: same}
	if _, err := h.httpServer(store, prometheus.NewRegistry(), nil, nil, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "give each its own") {
		t.Errorf("one file for both roles: %v", err)
	}
}
