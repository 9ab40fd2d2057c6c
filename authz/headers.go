package authz

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// headerReader finds request headers where Envoy puts them: the headers
// map, or header_map when the filter sets encode_raw_headers (gRPC's
// proxyless ext_authz always does). Envoy fills one or the other. When
// headers has any entry it is the only place read, by exact name, as
// OPA-Envoy reads content-type, content-length and x-envoy-auth-partial-body
// there (a policy written for OPA-Envoy sees the same parsed_body); only when
// it is empty is header_map read, by name in any case, repeated entries
// joined (OPA-Envoy gives no parsed_body then).
type headerReader struct {
	m    map[string]string
	list []*corev3.HeaderValue
}

func newHeaderReader(h *authv3.AttributeContext_HttpRequest) headerReader {
	if m := h.GetHeaders(); len(m) > 0 {
		return headerReader{m: m}
	}
	return headerReader{list: h.GetHeaderMap().GetHeaders()}
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

// each calls fn for every header read.
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
