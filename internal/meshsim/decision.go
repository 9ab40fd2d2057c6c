package meshsim

import (
	"net/http"
	"net/url"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/structpb"
)

// outcome is what the ext_authz filter makes of a Check's answer.
type outcome struct {
	allowed bool
	// A refused request gets a local reply: status, headers, body.
	status int
	header http.Header
	body   string
	// ok holds the mutations of an allowed request (nil: none).
	ok *authv3.OkHttpResponse
	// checked is false when no answer came (gRPC error, timeout).
	checked  bool
	err      error
	metadata *structpb.Struct
}

// filterOptions are the ext_authz filter options that decide a failed Check.
type filterOptions struct {
	statusOnError    int
	failureModeAllow bool
}

// decide maps a Check's answer as Envoy's ext_authz filter does: an OK
// status allows, with the OK response's mutations; an error_response is a
// failure (status_on_error unless it names a status); anything else denies,
// 403 unless the denied response names a status. No answer at all fails
// closed with status_on_error, or lets the request through unchecked with
// failure_mode_allow.
func decide(resp *authv3.CheckResponse, err error, o filterOptions) outcome {
	if err != nil {
		if o.failureModeAllow {
			return outcome{allowed: true, err: err}
		}
		return outcome{status: o.statusOnError, header: http.Header{}, err: err}
	}
	out := outcome{checked: true, metadata: resp.GetDynamicMetadata(), header: http.Header{}}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		out.allowed, out.ok = true, resp.GetOkResponse()
		return out
	}
	reply, status := resp.GetDeniedResponse(), http.StatusForbidden
	if er := resp.GetErrorResponse(); er != nil {
		if o.failureModeAllow {
			return outcome{allowed: true, checked: true, metadata: out.metadata}
		}
		reply, status = er, o.statusOnError
	}
	if c := int(reply.GetStatus().GetCode()); c > 0 {
		status = c
	}
	out.status, out.body = status, reply.GetBody()
	for _, hv := range reply.GetHeaders() {
		applyHeader(out.header, hv)
	}
	return out
}

// applyHeader applies one HeaderValueOption to h. append set: true appends
// to an existing value (joined with ","), false overwrites. append unset:
// append_action, where its default, APPEND_IF_EXISTS_OR_ADD, overwrites as
// the ext_authz filter documents for an unset append (the newest Envoy
// releases add a second value instead; meshproof's own headers leave both
// unset). Pseudo-headers are never touched.
func applyHeader(h http.Header, hv *corev3.HeaderValueOption) {
	key, value := hv.GetHeader().GetKey(), hv.GetHeader().GetValue()
	if key == "" || strings.HasPrefix(key, ":") {
		return
	}
	_, exists := h[http.CanonicalHeaderKey(key)]
	if a := hv.GetAppend(); a != nil {
		if a.GetValue() && exists {
			h.Set(key, strings.Join(h.Values(key), ",")+","+value)
		} else {
			h.Set(key, value)
		}
		return
	}
	switch hv.GetAppendAction() {
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if !exists {
			h.Set(key, value)
		}
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if exists {
			h.Set(key, value)
		}
	default: // APPEND_IF_EXISTS_OR_ADD (unset), OVERWRITE_IF_EXISTS_OR_ADD
		h.Set(key, value)
	}
}

// mutateRequest applies an OK response's request mutations: headers,
// headers_to_remove, then the query parameters to set and to remove. It
// returns the new path.
func mutateRequest(h http.Header, path string, ok *authv3.OkHttpResponse) string {
	for _, hv := range ok.GetHeaders() {
		applyHeader(h, hv)
	}
	for _, k := range ok.GetHeadersToRemove() {
		if !strings.HasPrefix(k, ":") && !strings.EqualFold(k, "host") {
			h.Del(k)
		}
	}
	if len(ok.GetQueryParametersToSet()) == 0 && len(ok.GetQueryParametersToRemove()) == 0 {
		return path
	}
	p, rawQuery, _ := strings.Cut(path, "?")
	q, _ := url.ParseQuery(rawQuery)
	for _, qp := range ok.GetQueryParametersToSet() {
		q.Set(qp.GetKey(), qp.GetValue())
	}
	for _, k := range ok.GetQueryParametersToRemove() {
		q.Del(k)
	}
	if enc := q.Encode(); enc != "" {
		return p + "?" + enc
	}
	return p
}

// metadataString reads a string the ext_authz server put in its dynamic
// metadata, as an access log's %DYNAMIC_METADATA(envoy.filters.http.ext_authz:key)%.
func metadataString(md *structpb.Struct, key string) string {
	return md.GetFields()[key].GetStringValue()
}
