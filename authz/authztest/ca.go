package authztest

import (
	"testing"

	"github.com/meshproof/meshproof/internal/svid"
)

// CA is a throwaway certificate authority issuing X.509-SVIDs the way Istio
// does: empty subject, exactly one URI SAN. It is internal/svid's, which the
// mesh simulation of `meshproof demo` shares; Issue and WriteFiles take the
// test's t.
type CA = svid.CA

// SVID is an issued certificate and its key.
type SVID = svid.SVID

// NewCertAuthority makes a CA for trustDomain, valid from an hour ago for a
// day. It is NewCA for code that is not a test.
func NewCertAuthority(trustDomain string) (*CA, error) { return svid.NewCertAuthority(trustDomain) }

// NewCA makes a CA for trustDomain, failing the test if it cannot.
func NewCA(t testing.TB, trustDomain string) *CA {
	t.Helper()
	ca, err := svid.NewCertAuthority(trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// PercentEncode encodes as Envoy's urlEncodeQueryParameter: letters, digits
// and -._~ stay, every other byte becomes %XX.
func PercentEncode(s string) string { return svid.PercentEncode(s) }

// XFCC is the element an Istio sidecar appends for a client presenting peer
// to a proxy whose own SVID is by (APPEND_FORWARD with Subject, URI, DNS).
func XFCC(by, peer *SVID) string { return svid.XFCC(by, peer) }
