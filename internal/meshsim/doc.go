// Package meshsim simulates, on loopback, the Istio namespace of the story
// meshproof exists for (see README, "Run with Envoy" and "Run with Istio"): httpbin behind a
// server-side sidecar that calls meshproof's ext_authz over gRPC, and the
// clients that reach it over mTLS, plaintext, TLS without an Istio ALPN, or
// with a forged x-forwarded-client-cert header.
//
// The sidecar plays Envoy's part faithfully where evidence depends on it:
// the PERMISSIVE listener picks its filter chain from the ClientHello's ALPN
// as tls_inspector does (a TLS client without an Istio ALPN lands on the
// plaintext chain, and its handshake fails); STRICT has the mTLS chain only
// and resets plaintext; the CheckRequest carries what Envoy puts in it
// (principals by URI SAN, DNS SAN, subject; the URL-encoded peer
// certificate; the stream id; headers after the connection manager rewrote
// x-forwarded-client-cert and added x-request-id); and the CheckResponse is
// honoured as Envoy honours it (denial status, headers and body; header and
// query mutations; status_on_error on a failed Check).
//
// It is ordinary code rather than a _test file because `meshproof demo`
// runs it too, and it imports no test package (its certificates come from
// internal/svid), so that the binary links no test code
// (TestBinaryLinksNoTestCode in cmd/meshproof).
package meshsim

// The identities and names of the story: namespace mtls-pg in trust domain
// cluster.local.
const (
	TrustDomain = "cluster.local"
	// Host is httpbin's service address as clients put it in :authority.
	Host = "httpbin.mtls-pg:8000"
	// ServerID is the SVID of httpbin's sidecar (service account default).
	ServerID = "spiffe://cluster.local/ns/mtls-pg/sa/default"
	// SleepID is the SVID of the sleep client's sidecar.
	SleepID = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	// LegacyID is the SVID the legacy client gets once it joins the mesh.
	LegacyID = "spiffe://cluster.local/ns/mtls-pg/sa/legacy"
	// CurlID is the certificate the curl-like client presents.
	CurlID = "spiffe://cluster.local/ns/mtls-pg/sa/curl"
	// ForgedID is the identity the forger claims in its XFCC header.
	ForgedID = "spiffe://cluster.local/ns/mtls-pg/sa/admin"
)
