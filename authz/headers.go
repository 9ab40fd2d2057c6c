package authz

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// headerReader finds request headers in either place Envoy may put them:
// the headers map, or header_map when the filter sets encode_raw_headers
// (gRPC's proxyless ext_authz always does). Names are lower case in both.
type headerReader struct {
	m    map[string]string
	list []*corev3.HeaderValue
}

func newHeaderReader(h *authv3.AttributeContext_HttpRequest) headerReader {
	return headerReader{m: h.GetHeaders(), list: h.GetHeaderMap().GetHeaders()}
}

// lookup returns the header's value; repeated header_map entries are joined
// with "," as Envoy joins them in the headers map. present is false when
// neither place has the header.
func (r *headerReader) lookup(name string) (value string, present bool) {
	if v, ok := r.m[name]; ok {
		return v, true
	}
	var b strings.Builder
	for _, h := range r.list {
		if h == nil || !strings.EqualFold(h.Key, name) {
			continue
		}
		v := h.Value
		if v == "" {
			v = string(h.RawValue)
		}
		if present {
			b.WriteByte(',')
		}
		b.WriteString(v)
		present = true
	}
	return b.String(), present
}

// get returns the header's value, "" when absent.
func (r *headerReader) get(name string) string {
	v, _ := r.lookup(name)
	return v
}

// each calls fn for every header, from both places.
func (r *headerReader) each(fn func(name, value string)) {
	for k, v := range r.m {
		fn(k, v)
	}
	for _, h := range r.list {
		if h == nil {
			continue
		}
		v := h.Value
		if v == "" {
			v = string(h.RawValue)
		}
		fn(strings.ToLower(h.Key), v)
	}
}
