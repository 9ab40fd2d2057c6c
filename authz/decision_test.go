package authz

import (
	"cmp"
	"slices"
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

func TestAnswerOf(t *testing.T) {
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
			got, err := answerOf(ast.MustParseTerm(tt.decision).Value)
			if err != nil {
				t.Fatalf("answerOf(%s): %v", tt.decision, err)
			}
			if !proto.Equal(sortedResponse(got.response), sortedResponse(tt.want)) {
				t.Errorf("answerOf(%s) response\n got %v\nwant %v", tt.decision, got.response, tt.want)
			}
			if got.allowed != tt.allowed || got.status != tt.status || got.reason != tt.reason {
				t.Errorf("answerOf(%s) = allowed %v status %d reason %q; want %v %d %q",
					tt.decision, got.allowed, got.status, got.reason, tt.allowed, tt.status, tt.reason)
			}
		})
	}
}

// TestDecideErrors: a decision OPA-Envoy cannot map is an error with
// OPA-Envoy's message word for word (internal.go's wrapping, response.go's
// text, Go type names as %T gives them for the decision's JSON form): with
// --on-policy-error=error it is the gRPC error's message, as OPA-Envoy's.
func TestDecideErrors(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		wantErr  string
	}{
		{"string", `"allow"`, "failed to get response status: illegal value for policy evaluation result: string"},
		{"number", `1`, "failed to get response status: illegal value for policy evaluation result: json.Number"},
		{"null", `null`, "failed to get response status: illegal value for policy evaluation result: <nil>"},
		{"array", `[true]`, "failed to get response status: illegal value for policy evaluation result: []interface {}"},
		{"set", `{true}`, "failed to get response status: illegal value for policy evaluation result: []interface {}"},
		{"missing allowed", `{"headers": {"x": "1"}}`, `failed to get response status: unable to determine evaluation result due to missing "allowed" key`},
		{"allowed not boolean", `{"allowed": "true"}`, "failed to get response status: type assertion error, expected allowed to be of type 'boolean' but got 'string'"},
		{"allowed null", `{"allowed": null}`, "failed to get response status: type assertion error, expected allowed to be of type 'boolean' but got '<nil>'"},
		{"header value number", `{"allowed": true, "headers": {"x-a": 1}}`, "failed to get response headers: type assertion error for header 'x-a'"},
		{"header value object", `{"allowed": false, "headers": {"x-a": {"b": "c"}}}`, "failed to get response headers: type assertion error for header 'x-a'"},
		{"header array holds a number", `{"allowed": true, "headers": {"x-a": ["1", 2]}}`, "failed to get response headers: invalid value type json.Number for header 'x-a'"},
		{"headers a string", `{"allowed": true, "headers": "x-a: 1"}`, "failed to get response headers: type assertion error, expected headers to be of type 'object' but got 'string'"},
		{"headers array holds a string", `{"allowed": true, "headers": ["x-a"]}`, "failed to get response headers: type assertion error, expected headers to be of type 'object' but got 'string'"},
		{"request_headers_to_remove a string", `{"allowed": true, "request_headers_to_remove": "cookie"}`, "failed to get request headers to remove: type assertion error, expected request_headers_to_remove to be of type '[]string' but got 'string'"},
		{"request_headers_to_remove holds a number", `{"allowed": true, "request_headers_to_remove": ["a", 1]}`, "failed to get request headers to remove: type assertion error, expected request_headers_to_remove value to be of type 'string' but got 'json.Number'"},
		{"response_headers_to_add bad value", `{"allowed": true, "response_headers_to_add": {"x": true}}`, "failed to get response headers to send to client: type assertion error for header 'x'"},
		{"response_headers_to_add array holds a number", `{"allowed": true, "response_headers_to_add": [1]}`, "failed to get response headers to send to client: type assertion error, expected headers to be of type 'object' but got 'json.Number'"},
		{"query_parameters_to_set an array", `{"allowed": true, "query_parameters_to_set": ["a"]}`, "failed to get request query parameters to set: type assertion error, expected query_parameters_to_set to be a map but got '[]interface {}'"},
		{"query_parameters_to_set number value", `{"allowed": true, "query_parameters_to_set": {"a": 1}}`, "failed to get request query parameters to set: type assertion error, expected value to be string or array but got 'json.Number'"},
		{"query_parameters_to_set array of numbers", `{"allowed": true, "query_parameters_to_set": {"a": [1]}}`, "failed to get request query parameters to set: type assertion error: expected array element to be string but got 'json.Number'"},
		{"query_parameters_to_remove holds a number", `{"allowed": true, "query_parameters_to_remove": [1]}`, "failed to get request query parameters to remove: type assertion error, expected query_parameters_to_remove value to be of type 'string' but got 'json.Number'"},
		{"body not a string", `{"allowed": false, "body": {"a": 1}}`, "failed to get response body: type assertion error, expected body to be of type 'string' but got 'map[string]interface {}'"},
		{"http_status 999", `{"allowed": false, "http_status": 999}`, "failed to get response http status: invalid HTTP status code 999"},
		{"http_status 299", `{"allowed": false, "http_status": 299}`, "failed to get response http status: invalid HTTP status code 299"},
		{"http_status 0", `{"allowed": false, "http_status": 0}`, "failed to get response http status: invalid HTTP status code 0"},
		{"http_status beyond int32", `{"allowed": false, "http_status": 4294967699}`, "failed to get response http status: invalid HTTP status code 4294967699"},
		{"http_status a string", `{"allowed": false, "http_status": "401"}`, "failed to get response http status: type assertion error, expected http_status to be of type 'number' but got 'string'"},
		{"http_status fractional", `{"allowed": false, "http_status": 1.5}`, `failed to get response http status: error converting JSON number to int: strconv.ParseInt: parsing "1.5": invalid syntax`},
		{"http_status with an exponent", `{"allowed": false, "http_status": 4e2}`, `failed to get response http status: error converting JSON number to int: strconv.ParseInt: parsing "4e2": invalid syntax`},
		{"dynamic_metadata a string", `{"allowed": true, "dynamic_metadata": "x"}`, "failed to get dynamic metadata: type assertion error, expected dynamic_metadata to be of type 'object' but got 'string'"},
		{"dynamic_metadata an array", `{"allowed": false, "dynamic_metadata": [{"a": 1}]}`, "failed to get dynamic metadata: type assertion error, expected dynamic_metadata to be of type 'object' but got '[]interface {}'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := answerOf(ast.MustParseTerm(tt.decision).Value)
			if err == nil {
				t.Fatalf("answerOf(%s) = %v, want error %q", tt.decision, got.response, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("answerOf(%s) error\n got %q\nwant %q", tt.decision, err, tt.wantErr)
			}
		})
	}
}

