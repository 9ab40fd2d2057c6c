package authz

import (
	"math/rand/v2"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// randomRequest builds a CheckRequest where every field may be unset, zero,
// or set to an awkward value, for the input property and fuzz tests.
func randomRequest(r *rand.Rand) *authv3.CheckRequest {
	pick := func() bool { return r.IntN(3) > 0 }
	str := func() string {
		vals := []string{"", "a", "/", "//x//y", "%41%zz", "?a=1&b", "spiffe://cluster.local/ns/x/sa/y",
			"application/json", "multipart/form-data; boundary=b", "application/x-www-form-urlencoded",
			`{"k":[1,2.5e3,-0,"é"]}`, "a=1&a=2&%zz", "é\u00e9", "x;y=z", "HTTP/2", "1e400", "\x7f"}
		return vals[r.IntN(len(vals))]
	}
	strMap := func() map[string]string {
		if !pick() {
			return nil
		}
		m := map[string]string{}
		for range r.IntN(5) {
			m[str()] = str()
		}
		return m
	}
	a := &authv3.AttributeContext{}
	if pick() {
		a.Source = randomPeer(r, pick, str, strMap)
	}
	if pick() {
		a.Destination = randomPeer(r, pick, str, strMap)
	}
	if pick() {
		req := &authv3.AttributeContext_Request{}
		if pick() {
			req.Time = &timestamppb.Timestamp{Seconds: r.Int64N(3e9) - 1e9, Nanos: int32(r.IntN(3)) * 500}
		}
		if pick() {
			h := &authv3.AttributeContext_HttpRequest{
				Id: str(), Method: str(), Path: str(), Host: str(), Scheme: str(), Query: str(),
				Fragment: str(), Protocol: str(), Body: str(), Size: r.Int64N(1<<62) - 1<<61,
				Headers: strMap(),
			}
			if pick() {
				h.Headers = map[string]string{"content-type": str(), "content-length": []string{"", "0", "3", "-1", "x", "99"}[r.IntN(6)]}
			}
			if pick() {
				h.RawBody = []byte(str())
			}
			if pick() {
				hm := &corev3.HeaderMap{}
				for range r.IntN(4) {
					hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: str(), Value: str(), RawValue: []byte(str())})
				}
				h.HeaderMap = hm
			}
			req.Http = h
		}
		a.Request = req
	}
	a.ContextExtensions = strMap()
	if pick() {
		a.MetadataContext = randomMetadata(r, pick, str)
	}
	if pick() {
		a.RouteMetadataContext = randomMetadata(r, pick, str)
	}
	if pick() {
		a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: str()}
	}
	if !pick() {
		return &authv3.CheckRequest{}
	}
	return &authv3.CheckRequest{Attributes: a}
}

func randomPeer(r *rand.Rand, pick func() bool, str func() string, strMap func() map[string]string) *authv3.AttributeContext_Peer {
	p := &authv3.AttributeContext_Peer{Service: str(), Labels: strMap(), Principal: str(), Certificate: str()}
	if !pick() {
		return p
	}
	switch r.IntN(4) {
	case 0:
		sa := &corev3.SocketAddress{Protocol: corev3.SocketAddress_Protocol(r.IntN(2)), Address: str(), ResolverName: str(), Ipv4Compat: pick(), NetworkNamespaceFilepath: str()}
		switch r.IntN(3) {
		case 0:
			sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(r.IntN(3)) * uint32(r.Uint32()/3)}
		case 1:
			sa.PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: str()}
		}
		p.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: sa}}
	case 1:
		p.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: str(), Mode: uint32(r.IntN(0o777))}}}
	case 2:
		e := &corev3.EnvoyInternalAddress{EndpointId: str()}
		if pick() {
			e.AddressNameSpecifier = &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: str()}
		}
		p.Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: e}}
	default:
		p.Address = &corev3.Address{}
	}
	return p
}

func randomMetadata(r *rand.Rand, pick func() bool, str func() string) *corev3.Metadata {
	m := &corev3.Metadata{}
	if pick() {
		m.FilterMetadata = map[string]*structpb.Struct{}
		for range r.IntN(3) {
			m.FilterMetadata[str()] = randomStruct(r, 3)
		}
	}
	if pick() {
		m.TypedFilterMetadata = map[string]*anypb.Any{}
		for range r.IntN(3) {
			a, _ := anypb.New(randomStruct(r, 2))
			if !pick() {
				a = &anypb.Any{}
			}
			m.TypedFilterMetadata[str()] = a
		}
	}
	return m
}

func randomStruct(r *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := range r.IntN(4) {
		s.Fields[string(rune('a'+i))] = randomValue(r, depth)
	}
	return s
}

func randomValue(r *rand.Rand, depth int) *structpb.Value {
	switch n := r.IntN(7); {
	case n == 0:
		return structpb.NewNullValue()
	case n == 1:
		return structpb.NewNumberValue([]float64{0, -1, 1.5, 1e21, 1e-7, 123456789}[r.IntN(6)])
	case n == 2:
		return structpb.NewStringValue("s")
	case n == 3:
		return structpb.NewBoolValue(r.IntN(2) == 0)
	case n == 4 && depth > 0:
		return structpb.NewStructValue(randomStruct(r, depth-1))
	case n == 5 && depth > 0:
		l := &structpb.ListValue{}
		for range r.IntN(3) {
			l.Values = append(l.Values, randomValue(r, depth-1))
		}
		return structpb.NewListValue(l)
	default:
		return &structpb.Value{} // no kind at all
	}
}
