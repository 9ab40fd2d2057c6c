package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// This file maps a decision to a CheckResponse exactly as OPA-Envoy does
// (envoyauth/response.go and internal.go), reading the ast value directly
// rather than converting it to Go maps first:
//
//   - a boolean allows or denies; the response carries no HTTP part;
//   - an object needs a boolean "allowed"; "headers" (object, or array of
//     objects; values a string or an array of strings) go upstream when
//     allowed and to the client when denied; "dynamic_metadata" (object) is
//     returned either way; when allowed, "request_headers_to_remove",
//     "response_headers_to_add", "query_parameters_to_set" and
//     "query_parameters_to_remove" apply; when denied, "body" (string) and
//     "http_status" (a status Envoy knows, default 403);
//   - anything else is an error, with OPA-Envoy's message word for word
//     (Go type names included, as %T of the decision's JSON form gives them:
//     goType), which the server answers per --on-policy-error.
//
// OPA-Envoy sees the decision after its JSON conversion (ast.JSON), where an
// object key that is not a string is JSON-encoded: jsonKeys does the same.
//
// meshproof also reads "reason" (a string; OPA-Envoy ignores it) for the
// evidence record.

var (
	kAllowed                 = ast.StringTerm("allowed")
	kHTTPStatus              = ast.StringTerm("http_status")
	kDynamicMetadata         = ast.StringTerm("dynamic_metadata")
	kRequestHeadersToRemove  = ast.StringTerm("request_headers_to_remove")
	kResponseHeadersToAdd    = ast.StringTerm("response_headers_to_add")
	kQueryParametersToSet    = ast.StringTerm("query_parameters_to_set")
	kQueryParametersToRemove = ast.StringTerm("query_parameters_to_remove")
	kReason                  = ast.StringTerm("reason")
)

// policyAnswer is the answer to a Check before meshproof's own additions
// (finish): the policy's, read by answerOf, or meshproof's when there is no
// decision (noDecision, denyUnrecorded). Not the mTLS verdict
// (evidence.Verdict).
type policyAnswer struct {
	allowed  bool
	response *authv3.CheckResponse
	status   int    // HTTP status sent when denied
	reason   string // from "reason", or the denial body
	// noDecisionID leaves OPA-Envoy's decision_id out of the metadata, as
	// OPA-Envoy does when it cannot parse the request.
	noDecisionID bool
}

// answerOf reads a policy's decision value into OPA-Envoy's CheckResponse.
func answerOf(v ast.Value) (policyAnswer, error) {
	switch d := v.(type) {
	case ast.Boolean:
		out := policyAnswer{allowed: bool(d), response: &authv3.CheckResponse{}}
		if d {
			out.response.Status = okStatus
		} else {
			out.response.Status = deniedStatus
			out.status = http.StatusForbidden
		}
		return out, nil
	case ast.Object:
		return answerOfObject(d)
	default:
		return policyAnswer{}, fmt.Errorf("failed to get response status: illegal value for policy evaluation result: %s", goType(v))
	}
}

var (
	okStatus     = &rpcstatus.Status{Code: int32(code.Code_OK)}
	deniedStatus = &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}
)

func answerOfObject(d ast.Object) (policyAnswer, error) {
	at := d.Get(kAllowed)
	if at == nil {
		return policyAnswer{}, errors.New("failed to get response status: unable to determine evaluation result due to missing \"allowed\" key")
	}
	allowed, ok := at.Value.(ast.Boolean)
	if !ok {
		return policyAnswer{}, fmt.Errorf("failed to get response status: type assertion error, expected allowed to be of type 'boolean' but got '%s'", goType(at.Value))
	}
	out := policyAnswer{allowed: bool(allowed), response: &authv3.CheckResponse{}}
	if r, ok := stringField(d, kReason); ok {
		out.reason = r
	}
	headers, err := headerOptions(d.Get(kHeaders))
	if err != nil {
		return policyAnswer{}, fmt.Errorf("failed to get response headers: %w", err)
	}
	if t := d.Get(kDynamicMetadata); t != nil {
		obj, ok := t.Value.(ast.Object)
		if !ok {
			return policyAnswer{}, fmt.Errorf("failed to get dynamic metadata: type assertion error, expected dynamic_metadata to be of type 'object' but got '%s'", goType(t.Value))
		}
		md, err := structOf(obj)
		if err != nil {
			return policyAnswer{}, fmt.Errorf("failed to get dynamic metadata: %w", err)
		}
		out.response.DynamicMetadata = md
	}
	if allowed {
		return allowedAnswer(d, out, headers)
	}
	return deniedAnswer(d, out, headers)
}

