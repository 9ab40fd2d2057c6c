package authz

import (
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// referenceInput is the slow path the fast builder must equal: OPA-Envoy's
// own algorithm (envoyauth/request.go and protomap.go, as of late 2026),
// written independently of the code under test. The CheckRequest is walked
// with protoreflect into a map keyed by JSON field names, with unset fields
// absent, Struct values as their plain JSON, and scalars as their Go values;
// the map then goes through ast.InterfaceToValue, which JSON-round-trips
// what it does not know (enums, 32-bit ints, bytes as base64).
func referenceInput(req *authv3.CheckRequest) (ast.Value, error) {
	input := protoMap(req.ProtoReflect())
	input["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	h := req.GetAttributes().GetRequest().GetHttp()
	rawPath, rawQuery, _ := strings.Cut(h.GetPath(), "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, err
	}
	input["parsed_path"] = strings.Split(strings.TrimLeft(decoded, "/"), "/")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	pq := map[string]any{}
	for k, v := range q {
		pq[k] = v
	}
	input["parsed_query"] = pq
	body, truncated, err := referenceBody(referenceHeader(h), h.GetBody(), h.GetRawBody())
	if err != nil {
		return nil, err
	}
	input["parsed_body"] = body
	input["truncated_body"] = truncated
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		input["source_principal"] = p
	}
	return ast.InterfaceToValue(input)
}

func protoMap(m protoreflect.Message) map[string]any {
	if s, ok := m.Interface().(interface{ AsMap() map[string]any }); ok {
		return s.AsMap()
	}
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mm := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
				mm[k.String()] = protoValue(fd.MapValue(), e)
				return true
			})
			out[fd.JSONName()] = mm
		case fd.IsList():
			l := v.List()
			items := make([]any, l.Len())
			for i := range l.Len() {
				items[i] = protoValue(fd, l.Get(i))
			}
			out[fd.JSONName()] = items
		default:
			out[fd.JSONName()] = protoValue(fd, v)
		}
		return true
	})
	return out
}

func protoValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	if fd.Kind() == protoreflect.MessageKind {
		return protoMap(v.Message())
	}
	return v.Interface()
}

// referenceHeader is how a header is read: as OPA-Envoy, from the headers
// map by exact name; when that map is empty (encode_raw_headers), from
// header_map by name in any case, repeated entries joined with "," (where
// OPA-Envoy reads nothing: meshproof's documented extension).
func referenceHeader(h *authv3.AttributeContext_HttpRequest) func(string) (string, bool) {
	if m := h.GetHeaders(); len(m) > 0 {
		return func(name string) (string, bool) {
			v, ok := m[name]
			return v, ok
		}
	}
	return func(name string) (string, bool) {
		var vs []string
		for _, e := range h.GetHeaderMap().GetHeaders() {
			if e == nil || !strings.EqualFold(e.Key, name) {
				continue
			}
			v := e.Value
			if v == "" {
				v = string(e.RawValue)
			}
			vs = append(vs, v)
		}
		return strings.Join(vs, ","), vs != nil
	}
}

// referenceBody is OPA-Envoy's getParsedBody, minus gRPC payloads (which
// need descriptors neither side is given).
func referenceBody(header func(string) (string, bool), body string, raw []byte) (any, bool, error) {
	if v, _ := header("x-envoy-auth-partial-body"); v == "true" {
		return nil, true, nil
	}
	ct, ok := header("content-type")
	if !ok {
		return nil, false, nil
	}
	payload := body
	if payload == "" {
		payload = string(raw)
	}
	known := strings.Contains(ct, "application/json") || strings.Contains(ct, "application/x-www-form-urlencoded") || strings.Contains(ct, "multipart/form-data")
	if strings.Contains(ct, "application/grpc") && !strings.Contains(ct, "application/json") || !known || payload == "" {
		return nil, false, nil
	}
	if cl, ok := header("content-length"); ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, err
		}
		if n != -1 && n > int64(len(payload)) {
			return nil, true, nil
		}
	}
	switch {
	case strings.Contains(ct, "application/json"):
		var x any
		err := util.UnmarshalJSON([]byte(payload), &x)
		return x, false, err
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		q, err := url.ParseQuery(payload)
		return map[string][]string(q), false, err
	}
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, false, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nil, false, nil
	}
	values := map[string][]any{}
	mr := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, false, err
		}
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			var x any
			if err := util.UnmarshalJSON(b, &x); err != nil {
				return nil, false, err
			}
			values[name] = append(values[name], x)
		} else {
			values[name] = append(values[name], string(b))
		}
	}
	return values, false, nil
}
