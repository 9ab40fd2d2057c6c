package rego

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestVirtualCacheMatchesOPA drives the pooled cache and OPA's own with the
// same random operations (enough to spill past flatLimit) and compares every
// answer.
func TestVirtualCacheMatchesOPA(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	refs := make([]ast.Ref, 60)
	for i := range refs {
		refs[i] = ast.MustParseRef(fmt.Sprintf("data.p%d.r%d", i%7, i))
		if i%5 == 0 {
			refs[i] = refs[i].Append(ast.IntNumberTerm(i))
		}
	}
	for round := range 200 {
		ours, theirs := getVirtualCache(), topdown.NewVirtualCache()
		depth := 0
		for op := range 300 {
			ref := refs[rng.IntN(len(refs))]
			switch n := rng.IntN(10); {
			case n == 0:
				ours.Push()
				theirs.Push()
				depth++
			case n == 1 && depth > 0:
				ours.Pop()
				theirs.Pop()
				depth--
			case n < 5:
				var v *ast.Term
				if rng.IntN(4) > 0 {
					v = ast.IntNumberTerm(rng.IntN(100))
				}
				ours.Put(ref, v)
				theirs.Put(ref, v)
			default:
				gv, gu := ours.Get(ref)
				wv, wu := theirs.Get(ref)
				if gu != wu || (gv == nil) != (wv == nil) || (gv != nil && !gv.Equal(wv)) {
					t.Fatalf("round %d op %d: Get(%v) = %v,%v; OPA: %v,%v", round, op, ref, gv, gu, wv, wu)
				}
			}
			if got, want := len(ours.Keys()), len(theirs.Keys()); got != want {
				t.Fatalf("round %d op %d: %d keys, OPA %d", round, op, got, want)
			}
		}
		ours.release()
	}
}

// TestVirtualCacheReleaseForgets checks that a pooled cache starts empty.
func TestVirtualCacheReleaseForgets(t *testing.T) {
	c := getVirtualCache()
	ref := ast.MustParseRef("data.x.y")
	c.Put(ref, ast.StringTerm("v"))
	c.release()
	c = getVirtualCache()
	defer c.release()
	if v, u := c.Get(ref); v != nil || u {
		t.Fatalf("released cache still holds %v (undefined %v)", v, u)
	}
}
