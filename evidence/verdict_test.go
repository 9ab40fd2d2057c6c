package evidence_test

import (
	"slices"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/identity/xfcc"
)

const (
	client    = "spiffe://cluster.local/ns/shop/sa/frontend"
	server    = "spiffe://cluster.local/ns/shop/sa/backend"
	intruder  = "spiffe://cluster.local/ns/other/sa/intruder"
	hashA     = "0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9"
	hashB     = "1111111111111111111111111111111111111111111111111111111111111111"
	clientDNS = "frontend.shop.example.com"
	subject   = "CN=frontend,O=Example\\, Inc."
)

// istio is the element an Istio sidecar appends for client calling server.
const istio = "By=" + server + ";Hash=" + hashA + `;Subject="";URI=` + client

// The reasons are pinned as literal text: reports group on them.
const (
	rClientCert   = "client certificate presented"
	rNoClientCert = "no client certificate"
	rServerTLS    = "server certificate presented"
	rNoTLS        = "no TLS identity on either side"
	rNoXFCC       = "no xfcc header"
	rAgrees       = "xfcc agrees with connection"
	rInvalid      = "xfcc invalid: "
	rWithoutCert  = "xfcc header without client certificate"
	rURI          = "xfcc uri differs from source principal: "
	rBy           = "xfcc by differs from destination principal: "
	rHash         = "xfcc hash differs from peer certificate: "
	rHashOK       = "xfcc hash matches peer certificate"
)

func TestJudge(t *testing.T) {
	badHeader := `By=` + server + `;URI="` + client // unmatched quote
	_, badErr := xfcc.Parse(badHeader)
	if badErr == nil {
		t.Fatalf("xfcc.Parse(%q) succeeded; the invalid-header cases need it to fail", badHeader)
	}
	tests := []struct {
		name    string
		src     string // source principal
		dst     string // destination principal
		certSHA string // SHA-256 of attributes.source.certificate
		hasXFCC bool
		xfcc    string
		want    evidence.Verdict
		reasons []string
	}{
		{
			name:    "no TLS",
			want:    evidence.Plaintext,
			reasons: []string{rNoTLS},
		},
		{
			name:    "TLS server only",
			dst:     server,
			want:    evidence.TLSServerOnly,
			reasons: []string{rServerTLS, rNoClientCert},
		},
		{
			name:    "mTLS without XFCC",
			src:     client,
			dst:     server,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rNoXFCC},
		},
		{
			name:    "mTLS with agreeing rightmost element",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    istio,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rAgrees},
		},
		{
			name:    "URI mismatch",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA + `;Subject="";URI=` + intruder,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rURI + intruder},
		},
		{
			name:    "By mismatch",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + intruder + ";Hash=" + hashA + ";URI=" + client,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rBy + intruder},
		},
		{
			name:    "By matches any of the proxy's URI SANs",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=spiffe://cluster.local/legacy;By=" + server + ";Hash=" + hashA + ";URI=" + client,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rAgrees},
		},
		{
			name:    "hash mismatch with the peer certificate",
			src:     client,
			dst:     server,
			certSHA: hashB,
			hasXFCC: true,
			xfcc:    istio,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rHash + hashA},
		},
		{
			name:    "hash matches the peer certificate",
			src:     client,
			dst:     server,
			certSHA: hashA,
			hasXFCC: true,
			xfcc:    istio,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rHashOK, rAgrees},
		},
		{
			name:    "every mismatch is reported, in order",
			src:     client,
			dst:     server,
			certSHA: hashA,
			hasXFCC: true,
			xfcc:    "By=" + intruder + ";Hash=" + hashB + ";URI=" + intruder,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rURI + intruder, rBy + intruder, rHash + hashB},
		},
		{
			name:    "an earlier element contradicting does not matter",
			src:     client,
			dst:     server,
			certSHA: hashA,
			hasXFCC: true,
			xfcc:    "By=" + intruder + ";Hash=" + hashB + ";URI=" + intruder + "," + istio,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rHashOK, rAgrees},
		},
		{
			name:    "an earlier agreeing element does not rescue the rightmost",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    istio + ",By=" + server + ";Hash=" + hashA + ";URI=" + intruder,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rURI + intruder},
		},
		{
			name:    "principal from the DNS SAN when URI is empty",
			src:     clientDNS,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA + ";URI=;DNS=" + clientDNS + ";DNS=alt.example.com",
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rAgrees},
		},
		{
			name:    "DNS SAN contradicting the principal",
			src:     "other.example.com",
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA + ";URI=;DNS=" + clientDNS,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rURI + clientDNS},
		},
		{
			name:    "subject fallback when the certificate has no SAN",
			src:     subject,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA + `;Subject="` + subject + `";URI=`,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rAgrees},
		},
		{
			name:    "subject contradicting the principal",
			src:     "CN=someone-else",
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA + `;Subject="` + subject + `";URI=`,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rURI + subject},
		},
		{
			name:    "element without URI, DNS or subject cannot contradict the principal",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rAgrees},
		},
		{
			name:    "empty URI and empty subject (Istio) cannot contradict the principal",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    "By=" + server + ";Hash=" + hashA + `;Subject="";URI=`,
			want:    evidence.MTLS,
			reasons: []string{rClientCert, rAgrees},
		},
		{
			name:    "invalid XFCC with a source principal",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    badHeader,
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rInvalid + badErr.Error()},
		},
		{
			name:    "XFCC header present but empty, with a source principal",
			src:     client,
			dst:     server,
			hasXFCC: true,
			xfcc:    "",
			want:    evidence.MTLSMismatch,
			reasons: []string{rClientCert, rInvalid + "no element"},
		},
		{
			name:    "invalid XFCC without a source principal",
			dst:     server,
			hasXFCC: true,
			xfcc:    badHeader,
			want:    evidence.XFCCUnverified,
			reasons: []string{rNoClientCert, rWithoutCert, rInvalid + badErr.Error()},
		},
		{
			name:    "XFCC with no principals at all",
			hasXFCC: true,
			xfcc:    istio,
			want:    evidence.XFCCUnverified,
			reasons: []string{rNoClientCert, rWithoutCert},
		},
		{
			name:    "XFCC with the destination principal only beats tls_server_only",
			dst:     server,
			hasXFCC: true,
			xfcc:    istio,
			want:    evidence.XFCCUnverified,
			reasons: []string{rNoClientCert, rWithoutCert},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reasons := evidence.Judge(hop(t, tt.src, tt.dst, tt.certSHA, tt.hasXFCC, tt.xfcc))
			if got != tt.want || !slices.Equal(reasons, tt.reasons) {
				t.Errorf("Judge = %q %q\nwant     %q %q", got, reasons, tt.want, tt.reasons)
			}
			if !got.Valid() {
				t.Errorf("Judge returned %q, which is not a valid verdict", got)
			}
		})
	}
}

