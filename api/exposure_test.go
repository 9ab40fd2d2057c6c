package api

import (
	"io"
	"log"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestCheckExposure(t *testing.T) {
	tokens := Config{Tokens: []string{tokenA}}
	spiffeOnly := Config{AllowSPIFFE: []string{"spiffe://td/ns/audit"}}
	tests := []struct {
		addr  string
		cfg   Config
		tlsOn bool
		want  string // "" when allowed
	}{
		{"127.0.0.1:8181", Config{}, false, ""},
		{"127.1.2.3:8181", Config{}, false, ""},
		{"[::1]:8181", Config{}, false, ""},
		{"localhost:8181", Config{}, false, ""},
		{"LocalHost:8181", Config{}, false, ""},
		{"0.0.0.0:8181", Config{}, false, "not a loopback address"},
		{":8181", Config{}, false, "not a loopback address"},
		{"[::]:8181", Config{}, false, "not a loopback address"},
		{"203.0.113.7:8181", Config{}, false, "--api-insecure"},
		{"10.0.0.1:8181", Config{}, true, "neither --api-token-file nor client certificates"},
		{"myhost:8181", Config{}, false, "not a loopback address"},
		{"localhost.evil.example:8181", Config{}, false, "not a loopback address"},
		{"0.0.0.0:8181", tokens, false, ""},
		{":8181", tokens, true, ""},
		{"0.0.0.0:8181", spiffeOnly, true, ""},
		{"0.0.0.0:8181", spiffeOnly, false, "--api-allow-spiffe needs TLS"},
		{"203.0.113.7:8181", Config{Insecure: true}, false, ""},
		{":8181", Config{Insecure: true}, false, ""},
		{"8181", Config{}, false, "http-addr"},
		{"127.0.0.1:8181", Config{IngestOpen: true}, false, ""},
		{"0.0.0.0:8181", Config{Tokens: []string{tokenA}, IngestOpen: true}, false, "--ingest-token-file"},
		{"0.0.0.0:8181", Config{Insecure: true, IngestOpen: true}, false, "--ingest-token-file"},
		{"0.0.0.0:8181", Config{Tokens: []string{tokenA}, IngestTokens: []string{tokenB}}, false, ""},
		{"0.0.0.0:8181", Config{IngestTokens: []string{tokenB}}, false, "neither --api-token-file"},
		{"0.0.0.0:8181", Config{Tokens: []string{tokenA}, Pprof: http.NotFoundHandler()}, false, ""},
		{"0.0.0.0:8181", Config{Insecure: true, Pprof: http.NotFoundHandler()}, false, "--debug-pprof"},
		{"127.0.0.1:8181", Config{Insecure: true, Pprof: http.NotFoundHandler()}, false, ""},
		{"[::1]:8181", Config{Pprof: http.NotFoundHandler()}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			err := CheckExposure(tc.addr, tc.cfg, tc.tlsOn)
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckExposure(%q, tls %v) = %v, want %q", tc.addr, tc.tlsOn, err, tc.want)
			}
		})
	}
}

// TestOpenIngest: uploads go without authentication only on loopback, with
// no ingest credential, and the API open to readers as well.
func TestOpenIngest(t *testing.T) {
	tests := []struct {
		addr string
		cfg  Config
		want bool
	}{
		{"127.0.0.1:8181", Config{}, true},
		{"localhost:8181", Config{Insecure: true}, true},
		{"[::1]:0", Config{}, true},
		{"0.0.0.0:8181", Config{Insecure: true}, false},
		{":8181", Config{Insecure: true}, false},
		{"127.0.0.1:8181", Config{Tokens: []string{tokenA}}, false},
		{"127.0.0.1:8181", Config{AllowSPIFFE: []string{"spiffe://td/ns/audit"}}, false},
		{"127.0.0.1:8181", Config{IngestTokens: []string{tokenB}}, false},
		{"127.0.0.1:8181", Config{IngestAllowSPIFFE: []string{"spiffe://td/ns/opa"}}, false},
		{"8181", Config{}, false},
	}
	for _, tc := range tests {
		if got := OpenIngest(tc.addr, tc.cfg); got != tc.want {
			t.Errorf("OpenIngest(%q, %+v) = %v, want %v", tc.addr, tc.cfg, got, tc.want)
		}
	}
}

func ts0() zerolog.Logger { return zerolog.Nop() }

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