func allowedAnswer(d ast.Object, out policyAnswer, headers []*corev3.HeaderValueOption) (policyAnswer, error) {
	ok := &authv3.OkHttpResponse{Headers: headers}
	var err error
	if ok.HeadersToRemove, err = stringList(d.Get(kRequestHeadersToRemove), "request_headers_to_remove"); err != nil {
		return policyAnswer{}, fmt.Errorf("failed to get request headers to remove: %w", err)
	}
	if ok.ResponseHeadersToAdd, err = headerOptions(d.Get(kResponseHeadersToAdd)); err != nil {
		return policyAnswer{}, fmt.Errorf("failed to get response headers to send to client: %w", err)
	}
	if ok.QueryParametersToRemove, err = stringList(d.Get(kQueryParametersToRemove), "query_parameters_to_remove"); err != nil {
		return policyAnswer{}, fmt.Errorf("failed to get request query parameters to remove: %w", err)
	}
	if ok.QueryParametersToSet, err = queryParameters(d.Get(kQueryParametersToSet)); err != nil {
		return policyAnswer{}, fmt.Errorf("failed to get request query parameters to set: %w", err)
	}
	out.response.Status = okStatus
	out.response.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	return out, nil
}

func deniedAnswer(d ast.Object, out policyAnswer, headers []*corev3.HeaderValueOption) (policyAnswer, error) {
	body := ""
	if t := d.Get(kBody); t != nil {
		s, ok := t.Value.(ast.String)
		if !ok {
			return policyAnswer{}, fmt.Errorf("failed to get response body: type assertion error, expected body to be of type 'string' but got '%s'", goType(t.Value))
		}
		body = string(s)
	}
	status := http.StatusForbidden
	if t := d.Get(kHTTPStatus); t != nil {
		n, ok := t.Value.(ast.Number)
		if !ok {
			return policyAnswer{}, fmt.Errorf("failed to get response http status: type assertion error, expected http_status to be of type 'number' but got '%s'", goType(t.Value))
		}
		i, err := json.Number(n).Int64()
		if err != nil {
			return policyAnswer{}, fmt.Errorf("failed to get response http status: error converting JSON number to int: %v", err)
		}
		if _, known := typev3.StatusCode_name[int32(i)]; !known || http.StatusText(int(i)) == "" || i != int64(int32(i)) {
			return policyAnswer{}, fmt.Errorf("failed to get response http status: invalid HTTP status code %v", i)
		}
		status = int(i)
	}
	if out.reason == "" {
		out.reason = body
	}
	out.status = status
	out.response.Status = deniedStatus
	out.response.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: headers,
		Body:    body,
	}}
	return out, nil
}

