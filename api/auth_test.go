package api

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/internal/tlsfiles"
)

const (
	tokenA = "a-first-token-0123456789abcdef"
	tokenB = "b-second-token-0123456789abcdef"
)

func TestBearerTokens(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("# metrics\n")) })
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ui " + r.URL.Path)) })
	ready := false
	ts := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA, tokenB}, MetricsHandler: metrics, UI: ui,
		Ready: func() bool { return ready }}, time.Time{})
	tests := []struct {
		name, path, auth string
		status           int
	}{
		{"no token", "/v1/stats", "", 401},
		{"wrong token", "/v1/stats", "Bearer not-the-token-0123456789", 401},
		{"a prefix of the token", "/v1/stats", "Bearer " + tokenA[:20], 401},
		{"the token and more", "/v1/stats", "Bearer " + tokenA + "x", 401},
		{"another scheme", "/v1/stats", "Basic " + tokenA, 401},
		{"no token after the scheme", "/v1/stats", "Bearer ", 401},
		{"first token", "/v1/stats", "Bearer " + tokenA, 200},
		{"second token", "/v1/stats", "Bearer " + tokenB, 200},
		{"scheme in lower case", "/v1/stats", "bearer " + tokenB, 200},
		{"records", "/v1/evidence", "", 401},
		{"export", "/v1/export", "", 401},
		{"count", "/v1/evidence/count", "", 401},
		{"count with a token", "/v1/evidence/count", "Bearer " + tokenA, 200},
		{"one record", "/v1/evidence/x", "", 401},
		{"a report", "/v1/reports/tls-check", "", 401},
		{"an unknown path", "/v1/secrets", "", 401},
		{"metrics are closed", "/metrics", "", 401},
		{"metrics with a token", "/metrics", "Bearer " + tokenA, 200},
		{"healthz is open", "/healthz", "", 200},
		{"readyz is open", "/readyz", "", 503},
		{"the contract is open", "/openapi.json", "", 200},
		{"the UI's page is open", "/ui/", "", 200},
		{"the UI's files are open", "/ui/app.js", "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, ts.URL+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); (tc.status == 401) != strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate %q with status %d", got, resp.StatusCode)
			}
		})
	}
	ready = true
	if resp := ts.get(t, "/readyz", ""); resp.status != 200 {
		t.Errorf("readyz when ready: %d", resp.status)
	}
	logs := ts.log.String()
	for _, tok := range []string{tokenA, tokenB, tokenA[:20], "not-the-token"} {
		if strings.Contains(logs, tok) {
			t.Errorf("a token is in the log:\n%s", logs)
		}
	}
	if !strings.Contains(logs, `"who":"token 2"`) || !strings.Contains(logs, `"status":401`) {
		t.Errorf("the access log does not say who read the evidence or who was refused:\n%s", logs)
	}
}

func TestMetricsOpen(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("# metrics\n")) })
	ts := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}, MetricsHandler: metrics, MetricsOpen: true}, time.Time{})
	if resp := ts.get(t, "/metrics", ""); resp.status != 200 || string(resp.body) != "# metrics\n" {
		t.Errorf("/metrics: %d %s", resp.status, resp.body)
	}
	if resp := ts.get(t, "/v1/stats", ""); resp.status != 401 {
		t.Errorf("/v1/stats: %d, want 401", resp.status)
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokens, err := LoadTokens(write("ok", "# readers\n\n  "+tokenA+"  \r\n# ci\n"+tokenB+"\n"))
	if err != nil || len(tokens) != 2 || tokens[0] != tokenA || tokens[1] != tokenB {
		t.Errorf("LoadTokens = %q, %v", tokens, err)
	}
	tests := []struct{ name, content, want string }{
		{"empty", "", "no token in it"},
		{"comments only", "# nothing\n\n", "no token in it"},
		{"short", tokenA + "\nshort-secret\n", "line 2: the token is 12 bytes, the minimum is 16"},
		{"space inside", "two words-0123456789abcdef\n", "line 1: the token holds a space"},
		{"non-ASCII", "tøken-0123456789abcdef\n", "line 1: the token holds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTokens(write(tc.name, tc.content))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			for _, secret := range []string{"short-secret", "two words", "tøken"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error repeats the token: %v", err)
				}
			}
		})
	}
	if _, err := LoadTokens(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"open", Config{}, ""},
		{"tokens", Config{Tokens: []string{tokenA}}, ""},
		{"SPIFFE prefixes", Config{AllowSPIFFE: []string{"spiffe://td/ns/audit", "spiffe://td/ns/ci/", "spiffe://other"}}, ""},
		{"short token", Config{Tokens: []string{"short"}}, "api token 1: the token is 5 bytes"},
		{"not a SPIFFE ID", Config{AllowSPIFFE: []string{"https://td/ns/audit"}}, "want a SPIFFE ID prefix"},
		{"an empty prefix", Config{AllowSPIFFE: []string{""}}, "want a SPIFFE ID prefix"},
		{"insecure with tokens", Config{Insecure: true, Tokens: []string{tokenA}}, "--api-insecure turns authentication off"},
		{"ingest tokens", Config{Tokens: []string{tokenA}, IngestTokens: []string{ingestA}, IngestAllowSPIFFE: []string{"spiffe://td/ns/opa"}}, ""},
		{"insecure with ingest tokens", Config{Insecure: true, IngestTokens: []string{ingestA}}, ""},
		{"short ingest token", Config{IngestTokens: []string{"short"}}, "api ingest token 1: the token is 5 bytes"},
		{"ingest prefix not a SPIFFE ID", Config{IngestAllowSPIFFE: []string{"opa"}}, "api ingest-allow-spiffe \"opa\""},
		{"a token of both roles", Config{Tokens: []string{tokenA, tokenB}, IngestTokens: []string{ingestA, tokenB}}, "both a reader's (--api-token-file) and an uploader's (--ingest-token-file)"},
		{"open ingest with ingest tokens", Config{IngestOpen: true, IngestTokens: []string{ingestA}}, "ingest without authentication"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
			if _, nerr := New(openStore(t), tc.cfg, ts0()); (nerr == nil) != (err == nil) {
				t.Errorf("New = %v, Validate = %v", nerr, err)
			}
		})
	}
	if _, err := New(nil, Config{}, ts0()); err == nil {
		t.Error("New accepts no store")
	}
}

