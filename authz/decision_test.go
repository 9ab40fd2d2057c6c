package authz

import (
	"cmp"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The expected responses are spelled out here rather than built with the
// package's own helpers, so that a mistake there cannot hide.

func okResp(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	r := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}
	if ok != nil {
		r.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	}
	return r
}

func deniedResp(status typev3.StatusCode, body string, headers ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: status}, Headers: headers, Body: body,
		}},
	}
}

func hdr(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func qp(k, v string) *corev3.QueryParameter { return &corev3.QueryParameter{Key: k, Value: v} }

func withMetadata(r *authv3.CheckResponse, md map[string]any) *authv3.CheckResponse {
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	r.DynamicMetadata = s
	return r
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		decision string // Rego term
		want     *authv3.CheckResponse
		allowed  bool
		status   int // HTTP status when denied
		reason   string
	}{
		{name: "boolean true", decision: `true`, want: okResp(nil), allowed: true},
		{
			name: "boolean false", decision: `false`,
			want:   &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}},
			status: 403,
		},
		{name: "object allowed", decision: `{"allowed": true}`, want: okResp(&authv3.OkHttpResponse{}), allowed: true},
		{name: "object denied", decision: `{"allowed": false}`, want: deniedResp(typev3.StatusCode_Forbidden, ""), status: 403},
		{
			name:     "headers object upstream when allowed",
			decision: `{"allowed": true, "headers": {"x-a": "1", "x-b": ["2", "3"]}}`,
			want:     okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("x-a", "1"), hdr("x-b", "2"), hdr("x-b", "3")}}),
			allowed:  true,
		},
		{
			name:     "headers array of objects",
			decision: `{"allowed": true, "headers": [{"x-a": "1"}, {"x-a": "2", "x-b": ["3"]}]}`,
			want:     okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("x-a", "1"), hdr("x-a", "2"), hdr("x-b", "3")}}),
			allowed:  true,
		},
		{
			name:     "headers to the client when denied",
			decision: `{"allowed": false, "headers": [{"www-authenticate": "Bearer"}, {"x-b": ["1", "2"]}]}`,
			want:     deniedResp(typev3.StatusCode_Forbidden, "", hdr("www-authenticate", "Bearer"), hdr("x-b", "1"), hdr("x-b", "2")),
			status:   403,
		},
		{
			name:     "request_headers_to_remove",
			decision: `{"allowed": true, "request_headers_to_remove": ["cookie", "authorization"]}`,
			want:     okResp(&authv3.OkHttpResponse{HeadersToRemove: []string{"cookie", "authorization"}}),
			allowed:  true,
		},
		{
			name:     "response_headers_to_add",
			decision: `{"allowed": true, "response_headers_to_add": {"x-r": ["1", "2"], "x-s": "3"}}`,
			want:     okResp(&authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdr("x-r", "1"), hdr("x-r", "2"), hdr("x-s", "3")}}),
			allowed:  true,
		},
		{
			name:     "query_parameters_to_set and _to_remove",
			decision: `{"allowed": true, "query_parameters_to_set": {"a": "1", "b": ["2", "3"]}, "query_parameters_to_remove": ["token"]}`,
			want: okResp(&authv3.OkHttpResponse{
				QueryParametersToSet:    []*corev3.QueryParameter{qp("a", "1"), qp("b", "2"), qp("b", "3")},
				QueryParametersToRemove: []string{"token"},
			}),
			allowed: true,
		},
		{
			name:     "allow-only fields are not read when denied",
			decision: `{"allowed": false, "request_headers_to_remove": 1, "response_headers_to_add": 2, "query_parameters_to_set": 3, "query_parameters_to_remove": 4}`,
			want:     deniedResp(typev3.StatusCode_Forbidden, ""),
			status:   403,
		},
		{
			name:     "deny-only fields are not read when allowed",
			decision: `{"allowed": true, "body": 1, "http_status": "x"}`,
			want:     okResp(&authv3.OkHttpResponse{}),
			allowed:  true,
		},
		{
			name:     "body is the reason without one",
			decision: `{"allowed": false, "body": "go away"}`,
			want:     deniedResp(typev3.StatusCode_Forbidden, "go away"),
			status:   403,
			reason:   "go away",
		},
		{
			name:     "custom http_status",
			decision: `{"allowed": false, "http_status": 401, "body": "who are you"}`,
			want:     deniedResp(typev3.StatusCode_Unauthorized, "who are you"),
			status:   401,
			reason:   "who are you",
		},
		{
			name:     "dynamic_metadata allowed, nested with numbers",
			decision: `{"allowed": true, "dynamic_metadata": {"a": {"b": 1, "c": [1.5, "x", true, null]}, "n": 12345678901}}`,
			want: withMetadata(okResp(&authv3.OkHttpResponse{}), map[string]any{
				"a": map[string]any{"b": 1.0, "c": []any{1.5, "x", true, nil}}, "n": 12345678901.0,
			}),
			allowed: true,
		},
		{
			name:     "dynamic_metadata kept when denied",
			decision: `{"allowed": false, "dynamic_metadata": {"rule": "r7"}}`,
			want:     withMetadata(deniedResp(typev3.StatusCode_Forbidden, ""), map[string]any{"rule": "r7"}),
			status:   403,
		},
		{
			name:     "reason is read when allowed",
			decision: `{"allowed": true, "reason": "rule 7"}`,
			want:     okResp(&authv3.OkHttpResponse{}),
			allowed:  true,
			reason:   "rule 7",
		},
		{
			name:     "reason wins over body",
			decision: `{"allowed": false, "reason": "rule 8", "body": "denied"}`,
			want:     deniedResp(typev3.StatusCode_Forbidden, "denied"),
			status:   403,
			reason:   "rule 8",
		},
		{
			name:     "reason that is not a string is ignored",
			decision: `{"allowed": false, "reason": ["x"], "body": "denied"}`,
			want:     deniedResp(typev3.StatusCode_Forbidden, "denied"),
			status:   403,
			reason:   "denied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decide(ast.MustParseTerm(tt.decision).Value)
			if err != nil {
				t.Fatalf("decide(%s): %v", tt.decision, err)
			}
			if !proto.Equal(sortedResponse(got.response), sortedResponse(tt.want)) {
				t.Errorf("decide(%s) response\n got %v\nwant %v", tt.decision, got.response, tt.want)
			}
			if got.allowed != tt.allowed || got.status != tt.status || got.reason != tt.reason {
				t.Errorf("decide(%s) = allowed %v status %d reason %q; want %v %d %q",
					tt.decision, got.allowed, got.status, got.reason, tt.allowed, tt.status, tt.reason)
			}
		})
	}
}

