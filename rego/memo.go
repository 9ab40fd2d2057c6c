package rego

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A decision is a pure function of the parts of the input a policy reads,
// as long as the policy calls nothing that looks outside (clock, network,
// randomness, the environment) and the policy and data stay as they are.
// Most ext_authz policies read a handful of values (principals, method, a
// path segment) that repeat across requests, so meshproof remembers their
// decisions: memo is the cache of one Policy generation, dropped with it
// when the policy or its data change.
//
// Which parts the policy reads comes from the compiled policy: every ref to
// input in every rule reachable from the decision, cut at its first
// non-constant term (input.headers[name] reads all of input.headers). A
// policy that uses input as a whole value, or calls a non-deterministic or
// side-effecting built-in, is never memoised.

// memo caches decisions by the values at the policy's input paths.
type memo struct {
	paths []ast.Ref // each without the leading input term
	max   int

	mu      sync.RWMutex
	entries map[int][]memoEntry
	n       int

	hits, misses atomic.Int64
	off          atomic.Bool // switched off: the keys did not repeat
}

type memoEntry struct {
	key   *ast.Array
	value ast.Value // nil: undefined
}

// maxMemoKey keeps requests whose relevant values are large (bodies) out.
const maxMemoKey = 4 << 10

// Give up on a policy whose keys do not repeat: after memoProbe lookups
// with fewer than one hit in memoMinHitRate, memoising only costs.
const (
	memoProbe      = 1000
	memoMinHitRate = 20
)

// undefinedInput marks a path that is not in the input.
var undefinedInput = ast.NewTerm(ast.Var("$undefined"))

func newMemo(paths []ast.Ref, max int) *memo {
	return &memo{paths: paths, max: max, entries: map[int][]memoEntry{}}
}

// key extracts the values the policy reads from a built input document,
// and the meshproof.* built-ins from facts (see WithFacts), as the path
// input.meshproof. ok is false when the key is too large to be worth
// keeping.
func (m *memo) key(input, facts *ast.Term) (*ast.Array, int, bool) {
	terms := make([]*ast.Term, len(m.paths))
	for i, p := range m.paths {
		doc, at := input, p
		if facts != nil && p[0].Equal(factsPath[1]) {
			doc, at = facts, p[1:]
		}
		if v, err := doc.Value.Find(at); err == nil {
			terms[i] = ast.NewTerm(v)
		}
	}
	return keyOf(terms)
}

// factsPath is what a call to a meshproof.* built-in reads.
var factsPath = ast.Ref{ast.InputRootDocument, ast.StringTerm("meshproof")}

// keyOf makes the key of the values at the memo's paths, in order; nil
// stands for a path that is not in the input.
func keyOf(terms []*ast.Term) (*ast.Array, int, bool) {
	size := 0
	for i, t := range terms {
		if t == nil {
			terms[i] = undefinedInput
			continue
		}
		if s, ok := t.Value.(ast.String); ok {
			size += len(s)
		} else {
			size += 64 // composite values: a rough charge
		}
	}
	if size > maxMemoKey {
		return nil, 0, false
	}
	k := ast.NewArray(terms...)
	return k, k.Hash(), true
}

func (m *memo) get(k *ast.Array, h int) (value ast.Value, found bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, e := range m.entries[h] {
		if e.key.Compare(k) == 0 {
			return e.value, true
		}
	}
	return nil, false
}

func (m *memo) put(k *ast.Array, h int, v ast.Value) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n >= m.max {
		clear(m.entries)
		m.n = 0
	}
	m.entries[h] = append(m.entries[h], memoEntry{key: k, value: v})
	m.n++
}

// count records a lookup and switches memoisation off for a policy whose
// keys do not repeat.
func (m *memo) count(hit bool) {
	if hit {
		m.hits.Add(1)
		return
	}
	misses := m.misses.Add(1)
	if total := misses + m.hits.Load(); total == memoProbe && m.hits.Load()*memoMinHitRate < total {
		m.off.Store(true)
		m.mu.Lock()
		clear(m.entries)
		m.mu.Unlock()
	}
}