// TestClientCertificates serves the API over TLS requiring client
// certificates from the mesh CA, and allows spiffe://td/ns/audit.
func TestClientCertificates(t *testing.T) {
	ca, other := authztest.NewCA(t, "td"), authztest.NewCA(t, "td")
	dir := t.TempDir()
	certFile, keyFile, caFile := ca.Issue(t, "spiffe://td/ns/meshproof/sa/meshproof", "localhost").WriteFiles(t, dir, ca)
	tlsCfg, err := tlsfiles.ServerConfig(certFile, keyFile, caFile, "h2", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t)
	appendChained(t, store, leanRecords(50, time.Now()))
	s, err := New(store, Config{AllowSPIFFE: []string{"spiffe://td/ns/audit"}, Tokens: []string{tokenA}}, ts0())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: discardLog()}
	go srv.Serve(tls.NewListener(lis, tlsCfg))
	t.Cleanup(func() { srv.Close() })
	url := "https://" + lis.Addr().String() + "/v1/stats"

	tests := []struct {
		name   string
		cert   *authztest.SVID
		token  string
		status int // 0: the handshake fails
	}{
		{"no client certificate", nil, tokenA, 0},
		{"a certificate of another CA", other.Issue(t, "spiffe://td/ns/audit/sa/x"), tokenA, 0},
		{"an allowed SPIFFE ID", ca.Issue(t, "spiffe://td/ns/audit/sa/x"), "", 200},
		{"the allowed prefix itself", ca.Issue(t, "spiffe://td/ns/audit"), "", 200},
		{"not on a segment boundary", ca.Issue(t, "spiffe://td/ns/auditor"), "", 401},
		{"another namespace", ca.Issue(t, "spiffe://td/ns/shop/sa/audit"), "", 401},
		{"another trust domain", ca.Issue(t, "spiffe://other/ns/audit/sa/x"), "", 401},
		{"not allowed, but a token", ca.Issue(t, "spiffe://td/ns/auditor"), tokenA, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &tls.Config{ServerName: "localhost", RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
			if tc.cert != nil {
				c.Certificates = []tls.Certificate{tc.cert.TLS}
			}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := client.Do(req)
			if tc.status == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("status %d, want the handshake to fail", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.ProtoMajor != 2 {
				t.Errorf("status %d over HTTP/%d, want %d over HTTP/2", resp.StatusCode, resp.ProtoMajor, tc.status)
			}
		})
	}
	// Export streams over HTTP/2 too.
	c := &tls.Config{ServerName: "localhost", RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Issue(t, "spiffe://td/ns/audit/sa/y").TLS}}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp := do(t, client, http.MethodGet, "https://"+lis.Addr().String()+"/v1/export", "")
	if resp.status != 200 || strings.Count(string(resp.body), "\n") != 50 || resp.header.Get("Content-Type") != "application/x-ndjson" {
		t.Errorf("export over HTTP/2: %d %v, %d lines", resp.status, resp.header, strings.Count(string(resp.body), "\n"))
	}
}

// TestIngestClientCertificates: client certificates of the uploaders'
// allowlist (--ingest-allow-spiffe) may POST /logs and not read; the
// readers' may read and not upload.
func TestIngestClientCertificates(t *testing.T) {
	ca := authztest.NewCA(t, "td")
	dir := t.TempDir()
	certFile, keyFile, caFile := ca.Issue(t, "spiffe://td/ns/meshproof/sa/meshproof", "localhost").WriteFiles(t, dir, ca)
	tlsCfg, err := tlsfiles.ServerConfig(certFile, keyFile, caFile, "h2", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	logs := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s, err := New(openStore(t), Config{AllowSPIFFE: []string{"spiffe://td/ns/audit"}, IngestAllowSPIFFE: []string{"spiffe://td/ns/opa"},
		IngestTokens: []string{ingestA}, Logs: logs}, ts0())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: discardLog()}
	go srv.Serve(tls.NewListener(lis, tlsCfg))
	t.Cleanup(func() { srv.Close() })
	base := "https://" + lis.Addr().String()

	tests := []struct {
		name         string
		id, token    string
		read, upload int
	}{
		{"an uploader", "spiffe://td/ns/opa/sa/opa", "", 403, 204},
		{"a reader", "spiffe://td/ns/audit/sa/x", "", 200, 403},
		{"a reader with an ingest token", "spiffe://td/ns/audit/sa/x", ingestA, 200, 204},
		{"neither", "spiffe://td/ns/shop/sa/web", "", 401, 401},
		{"not on a segment boundary", "spiffe://td/ns/opaque", "", 401, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &tls.Config{ServerName: "localhost", RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12,
				Certificates: []tls.Certificate{ca.Issue(t, tc.id).TLS}}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			if resp := do(t, client, http.MethodGet, base+"/v1/stats", tc.token); resp.status != tc.read {
				t.Errorf("GET /v1/stats: %d %s, want %d", resp.status, resp.body, tc.read)
			}
			if resp := do(t, client, http.MethodPost, base+"/logs", tc.token); resp.status != tc.upload {
				t.Errorf("POST /logs: %d %s, want %d", resp.status, resp.body, tc.upload)
			}
		})
	}
}
