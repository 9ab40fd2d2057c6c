// Package svid issues SPIFFE X.509-SVIDs from a throwaway certificate
// authority, as Istio's issues them, and writes them in the forms Envoy
// gives them to ext_authz: the percent-encoded PEM, the XFCC element, the
// socket address. It is ordinary code, not test code, because the mesh
// simulation of `meshproof demo` (internal/meshsim) uses it; tests use it
// through authz/authztest.
package svid

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// CA is a throwaway certificate authority issuing X.509-SVIDs the way Istio
// does: empty subject, exactly one URI SAN.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate, for trust bundles.
	PEM []byte
}

// SVID is an issued certificate and its key.
type SVID struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
	TLS     tls.Certificate
}

// NewCertAuthority makes a CA for trustDomain, valid from an hour ago for a
// day.
func NewCertAuthority(trustDomain string) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{trustDomain}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("svid: CA certificate for %s: %w", trustDomain, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("svid: CA certificate for %s: %w", trustDomain, err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// NewSVID signs an SVID for the SPIFFE ID id (Istio's form: empty subject,
// one URI SAN), valid for client and server use for 12 hours. dns are added
// as DNS SANs (for a server that clients reach by name).
func (ca *CA) NewSVID(id string, dns ...string) (*SVID, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("svid: SVID %q: %w", id, err)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{u},
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("svid: SVID %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("svid: SVID %s: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("svid: SVID %s key: %w", id, err)
	}
	s := &SVID{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	if s.TLS, err = tls.X509KeyPair(s.CertPEM, s.KeyPEM); err != nil {
		return nil, fmt.Errorf("svid: SVID %s: %w", id, err)
	}
	return s, nil
}

// TB is the part of testing.TB that Issue and WriteFiles use, so that a
// test's t can be given to them without this package importing testing.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// Issue signs an SVID for the SPIFFE ID (see NewSVID), failing the test if
// it cannot.
func (ca *CA) Issue(t TB, spiffeID string, dnsNames ...string) *SVID {
	t.Helper()
	s, err := ca.NewSVID(spiffeID, dnsNames...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Pool is a cert pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFiles writes cert.pem, key.pem and ca.pem into dir and returns their
// paths, for a process that takes file flags, failing the test if it cannot.
func (s *SVID) WriteFiles(t TB, dir string, ca *CA) (certFile, keyFile, caFile string) {
	t.Helper()
	certFile, keyFile, caFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	for path, b := range map[string][]byte{certFile: s.CertPEM, keyFile: s.KeyPEM, caFile: ca.PEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile, caFile
}

// SHA256 is the lowercase hex SHA-256 of the certificate's DER, as XFCC's
// Hash carries it.
func (s *SVID) SHA256() string {
	sum := sha256.Sum256(s.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// URLEncodedPEM is the certificate as Envoy puts it in
// attributes.source.certificate (include_peer_certificate) and in XFCC's
// Cert: every byte but the unreserved ones percent-encoded.
func (s *SVID) URLEncodedPEM() string {
	return PercentEncode(string(s.CertPEM))
}

// PercentEncode encodes as Envoy's urlEncodeQueryParameter: letters, digits
// and -._~ stay, every other byte becomes %XX.
func PercentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}

// ID is the SVID's SPIFFE ID.
func (s *SVID) ID() string { return s.Cert.URIs[0].String() }

// XFCC is the element an Istio sidecar appends for a client presenting peer
// to a proxy whose own SVID is by (APPEND_FORWARD with Subject, URI, DNS).
func XFCC(by, peer *SVID) string {
	parts := []string{"By=" + by.ID(), "Hash=" + peer.SHA256(), `Subject=""`, "URI=" + peer.ID()}
	for _, d := range peer.Cert.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ";")
}

// SocketAddress is an Envoy socket address, as attributes.source.address
// and attributes.destination.address carry it.
func SocketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("svid: key: %w", err)
	}
	return k, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("svid: serial number: %w", err)
	}
	return n, nil
}
