package authz

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestHeaderReaderRule: headers, when it has any entry, is the only place
// read, by exact name (as OPA-Envoy); header_map only when headers is empty
// (encode_raw_headers), by name in any case, repeated entries joined.
func TestHeaderReaderRule(t *testing.T) {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "X-Forwarded-Client-Cert", RawValue: []byte("By=a")},
		{Key: "x-forwarded-client-cert", Value: "By=b"},
		{Key: "content-type", RawValue: []byte("application/json")},
	}}
	both := newHeaderReader(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{":path": "/", "Content-Type": "text/plain"}, HeaderMap: hm})
	mapOnly := newHeaderReader(&authv3.AttributeContext_HttpRequest{HeaderMap: hm})
	tests := []struct {
		r       headerReader
		name    string
		value   string
		present bool
	}{
		{both, ":path", "/", true},
		{both, "x-forwarded-client-cert", "", false},
		{both, "content-type", "", false}, // "Content-Type" is not the name OPA-Envoy reads
		{mapOnly, "x-forwarded-client-cert", "By=a,By=b", true},
		{mapOnly, "content-type", "application/json", true},
		{mapOnly, ":path", "", false},
	}
	for i, tt := range tests {
		if v, ok := tt.r.lookup(tt.name); v != tt.value || ok != tt.present {
			t.Errorf("case %d, %s: got %q %v, want %q %v", i, tt.name, v, ok, tt.value, tt.present)
		}
	}
}
