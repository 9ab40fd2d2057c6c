package authz

import (
	"math/rand/v2"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshproof/meshproof/authz/authztest"
)

// fastInput is the code under test, without meshproof's own key.
func fastInput(req *authv3.CheckRequest, c *inputCache) (ast.Value, error) {
	http := req.GetAttributes().GetRequest().GetHttp()
	h := newHeaderReader(http)
	t, err := document(req, &h, c, c.pathTerms(http.GetPath()), nil)
	if err != nil {
		return nil, err
	}
	return t.Value, nil
}

// assertSame checks fast == reference, with interning and without.
func assertSame(t *testing.T, req *authv3.CheckRequest) {
	t.Helper()
	want, werr := referenceInput(req)
	for _, c := range []*inputCache{nil, newInputCache()} {
		got, gerr := fastInput(req, c)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: reference %v, fast %v\nrequest: %v", werr, gerr, req)
		}
		if werr != nil {
			return
		}
		if got.Compare(want) != 0 {
			t.Fatalf("input differs\nfast:      %v\nreference: %v\nrequest: %v", got, want, req)
		}
	}
}

func TestInputMatchesReference(t *testing.T) {
	src, dst := "spiffe://cluster.local/ns/mtls-pg/sa/sleep", "spiffe://cluster.local/ns/mtls-pg/sa/default"
	structMD, _ := structpb.NewStruct(map[string]any{
		"n": 1.5, "big": 1e21, "s": "x", "b": true, "null": nil,
		"list": []any{1.0, "a", map[string]any{"k": false}}, "obj": map[string]any{},
	})
	anyMD, _ := anypb.New(structMD)
	tests := []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"bench request", authztest.FromFile(t, "../test/testdata/bench/request.json")},
		{"empty", &authv3.CheckRequest{}},
		{"empty attributes", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}},
		{"plaintext", authztest.NewRequest()},
		{"mtls", authztest.NewRequest(authztest.MTLS(src, dst))},
		{"raw headers", authztest.NewRequest(authztest.MTLS(src, dst), authztest.RawHeaders())},
		{"query", authztest.NewRequest(authztest.Path("/a/b?x=1&x=2&z&e="))},
		{"double slash and escapes", authztest.NewRequest(authztest.Path("//admin/x%2Fy/%C3%A9?q=a%20b"))},
		{"root path", authztest.NewRequest(authztest.Path("/"))},
		{"bad path escape", authztest.NewRequest(authztest.Path("/a%zz"))},
		{"bad query escape", authztest.NewRequest(authztest.Path("/a?x=%zz"))},
		{"semicolon query", authztest.NewRequest(authztest.Path("/a?x=1;y=2"))},
		{"json body", authztest.NewRequest(authztest.Body("application/json", `{"a":[1,2.5,"x",null,true],"b":{"c":1e3}}`))},
		{"bad json body", authztest.NewRequest(authztest.Body("application/json", `{"a":`))},
		{"json body truncated", authztest.NewRequest(authztest.Body("application/json", `{"a":1}`), authztest.Header("content-length", "100"))},
		{"partial body header", authztest.NewRequest(authztest.Body("application/json", `{"a":1}`), authztest.Header("x-envoy-auth-partial-body", "true"))},
		{"bad content-length", authztest.NewRequest(authztest.Body("application/json", `{}`), authztest.Header("content-length", "x"))},
		{"form body", authztest.NewRequest(authztest.Body("application/x-www-form-urlencoded", "a=1&a=2&b=%20"))},
		{"multipart body", authztest.NewRequest(authztest.Body("multipart/form-data; boundary=XX",
			"--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv1\r\n--XX\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"k\":[1]}\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv2\r\n--XX--\r\n"))},
		{"multipart no boundary", authztest.NewRequest(authztest.Body("multipart/form-data", "x"))},
		{"bad multipart", authztest.NewRequest(authztest.Body("multipart/form-data; boundary=XX", "--XX\r\nbroken"))},
		// headers has entries: OPA-Envoy reads content-type, content-length
		// and x-envoy-auth-partial-body there only, by exact name.
		{"content-type only in header_map beside headers", withHeaderMap(
			authztest.NewRequest(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Body = `{"a":1}` }),
			"content-type", "application/json")},
		{"partial-body only in header_map beside headers", withHeaderMap(
			authztest.NewRequest(authztest.Body("application/json", `{"a":1}`)),
			"x-envoy-auth-partial-body", "true")},
		{"content-length only in header_map beside headers", withHeaderMap(
			authztest.NewRequest(authztest.Body("application/json", `{"a":1}`)),
			"content-length", "100")},
		{"Content-Type in headers", authztest.NewRequest(authztest.Body("application/json", `{"a":1}`),
			func(r *authv3.CheckRequest) {
				h := r.Attributes.Request.Http.Headers
				h["Content-Type"] = h["content-type"]
				delete(h, "content-type")
			})},
		// header_map alone (encode_raw_headers): any case, repeats joined.
		{"raw headers json body", authztest.NewRequest(authztest.Body("application/json", `{"a":1}`), authztest.RawHeaders())},
		{"raw headers mixed case", withHeaderMap(
			authztest.NewRequest(func(r *authv3.CheckRequest) {
				r.Attributes.Request.Http.Headers = nil
				r.Attributes.Request.Http.Body = "a=1&b=2"
			}),
			"Content-Type", "application/x-www-form-urlencoded", "Content-Length", "7")},
		{"raw headers repeated content-length", withHeaderMap(
			authztest.NewRequest(authztest.Body("application/json", `{"a":1}`), authztest.RawHeaders()),
			"content-length", "7")},
		{"raw headers partial body", withHeaderMap(
			authztest.NewRequest(authztest.Body("application/json", `{"a":1}`), authztest.RawHeaders()),
			"X-Envoy-Auth-Partial-Body", "true")},
		{"grpc body", authztest.NewRequest(authztest.Body("application/grpc", "\x00\x00\x00\x00\x01x"))},
		{"raw body json", func() *authv3.CheckRequest {
			r := authztest.NewRequest(authztest.Header("content-type", "application/json"))
			r.Attributes.Request.Http.RawBody = []byte(`{"raw":true}`)
			return r
		}()},
		{"everything", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{
				Address:     &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Protocol: corev3.SocketAddress_UDP, Address: "::1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: ""}, ResolverName: "r", Ipv4Compat: true, NetworkNamespaceFilepath: "/ns"}}},
				Service:     "svc",
				Labels:      map[string]string{"app": "x", "": ""},
				Principal:   src,
				Certificate: "-----BEGIN%20CERTIFICATE-----",
			},
			Destination: &authv3.AttributeContext_Peer{
				Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/s", Mode: 0o700}}},
			},
			Request: &authv3.AttributeContext_Request{
				Time: &timestamppb.Timestamp{Seconds: 1570831792, Nanos: 5},
				Http: &authv3.AttributeContext_HttpRequest{
					Id: "1", Method: "POST", Headers: map[string]string{"a": "b"},
					HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "k", Value: "v", RawValue: []byte{0xff, 0}}, {}}},
					Path:      "/p", Host: "h", Scheme: "https", Query: "q", Fragment: "f", Size: -1 << 40,
					Protocol: "HTTP/2", Body: "body", RawBody: []byte("raw"),
				},
			},
			ContextExtensions:    map[string]string{"route": "r1"},
			MetadataContext:      &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": structMD, "empty": {}}, TypedFilterMetadata: map[string]*anypb.Any{"t": anyMD, "e": {}}},
			RouteMetadataContext: &corev3.Metadata{},
			TlsSession:           &authv3.AttributeContext_TLSSession{Sni: "sni.example"},
		}}},
		{"internal address and zero port", &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{}, EndpointId: "e"}}}},
			Destination: &authv3.AttributeContext_Peer{Address: authztest.SocketAddress("", 0)},
			Request:     &authv3.AttributeContext_Request{Time: &timestamppb.Timestamp{}, Http: &authv3.AttributeContext_HttpRequest{}},
			TlsSession:  &authv3.AttributeContext_TLSSession{},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assertSame(t, tt.req) })
	}
}

