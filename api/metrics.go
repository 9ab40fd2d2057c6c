package api

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics is meshproof_http_requests_total: requests answered by the
// HTTP listener by route, the pattern of the mux that matched (never the
// raw path, which a client chooses), and status code.
type httpMetrics struct {
	vec *prometheus.CounterVec
}

// routeUnmatched is the route of a request no pattern matched (a
// redirect to the path with a slash, or a method the mux refused).
const routeUnmatched = "unmatched"

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	if reg == nil {
		return nil
	}
	m := &httpMetrics{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshproof_http_requests_total",
		Help: "Requests the HTTP listener answered, by route (the pattern that matched: /v1/evidence/{id}, /logs, /metrics, ...; unmatched when none did) and status code (499: the client went away first).",
	}, []string{"route", "code"})}
	reg.MustRegister(m.vec)
	return m
}

// route makes route's series present from start-up (as code 200).
func (m *httpMetrics) route(pattern string) {
	if m != nil {
		m.vec.WithLabelValues(pattern, "200")
	}
}

func (m *httpMetrics) observe(pattern string, status int) {
	if m == nil {
		return
	}
	if pattern == "" {
		pattern = routeUnmatched
	}
	if status == 0 {
		status = 200 // nothing written: net/http sends 200
	}
	m.vec.WithLabelValues(pattern, strconv.Itoa(status)).Inc()
}
