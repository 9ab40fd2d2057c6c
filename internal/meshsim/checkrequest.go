package meshsim

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshproof/meshproof/internal/svid"
)

// checkOptions are the ext_authz filter options that shape a CheckRequest.
type checkOptions struct {
	includePeerCertificate bool
	includeTLSSession      bool
}

// newCheckRequest builds the CheckRequest Envoy's ext_authz filter sends
// for r (envoy check_request_utils.cc): h are the request headers after the
// connection manager rewrote them, streamID Envoy's stream id.
func newCheckRequest(d downstream, r *http.Request, h http.Header, streamID uint64, now time.Time, o checkOptions) *authv3.CheckRequest {
	src := &authv3.AttributeContext_Peer{Address: socketAddress(d.remote)}
	dst := &authv3.AttributeContext_Peer{Address: socketAddress(d.local)}
	if d.tls != nil {
		// Only a TLS connection has principals; without a client
		// certificate the source's is empty.
		src.Principal = principal(d.peer())
		dst.Principal = principal(d.own)
		if o.includePeerCertificate && d.peer() != nil {
			src.Certificate = svid.PercentEncode(string(pemOf(d.peer())))
		}
	}
	path := r.RequestURI
	if !strings.HasPrefix(path, "/") { // absolute-form: Envoy keeps the path
		path = r.URL.RequestURI()
	}
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id:       strconv.FormatUint(streamID, 10),
		Method:   r.Method,
		Path:     path,
		Host:     r.Host,
		Scheme:   d.scheme(),
		Protocol: protocol(r),
		Headers:  checkHeaders(r, h, d.scheme(), path),
	}
	attrs := &authv3.AttributeContext{
		Source:      src,
		Destination: dst,
		Request:     &authv3.AttributeContext_Request{Time: timestamppb.New(now), Http: httpReq},
		// Envoy always sets it, empty unless filters put metadata there.
		MetadataContext: &corev3.Metadata{},
	}
	if o.includeTLSSession && d.tls != nil {
		attrs.TlsSession = &authv3.AttributeContext_TLSSession{Sni: d.tls.ServerName}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

// checkHeaders is Envoy's header map as ext_authz sends it: lower-case
// names, the pseudo-headers of the request line, duplicates joined with ",".
func checkHeaders(r *http.Request, h http.Header, scheme, path string) map[string]string {
	m := make(map[string]string, len(h)+4)
	m[":authority"] = r.Host
	m[":method"] = r.Method
	m[":path"] = path
	m[":scheme"] = scheme
	for k, vs := range h {
		m[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	return m
}

// protocol is Envoy's name for the request's HTTP version.
func protocol(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "HTTP/2"
	}
	return r.Proto
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return svid.SocketAddress(host, uint32(n))
}