// withHeaderMap appends name, value pairs to the request's header_map, raw as
// Envoy sends them.
func withHeaderMap(r *authv3.CheckRequest, kv ...string) *authv3.CheckRequest {
	h := r.Attributes.Request.Http
	if h.HeaderMap == nil {
		h.HeaderMap = &corev3.HeaderMap{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return r
}

// TestInputMatchesProtojson runs the literal slow path, protojson ->
// map -> ast.InterfaceToValue, on requests without the fields where protojson
// and OPA-Envoy part ways (Timestamp, 64-bit ints, bytes): there all three
// must agree.
func TestInputMatchesProtojson(t *testing.T) {
	reqs := []*authv3.CheckRequest{
		authztest.FromFile(t, "../test/testdata/bench/request.json"),
		authztest.NewRequest(authztest.MTLS("spiffe://a/b", "spiffe://a/c"), authztest.Path("/x?y=1")),
	}
	for i, req := range reqs {
		req = proto.Clone(req).(*authv3.CheckRequest)
		req.Attributes.Request.Time = nil
		raw, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := util.UnmarshalJSON(raw, &m); err != nil {
			t.Fatal(err)
		}
		ref, err := referenceInput(req)
		if err != nil {
			t.Fatal(err)
		}
		// Graft the protojson rendering of the request onto the reference's
		// added keys; the two must agree on everything.
		obj := ref.(ast.Object)
		pj, err := ast.InterfaceToValue(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := obj.Get(ast.StringTerm("attributes")); got.Value.Compare(pj.(ast.Object).Get(ast.StringTerm("attributes")).Value) != 0 {
			t.Fatalf("request %d: protojson attributes %v\nreference attributes %v", i, pj, got)
		}
		assertSame(t, req)
	}
}

// TestInputRandomRequests is a property test: random requests with every
// field in play, fast == reference.
func TestInputRandomRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		req := randomRequest(rng)
		if !t.Run("", func(t *testing.T) { assertSame(t, req) }) {
			t.Fatalf("random request %d failed", i)
		}
	}
}

// FuzzInput feeds arbitrary protobuf wire bytes: whatever parses as a
// CheckRequest must give the same input on both paths.
func FuzzInput(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		b, _ := proto.Marshal(randomRequest(rng))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &authv3.CheckRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		assertSame(t, req)
	})
}

