package meshsim

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/identity/xfcc"
)

// identities are the certificates the CheckRequest cases use.
type identities struct {
	ca                     *authztest.CA
	server, sleep, dnsOnly *authztest.SVID
	subjectOnly            *x509.Certificate
}

func newIdentities(t *testing.T) identities {
	t.Helper()
	ca := authztest.NewCA(t, TrustDomain)
	id := identities{ca: ca, server: ca.Issue(t, ServerID), sleep: ca.Issue(t, SleepID)}
	// Not SVIDs: certificates Envoy names by DNS SAN, and by subject.
	id.dnsOnly = ca.Issue(t, SleepID, "client.example.com")
	id.dnsOnly.Cert.URIs = nil
	id.subjectOnly = &x509.Certificate{Raw: []byte("subject only"), Subject: pkix.Name{CommonName: "legacy,client", Organization: []string{"Example"}}}
	return id
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestCheckRequest: what the sidecar sends meshproof for each kind of
// connection and forward_client_cert_details mode (Envoy's ext_authz and x-forwarded-client-cert docs).
func TestCheckRequest(t *testing.T) {
	id := newIdentities(t)
	mtls := func(peer *x509.Certificate) *tls.ConnectionState {
		return &tls.ConnectionState{ServerName: "outbound_.8000_._.httpbin.mtls-pg.svc.cluster.local", PeerCertificates: []*x509.Certificate{peer}}
	}
	upstreamXFCC := "By=spiffe://cluster.local/ns/front/sa/gw;Hash=abc;URI=spiffe://cluster.local/ns/front/sa/web"
	tests := []struct {
		name     string
		tls      *tls.ConnectionState
		mode     ForwardClientCert
		noCert   bool        // include_peer_certificate off
		header   http.Header // what the client sent
		wantSrc  string      // source principal
		wantDst  string
		wantCert *x509.Certificate // in attributes.source.certificate
		wantSNI  bool
		wantXFCC string // "" = absent
		verdict  evidence.Verdict
	}{{
		name:    "plaintext",
		header:  http.Header{"X-Forwarded-Client-Cert": {upstreamXFCC}},
		verdict: evidence.Plaintext,
	}, {
		name:     "mTLS with an SVID",
		tls:      mtls(id.sleep.Cert),
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantCert: id.sleep.Cert,
		wantSNI:  true,
		wantXFCC: authztest.XFCC(id.server, id.sleep),
		verdict:  evidence.MTLS,
	}, {
		name:     "mTLS appends to an upstream hop's element",
		tls:      mtls(id.sleep.Cert),
		header:   http.Header{"X-Forwarded-Client-Cert": {upstreamXFCC}},
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantCert: id.sleep.Cert,
		wantSNI:  true,
		wantXFCC: upstreamXFCC + "," + authztest.XFCC(id.server, id.sleep),
		verdict:  evidence.MTLS,
	}, {
		name:     "mTLS, certificate with a DNS SAN only",
		tls:      mtls(id.dnsOnly.Cert),
		wantSrc:  "client.example.com",
		wantDst:  ServerID,
		wantCert: id.dnsOnly.Cert,
		wantSNI:  true,
		wantXFCC: "By=" + ServerID + ";Hash=" + id.dnsOnly.SHA256() + `;Subject="";URI=;DNS=client.example.com`,
		verdict:  evidence.MTLS,
	}, {
		name:     "mTLS, certificate with a subject only",
		tls:      mtls(id.subjectOnly),
		noCert:   true,
		wantSrc:  `CN=legacy\,client,O=Example`,
		wantDst:  ServerID,
		wantSNI:  true,
		wantXFCC: "By=" + ServerID + ";Hash=" + certSHA256(id.subjectOnly) + `;Subject="CN=legacy\,client,O=Example";URI=`,
		verdict:  evidence.MTLS,
	}, {
		name:    "TLS without a client certificate",
		tls:     &tls.ConnectionState{ServerName: "httpbin.mtls-pg"},
		header:  http.Header{"X-Forwarded-Client-Cert": {upstreamXFCC}},
		wantDst: ServerID,
		wantSNI: true,
		verdict: evidence.TLSServerOnly,
	}, {
		name:     "include_peer_certificate off",
		tls:      mtls(id.sleep.Cert),
		noCert:   true,
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantSNI:  true,
		wantXFCC: authztest.XFCC(id.server, id.sleep),
		verdict:  evidence.MTLS,
	}, {
		name:     "SANITIZE on mTLS",
		tls:      mtls(id.sleep.Cert),
		mode:     Sanitize,
		header:   http.Header{"X-Forwarded-Client-Cert": {upstreamXFCC}},
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantCert: id.sleep.Cert,
		wantSNI:  true,
		verdict:  evidence.MTLS,
	}, {
		name:     "FORWARD_ONLY on mTLS",
		tls:      mtls(id.sleep.Cert),
		mode:     ForwardOnly,
		header:   http.Header{"X-Forwarded-Client-Cert": {upstreamXFCC}},
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantCert: id.sleep.Cert,
		wantSNI:  true,
		wantXFCC: upstreamXFCC,
		verdict:  evidence.MTLSMismatch, // the rightmost element is not this hop's
	}, {
		name:    "FORWARD_ONLY on plaintext",
		mode:    ForwardOnly,
		header:  http.Header{"X-Forwarded-Client-Cert": {ForgedXFCC}},
		verdict: evidence.Plaintext,
	}, {
		name:     "SANITIZE_SET on mTLS",
		tls:      mtls(id.sleep.Cert),
		mode:     SanitizeSet,
		header:   http.Header{"X-Forwarded-Client-Cert": {upstreamXFCC}},
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantCert: id.sleep.Cert,
		wantSNI:  true,
		wantXFCC: authztest.XFCC(id.server, id.sleep),
		verdict:  evidence.MTLS,
	}, {
		name:     "forged header, ALWAYS_FORWARD_ONLY on plaintext",
		mode:     AlwaysForwardOnly,
		header:   http.Header{"X-Forwarded-Client-Cert": {ForgedXFCC}},
		wantXFCC: ForgedXFCC,
		verdict:  evidence.XFCCUnverified,
	}, {
		name:    "forged header, APPEND_FORWARD on plaintext",
		header:  http.Header{"X-Forwarded-Client-Cert": {ForgedXFCC}},
		verdict: evidence.Plaintext,
	}, {
		name:     "ALWAYS_FORWARD_ONLY on mTLS appends nothing",
		tls:      mtls(id.sleep.Cert),
		mode:     AlwaysForwardOnly,
		wantSrc:  SleepID,
		wantDst:  ServerID,
		wantCert: id.sleep.Cert,
		wantSNI:  true,
		verdict:  evidence.MTLS,
	}}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://"+Host+"/headers?show_env=1", nil)
			r.Header = http.Header{"User-Agent": {"curl/8.5.0"}, "Accept": {"text/html", "*/*"}}
			maps.Copy(r.Header, tt.header)
			d := downstream{local: "127.0.0.1:15006", remote: "127.0.0.12:40000", tls: tt.tls}
			if tt.tls != nil {
				d.own = id.server.Cert
			}
			h := r.Header.Clone()
			mutateRequestHeaders(h, d, tt.mode)
			req := newCheckRequest(d, r, h, 4242, now, checkOptions{includePeerCertificate: !tt.noCert, includeTLSSession: true})

			a := req.GetAttributes()
			if got := a.GetSource().GetPrincipal(); got != tt.wantSrc {
				t.Errorf("source principal = %q, want %q", got, tt.wantSrc)
			}
			if got := a.GetDestination().GetPrincipal(); got != tt.wantDst {
				t.Errorf("destination principal = %q, want %q", got, tt.wantDst)
			}
			wantCert := ""
			if tt.wantCert != nil {
				wantCert = authztest.PercentEncode(string(pemOf(tt.wantCert)))
			}
			if got := a.GetSource().GetCertificate(); got != wantCert {
				t.Errorf("source certificate = %.40q..., want %.40q...", got, wantCert)
			}
			if got := a.GetDestination().GetCertificate(); got != "" {
				t.Errorf("destination certificate set: %.40q...", got)
			}
			if (a.GetTlsSession() != nil) != tt.wantSNI || tt.wantSNI && a.GetTlsSession().GetSni() != tt.tls.ServerName {
				t.Errorf("tls_session = %v, want SNI %v", a.GetTlsSession(), tt.wantSNI)
			}
			checkAddress(t, "source", a.GetSource(), "127.0.0.12", 40000)
			checkAddress(t, "destination", a.GetDestination(), "127.0.0.1", 15006)

			hr := a.GetRequest().GetHttp()
			if hr.GetId() != "4242" || hr.GetId() == hr.GetHeaders()["x-request-id"] {
				t.Errorf("id = %q: want the stream id 4242, not x-request-id", hr.GetId())
			}
			if hr.GetMethod() != "GET" || hr.GetPath() != "/headers?show_env=1" || hr.GetHost() != Host || hr.GetProtocol() != "HTTP/1.1" || hr.GetQuery() != "" {
				t.Errorf("request line = %s %s (query %q) host %s %s", hr.GetMethod(), hr.GetPath(), hr.GetQuery(), hr.GetHost(), hr.GetProtocol())
			}
			wantScheme := "http"
			if tt.tls != nil {
				wantScheme = "https"
			}
			if hr.GetScheme() != wantScheme {
				t.Errorf("scheme = %q, want %q", hr.GetScheme(), wantScheme)
			}
			if !a.GetRequest().GetTime().AsTime().Equal(now) {
				t.Errorf("request time = %v", a.GetRequest().GetTime().AsTime())
			}
			headers := hr.GetHeaders()
			for k, want := range map[string]string{
				":authority": Host, ":method": "GET", ":path": "/headers?show_env=1", ":scheme": wantScheme,
				"user-agent": "curl/8.5.0", "accept": "text/html,*/*", "x-forwarded-proto": wantScheme,
			} {
				if headers[k] != want {
					t.Errorf("header %s = %q, want %q", k, headers[k], want)
				}
			}
			for k := range headers {
				if k != strings.ToLower(k) {
					t.Errorf("header %q is not lower-case", k)
				}
			}
			if !uuidPattern.MatchString(headers["x-request-id"]) {
				t.Errorf("x-request-id = %q, want a generated UUID", headers["x-request-id"])
			}
			got, present := headers["x-forwarded-client-cert"]
			if present != (tt.wantXFCC != "") || got != tt.wantXFCC {
				t.Errorf("x-forwarded-client-cert = %q (present %v), want %q", got, present, tt.wantXFCC)
			}
			if hv := h.Get(headerXFCC); hv != tt.wantXFCC {
				t.Errorf("XFCC forwarded to the app = %q, want %q", hv, tt.wantXFCC)
			}
			if v := judge(t, req); v != tt.verdict {
				t.Errorf("meshproof's verdict on it = %s, want %s", v, tt.verdict)
			}
		})
	}
}

