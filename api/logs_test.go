package api

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const ingestA = "i-ingest-token-0123456789abcdef"

// TestLogsMount: /logs is served only when Config.Logs is set, behind the
// uploaders' authentication, with every method passed on to the handler
// (it takes POST, not the API's GET).
func TestLogsMount(t *testing.T) {
	var calls atomic.Int32
	var method atomic.Value
	logs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		method.Store(r.Method)
		w.WriteHeader(http.StatusNoContent)
	})
	ts := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}, IngestTokens: []string{ingestA}, Logs: logs}, time.Time{})
	tests := []struct {
		name   string
		method string
		token  string
		status int
		called bool
	}{
		{name: "no token", method: http.MethodPost, status: http.StatusUnauthorized},
		{name: "unknown token", method: http.MethodPost, token: strings.Repeat("x", 32), status: http.StatusUnauthorized},
		{name: "a reader's token", method: http.MethodPost, token: tokenA, status: http.StatusForbidden},
		{name: "ingest token", method: http.MethodPost, token: ingestA, status: http.StatusNoContent, called: true},
		{name: "another method reaches the handler", method: http.MethodPut, token: ingestA, status: http.StatusNoContent, called: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := calls.Load()
			resp := do(t, ts.Client(), tt.method, ts.URL+"/logs", tt.token)
			if resp.status != tt.status {
				t.Fatalf("%s /logs: %d %s, want %d", tt.method, resp.status, resp.body, tt.status)
			}
			if called := calls.Load() > before; called != tt.called {
				t.Fatalf("handler called: %v, want %v", called, tt.called)
			}
			if tt.called && method.Load() != tt.method {
				t.Fatalf("handler saw %v", method.Load())
			}
			if tt.status == http.StatusUnauthorized && resp.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	log := ts.log.String()
	if !strings.Contains(log, `"path":"/logs"`) || !strings.Contains(log, `"who":"ingest token 1"`) {
		t.Fatalf("uploads are not in the access log, with who made them: %s", log)
	}
	if !strings.Contains(log, `"status":403`) {
		t.Fatalf("the refused reader's upload is not in the access log: %s", log)
	}

	plain := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}}, time.Time{})
	if resp := do(t, plain.Client(), http.MethodPost, plain.URL+"/logs", tokenA); resp.status != http.StatusMethodNotAllowed && resp.status != http.StatusNotFound {
		t.Fatalf("POST /logs without Config.Logs: %d %s", resp.status, resp.body)
	}
}

// TestIngestRoles: a reader's token never writes evidence and an
// uploader's never reads it (403, naming the flag to use); with no ingest
// credential /logs takes nothing, but when the server says it is open.
func TestIngestRoles(t *testing.T) {
	var calls atomic.Int32
	logs := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("# metrics\n")) })
	pprof := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("profile")) })
	type call struct {
		method, path, token string
		status              int
		msg                 string // in the error
	}
	tests := []struct {
		name  string
		cfg   Config
		calls []call
	}{
		{"readers and uploaders", Config{Tokens: []string{tokenA}, IngestTokens: []string{ingestA}}, []call{
			{http.MethodPost, "/logs", tokenA, 403, "--ingest-token-file"},
			{http.MethodPost, "/logs", ingestA, 204, ""},
			{http.MethodGet, "/v1/stats", ingestA, 403, "may only upload decision logs"},
			{http.MethodGet, "/v1/evidence", ingestA, 403, "may only upload decision logs"},
			{http.MethodGet, "/v1/export", ingestA, 403, ""},
			{http.MethodGet, "/metrics", ingestA, 403, ""},
			{http.MethodGet, "/debug/pprof/cmdline", ingestA, 403, ""},
			{http.MethodGet, "/no/such/path", ingestA, 403, ""},
			{http.MethodGet, "/v1/stats", tokenA, 200, ""},
			{http.MethodGet, "/metrics", tokenA, 200, ""},
			{http.MethodGet, "/debug/pprof/cmdline", tokenA, 200, ""},
			{http.MethodGet, "/debug/pprof/cmdline", "", 401, ""},
			{http.MethodGet, "/healthz", ingestA, 200, ""},
		}},
		{"readers only: /logs takes nothing", Config{Tokens: []string{tokenA}}, []call{
			{http.MethodPost, "/logs", tokenA, 403, "--ingest-token-file"},
			{http.MethodPost, "/logs", "", 403, "--ingest-token-file"},
			{http.MethodGet, "/v1/stats", tokenA, 200, ""},
		}},
		{"--api-insecure, not on loopback: /logs takes nothing", Config{Insecure: true}, []call{
			{http.MethodPost, "/logs", "", 403, "--ingest-token-file"},
			{http.MethodGet, "/v1/stats", "", 200, ""},
		}},
		{"open on loopback", Config{IngestOpen: true}, []call{
			{http.MethodPost, "/logs", "", 204, ""},
			{http.MethodGet, "/v1/stats", "", 200, ""},
		}},
		{"uploaders only, the API open on loopback", Config{IngestTokens: []string{ingestA}}, []call{
			{http.MethodPost, "/logs", "", 401, "--ingest-token-file"},
			{http.MethodPost, "/logs", ingestA, 204, ""},
			{http.MethodGet, "/v1/stats", "", 200, ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Logs, cfg.MetricsHandler, cfg.Pprof = logs, metrics, pprof
			ts := newTestServer(t, openStore(t), cfg, time.Time{})
			for _, c := range tc.calls {
				before := calls.Load()
				resp := do(t, ts.Client(), c.method, ts.URL+c.path, c.token)
				if resp.status != c.status {
					t.Errorf("%s %s (token %q): %d %s, want %d", c.method, c.path, c.token, resp.status, resp.body, c.status)
					continue
				}
				if uploaded := calls.Load() > before; uploaded != (c.path == "/logs" && c.status == 204) {
					t.Errorf("%s %s (token %q): the upload handler was called: %v", c.method, c.path, c.token, uploaded)
				}
				if c.msg != "" && !strings.Contains(resp.errorOf(t).Error, c.msg) {
					t.Errorf("%s %s (token %q): %s, want it to say %q", c.method, c.path, c.token, resp.body, c.msg)
				}
			}
			for _, tok := range []string{tokenA, ingestA} {
				if strings.Contains(ts.log.String(), tok) {
					t.Errorf("a token is in the log:\n%s", ts.log.String())
				}
			}
		})
	}
}
