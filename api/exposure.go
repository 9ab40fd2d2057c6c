package api

import (
	"fmt"
	"net"
	"strings"
)

// CheckExposure refuses to serve the evidence API on addr (host:port) open
// to the network: a host that is not loopback (127.0.0.0/8, ::1 or
// "localhost"; an empty host and 0.0.0.0 are every interface) needs bearer
// tokens, or TLS with client certificates (tlsOn) and an allowlist of their
// SPIFFE IDs, unless cfg.Insecure says to serve it open anyway. Evidence
// names every client of the mesh and what it called. Off loopback it also
// refuses uploads without authentication (cfg.IngestOpen), and the
// profiler (cfg.Pprof) on an API open by cfg.Insecure.
func CheckExposure(addr string, cfg Config, tlsOn bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http-addr %q: %w", addr, err)
	}
	switch {
	case cfg.IngestOpen && !loopback(host):
		return fmt.Errorf("refusing to take OPA decision log uploads (POST /logs) on %s (not a loopback address) without authentication: configure --ingest-token-file", addr)
	case cfg.Pprof != nil && cfg.Insecure && !loopback(host):
		return fmt.Errorf("refusing to serve --debug-pprof on %s (not a loopback address) with --api-insecure: /debug/pprof/cmdline shows the command line, "+
			"the store's DSN and its password included. Configure --api-token-file or client certificates, or bind 127.0.0.1", addr)
	}
	if cfg.Insecure || len(cfg.Tokens) > 0 || tlsOn && len(cfg.AllowSPIFFE) > 0 || loopback(host) {
		return nil
	}
	why := "neither --api-token-file nor client certificates (--http-tls-cert, --http-tls-key, --http-client-ca with --api-allow-spiffe) are configured"
	if len(cfg.AllowSPIFFE) > 0 {
		why = "--api-allow-spiffe needs TLS with client certificates on the listener (--http-tls-cert, --http-tls-key, --http-client-ca), and no --api-token-file is configured"
	}
	return fmt.Errorf("refusing to serve the evidence API on %s (not a loopback address) without authentication: %s. "+
		"Evidence reveals the mesh's topology and traffic: configure one of them, bind 127.0.0.1, or pass --api-insecure to serve it unauthenticated anyway",
		addr, why)
}

// OpenIngest says whether OPA decision log uploads (POST /logs) may be
// taken on addr (host:port) without authentication (Config.IngestOpen): only
// when no ingest credential is configured, the API is open to readers as
// well (no reader credential, or --api-insecure), and addr is loopback.
// Anywhere else an upload needs an ingest credential: a reader's token
// does not write evidence.
func OpenIngest(addr string, cfg Config) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || len(cfg.IngestTokens) > 0 || len(cfg.IngestAllowSPIFFE) > 0 {
		return false
	}
	return loopback(host) && (cfg.Insecure || len(cfg.Tokens) == 0 && len(cfg.AllowSPIFFE) == 0)
}

// loopback reports whether host names only this machine.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
