package evidence

import (
	"slices"

	"github.com/meshproof/meshproof/identity/xfcc"
)

// Verdict says whether one hop was mutually authenticated, judged from what
// Envoy told us about the connection (Envoy's ext_authz and x-forwarded-client-cert docs; README, "Run with Envoy").
type Verdict string

// The verdicts, from best to worst.
const (
	// MTLS: the downstream presented a client certificate (source principal
	// set) and the rightmost XFCC element, if any, agrees with it.
	MTLS Verdict = "mtls"
	// MTLSMismatch: a client certificate was presented but the rightmost XFCC
	// element contradicts the connection (URI, By or Hash differ), or the
	// header cannot be read, so this hop's element cannot be confirmed.
	MTLSMismatch Verdict = "mtls_mismatch"
	// TLSServerOnly: TLS without a client certificate (destination principal
	// set, source principal empty).
	TLSServerOnly Verdict = "tls_server_only"
	// XFCCUnverified: no client certificate, yet an XFCC header arrived. On
	// such a connection every Envoy mode but ALWAYS_FORWARD_ONLY strips the
	// header, so it is a client-controlled, unverifiable claim.
	XFCCUnverified Verdict = "xfcc_unverified"
	// Plaintext: no TLS identity at all.
	Plaintext Verdict = "plaintext"
)

// Verdicts lists every verdict, for validation and documentation.
var Verdicts = []Verdict{MTLS, MTLSMismatch, TLSServerOnly, XFCCUnverified, Plaintext}

// Valid reports whether v is one of the known verdicts.
func (v Verdict) Valid() bool { return slices.Contains(Verdicts, v) }

// Hop is what a CheckRequest says about one hop's connection: the inputs of
// a verdict.
type Hop struct {
	SourcePrincipal      string
	DestinationPrincipal string
	// SourceCertSHA256 is the lowercase hex SHA-256 of the peer certificate's
	// DER, when Envoy sent the certificate (include_peer_certificate).
	SourceCertSHA256 string
	// XFCCPresent is true when the request carried an XFCC header, even an
	// unparseable one.
	XFCCPresent bool
	XFCC        []xfcc.Element
	XFCCErr     error
}

// Reasons are short, stable phrases; details follow a colon. They are
// grouped on in reports, so change them only with a migration in mind.
const (
	reasonSourcePrincipal   = "client certificate presented"
	reasonNoSourcePrincipal = "no client certificate"
	reasonServerTLS         = "server certificate presented"
	reasonNoTLS             = "no TLS identity on either side"
	reasonNoXFCC            = "no xfcc header"
	reasonXFCCAgrees        = "xfcc agrees with connection"
	reasonXFCCInvalid       = "xfcc invalid"
	reasonXFCCWithoutCert   = "xfcc header without client certificate"
	reasonURIMismatch       = "xfcc uri differs from source principal"
	reasonByMismatch        = "xfcc by differs from destination principal"
	reasonHashMismatch      = "xfcc hash differs from peer certificate"
	reasonXFCCHashChecked   = "xfcc hash matches peer certificate"
)

// Judge returns the verdict for one hop and the reasons behind it. It never
// fails: whatever is missing or malformed becomes a reason.
func Judge(h Hop) (Verdict, []string) {
	switch {
	case h.SourcePrincipal != "":
		return judgeClientCert(h)
	case h.XFCCPresent:
		reasons := []string{reasonNoSourcePrincipal, reasonXFCCWithoutCert}
		if h.XFCCErr != nil {
			reasons = append(reasons, reasonXFCCInvalid+": "+h.XFCCErr.Error())
		}
		return XFCCUnverified, reasons
	case h.DestinationPrincipal != "":
		return TLSServerOnly, []string{reasonServerTLS, reasonNoSourcePrincipal}
	default:
		return Plaintext, []string{reasonNoTLS}
	}
}

// judgeClientCert checks the rightmost XFCC element, the only one that speaks
// for this hop, against the connection Envoy terminated.
func judgeClientCert(h Hop) (Verdict, []string) {
	reasons := []string{reasonSourcePrincipal}
	if !h.XFCCPresent {
		return MTLS, append(reasons, reasonNoXFCC)
	}
	if h.XFCCErr != nil {
		return MTLSMismatch, append(reasons, reasonXFCCInvalid+": "+h.XFCCErr.Error())
	}
	el, ok := xfcc.Rightmost(h.XFCC)
	if !ok {
		return MTLSMismatch, append(reasons, reasonXFCCInvalid+": no element")
	}
	mismatch := false
	if want, ok := peerPrincipal(el); ok && want != h.SourcePrincipal {
		mismatch = true
		reasons = append(reasons, reasonURIMismatch+": "+want)
	}
	if len(el.By) > 0 && h.DestinationPrincipal != "" && !slices.Contains(el.By, h.DestinationPrincipal) {
		mismatch = true
		reasons = append(reasons, reasonByMismatch+": "+el.By[0])
	}
	if el.Hash != "" && h.SourceCertSHA256 != "" {
		if el.Hash != h.SourceCertSHA256 {
			mismatch = true
			reasons = append(reasons, reasonHashMismatch+": "+el.Hash)
		} else {
			reasons = append(reasons, reasonXFCCHashChecked)
		}
	}
	if mismatch {
		return MTLSMismatch, reasons
	}
	return MTLS, append(reasons, reasonXFCCAgrees)
}

// peerPrincipal derives the principal Envoy would have taken from the peer
// certificate that XFCC element describes: first URI SAN, else first DNS SAN,
// else the subject. ok is false when the element does not carry enough to
// say (the proxy's XFCC config left those keys out).
func peerPrincipal(el xfcc.Element) (string, bool) {
	if len(el.URI) == 0 {
		// The proxy does not forward URI: nothing to compare. (Guessing
		// from DNS would misjudge a certificate that has both.)
		return "", false
	}
	if el.URI[0] != "" {
		return el.URI[0], true
	}
	if len(el.DNS) > 0 && el.DNS[0] != "" {
		return el.DNS[0], true
	}
	// URI= present but empty and no DNS: the certificate has neither, so
	// Envoy used the subject, if XFCC carries one.
	if el.Subject != "" {
		return el.Subject, true
	}
	return "", false
}
