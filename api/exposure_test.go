package api

import (
	"io"
	"log"
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

func ts0() zerolog.Logger { return zerolog.Nop() }

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