func TestDecideErrors(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		wantErr  string // substring of the error
	}{
		{"string", `"allow"`, "illegal value for policy evaluation result"},
		{"number", `1`, "illegal value for policy evaluation result"},
		{"null", `null`, "illegal value for policy evaluation result"},
		{"array", `[true]`, "illegal value for policy evaluation result"},
		{"missing allowed", `{"headers": {"x": "1"}}`, `missing "allowed" key`},
		{"allowed not boolean", `{"allowed": "true"}`, "expected allowed to be of type 'boolean'"},
		{"allowed null", `{"allowed": null}`, "expected allowed to be of type 'boolean'"},
		{"header value number", `{"allowed": true, "headers": {"x-a": 1}}`, "type assertion error for header"},
		{"header value object", `{"allowed": false, "headers": {"x-a": {"b": "c"}}}`, "type assertion error for header"},
		{"header array holds a number", `{"allowed": true, "headers": {"x-a": ["1", 2]}}`, "invalid value type number for header"},
		{"headers a string", `{"allowed": true, "headers": "x-a: 1"}`, "expected headers to be of type 'object'"},
		{"headers array holds a string", `{"allowed": true, "headers": ["x-a"]}`, "expected headers to be of type 'object'"},
		{"request_headers_to_remove a string", `{"allowed": true, "request_headers_to_remove": "cookie"}`, "request_headers_to_remove"},
		{"request_headers_to_remove holds a number", `{"allowed": true, "request_headers_to_remove": ["a", 1]}`, "request_headers_to_remove"},
		{"response_headers_to_add bad value", `{"allowed": true, "response_headers_to_add": {"x": true}}`, "type assertion error for header"},
		{"query_parameters_to_set an array", `{"allowed": true, "query_parameters_to_set": ["a"]}`, "query_parameters_to_set to be a map"},
		{"query_parameters_to_set number value", `{"allowed": true, "query_parameters_to_set": {"a": 1}}`, "expected value to be string or array"},
		{"query_parameters_to_set array of numbers", `{"allowed": true, "query_parameters_to_set": {"a": [1]}}`, "expected array element to be string"},
		{"query_parameters_to_remove holds a number", `{"allowed": true, "query_parameters_to_remove": [1]}`, "query_parameters_to_remove"},
		{"body not a string", `{"allowed": false, "body": {"a": 1}}`, "expected body to be of type 'string'"},
		{"http_status 999", `{"allowed": false, "http_status": 999}`, "invalid HTTP status code 999"},
		{"http_status 0", `{"allowed": false, "http_status": 0}`, "invalid HTTP status code 0"},
		{"http_status beyond int32", `{"allowed": false, "http_status": 4294967699}`, "invalid HTTP status code"},
		{"http_status a string", `{"allowed": false, "http_status": "401"}`, "expected http_status to be of type 'number'"},
		{"http_status fractional", `{"allowed": false, "http_status": 1.5}`, "error converting JSON number to int"},
		{"dynamic_metadata a string", `{"allowed": true, "dynamic_metadata": "x"}`, "expected dynamic_metadata to be of type 'object'"},
		{"dynamic_metadata an array", `{"allowed": false, "dynamic_metadata": [{"a": 1}]}`, "expected dynamic_metadata to be of type 'object'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decide(ast.MustParseTerm(tt.decision).Value)
			if err == nil {
				t.Fatalf("decide(%s) = %v, want an error containing %q", tt.decision, got.response, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("decide(%s) error %q, want it to contain %q", tt.decision, err, tt.wantErr)
			}
		})
	}
}