// TestDecideNonStringKeys: OPA-Envoy reads the decision after OPA's JSON
// conversion, which JSON-encodes an object key that is not a string, so a
// policy's {1: "one"} in headers sends header "1: one" there; here too.
// Keys that encode alike are one entry, the string key's value standing
// (OPA orders numbers before strings, and the last written wins).
func TestDecideNonStringKeys(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		want     *authv3.CheckResponse
	}{
		{
			name:     "headers: number, boolean, null, array, object and set keys",
			decision: `{"allowed": true, "headers": {1: "one", true: "t", null: "n", [1, "a"]: "arr", {"b": 1, "a": [2]}: "obj", {"<x>"}: "set", 1.50: "f"}}`,
			want: okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				hdr("1", "one"), hdr("1.50", "f"), hdr(`["\u003cx\u003e"]`, "set"), hdr(`[1,"a"]`, "arr"),
				hdr("null", "n"), hdr("true", "t"), hdr(`{"a":[2],"b":1}`, "obj"),
			}}),
		},
		{
			name:     "denied: headers to the client",
			decision: `{"allowed": false, "headers": {404: ["a", "b"]}}`,
			want:     deniedResp(typev3.StatusCode_Forbidden, "", hdr("404", "a"), hdr("404", "b")),
		},
		{
			name:     "response_headers_to_add, an array of objects",
			decision: `{"allowed": true, "response_headers_to_add": [{2: "two"}, {false: "f"}]}`,
			want:     okResp(&authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{hdr("2", "two"), hdr("false", "f")}}),
		},
		{
			name:     "query_parameters_to_set",
			decision: `{"allowed": true, "query_parameters_to_set": {1: "one", false: ["f", "g"]}}`,
			want:     okResp(&authv3.OkHttpResponse{QueryParametersToSet: []*corev3.QueryParameter{qp("1", "one"), qp("false", "f"), qp("false", "g")}}),
		},
		{
			name:     "a number and a string key alike: the string's value stands",
			decision: `{"allowed": true, "headers": {1: "num", "1": "str"}}`,
			want:     okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("1", "str")}}),
		},
		{
			name:     "the value that does not stand is not checked",
			decision: `{"allowed": true, "headers": {1: 5, "1": "str"}}`,
			want:     okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("1", "str")}}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := answerOf(ast.MustParseTerm(tt.decision).Value)
			if err != nil {
				t.Fatalf("answerOf(%s): %v", tt.decision, err)
			}
			if !proto.Equal(sortedResponse(got.response), sortedResponse(tt.want)) {
				t.Errorf("answerOf(%s) response\n got %v\nwant %v", tt.decision, got.response, tt.want)
			}
		})
	}
	// A bad value under a key that is not a string is named by its JSON form.
	_, err := answerOf(ast.MustParseTerm(`{"allowed": true, "headers": {[1]: 2}}`).Value)
	if want := "failed to get response headers: type assertion error for header '[1]'"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
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
			got, err := answerOf(ast.MustParseTerm(tt.decision).Value)
			if err != nil {
				t.Fatalf("answerOf(%s): %v", tt.decision, err)
			}
			if !proto.Equal(sortedResponse(got.response), sortedResponse(tt.want)) {
				t.Errorf("answerOf(%s) response\n got %v\nwant %v", tt.decision, got.response, tt.want)
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
