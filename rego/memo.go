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

// memo caches decisions by the values at the policy's input paths. It holds
// at most max entries and maxBytes bytes (keys and values charged by
// termSize); when either would be passed it starts over.
type memo struct {
	paths    []ast.Ref // each without the leading input term
	max      int
	maxBytes int

	mu      sync.RWMutex
	entries map[int][]memoEntry
	n       int
	bytes   int

	hits, misses atomic.Int64
	off          atomic.Bool // switched off: the keys did not repeat
}

type memoEntry struct {
	key   *ast.Array
	value ast.Value // nil: undefined
}

// maxMemoKey keeps requests whose relevant values are large (bodies, a whole
// headers object) out; maxMemoValue does the same for large decisions.
// Both are measured by termSize, as the cache's byte budget is.
const (
	maxMemoKey   = 4 << 10
	maxMemoValue = 64 << 10
	// memoEntryBytes is what an entry costs beyond its key and value: the
	// entry, its slot in the hash map's slice, the key's array.
	memoEntryBytes = 96
)

// Give up on a policy whose keys do not repeat: after memoProbe lookups
// with fewer than one hit in memoMinHitRate, memoising only costs.
const (
	memoProbe      = 1000
	memoMinHitRate = 20
)

// undefinedInput marks a path that is not in the input.
var undefinedInput = ast.NewTerm(ast.Var("$undefined"))

func newMemo(paths []ast.Ref, max, maxBytes int) *memo {
	return &memo{paths: paths, max: max, maxBytes: maxBytes, entries: map[int][]memoEntry{}}
}

// key extracts the values the policy reads from a built input document,
// and the meshproof.* built-ins from facts (see WithFacts), as the path
// input.meshproof. ok is false when the key is too large to be worth
// keeping.
func (m *memo) key(input, facts *ast.Term) (*ast.Array, memoKeyInfo, bool) {
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

// memoKeyInfo is a key's hash and the bytes it holds.
type memoKeyInfo struct{ hash, size int }

// keyOf makes the key of the values at the memo's paths, in order; nil
// stands for a path that is not in the input. ok is false when the values
// hold more than maxMemoKey bytes: a composite value (input.headers for a
// policy that reads headers[name]) is charged everything in it.
func keyOf(terms []*ast.Term) (*ast.Array, memoKeyInfo, bool) {
	size := 0
	for i, t := range terms {
		if t == nil {
			terms[i] = undefinedInput
			continue
		}
		n, ok := termSize(t, maxMemoKey-size)
		if !ok {
			return nil, memoKeyInfo{}, false
		}
		size += n
	}
	k := ast.NewArray(terms...)
	return k, memoKeyInfo{hash: k.Hash(), size: size}, true
}

// Estimated sizes of OPA's values in memory (amd64): a term (its value's
// interface and location), a string's header, an array or set element, an
// object's key-value element and its hash index.
const (
	sizeTerm    = 32
	sizeString  = 16
	sizeElem    = 16
	sizeObjElem = 64
	sizeComplex = 64 // an array, object or set itself
)

// termSize estimates the bytes t holds: every node and every string in it.
// It stops as soon as the count passes limit, and then says ok false, so
// that a huge value costs no more than limit bytes of walking.
func termSize(t *ast.Term, limit int) (size int, ok bool) {
	if s, isString := t.Value.(ast.String); isString {
		// most keys: no sizer, which composite values make escape
		size = sizeTerm + sizeString + len(s)
		return size, size <= limit
	}
	z := sizer{limit: limit}
	ok = z.walk(t)
	return z.size, ok
}

type sizer struct{ size, limit int }

// walk adds t's size; false when the total passed the limit.
func (z *sizer) walk(t *ast.Term) bool {
	z.size += sizeTerm
	switch v := t.Value.(type) {
	case ast.String:
		z.size += sizeString + len(v)
	case ast.Number:
		z.size += sizeString + len(v)
	case ast.Var:
		z.size += sizeString + len(v)
	case *ast.Array:
		if z.add(sizeComplex + sizeElem*v.Len()) {
			return !v.Until(func(e *ast.Term) bool { return !z.walk(e) })
		}
	case ast.Object:
		if z.add(sizeComplex + sizeObjElem*v.Len()) {
			return !v.Until(func(k, e *ast.Term) bool { return !z.walk(k) || !z.walk(e) })
		}
	case ast.Set:
		if z.add(sizeComplex + sizeObjElem*v.Len()) {
			return !v.Until(func(e *ast.Term) bool { return !z.walk(e) })
		}
	case ast.Ref:
		return z.all(v)
	case ast.Call:
		return z.all(v)
	default: // booleans, null; comprehensions are never a decision's value
		z.size += sizeString
	}
	return z.size <= z.limit
}

// add charges n bytes; false when the total passed the limit.
func (z *sizer) add(n int) bool {
	z.size += n
	return z.size <= z.limit
}

func (z *sizer) all(ts []*ast.Term) bool {
	if !z.add(sizeComplex + sizeElem*len(ts)) {
		return false
	}
	for _, e := range ts {
		if !z.walk(e) {
			return false
		}
	}
	return true
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

// put remembers v for the key, unless v is larger than maxMemoValue.
func (m *memo) put(k *ast.Array, ki memoKeyInfo, v ast.Value) {
	size := ki.size + memoEntryBytes
	if v != nil {
		n, ok := termSize(ast.NewTerm(v), maxMemoValue)
		if !ok {
			return
		}
		size += n
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n >= m.max || m.bytes+size > m.maxBytes {
		clear(m.entries)
		m.n, m.bytes = 0, 0
	}
	if size > m.maxBytes {
		return
	}
	m.entries[ki.hash] = append(m.entries[ki.hash], memoEntry{key: k, value: v})
	m.n++
	m.bytes += size
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
		m.n, m.bytes = 0, 0
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
