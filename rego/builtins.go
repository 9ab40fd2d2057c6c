package rego

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/meshproof/meshproof/identity/spiffe"
	"github.com/meshproof/meshproof/identity/xfcc"
)

// The Rego built-ins meshproof adds. OPA only accepts new built-ins before
// any compiler exists, hence registration at init.
var (
	spiffeParse = &ast.Builtin{
		Name:        "spiffe.parse",
		Description: "Parses a SPIFFE ID into {id, trust_domain, path} plus namespace and service_account for Istio-style IDs. Undefined (an error with strict built-in errors) for an invalid ID.",
		Decl: types.NewFunction(
			types.Args(types.Named("id", types.S).Description("SPIFFE ID, e.g. spiffe://cluster.local/ns/default/sa/web")),
			types.Named("parsed", types.NewObject(nil, types.NewDynamicProperty(types.S, types.S))),
		),
		Categories: []string{"meshproof"},
	}
	xfccParse = &ast.Builtin{
		Name:        "xfcc.parse",
		Description: "Parses an x-forwarded-client-cert header into its elements, oldest first (the last one is this hop's). Undefined for an invalid header.",
		Decl: types.NewFunction(
			types.Args(types.Named("header", types.S).Description("x-forwarded-client-cert value")),
			types.Named("elements", types.NewArray(nil, types.A)),
		),
		Categories: []string{"meshproof"},
	}
)

func init() {
	ast.RegisterBuiltin(spiffeParse)
	ast.RegisterBuiltin(xfccParse)
	topdown.RegisterBuiltinFunc(spiffeParse.Name, builtinSPIFFEParse)
	topdown.RegisterBuiltinFunc(xfccParse.Name, builtinXFCCParse)
}

func builtinSPIFFEParse(_ topdown.BuiltinContext, operands []*ast.Term, iter func(*ast.Term) error) error {
	s, err := builtins.StringOperand(operands[0].Value, 1)
	if err != nil {
		return err
	}
	id, err := spiffe.Parse(string(s))
	if err != nil {
		return err
	}
	return iter(ast.NewTerm(SPIFFEValue(id)))
}

func builtinXFCCParse(_ topdown.BuiltinContext, operands []*ast.Term, iter func(*ast.Term) error) error {
	s, err := builtins.StringOperand(operands[0].Value, 1)
	if err != nil {
		return err
	}
	elems, err := xfcc.Parse(string(s))
	if err != nil {
		return err
	}
	return iter(ast.NewTerm(XFCCValue(elems)))
}

var (
	keyID             = ast.StringTerm("id")
	keyTrustDomain    = ast.StringTerm("trust_domain")
	keyPath           = ast.StringTerm("path")
	keyNamespace      = ast.StringTerm("namespace")
	keyServiceAccount = ast.StringTerm("service_account")
	keyBy             = ast.StringTerm("by")
	keyHash           = ast.StringTerm("hash")
	keyCert           = ast.StringTerm("cert")
	keyChain          = ast.StringTerm("chain")
	keySubject        = ast.StringTerm("subject")
	keyURI            = ast.StringTerm("uri")
	keyDNS            = ast.StringTerm("dns")
	keyOther          = ast.StringTerm("other")
)

// SPIFFEValue is the Rego view of a SPIFFE ID, as spiffe.parse returns it
// and as input.meshproof.source and destination carry it.
func SPIFFEValue(id spiffe.ID) ast.Object {
	kv := make([][2]*ast.Term, 0, 5)
	kv = append(kv,
		[2]*ast.Term{keyID, ast.StringTerm(id.ID)},
		[2]*ast.Term{keyTrustDomain, ast.StringTerm(id.TrustDomain)},
		[2]*ast.Term{keyPath, ast.StringTerm(id.Path)},
	)
	if id.Namespace != "" {
		kv = append(kv,
			[2]*ast.Term{keyNamespace, ast.StringTerm(id.Namespace)},
			[2]*ast.Term{keyServiceAccount, ast.StringTerm(id.ServiceAccount)},
		)
	}
	return ast.NewObject(kv...)
}

// XFCCValue is the Rego view of parsed XFCC elements: an array of objects
// with by, hash, cert, chain, subject, uri, dns and other; keys the element
// did not carry are absent.
func XFCCValue(elems []xfcc.Element) *ast.Array {
	ts := make([]*ast.Term, len(elems))
	for i, e := range elems {
		ts[i] = ast.NewTerm(xfccElementValue(e))
	}
	return ast.NewArray(ts...)
}

func xfccElementValue(e xfcc.Element) ast.Object {
	kv := make([][2]*ast.Term, 0, 8)
	if e.By != nil {
		kv = append(kv, [2]*ast.Term{keyBy, stringsTerm(e.By)})
	}
	if e.Hash != "" {
		kv = append(kv, [2]*ast.Term{keyHash, ast.StringTerm(e.Hash)})
	}
	if e.Cert != "" {
		kv = append(kv, [2]*ast.Term{keyCert, ast.StringTerm(e.Cert)})
	}
	if e.Chain != "" {
		kv = append(kv, [2]*ast.Term{keyChain, ast.StringTerm(e.Chain)})
	}
	if e.Subject != "" {
		kv = append(kv, [2]*ast.Term{keySubject, ast.StringTerm(e.Subject)})
	}
	if e.URI != nil {
		kv = append(kv, [2]*ast.Term{keyURI, stringsTerm(e.URI)})
	}
	if e.DNS != nil {
		kv = append(kv, [2]*ast.Term{keyDNS, stringsTerm(e.DNS)})
	}
	if len(e.Other) > 0 {
		other := make([][2]*ast.Term, 0, len(e.Other))
		for k, vs := range e.Other {
			other = append(other, [2]*ast.Term{ast.StringTerm(k), stringsTerm(vs)})
		}
		kv = append(kv, [2]*ast.Term{keyOther, ast.ObjectTerm(other...)})
	}
	return ast.NewObject(kv...)
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}
