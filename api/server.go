// Package api is meshproof's query API over HTTP: the evidence records
// (a page at a time, one by id, or all as NDJSON), the tls-check and
// STRICT-readiness reports, store statistics, and the probes, as
// openapi.json documents them. It reads through evidence.Store only.
package api

import (
	_ "embed"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

// Config says who may read the evidence and what else the listener serves.
type Config struct {
	// Tokens are the accepted bearer tokens (see LoadTokens).
	Tokens []string
	// AllowSPIFFE are SPIFFE ID prefixes (matched on path-segment
	// boundaries) of the client certificates accepted; the listener must
	// verify client certificates (TLS with a client CA).
	AllowSPIFFE []string
	// Insecure serves the API with no authentication at all. With neither
	// Tokens nor AllowSPIFFE the API is open too: CheckExposure allows that
	// on loopback only.
	Insecure bool
	// MetricsHandler, when set, serves /metrics; MetricsOpen serves it
	// without authentication (for a Prometheus without credentials).
	MetricsHandler http.Handler
	MetricsOpen    bool
	// Ready answers /readyz; nil is always ready.
	Ready func() bool
	// Health, when set, adds detail to a ready /readyz's answer (its keys
	// beside "status"): what works, but degraded, without making the
	// server unready, such as an evidence store spooling while its
	// database is down.
	Health func() map[string]any
	// Istio, when set, puts the cluster's configured mTLS modes beside the
	// traffic in the reports (tls-check, strict-readiness by destination):
	// serve --kubernetes's, from Istio's PeerAuthentications and
	// DestinationRules.
	Istio report.Configuration
	// UI, when set, serves /ui/ and everything below it (it sees the whole
	// path, /ui/...). It is served without authentication: it is the static
	// page, which asks for a token and sends it with its API calls.
	UI http.Handler
	// Logs, when set, serves POST /logs: OPA's decision log uploads
	// (decisionlog.New). It answers every method itself. Uploads
	// write evidence, so they take credentials of their own: IngestTokens
	// or IngestAllowSPIFFE, never the readers' (403), or none with
	// IngestOpen. With none of the three /logs refuses every upload (403).
	Logs http.Handler
	// IngestTokens are the bearer tokens that may upload to /logs (see
	// LoadIngestTokens); they may not read the evidence (403).
	IngestTokens []string
	// IngestAllowSPIFFE are SPIFFE ID prefixes of the client certificates
	// that may upload to /logs, as AllowSPIFFE is for readers.
	IngestAllowSPIFFE []string
	// IngestOpen takes uploads with no authentication, when no ingest
	// credential is configured. OpenIngest says when that is safe.
	IngestOpen bool
	// Metrics, when set, has the API's requests counted in it
	// (meshproof_http_requests_total).
	Metrics prometheus.Registerer
	// Pprof, when set, serves /debug/pprof/ and everything below it (Go's
	// profiler) to readers, authenticated as the API: its cmdline shows the
	// command line, the store's DSN with its password included.
	// CheckExposure refuses it on an open API off loopback.
	Pprof http.Handler
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	for i, t := range c.Tokens {
		if err := checkToken(t); err != nil {
			errs = append(errs, fmt.Errorf("api token %d: %w", i+1, err))
		}
	}
	for i, t := range c.IngestTokens {
		if err := checkToken(t); err != nil {
			errs = append(errs, fmt.Errorf("api ingest token %d: %w", i+1, err))
		}
	}
	if err := validateAllow("api allow-spiffe", c.AllowSPIFFE); err != nil {
		errs = append(errs, err)
	}
	if err := validateAllow("api ingest-allow-spiffe", c.IngestAllowSPIFFE); err != nil {
		errs = append(errs, err)
	}
	if n := newCredentials(c.IngestTokens, nil); slices.ContainsFunc(c.Tokens, func(t string) bool { return n.token(t) > 0 }) {
		errs = append(errs, errors.New("api: a token is both a reader's (--api-token-file) and an uploader's (--ingest-token-file): give each its own"))
	}
	if c.IngestOpen && (len(c.IngestTokens) > 0 || len(c.IngestAllowSPIFFE) > 0) {
		errs = append(errs, errors.New("api: ingest without authentication, yet ingest tokens or allowed SPIFFE IDs are configured"))
	}
	if c.Insecure && (len(c.Tokens) > 0 || len(c.AllowSPIFFE) > 0) {
		errs = append(errs, errors.New("api: --api-insecure turns authentication off, yet tokens or allowed SPIFFE IDs are configured: drop one or the other"))
	}
	return errors.Join(errs...)
}

// queryTimeout bounds a query or report; export is bounded by its client
// instead (see exportStall).
const queryTimeout = 30 * time.Second

// Server is the query API.
type Server struct {
	store   evidence.Store
	cfg     Config
	log     zerolog.Logger
	auth    *authenticator
	handler http.Handler
	now     func() time.Time
	metrics *httpMetrics
}

// New builds the API over store.
func New(store evidence.Store, cfg Config, log zerolog.Logger) (*Server, error) {
	if store == nil {
		return nil, errors.New("api: no evidence store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{store: store, cfg: cfg, log: log, auth: newAuthenticator(cfg), now: time.Now, metrics: newHTTPMetrics(cfg.Metrics)}
	s.handler = s.routes()
	return s, nil
}

// Handler serves the API.
func (s *Server) Handler() http.Handler { return s.handler }

// handler is an endpoint: an error it returns is answered by fail.
type handler func(w http.ResponseWriter, r *http.Request) error

// access is who may call an endpoint.
type access int

const (
	protected access = iota // a token or an allowed client certificate
	open                    // anyone: probes, the contract, the UI's static files
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// The routes of meshproof_http_requests_total, each with the method
	// it serves, for its series at start-up.
	type route struct{ pattern, method string }
	var routes []route
	handleMethod := func(method, pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		routes = append(routes, route{pattern, method})
	}
	handle := func(pattern string, h http.Handler) { handleMethod(http.MethodGet, pattern, h) }
	api := func(pattern string, h handler) { handle(pattern, s.endpoint(protected, h)) }
	api("/v1/evidence", s.list)
	api("/v1/evidence/count", s.count)
	api("/v1/evidence/{id}", s.get)
	api("/v1/export", s.export)
	api("/v1/reports/tls-check", s.tlsCheck)
	api("/v1/reports/strict-readiness", s.strictReadiness)
	api("/v1/reports/timeseries", s.timeseries)
	api("/v1/stats", s.stats)
	api("/v1/evidence/{id}/proof", s.proof)
	api("/v1/checkpoints", s.checkpoints)
	api("/v1/checkpoints/{replica}", s.checkpoint)
	api("/v1/checkpoints/{replica}/consistency", s.consistency)
	handle("/openapi.json", s.endpoint(open, s.openapi))
	handle("/healthz", s.endpoint(open, s.healthz))
	handle("/readyz", s.endpoint(open, s.readyz))
	if s.cfg.MetricsHandler != nil {
		metrics := protected
		if s.cfg.MetricsOpen {
			metrics = open
		}
		handle("/metrics", s.endpoint(metrics, delegate(s.cfg.MetricsHandler)))
	}
	if s.cfg.UI != nil {
		handle("/ui/", s.endpoint(open, delegate(s.cfg.UI)))
		// The listener's root is where a browser pointed at the address
		// lands: send it to the page (open, as the page is).
		handle("/{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				s.fail(w, r, &apiError{kind: methodNotAllowed, msg: "method " + clip(r.Method) + " not allowed: / only sends a browser to the page, /ui/"})
				return
			}
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		}))
	}
	if s.cfg.Logs != nil {
		handleMethod(http.MethodPost, "/logs", s.authenticated(uploader, s.cfg.Logs))
	}
	if s.cfg.Pprof != nil {
		handle("/debug/pprof/", s.authenticated(reader, s.cfg.Pprof))
	}
	handle("/", s.endpoint(protected, func(http.ResponseWriter, *http.Request) error {
		return &apiError{kind: notFound, msg: "no such path: the page is at /ui/, the API under /v1/ (/openapi.json lists its paths)"}
	}))
	for _, r := range append(routes, route{routeUnmatched, http.MethodGet}) {
		s.metrics.route(r.pattern, r.method)
	}
	return s.logged(mux)
}

