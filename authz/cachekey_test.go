package authz

import (
	"math/rand/v2"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshproof/meshproof/authz/authztest"
)

// TestRequestKeyMatchesDocument: every value the cache key reads straight
// from the request equals what the input document holds at that path, so a
// decision cached from one is found from the other.
func TestRequestKeyMatchesDocument(t *testing.T) {
	var paths []ast.Ref
	for _, s := range []string{
		"attributes.source.principal", "attributes.destination.principal",
		"attributes.request.http.method", "attributes.request.http.host", "attributes.request.http.path",
		"attributes.request.http.scheme", "attributes.request.http.protocol",
		`attributes.request.http.headers["x-request-id"]`, `attributes.request.http.headers[":authority"]`,
		`attributes.request.http.headers["content-type"]`, `attributes.request.http.headers[""]`, `attributes.request.http.headers["a"]`,
		"parsed_path", "parsed_path[0]", "parsed_path[1]", "parsed_path[7]",
		"parsed_query", "parsed_query.a", "parsed_query.a[0]", "parsed_query.z[0]",
		"source_principal", "version", "version.ext_authz",
		"meshproof.verdict", "meshproof.source.namespace", "meshproof.destination.id", "meshproof.reasons[0]", "meshproof.xfcc[0].uri",
	} {
		paths = append(paths, ast.MustParseRef("input." + s)[1:])
	}
	unsupported := []ast.Ref{
		ast.MustParseRef("input.attributes.source")[1:],
		ast.MustParseRef("input.attributes.request.http.headers")[1:],
		ast.MustParseRef("input.attributes.source.address.socketAddress.portValue")[1:],
		ast.MustParseRef("input.parsed_body")[1:],
		ast.MustParseRef("input.attributes.request.http.id")[1:],
	}
	rng := rand.New(rand.NewPCG(5, 6))
	c := newInputCache()
	facts := newFactsCache(64)
	checked := 0
	for i := range 3000 {
		req := randomRequest(rng)
		if i%2 == 0 {
			req = authztest.NewRequest(authztest.MTLS("spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/c"),
				authztest.Path([]string{"/", "/x/y?a=1&a=2", "//z", "/q?a"}[rng.IntN(4)]))
		}
		attrs := req.GetAttributes()
		h := newHeaderReader(attrs.GetRequest().GetHttp())
		xv, xp := h.lookup("x-forwarded-client-cert")
		f := facts.get(factsKey{source: attrs.GetSource().GetPrincipal(), destination: attrs.GetDestination().GetPrincipal(),
			certificate: attrs.GetSource().GetCertificate(), xfcc: xv, xfccPresent: xp})
		pt := c.pathTerms(attrs.GetRequest().GetHttp().GetPath())
		doc, err := document(req, &h, c, pt, f.term)
		k := requestKey{req: req, f: f, path: pt, c: c}
		if err != nil {
			if _, ok := k.values(paths[:1]); ok {
				t.Fatalf("request %d: the document fails (%v) but the key was built: %v", i, err, req)
			}
			continue
		}
		for _, p := range unsupported {
			if _, ok := k.resolve(p); ok {
				t.Fatalf("path %v must not be resolved from the request", p)
			}
		}
		terms, ok := k.values(paths)
		if !ok {
			continue // a body to parse: the key is not built from the request
		}
		for j, p := range paths {
			want, werr := doc.Value.Find(p)
			got := terms[j]
			if (werr != nil) != (got == nil) || got != nil && got.Value.Compare(want) != 0 {
				t.Fatalf("request %d path %v: from the request %v, in the document %v (%v)\n%v", i, p, got, want, werr, req)
			}
		}
		checked++
	}
	if checked < 1000 {
		t.Fatalf("only %d requests compared", checked)
	}
}