// judge is meshproof's verdict on the request, with its own parsers: the
// XFCC element the sidecar writes must be one meshproof reads as agreeing
// with the connection.
func judge(t *testing.T, req *authv3.CheckRequest) evidence.Verdict {
	t.Helper()
	a := req.GetAttributes()
	hop := evidence.Hop{SourcePrincipal: a.GetSource().GetPrincipal(), DestinationPrincipal: a.GetDestination().GetPrincipal()}
	if c := a.GetSource().GetCertificate(); c != "" {
		hop.SourceCertSHA256 = pemSHA256(t, c)
	}
	if v, ok := a.GetRequest().GetHttp().GetHeaders()["x-forwarded-client-cert"]; ok {
		hop.XFCCPresent = true
		hop.XFCC, hop.XFCCErr = xfcc.Parse(v)
	}
	v, _ := evidence.Judge(hop)
	return v
}

func checkAddress(t *testing.T, which string, p *authv3.AttributeContext_Peer, ip string, port uint32) {
	t.Helper()
	sa := p.GetAddress().GetSocketAddress()
	if sa.GetAddress() != ip || sa.GetPortValue() != port {
		t.Errorf("%s address = %s:%d, want %s:%d", which, sa.GetAddress(), sa.GetPortValue(), ip, port)
	}
}