// TestDecideHeaderErrorNamesHeader: the error names the header as OPA-Envoy
// does, 'x-a', not as Rego prints a string term, '"x-a"'. The message ends up
// in the log and in the evidence record's decision error.
func TestDecideHeaderErrorNamesHeader(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		wantErr  string
	}{
		{"value a number", `{"allowed": true, "headers": {"x-a": 1}}`, "failed to get response headers: type assertion error for header 'x-a'"},
		{"array holds a number", `{"allowed": true, "headers": {"x-a": ["1", 2]}}`, "failed to get response headers: invalid value type number for header 'x-a'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decide(ast.MustParseTerm(tt.decision).Value)
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("decide(%s) error %v, want %q", tt.decision, err, tt.wantErr)
			}
		})
	}
}

// TestDecideSetsAsArrays: OPA-Envoy reads the decision after OPA turned it
// into JSON, where a Rego set is an array. A policy that builds
// request_headers_to_remove or a header's values with a set comprehension or
// a partial set rule therefore works under OPA-Envoy and must work here.
func TestDecideSetsAsArrays(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		want     *authv3.CheckResponse
	}{
		{
			name:     "request_headers_to_remove a set",
			decision: `{"allowed": true, "request_headers_to_remove": {"cookie"}}`,
			want:     okResp(&authv3.OkHttpResponse{HeadersToRemove: []string{"cookie"}}),
		},
		{
			name:     "query_parameters_to_remove a set",
			decision: `{"allowed": true, "query_parameters_to_remove": {"token"}}`,
			want:     okResp(&authv3.OkHttpResponse{QueryParametersToRemove: []string{"token"}}),
		},
		{
			name:     "header values a set",
			decision: `{"allowed": true, "headers": {"x-a": {"1"}}}`,
			want:     okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("x-a", "1")}}),
		},
		{
			name:     "headers a set of objects",
			decision: `{"allowed": true, "headers": {{"x-a": "1"}}}`,
			want:     okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("x-a", "1")}}),
		},
		{
			name:     "query parameter values a set",
			decision: `{"allowed": true, "query_parameters_to_set": {"a": {"1"}}}`,
			want:     okResp(&authv3.OkHttpResponse{QueryParametersToSet: []*corev3.QueryParameter{qp("a", "1")}}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decide(ast.MustParseTerm(tt.decision).Value)
			if err != nil {
				t.Fatalf("decide(%s): %v", tt.decision, err)
			}
			if !proto.Equal(sortedResponse(got.response), sortedResponse(tt.want)) {
				t.Errorf("decide(%s) response\n got %v\nwant %v", tt.decision, got.response, tt.want)
			}
		})
	}
}

// sortedResponse returns a copy of r with header and query parameter lists
// in key order: the order of an object's keys is not defined. The sort is
// stable, so the order of one key's values (from an array) still counts.
func sortedResponse(r *authv3.CheckResponse) *authv3.CheckResponse {
	r = proto.Clone(r).(*authv3.CheckResponse)
	byKey := func(a, b *corev3.HeaderValueOption) int {
		return cmp.Compare(a.GetHeader().GetKey(), b.GetHeader().GetKey())
	}
	if ok := r.GetOkResponse(); ok != nil {
		slices.SortStableFunc(ok.Headers, byKey)
		slices.SortStableFunc(ok.ResponseHeadersToAdd, byKey)
		slices.SortStableFunc(ok.QueryParametersToSet, func(a, b *corev3.QueryParameter) int { return cmp.Compare(a.Key, b.Key) })
	}
	if d := r.GetDeniedResponse(); d != nil {
		slices.SortStableFunc(d.Headers, byKey)
	}
	return r
}
