package api

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics is meshproof_http_requests_total: requests answered by the
// HTTP listener by route, the pattern of the mux that matched (never the
// raw path, which a client chooses), method (HTTP's usual ones, the rest
// as other: a client chooses the method too) and status code.
type httpMetrics struct {
	vec *prometheus.CounterVec
}

// routeUnmatched is the route of a request no pattern matched (a
// redirect to the path with a slash, or a method the mux refused).
const routeUnmatched = "unmatched"

// methodOther is the method label of a request whose method is none of
// httpMethods.
const methodOther = "other"

// httpMethods are the methods counted under their own name.
var httpMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	if reg == nil {
		return nil
	}
	m := &httpMetrics{vec: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshproof_http_requests_total",
		Help: "Requests the HTTP listener answered, by route (the pattern that matched: /v1/evidence/{id}, /logs, /metrics, ...; unmatched when none did), method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS; other for any other) and status code (499: the client went away first).",
	}, []string{"route", "method", "code"})}
	reg.MustRegister(m.vec)
	return m
}

// route makes route's series present from start-up, as method (the one
// the route serves: GET, POST for /logs) and code 200.
func (m *httpMetrics) route(pattern, method string) {
	if m != nil {
		m.vec.WithLabelValues(pattern, method, "200")
	}
}

func (m *httpMetrics) observe(pattern, method string, status int) {
	if m == nil {
		return
	}
	if pattern == "" {
		pattern = routeUnmatched
	}
	if status == 0 {
		status = 200 // nothing written: net/http sends 200
	}
	m.vec.WithLabelValues(pattern, methodLabel(method), strconv.Itoa(status)).Inc()
}

// methodLabel is method's label value: itself if one of httpMethods, else
// other (methods are case-sensitive: "get" is other, as it is no GET to
// net/http).
func methodLabel(method string) string {
	for _, m := range httpMethods {
		if method == m {
			return m
		}
	}
	return methodOther
}
