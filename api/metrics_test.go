package api

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHTTPMetrics: requests are counted by the pattern that matched, never
// the raw path (ids, a client's made-up paths), and by status; every
// route has its series before any request.
func TestHTTPMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, openStore(t), Config{Tokens: []string{tokenA}, Metrics: reg}, time.Time{})
	m := ts.api.metrics.vec
	for _, route := range []string{"/v1/evidence/{id}", "/healthz", "/", routeUnmatched} {
		if got := testutil.ToFloat64(m.WithLabelValues(route, "200")); got != 0 {
			t.Errorf("route %s: %v before any request", route, got)
		}
	}
	before := testutil.CollectAndCount(m)
	requests := []struct {
		path, token, route, code string
	}{
		{"/healthz", "", "/healthz", "200"},
		{"/v1/evidence/01JDQ0000000000000000000A1", tokenA, "/v1/evidence/{id}", "404"},
		{"/v1/evidence/01JDQ0000000000000000000A2", tokenA, "/v1/evidence/{id}", "404"},
		{"/v1/evidence/01JDQ0000000000000000000A3", "", "/v1/evidence/{id}", "401"},
		{"/no/such/path/a", tokenA, "/", "404"},
		{"/no/such/path/b", tokenA, "/", "404"},
	}
	for _, r := range requests {
		if resp := ts.get(t, r.path, r.token); resp.status == 0 {
			t.Fatalf("GET %s: no answer", r.path)
		}
	}
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"/healthz", "200", 1},
		{"/v1/evidence/{id}", "404", 2},
		{"/v1/evidence/{id}", "401", 1},
		{"/", "404", 2},
	} {
		if got := testutil.ToFloat64(m.WithLabelValues(c.route, c.code)); got != c.want {
			t.Errorf(`meshproof_http_requests_total{route=%q,code=%q} = %v, want %v`, c.route, c.code, got, c.want)
		}
	}
	// Three new series (404 and 401 of the evidence, 404 of /), none per path.
	if got := testutil.CollectAndCount(m); got != before+3 {
		t.Errorf("%d series after the requests, want %d: a raw path became a label value?", got, before+3)
	}
}
