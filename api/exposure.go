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
// names every client of the mesh and what it called.
func CheckExposure(addr string, cfg Config, tlsOn bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http-addr %q: %w", addr, err)
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

// loopback reports whether host names only this machine.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
