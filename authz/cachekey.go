package authz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshproof/meshproof/rego"
)

// cachedEvaluator is an Evaluator with a decision cache that can be asked
// before any input document exists (rego.Engine is one).
type cachedEvaluator interface {
	Cached(key rego.KeyFunc) (ast.Value, *rego.Policy, bool, error)
}

// requestKey reads the values a cached policy depends on straight from the
// request, for the paths policies commonly read (principals, method, host,
// path, a header, parsed_path, parsed_query, input.meshproof), so that a
// cache hit builds no input document at all. The values must be exactly
// those the document would hold: cachekey_test.go checks it against
// document() over random requests. Any other path, or a request whose
// document would fail (bad path, a body to parse), answers ok=false and the
// Check takes the ordinary path.
type requestKey struct {
	req  *authv3.CheckRequest
	f    *facts
	path pathTerms
	c    *inputCache
}

func (k *requestKey) values(paths []ast.Ref) ([]*ast.Term, bool) {
	http := k.req.GetAttributes().GetRequest().GetHttp()
	if http.GetBody() != "" || len(http.GetRawBody()) > 0 || k.path.err != nil {
		return nil, false
	}
	terms := make([]*ast.Term, len(paths))
	for i, p := range paths {
		t, ok := k.resolve(p)
		if !ok {
			return nil, false
		}
		terms[i] = t
	}
	return terms, true
}

// resolve returns the term at p (nil: absent from the document).
func (k *requestKey) resolve(p ast.Ref) (*ast.Term, bool) {
	switch name(p, 0) {
	case "attributes":
		return k.attribute(p)
	case "parsed_path":
		return find(k.path.path, p[1:])
	case "parsed_query":
		return find(k.path.query, p[1:])
	case "meshproof":
		return find(k.f.term, p[1:])
	case "version":
		return find(versionTerm, p[1:])
	case "source_principal":
		if len(p) == 1 {
			return k.str(k.req.GetAttributes().GetSource().GetPrincipal()), true
		}
	}
	return nil, false
}

func (k *requestKey) attribute(p ast.Ref) (*ast.Term, bool) {
	a := k.req.GetAttributes()
	switch {
	case len(p) == 3 && name(p, 2) == "principal" && (name(p, 1) == "source" || name(p, 1) == "destination"):
		peer := a.GetSource()
		if name(p, 1) == "destination" {
			peer = a.GetDestination()
		}
		return k.str(peer.GetPrincipal()), true
	case len(p) < 4 || name(p, 1) != "request" || name(p, 2) != "http":
		return nil, false
	}
	h := a.GetRequest().GetHttp()
	if len(p) == 5 && name(p, 3) == "headers" {
		v, ok := h.GetHeaders()[name(p, 4)]
		if !ok || name(p, 4) == "" {
			return nil, true
		}
		return headerValueTerm(name(p, 4), v, k.c), true
	}
	if len(p) != 4 {
		return nil, false
	}
	switch name(p, 3) {
	case "method":
		return k.str(h.GetMethod()), true
	case "host":
		return k.str(h.GetHost()), true
	case "path":
		return k.str(h.GetPath()), true
	case "scheme":
		return k.str(h.GetScheme()), true
	case "protocol":
		return k.str(h.GetProtocol()), true
	}
	return nil, false
}

// str is a string field as the document has it: absent when empty.
func (k *requestKey) str(s string) *ast.Term {
	if s == "" {
		return nil
	}
	return k.c.str(s)
}

// name is p[i] as a string, "" when it is not one.
func name(p ast.Ref, i int) string {
	if i >= len(p) {
		return ""
	}
	s, _ := p[i].Value.(ast.String)
	return string(s)
}

func find(t *ast.Term, rest ast.Ref) (*ast.Term, bool) {
	if t == nil {
		return nil, false
	}
	if len(rest) == 0 {
		return t, true
	}
	v, err := t.Value.Find(rest)
	if err != nil {
		return nil, true
	}
	return ast.NewTerm(v), true
}
