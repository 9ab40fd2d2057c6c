// Package authztest builds CheckRequests the way Envoy builds them, and
// SPIFFE certificates to go with them, for tests of meshproof and of
// policies written for it. It is to authz what httptest is to net/http.
package authztest

import (
	"os"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshproof/meshproof/internal/svid"
)

// Option changes a request under construction.
type Option func(*authv3.CheckRequest)

// NewRequest returns a GET / request from 10.0.0.1:40000 to 10.0.0.2:8080
// over plaintext (no principals, no XFCC), changed by opts.
func NewRequest(opts ...Option) *authv3.CheckRequest {
	r := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: SocketAddress("10.0.0.1", 40000)},
		Destination: &authv3.AttributeContext_Peer{Address: SocketAddress("10.0.0.2", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       "1001",
				Method:   "GET",
				Path:     "/",
				Host:     "app:8080",
				Scheme:   "http",
				Protocol: "HTTP/1.1",
				Headers: map[string]string{
					":authority": "app:8080", ":method": "GET", ":path": "/",
					"x-request-id": "req-1",
				},
			},
		},
	}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// SocketAddress is an Envoy socket address.
func SocketAddress(ip string, port uint32) *corev3.Address { return svid.SocketAddress(ip, port) }

// MTLS makes the request arrive over mTLS from src to dst (SPIFFE IDs), with
// the XFCC element an Istio sidecar appends; the hash is of a certificate
// nobody checks, as under Istio (no include_peer_certificate).
func MTLS(src, dst string) Option {
	return func(r *authv3.CheckRequest) {
		r.Attributes.Source.Principal = src
		r.Attributes.Destination.Principal = dst
		Header("x-forwarded-client-cert", "By="+dst+";Hash=0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9;Subject=\"\";URI="+src)(r)
	}
}

// Principals sets the source and destination principals only.
func Principals(src, dst string) Option {
	return func(r *authv3.CheckRequest) {
		r.Attributes.Source.Principal = src
		r.Attributes.Destination.Principal = dst
	}
}

// PeerCertificate sets attributes.source.certificate as Envoy does with
// include_peer_certificate.
func PeerCertificate(s *SVID) Option {
	return func(r *authv3.CheckRequest) { r.Attributes.Source.Certificate = s.URLEncodedPEM() }
}

// Header sets a request header in the headers map.
func Header(name, value string) Option {
	return func(r *authv3.CheckRequest) {
		h := r.Attributes.Request.Http
		if h.Headers == nil {
			h.Headers = map[string]string{}
		}
		h.Headers[name] = value
	}
}

// RawHeaders moves every header into header_map with raw values, as Envoy
// does with encode_raw_headers (and gRPC's proxyless ext_authz always).
func RawHeaders() Option {
	return func(r *authv3.CheckRequest) {
		h := r.Attributes.Request.Http
		hm := &corev3.HeaderMap{}
		for k, v := range h.Headers {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		h.Headers, h.HeaderMap = nil, hm
	}
}

// Method sets the method (and :method).
func Method(m string) Option {
	return func(r *authv3.CheckRequest) {
		r.Attributes.Request.Http.Method = m
		Header(":method", m)(r)
	}
}

// Path sets the path, query string included (and :path).
func Path(p string) Option {
	return func(r *authv3.CheckRequest) {
		r.Attributes.Request.Http.Path = p
		Header(":path", p)(r)
	}
}

// Body sets the body and its content type and length.
func Body(contentType, body string) Option {
	return func(r *authv3.CheckRequest) {
		h := r.Attributes.Request.Http
		h.Body = body
		h.Size = int64(len(body))
		Header("content-type", contentType)(r)
		Header("content-length", strconv.Itoa(len(body)))(r)
	}
}

// FromFile reads a protojson CheckRequest, as grpcurl and ghz send it.
func FromFile(t testing.TB, path string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(raw, r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r
}
