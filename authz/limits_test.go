package authz_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
)

// withHeaderMap adds n header_map entries named x-h-<i> with value.
func withHeaderMap(req *authv3.CheckRequest, n int, value string) *authv3.CheckRequest {
	h := req.Attributes.Request.Http
	if h.HeaderMap == nil {
		h.HeaderMap = &corev3.HeaderMap{}
	}
	for i := range n {
		h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: fmt.Sprintf("x-h-%d", i), Value: value})
	}
	return req
}

// TestHeaderCountLimit: a request with more headers than
// --max-request-headers (10,000 by default) is denied with 431 before any
// input document is built, and the record and a metric say why. Such a
// request (400,000 header_map entries in 2 MB) used to cost 180 MB.
func TestHeaderCountLimit(t *testing.T) {
	f := newFixture(t, "package envoy.authz\nallow := true", "", authz.DefaultConfig())
	// Envoy's default bound (100 headers) and the default here are allowed.
	base := len(authztest.NewRequest(authztest.Header("x-request-id", "r1")).Attributes.Request.Http.Headers)
	for _, n := range []int{100, 10000} {
		req := withHeaderMap(authztest.NewRequest(authztest.Header("x-request-id", "r1")), n-base, "v")
		if resp, rec := f.check(t, req); resp.GetOkResponse() == nil || rec.Decision.Error != "" {
			t.Fatalf("%d headers: denied (%v, %q)", n, resp.GetDeniedResponse(), rec.Decision.Error)
		}
	}
	req := withHeaderMap(authztest.NewRequest(authztest.Header("x-request-id", "r2")), 200001-base, "")
	resp, rec := f.check(t, req)
	d := resp.GetDeniedResponse()
	if d == nil || d.GetStatus().GetCode() != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("200,001 headers: %v, want 431", resp)
	}
	if !strings.Contains(rec.Decision.Error, "200001 headers, more than --max-request-headers 10000") || rec.Decision.Allowed {
		t.Fatalf("record's decision %+v does not say why", rec.Decision)
	}
	if !strings.Contains(d.Body, "--max-request-headers") {
		t.Fatalf("body %q does not name the limit", d.Body)
	}
	if rec.RequestID != "r2" {
		t.Fatalf("record's request id %q, want r2 (from the headers map)", rec.RequestID)
	}
	if got := counterValue(t, f.reg, "meshproof_checks_over_limit_total", "max-request-headers"); got != 1 {
		t.Fatalf("meshproof_checks_over_limit_total{limit=max-request-headers} = %v, want 1", got)
	}
}

// TestHeaderByteLimit: the bytes of header names and values are bounded by
// --max-request-header-bytes, whose default is above the most Envoy can
// send (max_request_headers_kb is at most 8192).
func TestHeaderByteLimit(t *testing.T) {
	cfg := authz.DefaultConfig()
	cfg.MaxRequestHeaderBytes = 1000
	f := newFixture(t, "package envoy.authz\nallow := true", "", cfg)
	base := 0
	for k, v := range authztest.NewRequest().Attributes.Request.Http.Headers {
		base += len(k) + len(v)
	}
	ok := authztest.NewRequest(authztest.Header("x-a", strings.Repeat("a", 1000-base-len("x-a"))))
	if resp, rec := f.check(t, ok); resp.GetOkResponse() == nil {
		t.Fatalf("1,000 bytes of headers: denied (%q)", rec.Decision.Error)
	}
	over := withHeaderMap(authztest.NewRequest(authztest.Header("x-a", "a")), 1, strings.Repeat("b", 1000))
	resp, rec := f.check(t, over)
	if resp.GetDeniedResponse().GetStatus().GetCode() != http.StatusRequestHeaderFieldsTooLarge ||
		!strings.Contains(rec.Decision.Error, "more than --max-request-header-bytes 1000") {
		t.Fatalf("over the byte limit: %v, record %+v", resp, rec.Decision)
	}
	if got := counterValue(t, f.reg, "meshproof_checks_over_limit_total", "max-request-header-bytes"); got != 1 {
		t.Fatalf("meshproof_checks_over_limit_total{limit=max-request-header-bytes} = %v, want 1", got)
	}

	// The defaults let through Envoy's largest header block: 8 MiB.
	s, err := authz.NewServer(authz.DefaultConfig(), f.engine, nil, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	big := authztest.NewRequest()
	for i := range 128 {
		authztest.Header(fmt.Sprintf("x-big-%03d", i), strings.Repeat("v", 64<<10-len("x-big-000")))(big)
	}
	if res := s.Explain(context.Background(), big); res.Outcome != "allow" {
		t.Fatalf("8 MiB of headers (Envoy's largest): %s, %q", res.Outcome, res.Record.Decision.Error)
	}
}