// endpoint wraps h: GET only (and HEAD, GET without the body, on the open
// paths: the page, health and the API's description, where curl -I, probes
// and link checkers send it; a HEAD of the evidence would run its whole
// query for nothing), authentication, and errors answered as JSON.
func (s *Server) endpoint(a access, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && (r.Method != http.MethodHead || a != open) {
			s.fail(w, r, &apiError{kind: methodNotAllowed, msg: "method " + clip(r.Method) + " not allowed: the API is read-only (GET)"})
			return
		}
		if a == protected {
			who, err := s.auth.check(r, reader)
			noteWho(w, who)
			if err != nil {
				s.fail(w, r, err)
				return
			}
		}
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// authenticated wraps h, which takes its own methods (an upload, the
// profiler), in the authentication of a role.
func (s *Server) authenticated(as role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := s.auth.check(r, as)
		noteWho(w, who)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fail answers err. A client that went away gets nothing; a failure of the
// store or the server is logged with its cause and answered without it.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		noteErr(w, err)
		return
	}
	e := classify(err)
	if e.kind == internal || e.kind == unavailable && e.err != nil {
		s.log.Error().Err(e.err).Str("path", r.URL.Path).Msg("api: request failed")
	}
	noteErr(w, err)
	writeError(w, e)
}

func delegate(h http.Handler) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	}
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPI)
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) error {
	if s.cfg.Ready != nil && !s.cfg.Ready() {
		return &apiError{kind: unavailable, msg: "not ready: no policy loaded yet"}
	}
	body := map[string]any{"status": "ready"}
	if s.cfg.Health != nil {
		for k, v := range s.cfg.Health() {
			if k != "status" {
				body[k] = v
			}
		}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}
