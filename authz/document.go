package authz

import (
	"errors"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

var (
	kVersion         = ast.StringTerm("version")
	kParsedPath      = ast.StringTerm("parsed_path")
	kParsedQuery     = ast.StringTerm("parsed_query")
	kParsedBody      = ast.StringTerm("parsed_body")
	kTruncatedBody   = ast.StringTerm("truncated_body")
	kSourcePrincipal = ast.StringTerm("source_principal")

	// versionTerm is OPA-Envoy's input.version for the v3 API.
	versionTerm = ast.ObjectTerm(
		item{ast.StringTerm("ext_authz"), ast.StringTerm("v3")},
		item{ast.StringTerm("encoding"), ast.StringTerm("protojson")},
	)
)

// InputError is a request meshproof cannot turn into an input document (a
// malformed path, query or body). Like OPA-Envoy, the request is denied with
// 400 and the reason, without evaluating the policy.
type InputError struct{ Err error }

func (e *InputError) Error() string { return "bad request: " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// upstream is the error as OPA-Envoy words it: the innermost parseError's
// cause (the standard library's error, without meshproof's context).
func (e *InputError) upstream() string {
	msg := e.Err.Error()
	for err := e.Err; err != nil; err = errors.Unwrap(err) {
		if pe, ok := err.(*parseError); ok { //nolint:errorlint // each link of the chain is looked at
			msg = pe.err.Error()
		}
	}
	return msg
}

// document builds the whole input: OPA-Envoy's document (the CheckRequest,
// version, parsed_path, parsed_query, parsed_body, truncated_body,
// source_principal), plus input.meshproof when meshproof is not nil
// (--input-meshproof; policies otherwise call the meshproof.* built-ins).
// pt is the request path's c.pathTerms.
func document(req *authv3.CheckRequest, h *headerReader, c *inputCache, pt pathTerms, meshproof *ast.Term) (*ast.Term, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if pt.err != nil {
		return nil, &InputError{pt.err}
	}
	body, truncated, err := parsedBody(h, httpReq.GetBody(), httpReq.GetRawBody())
	if err != nil {
		return nil, &InputError{err}
	}
	kv := make([]item, 0, 8)
	if a := req.GetAttributes(); a != nil {
		kv = append(kv, item{kAttributes, attributesTerm(a, c)})
	}
	kv = append(kv,
		item{kVersion, versionTerm},
		item{kParsedPath, pt.path},
		item{kParsedQuery, pt.query},
		item{kParsedBody, body},
		item{kTruncatedBody, ast.InternedTerm(truncated)},
	)
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		kv = append(kv, item{kSourcePrincipal, c.str(p)})
	}
	if meshproof != nil {
		kv = append(kv, item{kMeshproof, meshproof})
	}
	return ast.NewTerm(ast.NewObject(kv...)), nil
}
