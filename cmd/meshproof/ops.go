package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/spf13/pflag"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/api/ui"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
	"github.com/meshproof/meshproof/internal/tlsfiles"
)

// httpOptions configure the HTTP listener: the evidence API, the page,
// metrics and probes, and who may read them.
type httpOptions struct {
	Addr        string
	TokenFile   string
	TLSCert     string
	TLSKey      string
	ClientCA    string
	AllowSPIFFE []string
	Insecure    bool
	MetricsOpen bool
	Pprof       bool
	// IngestTokenFile and IngestAllowSPIFFE say who may upload OPA
	// decision logs to /logs (serve --role serve only: ingestFlags).
	IngestTokenFile   string
	IngestAllowSPIFFE []string
	// logs takes OPA's decision log uploads at /logs (serve --role serve
	// sets it); not an option.
	logs http.Handler
	// istio is serve --kubernetes's configuration for the reports.
	istio report.Configuration
}

func (o *httpOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Addr, "http-addr", o.Addr, "HTTP listener: the evidence API (/v1/...), OPA decision log uploads (POST /logs, --role serve), the page (/ui/), /metrics, /healthz, /readyz")
	fs.StringVar(&o.TokenFile, "api-token-file", o.TokenFile, "file of bearer tokens (one per line, 16 bytes or more) that may read the evidence API (not upload to /logs: see --ingest-token-file)")
	fs.StringVar(&o.TLSCert, "http-tls-cert", o.TLSCert, "PEM certificate for TLS on the HTTP listener (re-read when it changes)")
	fs.StringVar(&o.TLSKey, "http-tls-key", o.TLSKey, "PEM private key for --http-tls-cert")
	fs.StringVar(&o.ClientCA, "http-client-ca", o.ClientCA, "PEM CA bundle: the HTTP listener requires client certificates it signed (with --api-allow-spiffe, --ingest-allow-spiffe)")
	fs.Var(newListFlag(&o.AllowSPIFFE), "api-allow-spiffe", "SPIFFE ID prefix (on path-segment boundaries) of client certificates that may read the evidence API, repeatable")
	fs.BoolVar(&o.Insecure, "api-insecure", o.Insecure, "serve the evidence API without authentication even on a non-loopback address")
	fs.BoolVar(&o.MetricsOpen, "metrics-open", o.MetricsOpen, "serve /metrics without authentication (for a Prometheus without credentials)")
	fs.BoolVar(&o.Pprof, "debug-pprof", o.Pprof, "serve Go's /debug/pprof/ on the HTTP listener, to the evidence API's readers (its cmdline shows the store's DSN; refused off loopback with --api-insecure)")
}

// ingestFlags say who may upload OPA decision logs to /logs: serve
// --role serve only (the query role writes no evidence).
func (o *httpOptions) ingestFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.IngestTokenFile, "ingest-token-file", o.IngestTokenFile, "file of bearer tokens (one per line, 16 bytes or more) that may upload OPA decision logs to /logs, and not read the evidence API; "+
		"without it (or --ingest-allow-spiffe) /logs takes no upload, unless the API is open on loopback")
	fs.Var(newListFlag(&o.IngestAllowSPIFFE), "ingest-allow-spiffe", "SPIFFE ID prefix (on path-segment boundaries) of client certificates that may upload OPA decision logs to /logs, repeatable (with --http-client-ca)")
}

func (o *httpOptions) validate() error {
	switch {
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return errors.New("http-tls-cert and http-tls-key go together")
	case o.ClientCA != "" && o.TLSCert == "":
		return errors.New("http-client-ca needs http-tls-cert and http-tls-key")
	case len(o.AllowSPIFFE) > 0 && o.ClientCA == "":
		return errors.New("api-allow-spiffe needs http-client-ca: SPIFFE IDs come from verified client certificates")
	case len(o.IngestAllowSPIFFE) > 0 && o.ClientCA == "":
		return errors.New("ingest-allow-spiffe needs http-client-ca: SPIFFE IDs come from verified client certificates")
	}
	return nil
}

// httpServer builds the HTTP listener's handler and TLS configuration, and
// refuses to expose the evidence without authentication.
// health, when set, adds its detail to /readyz.
func (o *httpOptions) httpServer(store evidence.Store, reg *prometheus.Registry, ready func() bool, health func() map[string]any, log zerolog.Logger) (*http.Server, error) {
	cfg := api.Config{
		AllowSPIFFE:       o.AllowSPIFFE,
		Insecure:          o.Insecure,
		MetricsHandler:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		MetricsOpen:       o.MetricsOpen,
		Metrics:           reg,
		Ready:             ready,
		Health:            health,
		UI:                ui.Handler(),
		Logs:              o.logs,
		Istio:             o.istio,
		IngestAllowSPIFFE: o.IngestAllowSPIFFE,
	}
	if o.Pprof {
		cfg.Pprof = pprofHandler()
	}
	if o.TokenFile != "" {
		tokens, err := api.LoadTokens(o.TokenFile)
		if err != nil {
			return nil, err
		}
		cfg.Tokens = tokens
	}
	if o.IngestTokenFile != "" {
		tokens, err := api.LoadIngestTokens(o.IngestTokenFile)
		if err != nil {
			return nil, err
		}
		cfg.IngestTokens = tokens
	}
	cfg.IngestOpen = o.logs != nil && api.OpenIngest(o.Addr, cfg)
	if err := api.CheckExposure(o.Addr, cfg, o.TLSCert != ""); err != nil {
		return nil, err
	}
	if o.Insecure {
		log.Warn().Str("http_addr", o.Addr).Bool("debug_pprof", o.Pprof).
			Msg("--api-insecure: the evidence API is served without authentication: whoever reaches the HTTP listener reads every record")
	}
	a, err := api.New(store, cfg, log)
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	if o.TLSCert != "" {
		if tc, err = tlsfiles.ServerConfig(o.TLSCert, o.TLSKey, o.ClientCA, "h2", "http/1.1"); err != nil {
			return nil, fmt.Errorf("http tls: %w", err)
		}
	}
	return &http.Server{
		Handler:           a.Handler(),
		TLSConfig:         tc,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}, nil
}

// serveHTTP serves hs on lis, with TLS when hs has a TLS configuration.
func serveHTTP(hs *http.Server, lis net.Listener) error {
	if hs.TLSConfig != nil {
		return hs.ServeTLS(lis, "", "")
	}
	return hs.Serve(lis)
}

// pprofHandler is Go's profiler, for api.Config.Pprof (which puts it behind
// the API's authentication).
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	return mux
}
