package envoy

import (
	"os"
	"strings"
	"testing"
)

// TestDecodeRejects shows that the decoder the other tests rely on fails on
// the mistakes it exists to catch, each made once in a copy of envoy.yaml.
func TestDecodeRejects(t *testing.T) {
	raw, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	good := string(raw)
	if _, err := DecodeBootstrap(raw); err != nil {
		t.Fatalf("envoy.yaml itself: %v", err)
	}
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"unknown field inside a typed_config", "include_tls_session: true", "include_tls_sesion: true", "include_tls_sesion"},
		{"unknown field outside", "connect_timeout: 1s", "connect_timout: 1s", "connect_timout"},
		{"typed_config type not among the extensions", "envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.lua.v3.Lua", "lua"},
		{"bad enum value", "forward_client_cert_details: APPEND_FORWARD", "forward_client_cert_details: APPEND", "APPEND"},
		{"validation rule inside a typed_config", "stat_prefix: inbound_mtls", "stat_prefix: \"\"", "StatPrefix"},
		{"validation rule of the bootstrap", "port_value: 8000", "port_value: 80000", "PortValue"},
		{"duplicate key", "codec_type: AUTO\n", "codec_type: AUTO\n          codec_type: HTTP1\n", "codec_type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(good, c.old) {
				t.Fatalf("envoy.yaml no longer has %q: update this case", c.old)
			}
			_, err := DecodeBootstrap([]byte(strings.Replace(good, c.old, c.new, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}
