package authz

import (
	"fmt"
	"net/http"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Defaults of the per-Check work bounds. Envoy sends at most
// max_headers_count headers (default 100; its API sets no upper bound) of at
// most max_request_headers_kb (default 60 KiB, at most 8 MiB); these are far
// above the defaults and above that 8 MiB (the headers map joins repeated
// headers with commas, header_map may repeat a value as raw bytes).
const (
	DefaultMaxRequestHeaders     = 10000
	DefaultMaxRequestHeaderBytes = 16 << 20
)

// LimitError is a request over one of the bounds on the work a Check does
// (Config.MaxRequestHeaders, MaxRequestHeaderBytes). It is denied with 431
// (as Envoy answers headers over its own limits) before any of its headers
// is read into an input document, and recorded with this error.
type LimitError struct {
	Limit string // the flag: max-request-headers or max-request-header-bytes
	Got   int    // what the request has (at least; counting stops past Max)
	Max   int
}

func (e *LimitError) Error() string {
	what := "headers"
	if e.Limit == "max-request-header-bytes" {
		what = "bytes of header names and values"
	}
	return fmt.Sprintf("request header fields too large: %d %s, more than --%s %d", e.Got, what, e.Limit, e.Max)
}

const statusHeadersTooLarge = http.StatusRequestHeaderFieldsTooLarge

// limits returns the bounds in effect: a zero field is its default.
func (c Config) limits() (headers, bytes int) {
	headers, bytes = c.MaxRequestHeaders, c.MaxRequestHeaderBytes
	if headers == 0 {
		headers = DefaultMaxRequestHeaders
	}
	if bytes == 0 {
		bytes = DefaultMaxRequestHeaderBytes
	}
	return headers, bytes
}

// checkHeaders counts the request's headers in both places Envoy puts them
// (each headers entry, each header_map entry) and their bytes (name, value
// and raw value). Over a bound, h forgets header_map, whose lookups read
// every entry, so that building the record costs no more than the bound;
// the headers map's lookups cost the same at any size.
//
// Both places are counted, whichever the reader h reads: the input
// document carries header_map as it is even beside headers.
func (s *Server) checkHeaders(req *authv3.AttributeContext_HttpRequest, h *headerReader) *LimitError {
	maxCount, maxBytes := s.cfg.limits()
	m, list := req.GetHeaders(), req.GetHeaderMap().GetHeaders()
	if n := len(m) + len(list); n > maxCount {
		h.list = nil
		return &LimitError{Limit: "max-request-headers", Got: n, Max: maxCount}
	}
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	for _, e := range list {
		if e != nil {
			n += len(e.Key) + len(e.Value) + len(e.RawValue)
		}
	}
	if n > maxBytes {
		h.list = nil
		return &LimitError{Limit: "max-request-header-bytes", Got: n, Max: maxBytes}
	}
	return nil
}
