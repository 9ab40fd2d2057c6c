package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHTTPMetrics: requests are counted by the pattern that matched, never
// the raw path (ids, a client's made-up paths), by method (HTTP's usual
// ones, any other as other, never the method a client made up) and by
// status; every route has its series before any request, as the method it
// serves.
func TestHTTPMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	ts := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}, IngestTokens: []string{ingestA}, Logs: logs, Metrics: reg}, time.Time{})
	m := ts.api.metrics.vec
	for _, c := range []struct{ route, method string }{
		{"/v1/evidence/{id}", "GET"}, {"/healthz", "GET"}, {"/", "GET"}, {routeUnmatched, "GET"}, {"/logs", "POST"},
	} {
		if got, err := m.GetMetricWithLabelValues(c.route, c.method, "200"); err != nil || testutil.ToFloat64(got) != 0 {
			t.Errorf("route %s %s: %v before any request (%v)", c.method, c.route, got, err)
		}
	}
	before := testutil.CollectAndCount(m)
	requests := []struct {
		method, path, token string
	}{
		{"GET", "/healthz", ""},
		{"HEAD", "/healthz", ""},
		{"GET", "/v1/evidence/01JDQ0000000000000000000A1", tokenA},
		{"GET", "/v1/evidence/01JDQ0000000000000000000A2", tokenA},
		{"GET", "/v1/evidence/01JDQ0000000000000000000A3", ""},
		{"POST", "/v1/evidence/01JDQ0000000000000000000A4", tokenA},
		{"GET", "/no/such/path/a", tokenA},
		{"GET", "/no/such/path/b", tokenA},
		{"POST", "/logs", ingestA},
		{"DELETE", "/logs", ingestA},
		{"PROPFIND", "/healthz", ""},
		{"get", "/healthz", ""}, // methods are case-sensitive: not GET
		{"X-MADE-UP-1", "/healthz", ""},
		{"X-MADE-UP-2", "/healthz", ""},
	}
	for _, r := range requests {
		if resp := do(t, ts.Client(), r.method, ts.URL+r.path, r.token); resp.status == 0 {
			t.Fatalf("%s %s: no answer", r.method, r.path)
		}
	}
	for _, c := range []struct {
		route, method, code string
		want                float64
	}{
		{"/healthz", "GET", "200", 1},
		{"/healthz", "HEAD", "200", 1},
		{"/v1/evidence/{id}", "GET", "404", 2},
		{"/v1/evidence/{id}", "GET", "401", 1},
		{"/v1/evidence/{id}", "POST", "405", 1},
		{"/", "GET", "404", 2},
		{"/logs", "POST", "204", 1},
		{"/logs", "DELETE", "204", 1}, // the handler, not the API, says which methods it takes
		{"/healthz", "other", "405", 4},
	} {
		if got := testutil.ToFloat64(m.WithLabelValues(c.route, c.method, c.code)); got != c.want {
			t.Errorf(`meshproof_http_requests_total{route=%q,method=%q,code=%q} = %v, want %v`, c.route, c.method, c.code, got, c.want)
		}
	}
	// Eight new series (HEAD of /healthz, 404 and 401 of the evidence by
	// GET, 405 by POST, 404 of /, /logs's 204 by POST and DELETE, other's
	// 405 of /healthz), none per path or made-up method.
	if got := testutil.CollectAndCount(m); got != before+8 {
		t.Errorf("%d series after the requests, want %d: a raw path or method became a label value?", got, before+8)
	}
}
