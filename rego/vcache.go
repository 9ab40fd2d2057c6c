package rego

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// virtualCache is a topdown.VirtualCache (where the evaluator memoises rule
// values within one query) that reuses its memory from query to query. OPA's
// own builds a trie of hash maps per query: a good fit for policies that
// evaluate hundreds of rules, but a dozen allocations for a policy that
// evaluates three. Here a frame is a short list searched linearly; a frame
// that grows past flatLimit entries hands everything over to OPA's cache
// for the rest of the query, so large policies keep OPA's behaviour.
type virtualCache struct {
	frames  []frame
	entries []vcEntry
	terms   []*ast.Term // arena: the refs of entries
	big     topdown.VirtualCache
}

type frame struct{ entry, term int }

type vcEntry struct {
	ref       ast.Ref // a slice of terms
	value     *ast.Term
	undefined bool
}

const flatLimit = 32

var vcPool = sync.Pool{New: func() any {
	c := &virtualCache{entries: make([]vcEntry, 0, flatLimit), terms: make([]*ast.Term, 0, 4*flatLimit)}
	c.Push()
	return c
}}

func getVirtualCache() *virtualCache { return vcPool.Get().(*virtualCache) }

// release empties the cache (dropping every reference into the query's
// terms) and returns it to the pool.
func (c *virtualCache) release() {
	clear(c.entries)
	clear(c.terms)
	c.entries, c.terms, c.frames, c.big = c.entries[:0], c.terms[:0], c.frames[:0], nil
	c.Push()
	vcPool.Put(c)
}

func (c *virtualCache) Push() {
	if c.big != nil {
		c.big.Push()
		return
	}
	c.frames = append(c.frames, frame{len(c.entries), len(c.terms)})
}

func (c *virtualCache) Pop() {
	if c.big != nil {
		c.big.Pop()
		return
	}
	top := c.frames[len(c.frames)-1]
	clear(c.entries[top.entry:])
	clear(c.terms[top.term:])
	c.entries, c.terms = c.entries[:top.entry], c.terms[:top.term]
	c.frames = c.frames[:len(c.frames)-1]
}

// Get mirrors OPA's trie: a ref once marked undefined stays undefined in its
// frame; otherwise the last value put wins.
func (c *virtualCache) Get(ref ast.Ref) (*ast.Term, bool) {
	if c.big != nil {
		return c.big.Get(ref)
	}
	var value *ast.Term
	for _, e := range c.topEntries() {
		if e.ref.Equal(ref) {
			if e.undefined {
				return nil, true
			}
			value = e.value
		}
	}
	return value, false
}

func (c *virtualCache) Put(ref ast.Ref, value *ast.Term) {
	if c.big != nil {
		c.big.Put(ref, value)
		return
	}
	if len(c.topEntries()) >= flatLimit {
		c.spill()
		c.big.Put(ref, value)
		return
	}
	start := len(c.terms)
	c.terms = append(c.terms, ref...)
	c.entries = append(c.entries, vcEntry{ref: c.terms[start:len(c.terms):len(c.terms)], value: value, undefined: value == nil})
}

func (c *virtualCache) Keys() []ast.Ref {
	if c.big != nil {
		return c.big.Keys()
	}
	var keys []ast.Ref
	for _, e := range c.topEntries() {
		if e.value == nil {
			continue
		}
		dup := false
		for _, k := range keys {
			if k.Equal(e.ref) {
				dup = true
				break
			}
		}
		if !dup {
			keys = append(keys, e.ref.Copy())
		}
	}
	return keys
}

func (c *virtualCache) topEntries() []vcEntry {
	return c.entries[c.frames[len(c.frames)-1].entry:]
}

// spill replays every frame into OPA's cache, which takes over.
func (c *virtualCache) spill() {
	big := topdown.NewVirtualCache()
	for i, f := range c.frames {
		if i > 0 {
			big.Push()
		}
		end := len(c.entries)
		if i+1 < len(c.frames) {
			end = c.frames[i+1].entry
		}
		for _, e := range c.entries[f.entry:end] {
			big.Put(e.ref.Copy(), e.value)
		}
	}
	c.big = big
}