// TestJudgeURINotForwarded covers an element whose proxy was configured
// without URI (set_current_client_cert_details.uri false): a certificate
// with both a URI and a DNS SAN gives a URI principal and an element with
// only DNS pairs. The element does not say which SAN Envoy took, so it must
// not be read as contradicting the connection.
func TestJudgeURINotForwarded(t *testing.T) {
	got, reasons := evidence.Judge(hop(t, client, server, "", true, "By="+server+";Hash="+hashA+";DNS="+clientDNS))
	if got != evidence.MTLS {
		t.Errorf("Judge = %q %q, want %q", got, reasons, evidence.MTLS)
	}
}

func TestVerdictValid(t *testing.T) {
	for _, v := range evidence.Verdicts {
		if !v.Valid() {
			t.Errorf("%q.Valid() = false", v)
		}
	}
	for _, v := range []evidence.Verdict{"", "MTLS", "mtls ", "unknown"} {
		if v.Valid() {
			t.Errorf("%q.Valid() = true", v)
		}
	}
}

// hop builds a Hop from what Envoy would send, parsing the XFCC header with
// the real parser.
func hop(t *testing.T, src, dst, certSHA string, hasXFCC bool, header string) evidence.Hop {
	t.Helper()
	h := evidence.Hop{SourcePrincipal: src, DestinationPrincipal: dst, SourceCertSHA256: certSHA, XFCCPresent: hasXFCC}
	if hasXFCC {
		h.XFCC, h.XFCCErr = xfcc.Parse(header)
	}
	return h
}