// forbidden lists built-ins that make a decision depend on more than the
// input and the data, beyond those OPA marks non-deterministic.
var forbidden = map[string]bool{
	"print": true, "internal.print": true, "trace": true,
	"crypto.x509.parse_and_verify_certificates":              true, // checks validity against the clock
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// inputPaths returns the input paths the query's decision can read, or why
// it cannot be memoised.
func inputPaths(c *ast.Compiler, query ast.Body) ([]ast.Ref, error) {
	a := analysis{c: c, seen: map[*ast.Rule]bool{}, paths: map[string]ast.Ref{}}
	a.walk(query)
	for len(a.queue) > 0 && a.err == nil {
		r := a.queue[len(a.queue)-1]
		a.queue = a.queue[:len(a.queue)-1]
		a.walk(r)
	}
	if a.err != nil {
		return nil, a.err
	}
	out := make([]ast.Ref, 0, len(a.paths))
	for _, p := range a.paths {
		out = append(out, p[1:])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	return out, nil
}

type analysis struct {
	c     *ast.Compiler
	seen  map[*ast.Rule]bool
	queue []*ast.Rule
	paths map[string]ast.Ref
	err   error
}

func (a *analysis) walk(x any) {
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if a.err != nil {
			return true
		}
		switch v := x.(type) {
		case ast.Ref:
			return a.ref(v, vis)
		case ast.Var:
			switch v {
			case ast.InputRootDocument.Value:
				a.err = fmt.Errorf("the policy uses input as a whole")
			case ast.DefaultRootDocument.Value:
				a.rules(ast.DefaultRootRef) // all of data
			}
		case ast.Call:
			a.builtin(v[0].Value)
		case *ast.Expr:
			if v.IsCall() {
				a.builtin(v.Operator())
			}
		}
		return false
	})
	vis.Walk(x)
}

// ref records an input path or follows a data ref to the rules behind it;
// the non-constant rest of the ref is walked like any term.
func (a *analysis) ref(r ast.Ref, vis *ast.GenericVisitor) bool {
	head, ok := r[0].Value.(ast.Var)
	if !ok || (head != ast.InputRootDocument.Value && head != ast.DefaultRootDocument.Value) {
		return false // a local variable's ref: look inside normally
	}
	prefix := r.ConstantPrefix()
	if head == ast.InputRootDocument.Value {
		switch {
		case len(r) == 1:
			a.err = fmt.Errorf("the policy uses input as a whole")
			return true
		case len(prefix) == 1:
			a.err = fmt.Errorf("the policy reads input with a computed key at the top level")
			return true
		}
		a.paths[prefix.String()] = prefix
	} else {
		a.rules(prefix)
	}
	for _, t := range r[len(prefix):] {
		vis.Walk(t)
	}
	return true
}

func (a *analysis) rules(prefix ast.Ref) {
	for _, rs := range [][]*ast.Rule{a.c.GetRules(prefix), a.c.GetRulesWithPrefix(prefix)} {
		for _, r := range rs {
			if !a.seen[r] {
				a.seen[r] = true
				a.queue = append(a.queue, r)
			}
		}
	}
}

func (a *analysis) builtin(op ast.Value) {
	ref, ok := op.(ast.Ref)
	if !ok {
		return
	}
	name := ref.String()
	if callsFacts(name) {
		a.paths[factsPath.String()] = factsPath
		return
	}
	if strings.HasPrefix(name, "data.") {
		a.rules(ref.ConstantPrefix()) // a function in the policy
		return
	}
	b := ast.BuiltinMap[name]
	if b != nil && (b.Nondeterministic || forbidden[name]) {
		a.err = fmt.Errorf("the policy calls %s", name)
	}
}
