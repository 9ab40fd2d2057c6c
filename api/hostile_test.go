package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/evidence"
)

// TestHostileParameters sends values meant to break a query: every answer
// is a 400 naming the parameter or an ordinary answer, never a 500; no
// answer repeats more than a little of the value; and the store is intact
// afterwards.
func TestHostileParameters(t *testing.T) {
	ts, store, fx := fixture(t)
	long := strings.Repeat("A", 5000)
	tests := []struct {
		query  string
		status int
		param  string
	}{
		{"source=" + url.QueryEscape("' OR 1=1 --"), 200, ""},
		{"source_prefix=" + url.QueryEscape("%"), 200, ""},
		{"path_prefix=_", 200, ""},
		{"host=" + url.QueryEscape("x\"); DROP TABLE records; --"), 200, ""},
		{"request_id=" + url.QueryEscape("1' UNION SELECT body FROM records --"), 200, ""},
		{"method=" + url.QueryEscape("GET' OR '1'='1"), 200, ""},
		{"source=" + long, 400, "source"},
		{"path_prefix=" + long, 400, "path_prefix"},
		{"namespace=a%00b", 400, "namespace"},
		{"host=%FF%FE", 400, "host"},
		{"trust_domain=%C3", 400, "trust_domain"},
		{"verdict=" + url.QueryEscape("mtls' OR 1=1"), 400, "verdict"},
		{"verdict=" + long, 400, "verdict"},
		{"verdict=MTLS", 400, "verdict"},
		{"mtls=yes", 400, "mtls"},
		{"mtls=true&verdict=plaintext", 400, "mtls"},
		{"allowed=1", 400, "allowed"},
		{"since=" + long, 400, "since"},
		{"since=yesterday", 400, "since"},
		{"since=-1h", 400, "since"},
		{"since=1d-1h", 400, "since"},
		{"since=99999999999999d", 400, "since"},
		{"since=2562047h1h", 400, "since"},
		{"until=2025-13-01T00:00:00Z", 400, "until"},
		{"since=1h&until=2h", 400, "until"},
		{"limit=0", 400, "limit"},
		{"limit=1001", 400, "limit"},
		{"limit=-5", 400, "limit"},
		{"limit=1e3", 400, "limit"},
		{"limit=" + long, 400, "limit"},
		{"cursor=" + long, 400, "cursor"},
		{"cursor=" + url.QueryEscape("' OR 1=1 --"), 400, "cursor"},
		{"cursor=AAAAAAAAAAA", 200, ""}, // well formed, before every record: an empty page
		{"sources=spiffe://x", 400, "sources"},
		{"Source=spiffe://x", 400, "Source"},
		{long + "=1", 400, strings.Repeat("A", maxEcho) + "..."},
		{"a%00b=1", 400, "a?b"},
		{"%ZZ=1", 400, "%ZZ"},
		{"source=%ZZ", 400, "source"},
		{"source=a&source=b", 400, "source"},
		{"limit=5&limit=6", 400, "limit"},
	}
	for _, tc := range tests {
		t.Run(clip(tc.query), func(t *testing.T) {
			resp := ts.get(t, "/v1/evidence?"+tc.query, "")
			if resp.status != tc.status {
				t.Fatalf("%d %s, want %d", resp.status, clip(string(resp.body)), tc.status)
			}
			if resp.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", resp.header.Get("Content-Type"))
			}
			if tc.status != 200 {
				e := resp.errorOf(t)
				if e.Parameter != tc.param || !strings.HasPrefix(e.Error, tc.param+": ") {
					t.Errorf("error %+v, want it to name %q", e, tc.param)
				}
				if len(resp.body) > 600 || strings.Contains(string(resp.body), strings.Repeat("A", 101)) {
					t.Errorf("the answer repeats too much of the value (%d bytes): %.200s", len(resp.body), resp.body)
				}
			}
			// The same values through export and the reports.
			for _, path := range []string{"/v1/export?", "/v1/reports/tls-check?", "/v1/reports/strict-readiness?destination=x&"} {
				if resp := ts.get(t, path+tc.query, ""); resp.status >= 500 {
					t.Errorf("%s: %d %s", path, resp.status, clip(string(resp.body)))
				}
			}
		})
	}
	for _, q := range []string{"destination=" + long, "destination=a%00", "destination=%FF", "since=" + long} {
		for _, path := range []string{"/v1/reports/tls-check?", "/v1/reports/strict-readiness?"} {
			resp := ts.get(t, path+q, "")
			if e := resp.errorOf(t); resp.status != 400 || e.Parameter != strings.Split(q, "=")[0] {
				t.Errorf("%s%.30s: %d %s", path, q, resp.status, clip(string(resp.body)))
			}
		}
	}
	reports, err := evidence.Verify(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	var checked int64
	for _, r := range reports {
		if r.Broken != nil {
			t.Errorf("chain %s broken after the hostile queries: %+v", r.Replica, r.Broken)
		}
		checked += r.Checked
	}
	if checked != int64(len(fx.Records)) {
		t.Errorf("%d records checked, want %d", checked, len(fx.Records))
	}
}

func TestMethodsAndPaths(t *testing.T) {
	ts, _, _ := fixture(t)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodOptions, "BREW"} {
		for _, path := range []string{"/v1/evidence", "/v1/export", "/v1/reports/tls-check", "/healthz"} {
			if m == http.MethodHead && path == "/healthz" {
				continue // an open path: HEAD is GET without the body (below)
			}
			resp := do(t, ts.Client(), m, ts.URL+path, "")
			if resp.status != http.StatusMethodNotAllowed || resp.header.Get("Allow") != "GET" {
				t.Errorf("%s %s: %d %v", m, path, resp.status, resp.header)
			}
			if m != http.MethodHead && resp.errorOf(t).Error == "" {
				t.Errorf("%s %s: %s, want a JSON error", m, path, resp.body)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if resp := do(t, ts.Client(), http.MethodHead, ts.URL+path, ""); resp.status != http.StatusOK || len(resp.body) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes, want 200 and no body", path, resp.status, len(resp.body))
		}
	}
	for _, path := range []string{"/", "/v1", "/v1/evidence/", "/v2/evidence", "/ui/", "/metrics"} {
		resp := ts.get(t, path, "")
		if resp.status != http.StatusNotFound || resp.errorOf(t).Error == "" {
			t.Errorf("GET %s: %d %s, want a JSON 404", path, resp.status, resp.body)
		}
	}
}