// TestInputKnowsEveryField fails when go-control-plane adds a field to a
// message the fast builder writes out by hand: the builder would silently
// drop it, and policies reading it would break.
func TestInputKnowsEveryField(t *testing.T) {
	known := map[string][]string{
		"envoy.service.auth.v3.CheckRequest":                      {"attributes"},
		"envoy.service.auth.v3.AttributeContext":                  {"source", "destination", "request", "context_extensions", "metadata_context", "route_metadata_context", "tls_session"},
		"envoy.service.auth.v3.AttributeContext.Peer":             {"address", "service", "labels", "principal", "certificate"},
		"envoy.service.auth.v3.AttributeContext.Request":          {"time", "http"},
		"envoy.service.auth.v3.AttributeContext.HttpRequest":      {"id", "method", "headers", "header_map", "path", "host", "scheme", "query", "fragment", "size", "protocol", "body", "raw_body"},
		"envoy.service.auth.v3.AttributeContext.TLSSession":       {"sni"},
		"envoy.config.core.v3.Address":                            {"socket_address", "pipe", "envoy_internal_address"},
		"envoy.config.core.v3.SocketAddress":                      {"protocol", "address", "port_value", "named_port", "resolver_name", "ipv4_compat", "network_namespace_filepath"},
		"envoy.config.core.v3.Pipe":                               {"path", "mode"},
		"envoy.config.core.v3.EnvoyInternalAddress":               {"server_listener_name", "endpoint_id"},
		"envoy.config.core.v3.HeaderMap":                          {"headers"},
		"envoy.config.core.v3.HeaderValue":                        {"key", "value", "raw_value"},
		"envoy.config.core.v3.Metadata":                           {"filter_metadata", "typed_filter_metadata"},
		"google.protobuf.Timestamp":                               {"seconds", "nanos"},
		"google.protobuf.Any":                                     {"type_url", "value"},
		"google.protobuf.Struct":                                  nil, // converted whole
		"envoy.service.auth.v3.AttributeContext.Peer.LabelsEntry": nil,
	}
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] || md.IsMapEntry() {
			return
		}
		seen[md.FullName()] = true
		want, ok := known[string(md.FullName())]
		if !ok {
			t.Errorf("message %s is not handled by input.go", md.FullName())
			return
		}
		if want == nil {
			return
		}
		fields := md.Fields()
		var got []string
		for i := range fields.Len() {
			fd := fields.Get(i)
			got = append(got, string(fd.Name()))
			if fd.Message() != nil {
				if fd.IsMap() {
					if fd.MapValue().Message() != nil {
						walk(fd.MapValue().Message())
					}
				} else {
					walk(fd.Message())
				}
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s has fields %v; input.go handles %v", md.FullName(), got, want)
		}
	}
	walk((&authv3.CheckRequest{}).ProtoReflect().Descriptor())
}
