package authz

import (
	"encoding/base64"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// This file turns a CheckRequest into the OPA-Envoy input document directly
// as ast values. OPA-Envoy builds the same document by walking the message
// with protoreflect into a map (JSON field names, unset fields absent) and
// converting that map with ast.InterfaceToValue. Here every field is written
// out by hand: no reflection, no intermediate map, keys pre-built. The
// equivalence is proven by input_test.go against that slow path, and a test
// fails when go-control-plane grows a field this file does not know.
//
// Rules that fall out of that slow path and are easy to get wrong:
//   - proto3 scalars are present only when non-zero, messages when non-nil,
//     maps and lists when non-empty; a oneof member is present whenever its
//     case is set, even to a zero value (portValue 0);
//   - 64-bit integers are numbers, not strings; enums are numbers;
//   - bytes are standard base64 strings;
//   - google.protobuf.Timestamp is {"seconds": s, "nanos": n};
//   - google.protobuf.Struct is its plain JSON value; Any is
//     {"typeUrl": ..., "value": base64}, never expanded.

// key terms, built once.
var (
	kAddress                  = ast.StringTerm("address")
	kAttributes               = ast.StringTerm("attributes")
	kBody                     = ast.StringTerm("body")
	kCertificate              = ast.StringTerm("certificate")
	kContextExtensions        = ast.StringTerm("contextExtensions")
	kDestination              = ast.StringTerm("destination")
	kEndpointID               = ast.StringTerm("endpointId")
	kEnvoyInternalAddress     = ast.StringTerm("envoyInternalAddress")
	kFilterMetadata           = ast.StringTerm("filterMetadata")
	kFragment                 = ast.StringTerm("fragment")
	kHeaderMap                = ast.StringTerm("headerMap")
	kHeaders                  = ast.StringTerm("headers")
	kHost                     = ast.StringTerm("host")
	kHTTP                     = ast.StringTerm("http")
	kID                       = ast.StringTerm("id")
	kIpv4Compat               = ast.StringTerm("ipv4Compat")
	kKey                      = ast.StringTerm("key")
	kLabels                   = ast.StringTerm("labels")
	kMetadataContext          = ast.StringTerm("metadataContext")
	kMethod                   = ast.StringTerm("method")
	kMode                     = ast.StringTerm("mode")
	kNamedPort                = ast.StringTerm("namedPort")
	kNanos                    = ast.StringTerm("nanos")
	kNetworkNamespaceFilepath = ast.StringTerm("networkNamespaceFilepath")
	kPath                     = ast.StringTerm("path")
	kPipe                     = ast.StringTerm("pipe")
	kPortValue                = ast.StringTerm("portValue")
	kPrincipal                = ast.StringTerm("principal")
	kProtocol                 = ast.StringTerm("protocol")
	kQuery                    = ast.StringTerm("query")
	kRawBody                  = ast.StringTerm("rawBody")
	kRawValue                 = ast.StringTerm("rawValue")
	kRequest                  = ast.StringTerm("request")
	kResolverName             = ast.StringTerm("resolverName")
	kRouteMetadataContext     = ast.StringTerm("routeMetadataContext")
	kScheme                   = ast.StringTerm("scheme")
	kSeconds                  = ast.StringTerm("seconds")
	kServerListenerName       = ast.StringTerm("serverListenerName")
	kService                  = ast.StringTerm("service")
	kSize                     = ast.StringTerm("size")
	kSni                      = ast.StringTerm("sni")
	kSocketAddress            = ast.StringTerm("socketAddress")
	kSource                   = ast.StringTerm("source")
	kTime                     = ast.StringTerm("time")
	kTLSSession               = ast.StringTerm("tlsSession")
	kTypedFilterMetadata      = ast.StringTerm("typedFilterMetadata")
	kTypeURL                  = ast.StringTerm("typeUrl")
	kValue                    = ast.StringTerm("value")
)

type item = [2]*ast.Term

// inputCache shares, across requests, the immutable terms that recur: strings
// (header names, principals, hosts, methods), whole peers (a server's
// address and principal; a client's for the life of its connection) and
// parsed paths. OPA never modifies input terms; it shares its own interned
// terms the same way. A nil *inputCache caches nothing.
type inputCache struct {
	strs  *internTable
	peers *bounded[peerKey, *ast.Term]
	paths *bounded[string, pathTerms]
}

func newInputCache() *inputCache {
	return &inputCache{
		strs:  newInternTable(8192),
		peers: newBounded[peerKey, *ast.Term](4096),
		paths: newBounded[string, pathTerms](4096),
	}
}

func (c *inputCache) str(s string) *ast.Term {
	if c == nil {
		return ast.StringTerm(s)
	}
	return c.strs.str(s)
}

// peerKey is a peer in the shape Envoy sends: socket address and port,
// principal, maybe a service name and certificate; no labels.
type peerKey struct {
	address, principal, service, certificate string
	port                                     uint32
}

func (c *inputCache) peer(p *authv3.AttributeContext_Peer) *ast.Term {
	k, ok := cacheablePeer(p)
	if c == nil || !ok {
		return peerTerm(p, c)
	}
	return c.peers.get(k, func(peerKey) *ast.Term { return peerTerm(p, c) })
}

func cacheablePeer(p *authv3.AttributeContext_Peer) (peerKey, bool) {
	if len(p.Labels) > 0 || len(p.Certificate) > maxInterned {
		return peerKey{}, false
	}
	k := peerKey{principal: p.Principal, service: p.Service, certificate: p.Certificate}
	if p.Address == nil {
		return k, false
	}
	sa := p.Address.GetSocketAddress()
	if sa == nil || sa.Protocol != 0 || sa.ResolverName != "" || sa.Ipv4Compat || sa.NetworkNamespaceFilepath != "" {
		return k, false
	}
	pv, ok := sa.PortSpecifier.(*corev3.SocketAddress_PortValue)
	if !ok {
		return k, false
	}
	k.address, k.port = sa.Address, pv.PortValue
	return k, true
}

// attributesTerm converts AttributeContext.
func attributesTerm(a *authv3.AttributeContext, c *inputCache) *ast.Term {
	kv := make([]item, 0, 7)
	if a.Source != nil {
		kv = append(kv, item{kSource, c.peer(a.Source)})
	}
	if a.Destination != nil {
		kv = append(kv, item{kDestination, c.peer(a.Destination)})
	}
	if a.Request != nil {
		kv = append(kv, item{kRequest, requestTerm(a.Request, c)})
	}
	if len(a.ContextExtensions) > 0 {
		kv = append(kv, item{kContextExtensions, stringMapTerm(a.ContextExtensions, c)})
	}
	if a.MetadataContext != nil {
		kv = append(kv, item{kMetadataContext, metadataTerm(a.MetadataContext)})
	}
	if a.TlsSession != nil {
		ts := make([]item, 0, 1)
		if a.TlsSession.Sni != "" {
			ts = append(ts, item{kSni, c.str(a.TlsSession.Sni)})
		}
		kv = append(kv, item{kTLSSession, ast.NewTerm(ast.NewObject(ts...))})
	}
	if a.RouteMetadataContext != nil {
		kv = append(kv, item{kRouteMetadataContext, metadataTerm(a.RouteMetadataContext)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func peerTerm(p *authv3.AttributeContext_Peer, c *inputCache) *ast.Term {
	kv := make([]item, 0, 5)
	if p.Address != nil {
		kv = append(kv, item{kAddress, addressTerm(p.Address, c)})
	}
	if p.Service != "" {
		kv = append(kv, item{kService, c.str(p.Service)})
	}
	if len(p.Labels) > 0 {
		kv = append(kv, item{kLabels, stringMapTerm(p.Labels, c)})
	}
	if p.Principal != "" {
		kv = append(kv, item{kPrincipal, c.str(p.Principal)})
	}
	if p.Certificate != "" {
		kv = append(kv, item{kCertificate, ast.StringTerm(p.Certificate)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func addressTerm(a *corev3.Address, c *inputCache) *ast.Term {
	kv := make([]item, 0, 1)
	switch x := a.Address.(type) {
	case *corev3.Address_SocketAddress:
		if x.SocketAddress != nil {
			kv = append(kv, item{kSocketAddress, socketAddressTerm(x.SocketAddress, c)})
		}
	case *corev3.Address_Pipe:
		if x.Pipe != nil {
			p := make([]item, 0, 2)
			if x.Pipe.Path != "" {
				p = append(p, item{kPath, ast.StringTerm(x.Pipe.Path)})
			}
			if x.Pipe.Mode != 0 {
				p = append(p, item{kMode, uintTerm(uint64(x.Pipe.Mode))})
			}
			kv = append(kv, item{kPipe, ast.NewTerm(ast.NewObject(p...))})
		}
	case *corev3.Address_EnvoyInternalAddress:
		if x.EnvoyInternalAddress != nil {
			kv = append(kv, item{kEnvoyInternalAddress, internalAddressTerm(x.EnvoyInternalAddress)})
		}
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func socketAddressTerm(s *corev3.SocketAddress, c *inputCache) *ast.Term {
	kv := make([]item, 0, 6)
	if s.Protocol != 0 {
		kv = append(kv, item{kProtocol, intTerm(int64(s.Protocol))})
	}
	if s.Address != "" {
		kv = append(kv, item{kAddress, c.str(s.Address)})
	}
	switch p := s.PortSpecifier.(type) {
	case *corev3.SocketAddress_PortValue:
		kv = append(kv, item{kPortValue, uintTerm(uint64(p.PortValue))})
	case *corev3.SocketAddress_NamedPort:
		kv = append(kv, item{kNamedPort, c.str(p.NamedPort)})
	}
	if s.ResolverName != "" {
		kv = append(kv, item{kResolverName, c.str(s.ResolverName)})
	}
	if s.Ipv4Compat {
		kv = append(kv, item{kIpv4Compat, ast.InternedTerm(true)})
	}
	if s.NetworkNamespaceFilepath != "" {
		kv = append(kv, item{kNetworkNamespaceFilepath, c.str(s.NetworkNamespaceFilepath)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func internalAddressTerm(e *corev3.EnvoyInternalAddress) *ast.Term {
	kv := make([]item, 0, 2)
	if x, ok := e.AddressNameSpecifier.(*corev3.EnvoyInternalAddress_ServerListenerName); ok {
		kv = append(kv, item{kServerListenerName, ast.StringTerm(x.ServerListenerName)})
	}
	if e.EndpointId != "" {
		kv = append(kv, item{kEndpointID, ast.StringTerm(e.EndpointId)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func requestTerm(r *authv3.AttributeContext_Request, c *inputCache) *ast.Term {
	kv := make([]item, 0, 2)
	if r.Time != nil {
		kv = append(kv, item{kTime, timestampTerm(r.Time)})
	}
	if r.Http != nil {
		kv = append(kv, item{kHTTP, httpTerm(r.Http, c)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func timestampTerm(t *timestamppb.Timestamp) *ast.Term {
	kv := make([]item, 0, 2)
	if t.Seconds != 0 {
		kv = append(kv, item{kSeconds, intTerm(t.Seconds)})
	}
	if t.Nanos != 0 {
		kv = append(kv, item{kNanos, intTerm(int64(t.Nanos))})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func httpTerm(h *authv3.AttributeContext_HttpRequest, c *inputCache) *ast.Term {
	kv := make([]item, 0, 13)
	if h.Id != "" {
		kv = append(kv, item{kID, ast.StringTerm(h.Id)})
	}
	if h.Method != "" {
		kv = append(kv, item{kMethod, c.str(h.Method)})
	}
	if len(h.Headers) > 0 {
		kv = append(kv, item{kHeaders, headersTerm(h.Headers, c)})
	}
	if h.HeaderMap != nil {
		kv = append(kv, item{kHeaderMap, headerMapTerm(h.HeaderMap, c)})
	}
	if h.Path != "" {
		kv = append(kv, item{kPath, ast.StringTerm(h.Path)})
	}
	if h.Host != "" {
		kv = append(kv, item{kHost, c.str(h.Host)})
	}
	if h.Scheme != "" {
		kv = append(kv, item{kScheme, c.str(h.Scheme)})
	}
	if h.Query != "" {
		kv = append(kv, item{kQuery, ast.StringTerm(h.Query)})
	}
	if h.Fragment != "" {
		kv = append(kv, item{kFragment, ast.StringTerm(h.Fragment)})
	}
	if h.Size != 0 {
		kv = append(kv, item{kSize, intTerm(h.Size)})
	}
	if h.Protocol != "" {
		kv = append(kv, item{kProtocol, c.str(h.Protocol)})
	}
	if h.Body != "" {
		kv = append(kv, item{kBody, ast.StringTerm(h.Body)})
	}
	if len(h.RawBody) > 0 {
		kv = append(kv, item{kRawBody, bytesTerm(h.RawBody)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

// headersTerm converts the header map. Names repeat across requests and are
// interned; most values do not (ids, trace ids) and are not.
func headersTerm(h map[string]string, c *inputCache) *ast.Term {
	var buf [32]item // on the stack: most requests carry fewer headers
	kv := buf[:0]
	for k, v := range h {
		kv = append(kv, item{c.str(k), headerValueTerm(k, v, c)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

// headerValueTerm interns the values of headers whose values repeat per
// client or route (the XFCC value is the same for every request of one
// workload); unique values (ids, trace ids) are not worth a cache slot.
func headerValueTerm(name, v string, c *inputCache) *ast.Term {
	switch name {
	case ":authority", ":method", ":scheme", "accept", "content-type", "user-agent",
		"x-forwarded-client-cert", "x-forwarded-proto", "content-length", "x-b3-sampled":
		return c.str(v)
	}
	return ast.StringTerm(v)
}

func headerMapTerm(m *corev3.HeaderMap, c *inputCache) *ast.Term {
	kv := make([]item, 0, 1)
	if len(m.Headers) > 0 {
		hs := make([]*ast.Term, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = headerValueOptionTerm(h, c)
		}
		kv = append(kv, item{kHeaders, ast.ArrayTerm(hs...)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func headerValueOptionTerm(h *corev3.HeaderValue, c *inputCache) *ast.Term {
	if h == nil {
		return ast.NewTerm(ast.NewObject())
	}
	kv := make([]item, 0, 3)
	if h.Key != "" {
		kv = append(kv, item{kKey, c.str(h.Key)})
	}
	if h.Value != "" {
		kv = append(kv, item{kValue, headerValueTerm(h.Key, h.Value, c)})
	}
	if len(h.RawValue) > 0 {
		kv = append(kv, item{kRawValue, bytesTerm(h.RawValue)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func stringMapTerm(m map[string]string, c *inputCache) *ast.Term {
	kv := make([]item, 0, len(m))
	for k, v := range m {
		kv = append(kv, item{c.str(k), c.str(v)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func metadataTerm(m *corev3.Metadata) *ast.Term {
	kv := make([]item, 0, 2)
	if len(m.FilterMetadata) > 0 {
		fm := make([]item, 0, len(m.FilterMetadata))
		for k, v := range m.FilterMetadata {
			fm = append(fm, item{ast.StringTerm(k), structTerm(v)})
		}
		kv = append(kv, item{kFilterMetadata, ast.NewTerm(ast.NewObject(fm...))})
	}
	if len(m.TypedFilterMetadata) > 0 {
		tm := make([]item, 0, len(m.TypedFilterMetadata))
		for k, v := range m.TypedFilterMetadata {
			tm = append(tm, item{ast.StringTerm(k), anyTerm(v)})
		}
		kv = append(kv, item{kTypedFilterMetadata, ast.NewTerm(ast.NewObject(tm...))})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

// anyTerm mirrors OPA-Envoy, which does not resolve Any payloads.
func anyTerm(a *anypb.Any) *ast.Term {
	kv := make([]item, 0, 2)
	if a.GetTypeUrl() != "" {
		kv = append(kv, item{kTypeURL, ast.StringTerm(a.TypeUrl)})
	}
	if len(a.GetValue()) > 0 {
		kv = append(kv, item{kValue, bytesTerm(a.Value)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func structTerm(s *structpb.Struct) *ast.Term {
	fields := s.GetFields()
	kv := make([]item, 0, len(fields))
	for k, v := range fields {
		kv = append(kv, item{ast.StringTerm(k), structValueTerm(v)})
	}
	return ast.NewTerm(ast.NewObject(kv...))
}

func structValueTerm(v *structpb.Value) *ast.Term {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		return ast.NewTerm(ast.Number(strconv.FormatFloat(k.NumberValue, 'g', -1, 64)))
	case *structpb.Value_StringValue:
		return ast.StringTerm(k.StringValue)
	case *structpb.Value_BoolValue:
		return ast.InternedTerm(k.BoolValue)
	case *structpb.Value_StructValue:
		return structTerm(k.StructValue)
	case *structpb.Value_ListValue:
		vals := k.ListValue.GetValues()
		ts := make([]*ast.Term, len(vals))
		for i, e := range vals {
			ts[i] = structValueTerm(e)
		}
		return ast.ArrayTerm(ts...)
	default: // null, or no kind at all
		return ast.InternedNullTerm
	}
}

func intTerm(i int64) *ast.Term {
	if ast.HasInternedIntNumberTerm(int(i)) {
		return ast.InternedTerm(int(i))
	}
	return ast.NewTerm(ast.Number(strconv.FormatInt(i, 10)))
}

func uintTerm(u uint64) *ast.Term {
	if u <= 1<<31 && ast.HasInternedIntNumberTerm(int(u)) {
		return ast.InternedTerm(int(u))
	}
	return ast.NewTerm(ast.Number(strconv.FormatUint(u, 10)))
}

func bytesTerm(b []byte) *ast.Term {
	return ast.StringTerm(base64.StdEncoding.EncodeToString(b))
}
