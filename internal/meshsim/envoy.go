package meshsim

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// Mode is the PeerAuthentication mode of the sidecar's inbound listener.
type Mode int32

const (
	// Permissive has two filter chains: mTLS for a ClientHello offering an
	// Istio ALPN, plaintext HTTP for every other connection.
	Permissive Mode = iota
	// Strict has the mTLS chain only: any TLS client with a valid
	// certificate works; a plaintext connection is reset.
	Strict
)

func (m Mode) String() string {
	if m == Strict {
		return "STRICT"
	}
	return "PERMISSIVE"
}

// ForwardClientCert is the connection manager's forward_client_cert_details:
// what happens to x-forwarded-client-cert before any HTTP filter runs.
type ForwardClientCert int32

const (
	// AppendForward, Istio's inbound setting and the zero value: on mTLS
	// this hop's element is appended; otherwise the header is removed.
	AppendForward ForwardClientCert = iota
	// Sanitize removes the header (Envoy's own default).
	Sanitize
	// ForwardOnly passes the header through on mTLS, removes it otherwise.
	ForwardOnly
	// SanitizeSet replaces the header with this hop's element on mTLS,
	// removes it otherwise.
	SanitizeSet
	// AlwaysForwardOnly passes the header through unchanged even on
	// plaintext: whatever the client sent reaches ext_authz and the app.
	AlwaysForwardOnly
)

var forwardClientCertNames = [...]string{"APPEND_FORWARD", "SANITIZE", "FORWARD_ONLY", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"}

func (f ForwardClientCert) String() string {
	if f >= 0 && int(f) < len(forwardClientCertNames) {
		return forwardClientCertNames[f]
	}
	return fmt.Sprintf("ForwardClientCert(%d)", int32(f))
}

// downstream is the connection a request came on, as Envoy knows it.
type downstream struct {
	local, remote string // host:port
	// tls is nil on plaintext.
	tls *tls.ConnectionState
	// own is the sidecar's certificate, presented on TLS.
	own *x509.Certificate
}

// peer is the client's leaf certificate, nil when none was presented.
func (d downstream) peer() *x509.Certificate {
	if d.tls == nil || len(d.tls.PeerCertificates) == 0 {
		return nil
	}
	return d.tls.PeerCertificates[0]
}

// mutual is Envoy's "ssl() && peerCertificatePresented()".
func (d downstream) mutual() bool { return d.peer() != nil }

// principal is how Envoy names a certificate's owner: its first URI SAN,
// else its first DNS SAN, else its subject (RFC 2253).
func principal(c *x509.Certificate) string {
	switch {
	case c == nil:
		return ""
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

// certSHA256 is the lowercase hex SHA-256 of a certificate's DER, as XFCC's
// Hash and Envoy's sha256PeerCertificateDigest give it.
func certSHA256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// xfccElement is the element this hop adds for an mTLS client with
// Istio's details (Subject, URI, DNS): By for each URI SAN of the
// sidecar's own certificate, Hash, Subject (always, quoted), URI (always,
// empty when the peer has none) and one DNS per DNS SAN.
func xfccElement(own, peer *x509.Certificate) string {
	var parts []string
	if own != nil {
		for _, u := range own.URIs {
			parts = append(parts, "By="+u.String())
		}
	}
	parts = append(parts, "Hash="+certSHA256(peer), `Subject="`+peer.Subject.String()+`"`)
	if len(peer.URIs) == 0 {
		parts = append(parts, "URI=")
	}
	for _, u := range peer.URIs {
		parts = append(parts, "URI="+u.String())
	}
	for _, d := range peer.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ";")
}

const (
	headerXFCC      = "X-Forwarded-Client-Cert"
	headerRequestID = "X-Request-Id"
	headerProto     = "X-Forwarded-Proto"
)

// mutateRequestHeaders is what Envoy's connection manager does to the
// request headers before any HTTP filter sees them: the XFCC header per
// mode, x-request-id when absent, x-forwarded-proto when absent.
func mutateRequestHeaders(h http.Header, d downstream, mode ForwardClientCert) {
	mutateXFCC(h, d, mode)
	if h.Get(headerRequestID) == "" {
		h.Set(headerRequestID, newUUID())
	}
	if h.Get(headerProto) == "" {
		h.Set(headerProto, d.scheme())
	}
}

// mutateXFCC applies forward_client_cert_details (envoy
// conn_manager_utility.cc, mutateXfccRequestHeader).
func mutateXFCC(h http.Header, d downstream, mode ForwardClientCert) {
	if mode == AlwaysForwardOnly {
		return
	}
	if mode == Sanitize || !d.mutual() {
		h.Del(headerXFCC)
		return
	}
	switch mode {
	case ForwardOnly:
	case SanitizeSet:
		h.Set(headerXFCC, xfccElement(d.own, d.peer()))
	default: // AppendForward
		el := xfccElement(d.own, d.peer())
		if old := strings.Join(h.Values(headerXFCC), ","); old != "" {
			el = old + "," + el
		}
		h.Set(headerXFCC, el)
	}
}

func (d downstream) scheme() string {
	if d.tls != nil {
		return "https"
	}
	return "http"
}

// newUUID is a random (version 4) UUID, as Envoy generates x-request-id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}
