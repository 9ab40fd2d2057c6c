package authz

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/identity/spiffe"
	"github.com/meshproof/meshproof/identity/xfcc"
	"github.com/meshproof/meshproof/rego"
)

// facts is what meshproof derives from a hop's identities before the policy
// runs: parsed principals, the peer certificate, the parsed XFCC header, the
// verdict, and their Rego view (meshproof.facts(), or input.meshproof with
// --input-meshproof). It depends only on four
// strings that repeat for every request of a client/server pair, so it is
// computed once per pair and shared; it must never be modified.
type facts struct {
	source, destination evidence.Peer // principal, spiffe and certificate only
	xfcc                *evidence.XFCC
	verdict             evidence.Verdict
	reasons             []string
	term                *ast.Term // meshproof.facts()
}

// factsKey is what facts depend on. The XFCC value is part of it because the
// verdict compares it with the connection.
type factsKey struct {
	source, destination string
	certificate         string
	xfcc                string
	xfccPresent         bool
}

// factsCache bounds memory by entry count and by key size: an entry whose key
// is larger than maxCachedKey (a huge forged header) is computed every time.
type factsCache struct {
	b *bounded[factsKey, *facts]
}

const maxCachedKey = 16 << 10

func newFactsCache(max int) *factsCache {
	return &factsCache{b: newBounded[factsKey, *facts](max)}
}

func (c *factsCache) get(k factsKey) *facts {
	if len(k.certificate)+len(k.xfcc)+len(k.source)+len(k.destination) > maxCachedKey {
		return deriveFacts(k)
	}
	return c.b.get(k, deriveFacts)
}

var (
	kMeshproof = ast.StringTerm("meshproof")
	kVerdict   = ast.StringTerm("verdict")
	kReasons   = ast.StringTerm("reasons")
	kXFCC      = ast.StringTerm("xfcc")
	kXFCCError = ast.StringTerm("xfcc_error")
	kError     = ast.StringTerm("error")
)

func deriveFacts(k factsKey) *facts {
	f := &facts{
		source:      peerIdentity(k.source),
		destination: peerIdentity(k.destination),
	}
	hop := evidence.Hop{
		SourcePrincipal:      k.source,
		DestinationPrincipal: k.destination,
		XFCCPresent:          k.xfccPresent,
	}
	if k.certificate != "" {
		f.source.Certificate = parseCertificate(k.certificate)
		hop.SourceCertSHA256 = f.source.Certificate.SHA256
	}
	var xfccTerm *ast.Term
	if k.xfccPresent {
		elems, err := xfcc.Parse(k.xfcc)
		hop.XFCC, hop.XFCCErr = elems, err
		f.xfcc = xfccRecord(k.xfcc, elems, err)
		if err == nil {
			xfccTerm = ast.NewTerm(rego.XFCCValue(elems))
		}
	}
	f.verdict, f.reasons = evidence.Judge(hop)

	kv := []item{
		{kSource, identityTerm(k.source, f.source)},
		{kDestination, identityTerm(k.destination, f.destination)},
		{kVerdict, ast.StringTerm(string(f.verdict))},
		{kReasons, stringsTerm(f.reasons)},
	}
	if xfccTerm != nil {
		kv = append(kv, item{kXFCC, xfccTerm})
	} else if f.xfcc != nil {
		kv = append(kv, item{kXFCCError, ast.StringTerm(f.xfcc.Error)})
	}
	f.term = ast.NewTerm(ast.NewObject(kv...))
	return f
}

func peerIdentity(principal string) evidence.Peer {
	p := evidence.Peer{Principal: principal}
	if principal == "" {
		return p
	}
	if id, err := spiffe.Parse(principal); err == nil {
		p.SPIFFE = &evidence.SPIFFEID{
			ID: id.ID, TrustDomain: id.TrustDomain, Path: id.Path,
			Namespace: id.Namespace, ServiceAccount: id.ServiceAccount,
		}
	}
	return p
}

// identityTerm is input.meshproof.source / destination: {principal, id,
// trust_domain, path, namespace, service_account}, or {principal, error}
// when the principal is not a SPIFFE ID, or {} when there is none.
func identityTerm(principal string, p evidence.Peer) *ast.Term {
	if principal == "" {
		return ast.NewTerm(ast.NewObject())
	}
	if p.SPIFFE == nil {
		_, err := spiffe.Parse(principal)
		return ast.ObjectTerm(item{kPrincipal, ast.StringTerm(principal)}, item{kError, ast.StringTerm(err.Error())})
	}
	obj := rego.SPIFFEValue(spiffe.ID{
		ID: p.SPIFFE.ID, TrustDomain: p.SPIFFE.TrustDomain, Path: p.SPIFFE.Path,
		Namespace: p.SPIFFE.Namespace, ServiceAccount: p.SPIFFE.ServiceAccount,
	})
	obj.Insert(kPrincipal, ast.StringTerm(principal))
	return ast.NewTerm(obj)
}

func xfccRecord(raw string, elems []xfcc.Element, err error) *evidence.XFCC {
	x := &evidence.XFCC{Raw: raw}
	if err != nil {
		x.Error = err.Error()
		return x
	}
	x.Elements = make([]evidence.XFCCElement, len(elems))
	for i, e := range elems {
		el := evidence.XFCCElement{By: e.By, Hash: e.Hash, Subject: e.Subject, URI: e.URI, DNS: e.DNS, Other: e.Other}
		if h, err := e.CertSHA256(); err == nil {
			el.CertSHA256 = h
		}
		x.Elements[i] = el
	}
	return x
}

// parseCertificate reads attributes.source.certificate: the URL-encoded PEM
// of the peer's leaf. What cannot be read is reported, never fatal.
func parseCertificate(encoded string) *evidence.Certificate {
	c := &evidence.Certificate{}
	pemText, err := url.PathUnescape(encoded)
	if err != nil {
		c.Error = "certificate is not URL-encoded PEM: " + err.Error()
		return c
	}
	block, _ := pem.Decode([]byte(pemText))
	if block == nil && strings.Contains(encoded, "+") {
		// Encoded as a form value ('+' for space) by something not Envoy.
		if alt, err := url.QueryUnescape(encoded); err == nil {
			block, _ = pem.Decode([]byte(alt))
		}
	}
	if block == nil {
		c.Error = "certificate has no PEM block"
		return c
	}
	sum := sha256.Sum256(block.Bytes)
	c.SHA256 = hex.EncodeToString(sum[:])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		c.Error = "certificate does not parse: " + err.Error()
		return c
	}
	c.Serial = cert.SerialNumber.Text(16)
	c.Subject = cert.Subject.String()
	c.Issuer = cert.Issuer.String()
	c.NotBefore, c.NotAfter = cert.NotBefore.UTC(), cert.NotAfter.UTC()
	for _, u := range cert.URIs {
		c.URISANs = append(c.URISANs, u.String())
	}
	c.DNSSANs = cert.DNSNames
	return c
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}