// headerOptions reads an object, or an array of objects, of header name to
// a string or an array of strings.
func headerOptions(t *ast.Term) ([]*corev3.HeaderValueOption, error) {
	if t == nil {
		return nil, nil
	}
	var out []*corev3.HeaderValueOption
	add := func(obj ast.Object) error {
		obj, err := jsonKeys(obj)
		if err != nil {
			return err
		}
		return obj.Iter(func(k, v *ast.Term) error {
			name := string(k.Value.(ast.String))
			if s, ok := v.Value.(ast.String); ok {
				out = append(out, headerOption(name, string(s)))
				return nil
			}
			vals, ok := listOf(v.Value)
			if !ok {
				return fmt.Errorf("type assertion error for header '%s'", name)
			}
			for _, e := range vals {
				s, ok := e.Value.(ast.String)
				if !ok {
					return fmt.Errorf("invalid value type %s for header '%s'", goType(e.Value), name)
				}
				out = append(out, headerOption(name, string(s)))
			}
			return nil
		})
	}
	if obj, ok := t.Value.(ast.Object); ok {
		return out, add(obj)
	}
	if list, ok := listOf(t.Value); ok {
		for _, e := range list {
			obj, ok := e.Value.(ast.Object)
			if !ok {
				// OPA-Envoy says "headers" whichever field it reads.
				return nil, fmt.Errorf("type assertion error, expected headers to be of type 'object' but got '%s'", goType(e.Value))
			}
			if err := add(obj); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("type assertion error, expected headers to be of type 'object' but got '%s'", goType(t.Value))
}

func headerOption(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func stringList(t *ast.Term, field string) ([]string, error) {
	if t == nil {
		return nil, nil
	}
	list, ok := listOf(t.Value)
	if !ok {
		return nil, fmt.Errorf("type assertion error, expected %s to be of type '[]string' but got '%s'", field, goType(t.Value))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("type assertion error, expected %s value to be of type 'string' but got '%s'", field, goType(e.Value))
		}
		out[i] = string(s)
	}
	return out, nil
}

func queryParameters(t *ast.Term) ([]*corev3.QueryParameter, error) {
	if t == nil {
		return nil, nil
	}
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("type assertion error, expected query_parameters_to_set to be a map but got '%s'", goType(t.Value))
	}
	obj, err := jsonKeys(obj)
	if err != nil {
		return nil, err
	}
	var out []*corev3.QueryParameter
	err = obj.Iter(func(k, v *ast.Term) error {
		key := string(k.Value.(ast.String))
		if s, ok := v.Value.(ast.String); ok {
			out = append(out, &corev3.QueryParameter{Key: key, Value: string(s)})
			return nil
		}
		list, ok := listOf(v.Value)
		if !ok {
			return fmt.Errorf("type assertion error, expected value to be string or array but got '%s'", goType(v.Value))
		}
		for _, e := range list {
			s, ok := e.Value.(ast.String)
			if !ok {
				return fmt.Errorf("type assertion error: expected array element to be string but got '%s'", goType(e.Value))
			}
			out = append(out, &corev3.QueryParameter{Key: key, Value: string(s)})
		}
		return nil
	})
	return out, err
}

// listOf returns the elements of an array, or of a set in sorted order: OPA-
// Envoy sees decisions after their JSON conversion, where a set is an array.
func listOf(v ast.Value) ([]*ast.Term, bool) {
	switch x := v.(type) {
	case *ast.Array:
		out := make([]*ast.Term, x.Len())
		for i := range out {
			out[i] = x.Elem(i)
		}
		return out, true
	case ast.Set:
		return listOf(x.Sorted())
	}
	return nil, false
}

func stringField(d ast.Object, k *ast.Term) (string, bool) {
	t := d.Get(k)
	if t == nil {
		return "", false
	}
	s, ok := t.Value.(ast.String)
	return string(s), ok
}

// structOf converts a Rego object to a protobuf Struct the way OPA-Envoy
// does: through its JSON form (structpb takes json.Number as it comes).
func structOf(obj ast.Object) (*structpb.Struct, error) {
	x, err := ast.JSON(obj)
	if err != nil {
		return nil, err
	}
	return structpb.NewStruct(x.(map[string]any))
}

// goType names the Go type (%T) OPA-Envoy's messages give for v: it reads the
// decision's JSON form, where a number is a json.Number and a set an array.
func goType(v ast.Value) string {
	switch v.(type) {
	case ast.String:
		return "string"
	case ast.Number:
		return "json.Number"
	case ast.Boolean:
		return "bool"
	case ast.Null:
		return "<nil>"
	case *ast.Array, ast.Set:
		return "[]interface {}"
	case ast.Object:
		return "map[string]interface {}"
	}
	return ast.ValueName(v)
}

// jsonKeys returns obj with its keys as OPA-Envoy sees them: OPA's JSON
// conversion keeps a string key and JSON-encodes any other, as
// encoding/json's Encoder writes it (1 -> "1", true -> "true", [1, "a"] ->
// `[1,"a"]`, {"b": 1} -> `{"b":1}`); keys that encode alike (1 and "1")
// become one map entry, holding the value of the last in obj's order. obj
// itself when every key is a string.
func jsonKeys(obj ast.Object) (ast.Object, error) {
	if !obj.Until(notString) {
		return obj, nil
	}
	out := ast.NewObject()
	err := obj.Iter(func(k, v *ast.Term) error {
		key, err := keyString(k)
		if err != nil {
			return err
		}
		out.Insert(ast.StringTerm(key), v) // a key seen before takes v
		return nil
	})
	return out, err
}

func notString(k, _ *ast.Term) bool {
	_, ok := k.Value.(ast.String)
	return !ok
}

// keyString is an object key as OPA's ast.JSON writes it into a map.
func keyString(k *ast.Term) (string, error) {
	if s, ok := k.Value.(ast.String); ok {
		return string(s), nil
	}
	x, err := ast.JSON(k.Value)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(x); err != nil {
		return "", err
	}
	return strings.TrimSpace(buf.String()), nil
}
