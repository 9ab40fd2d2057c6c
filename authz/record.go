package authz

import (
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshproof/meshproof/evidence"
)

// newRecord fills the evidence record with everything known before the
// decision; the caller adds the decision, then stamps it (recorder.Stamp:
// the replica, and the bounds).
func newRecord(id string, now time.Time, cfg Config, req *authv3.CheckRequest, h *headerReader, f *facts) *evidence.Record {
	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	r := &evidence.Record{
		ID:          id,
		Time:        now.UTC(),
		RequestID:   h.get("x-request-id"),
		StreamID:    httpReq.GetId(),
		TraceID:     traceID(h),
		Source:      f.source,
		Destination: f.destination,
		TLS:         evidence.TLS{SNI: attrs.GetTlsSession().GetSni()},
		XFCC:        f.xfcc,
		Request: evidence.Request{
			Method:   httpReq.GetMethod(),
			Host:     httpReq.GetHost(),
			Path:     recordedPath(httpReq.GetPath(), cfg.RecordQuery),
			Protocol: httpReq.GetProtocol(),
		},
		Verdict: f.verdict,
		Reasons: f.reasons,
	}
	for _, name := range cfg.RecordHeaders {
		if v, ok := h.lookup(strings.ToLower(name)); ok {
			if r.Headers == nil {
				r.Headers = make(map[string]string, len(cfg.RecordHeaders))
			}
			r.Headers[strings.ToLower(name)] = v
		}
	}
	r.Source.Address, r.Source.Port = socketAddress(attrs.GetSource().GetAddress())
	r.Destination.Address, r.Destination.Port = socketAddress(attrs.GetDestination().GetAddress())
	return r
}

func socketAddress(a *corev3.Address) (string, uint32) {
	if sa := a.GetSocketAddress(); sa != nil {
		return sa.GetAddress(), sa.GetPortValue()
	}
	if p := a.GetPipe(); p != nil {
		return "unix:" + p.GetPath(), 0
	}
	return "", 0
}

// recordedPath drops the query string unless asked to keep it: it often
// carries tokens and personal data, and evidence is kept for a year.
func recordedPath(p string, withQuery bool) string {
	if i := strings.IndexByte(p, '?'); i >= 0 && !withQuery {
		return p[:i]
	}
	return p
}

// traceID takes the W3C traceparent's trace-id, else Zipkin's x-b3-traceid,
// else the trace id of a single b3 header.
func traceID(h *headerReader) string {
	if tp := h.get("traceparent"); tp != "" {
		// version-traceid-parentid-flags
		parts := strings.SplitN(tp, "-", 4)
		if len(parts) == 4 && len(parts[1]) == 32 {
			return parts[1]
		}
	}
	if b3 := h.get("x-b3-traceid"); b3 != "" {
		return b3
	}
	if b3 := h.get("b3"); b3 != "" {
		id, _, _ := strings.Cut(b3, "-")
		return id
	}
	return ""
}
