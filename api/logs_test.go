package api

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLogsMount: /logs is served only when Config.Logs is set, behind the
// API's authentication, with every method passed on to the handler (it
// takes POST, not the API's GET).
func TestLogsMount(t *testing.T) {
	var calls atomic.Int32
	var method atomic.Value
	logs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		method.Store(r.Method)
		w.WriteHeader(http.StatusNoContent)
	})
	ts := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}, Logs: logs}, time.Time{})
	tests := []struct {
		name   string
		method string
		token  string
		status int
		called bool
	}{
		{name: "no token", method: http.MethodPost, status: http.StatusUnauthorized},
		{name: "unknown token", method: http.MethodPost, token: strings.Repeat("x", 32), status: http.StatusUnauthorized},
		{name: "token", method: http.MethodPost, token: tokenA, status: http.StatusNoContent, called: true},
		{name: "another method reaches the handler", method: http.MethodPut, token: tokenA, status: http.StatusNoContent, called: true},
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
	if !strings.Contains(ts.log.String(), `"path":"/logs"`) {
		t.Fatalf("uploads are not in the access log: %s", ts.log.String())
	}

	plain := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}}, time.Time{})
	if resp := do(t, plain.Client(), http.MethodPost, plain.URL+"/logs", tokenA); resp.status != http.StatusMethodNotAllowed && resp.status != http.StatusNotFound {
		t.Fatalf("POST /logs without Config.Logs: %d %s", resp.status, resp.body)
	}
}
