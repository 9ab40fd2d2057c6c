package rego

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// bundleServer serves one bundle tarball, 404 until there is one, with an
// ETag per revision as a bundle server does.
type bundleServer struct {
	mu       sync.Mutex
	body     []byte
	etag     string
	served   string // ETag of the last bundle sent
	requests atomic.Int64
}

func (s *bundleServer) lastServed() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

func (s *bundleServer) set(body []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.etag = body, etag
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	body, etag := s.body, s.etag
	if body != nil && r.Header.Get("If-None-Match") != etag {
		s.served = etag
	}
	s.mu.Unlock()
	switch {
	case r.URL.Path != "/bundles/authz.tar.gz" || body == nil:
		http.NotFound(w, r)
	case r.Header.Get("If-None-Match") == etag:
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(body) //nolint:errcheck // the client sees a short body
	}
}

// opaConfig writes an OPA configuration that polls url every second.
func opaConfig(t *testing.T, url string) string {
	t.Helper()
	cfg := map[string]any{
		"services": map[string]any{"test": map[string]any{"url": url}},
		"bundles": map[string]any{"authz": map[string]any{
			"service":  "test",
			"resource": "bundles/authz.tar.gz",
			"polling":  map[string]any{"min_delay_seconds": 1, "max_delay_seconds": 1},
		}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "opa.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRemoteBundle(t *testing.T) {
	bs := &bundleServer{}
	srv := httptest.NewServer(bs)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	e := mustStart(t, Config{Decision: DefaultDecision, OPAConfig: opaConfig(t, srv.URL)}, reg)

	// Nothing served yet: not ready, no decision.
	waitFor(t, "the first bundle request", func() bool { return bs.requests.Load() > 0 })
	if e.Ready() {
		t.Error("Ready() before any bundle was activated")
	}
	if v, _, err := e.Eval(t.Context(), ast.MustParseTerm(`{}`)); err == nil {
		t.Errorf("Eval before activation = %v, want an error", v)
	}

	policy := map[string]string{"/envoy/authz/policy.rego": "package envoy.authz\nallow := data.cfg.v\n"}
	bs.set(tarball(t, "v1", policy, map[string]any{"cfg": map[string]any{"v": "one"}}), `"v1"`)
	waitFor(t, "bundle v1", func() bool {
		return e.Ready() && strings.Contains(e.Revision(), "authz@v1") && decides(t, e, `"one"`)
	})

	bs.set(tarball(t, "v2", policy, map[string]any{"cfg": map[string]any{"v": "two"}}), `"v2"`)
	waitFor(t, "bundle v2", func() bool {
		return strings.Contains(e.Revision(), "authz@v2") && decides(t, e, `"two"`)
	})

	// A broken bundle is rejected; v2 keeps serving. (The 404s above
	// already counted as bundle errors.)
	errorsBefore := reloads(t, reg, "bundle", "error")
	bs.set(tarball(t, "v3", map[string]string{"/envoy/authz/policy.rego": "package envoy.authz\nallow := \n"}, nil), `"v3"`)
	waitFor(t, "the rejected bundle", func() bool {
		return bs.lastServed() == `"v3"` && reloads(t, reg, "bundle", "error") > errorsBefore
	})
	if !strings.Contains(e.Revision(), "authz@v2") || !decides(t, e, `"two"`) {
		t.Errorf("after a broken bundle: revision %q, decides \"two\" %v", e.Revision(), decides(t, e, `"two"`))
	}
	if reloads(t, reg, "bundle", "ok") < 2 {
		t.Errorf("bundle reloads ok = %v, want at least 2", reloads(t, reg, "bundle", "ok"))
	}
}

// TestRemoteBundleEvalNotReady: until a bundle is activated there is no
// policy, and Eval must say so rather than call the decision undefined (the
// Check's evidence records that error for every request at start-up).
func TestRemoteBundleEvalNotReady(t *testing.T) {
	bs := &bundleServer{}
	srv := httptest.NewServer(bs)
	defer srv.Close()
	e := mustStart(t, Config{Decision: DefaultDecision, OPAConfig: opaConfig(t, srv.URL)}, nil)
	if _, _, err := e.Eval(t.Context(), ast.MustParseTerm(`{}`)); !errors.Is(err, ErrNotReady) {
		t.Errorf("Eval before activation: %v, want ErrNotReady", err)
	}
}

// TestRemoteBundleStaysReady: Ready means "activated at least once"; a
// broken bundle published later leaves the last good policy serving, so
// /readyz must not take every replica out of service at once.
func TestRemoteBundleStaysReady(t *testing.T) {
	bs := &bundleServer{}
	bs.set(tarball(t, "v1", map[string]string{"/envoy/authz/policy.rego": "package envoy.authz\nallow := true\n"}, nil), `"v1"`)
	srv := httptest.NewServer(bs)
	defer srv.Close()
	e := mustStart(t, Config{Decision: DefaultDecision, OPAConfig: opaConfig(t, srv.URL)}, nil)
	waitFor(t, "bundle v1", e.Ready)
	bs.set(tarball(t, "v2", map[string]string{"/envoy/authz/policy.rego": "package envoy.authz\nallow := \n"}, nil), `"broken"`)
	waitFor(t, "the broken bundle to be fetched", func() bool { return bs.lastServed() == `"broken"` })
	quiet()
	if !e.Ready() || !decides(t, e, "true") {
		t.Errorf("after a broken bundle: ready %v, still decides true %v", e.Ready(), decides(t, e, "true"))
	}
}

// TestRemoteBundleWithLocalPolicy: a local data file and a remote bundle
// together; the revision names both.
func TestRemoteBundleWithLocalPolicy(t *testing.T) {
	bs := &bundleServer{}
	srv := httptest.NewServer(bs)
	defer srv.Close()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"local/data.json": `{"v": 5}`})
	// Without roots a bundle claims all of data; with "envoy" the local
	// data stays outside it.
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "b1", Roots: &[]string{"envoy"}},
		Modules:  []bundle.ModuleFile{{URL: "/envoy/authz/policy.rego", Path: "/envoy/authz/policy.rego", Raw: []byte("package envoy.authz\nallow := data.local.v\n")}},
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	bs.set(buf.Bytes(), `"b1"`)
	e := mustStart(t, Config{Decision: DefaultDecision, OPAConfig: opaConfig(t, srv.URL), Policies: []string{dir}}, nil)
	waitFor(t, "the bundle", func() bool { return e.Ready() && decides(t, e, "5") })
	rev := e.Revision()
	if !strings.HasPrefix(rev, "sha256:") || !strings.HasSuffix(rev, ",authz@b1") {
		t.Errorf("revision %q, want sha256:<local digest>,authz@b1", rev)
	}
}

func TestOPAConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		wantErr string
	}{
		{"legacy bundle key", `{"services": {"s": {"url": "http://127.0.0.1:1"}}, "bundle": {"name": "x", "service": "s"}}`, `legacy "bundle" key`},
		{"bundle naming an unknown service", `{"bundles": {"b": {"service": "nope"}}}`, "nope"},
		{"not JSON or YAML", `{`, "opa config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "opa.json")
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			e, err := New(Config{Decision: DefaultDecision, OPAConfig: path}, zerolog.Nop(), nil)
			if err == nil {
				e.Stop(context.Background())
				t.Fatal("New accepted the configuration")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
