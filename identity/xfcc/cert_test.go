package xfcc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

// newCert returns a fresh self-signed SVID-like certificate as PEM and DER.
// It insists on a '+' in the base64 so that a parser which decoded '+' as a
// space (query-string rules) would be caught.
func newCert(t testing.TB) (pemText string, der []byte) {
	t.Helper()
	uri, err := url.Parse("spiffe://cluster.local/ns/mtls-pg/sa/sleep")
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: "sleep, with a comma"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			URIs:         []*url.URL{uri},
			DNSNames:     []string{"sleep.mtls-pg.svc"},
		}
		der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		pemText = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		if strings.Contains(pemText, "+") {
			return pemText, der
		}
	}
	t.Fatal("no certificate with a '+' in its base64 after 100 tries")
	return "", nil
}

// envoyEncode percent-encodes PEM the way Envoy's XFCC examples show it:
// blanks and newlines escaped, base64 characters ('+', '/', '=') left alone.
func envoyEncode(pemText string) string {
	return strings.NewReplacer(" ", "%20", "\n", "%0A").Replace(pemText)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestParseCertAndChain(t *testing.T) {
	leaf, leafDER := newCert(t)
	ca, _ := newCert(t)
	header := "By=spiffe://cluster.local/ns/mtls-pg/sa/default;Hash=" + sha256Hex(leafDER) +
		`;Cert="` + envoyEncode(leaf) + `";Chain="` + envoyEncode(leaf+ca) +
		`";Subject="CN=sleep\, with a comma";URI=spiffe://cluster.local/ns/mtls-pg/sa/sleep;DNS=sleep.mtls-pg.svc`

	elems, err := Parse(header)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := Rightmost(elems)
	if !ok {
		t.Fatal("no element")
	}
	if e.Cert != leaf {
		t.Errorf("Cert = %q, want the PEM byte for byte (is '+' decoded as a space?)", e.Cert)
	}
	if e.Chain != leaf+ca {
		t.Errorf("Chain = %q, want both PEM blocks", e.Chain)
	}
	if e.Subject != `CN=sleep\, with a comma` {
		t.Errorf("Subject = %q", e.Subject)
	}
	got, err := e.CertSHA256()
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256Hex(leafDER); got != want || got != e.Hash {
		t.Errorf("CertSHA256 = %s, want %s (= Hash %s)", got, want, e.Hash)
	}
}

func TestCertSHA256(t *testing.T) {
	leaf, leafDER := newCert(t)
	keyBlock := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not a key")}))
	tests := []struct {
		name    string
		cert    string
		want    string
		wantErr bool
	}{
		{name: "no Cert", cert: "", want: ""},
		{name: "one certificate", cert: leaf, want: sha256Hex(leafDER)},
		{name: "first CERTIFICATE block wins", cert: keyBlock + leaf + keyBlock, want: sha256Hex(leafDER)},
		{name: "text around the block is ignored", cert: "leaf:\n" + leaf + "trailer", want: sha256Hex(leafDER)},
		{name: "not PEM", cert: "MIIBkTCB+wIJAK", wantErr: true},
		{name: "PEM without a certificate", cert: keyBlock, wantErr: true},
		{name: "truncated PEM", cert: leaf[:len(leaf)/2], wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Element{Cert: tt.cert}.CertSHA256()
			if (err != nil) != tt.wantErr {
				t.Fatalf("CertSHA256 error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "xfcc: ") {
				t.Errorf("error %q lacks the xfcc: prefix", err)
			}
			if got != tt.want {
				t.Errorf("CertSHA256 = %q, want %q", got, tt.want)
			}
		})
	}
}