// TestRequestIDKept: an x-request-id the client (its sidecar) sent is kept.
func TestRequestIDKept(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://"+Host+"/", nil)
	r.Header.Set("X-Request-Id", "from-sleep")
	h := r.Header.Clone()
	mutateRequestHeaders(h, downstream{}, AppendForward)
	if got := h.Get("X-Request-Id"); got != "from-sleep" {
		t.Errorf("x-request-id = %q, want the client's", got)
	}
}

// TestXFCCMatchesMeshproofParser: the element for an mTLS client parses,
// with meshproof's parser, into the peer's identity and certificate hash.
func TestXFCCMatchesMeshproofParser(t *testing.T) {
	id := newIdentities(t)
	els, err := xfcc.Parse(xfccElement(id.server.Cert, id.sleep.Cert))
	if err != nil {
		t.Fatal(err)
	}
	el, _ := xfcc.Rightmost(els)
	if !slices.Equal(el.By, []string{ServerID}) || !slices.Equal(el.URI, []string{SleepID}) || el.Hash != id.sleep.SHA256() || el.Subject != "" {
		t.Errorf("parsed element = %+v", el)
	}
	if got := strconv.Quote(xfccElement(id.server.Cert, id.sleep.Cert)); got != strconv.Quote(authztest.XFCC(id.server, id.sleep)) {
		t.Errorf("element = %s, want authztest.XFCC's %s", got, strconv.Quote(authztest.XFCC(id.server, id.sleep)))
	}
}

// pemSHA256 decodes attributes.source.certificate and hashes its DER.
func pemSHA256(t *testing.T, urlEncoded string) string {
	t.Helper()
	raw, err := url.PathUnescape(urlEncoded)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(raw))
	if b == nil {
		t.Fatalf("source certificate is not URL-encoded PEM: %.60q", urlEncoded)
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}
