package rego

import (
	"context"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/types"
)

// meshproof's view of a request (principals parsed, the XFCC header parsed,
// the mTLS verdict and its reasons) reaches the policy through built-in
// functions, not through the input: the input stays exactly OPA-Envoy's, so
// a policy that counts, lists or forwards the whole input sees what it sees
// under OPA-Envoy. (--input-meshproof adds the same object as
// input.meshproof, for policies written against earlier versions.)
//
//	meshproof.facts()        {source, destination, verdict, reasons, xfcc | xfcc_error}
//	meshproof.verdict()      "mtls", "mtls_mismatch", "tls_server_only", "xfcc_unverified" or "plaintext"
//	meshproof.reasons()      why, as strings
//	meshproof.source()       the source principal parsed (as spiffe.parse, plus principal; {} without one)
//	meshproof.destination()  the same for the destination
//	meshproof.xfcc()         the x-forwarded-client-cert elements, oldest first (undefined without the header)
//
// Each is undefined outside a Check (opa test, opa eval), so a policy can fall
// back to input.meshproof or to a fixture there. The decision cache keys on
// them as on input.meshproof (a policy that calls one depends on that path).

// factsKey is the context key of the request's facts.
type factsKey struct{}

// WithFacts returns ctx carrying facts, the object the meshproof.*
// built-ins read.
func WithFacts(ctx context.Context, facts *ast.Term) context.Context {
	return context.WithValue(ctx, factsKey{}, facts)
}

// factsOf returns the facts ctx carries, nil without.
func factsOf(ctx context.Context) *ast.Term {
	t, _ := ctx.Value(factsKey{}).(*ast.Term)
	return t
}

// FactsBuiltinPrefix starts the names of the built-ins that read the facts.
const FactsBuiltinPrefix = "meshproof."

var factsBuiltins = []struct {
	name, key, description string
	result                 types.Type
}{
	{"facts", "", "meshproof's view of this request: {source, destination, verdict, reasons} and xfcc (or xfcc_error when the header is malformed). Undefined outside a Check.", types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))},
	{"verdict", "verdict", "The request's mTLS verdict: mtls, mtls_mismatch, tls_server_only, xfcc_unverified or plaintext. Undefined outside a Check.", types.S},
	{"reasons", "reasons", "Why the verdict is what it is, as strings. Undefined outside a Check.", types.NewArray(nil, types.S)},
	{"source", "source", "The source principal parsed: {principal, id, trust_domain, path, namespace, service_account}, {principal, error} when it is not a SPIFFE ID, {} without one. Undefined outside a Check.", types.NewObject(nil, types.NewDynamicProperty(types.S, types.S))},
	{"destination", "destination", "The destination principal parsed, as meshproof.source. Undefined outside a Check.", types.NewObject(nil, types.NewDynamicProperty(types.S, types.S))},
	{"xfcc", "xfcc", "The x-forwarded-client-cert elements, oldest first, as xfcc.parse. Undefined without the header, when it is malformed, or outside a Check.", types.NewArray(nil, types.A)},
}

func init() {
	for _, b := range factsBuiltins {
		ast.RegisterBuiltin(&ast.Builtin{
			Name:        FactsBuiltinPrefix + b.name,
			Description: b.description,
			Decl:        types.NewFunction(nil, b.result),
			Categories:  []string{"meshproof"},
		})
		key := ast.StringTerm(b.key)
		whole := b.key == ""
		topdown.RegisterBuiltinFunc(FactsBuiltinPrefix+b.name, func(bctx topdown.BuiltinContext, _ []*ast.Term, iter func(*ast.Term) error) error {
			facts := factsOf(bctx.Context)
			if facts == nil {
				return nil // undefined
			}
			if whole {
				return iter(facts)
			}
			obj, ok := facts.Value.(ast.Object)
			if !ok {
				return nil
			}
			if v := obj.Get(key); v != nil {
				return iter(v)
			}
			return nil
		})
	}
}

// callsFacts reports whether name is one of the meshproof.* built-ins.
func callsFacts(name string) bool { return strings.HasPrefix(name, FactsBuiltinPrefix) }
