package authz

import "github.com/open-policy-agent/opa/v1/ast"

// internTable hands out one shared, immutable term per string for values
// that recur across requests (header names, principals, hosts, methods, the
// XFCC value of a client). OPA never modifies input terms, and OPA itself
// shares interned terms the same way. Strings longer than maxInterned are
// never kept.
type internTable struct {
	b *bounded[string, *ast.Term]
}

const maxInterned = 4 << 10

func newInternTable(max int) *internTable {
	return &internTable{b: newBounded[string, *ast.Term](max)}
}

func (t *internTable) str(s string) *ast.Term {
	if s == "" {
		return ast.InternedEmptyString
	}
	if len(s) > maxInterned {
		return ast.StringTerm(s)
	}
	return t.b.get(s, ast.StringTerm)
}
