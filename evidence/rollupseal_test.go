package evidence

import (
	"strings"
	"testing"
)

// TestSealDigest: the digest of an hour's buckets does not depend on the
// order a store reads them in, and changes with any field of any bucket.
func TestSealDigest(t *testing.T) {
	b := func(minute int64, source string, count int64) RollupBucket {
		return RollupBucket{RollupKey: RollupKey{Minute: minute, Replica: "r", Source: source, DestinationHost: "h",
			DestinationPrincipal: "p", Verdict: "mtls", Allowed: true}, Span: 1, Count: count, FirstNS: 1, LastNS: 2, Example: "e"}
	}
	hour := []RollupBucket{b(60, "a", 3), b(61, "a", 1), b(60, "b", 2)}
	d := SealDigest(append([]RollupBucket(nil), hour...))
	if got := SealDigest([]RollupBucket{hour[2], hour[1], hour[0]}); got != d {
		t.Error("the digest depends on the buckets' order")
	}
	for i, edit := range []func(*RollupBucket){
		func(b *RollupBucket) { b.Count++ },
		func(b *RollupBucket) { b.Verdict = "plaintext" },
		func(b *RollupBucket) { b.Allowed = false },
		func(b *RollupBucket) { b.Source = "a\" \"h" }, // quoting keeps fields apart
		func(b *RollupBucket) { b.FirstNS = 0 },
		func(b *RollupBucket) { b.Example = "f" },
		func(b *RollupBucket) { b.Minute = 62 },
	} {
		edited := append([]RollupBucket(nil), hour...)
		edit(&edited[0])
		if SealDigest(edited) == d {
			t.Errorf("edit %d left the digest as it was", i)
		}
	}
	if SealDigest(hour[:2]) == d || SealDigest(nil) == d {
		t.Error("a bucket removed left the digest as it was")
	}
}

// TestSealHeadLine: the seal head a checkpoint carries reads back, and
// malformed lines are refused.
func TestSealHeadLine(t *testing.T) {
	var head SealHead
	if head.Line() != "" {
		t.Errorf("an empty head has the line %q", head.Line())
	}
	s1, head := head.Seal(490000, nil)
	s2, head := head.Seal(490001, []RollupBucket{{Span: 1, Count: 1}})
	if head.First != 490000 || head.Through != 490002 || head.Chain != s2.Chain || s2.Prev != s1.Chain || s1.Prev != [32]byte{} {
		t.Fatalf("head %+v after seals %+v, %+v", head, s1, s2)
	}
	c := Checkpoint{Origin: "k/r", Size: 1, Extensions: []string{"meshproof-time 1", head.Line()}}
	parsed, err := ParseCheckpoint(c.Text())
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := parsed.Rollups()
	if err != nil || !ok || got != head {
		t.Fatalf("Rollups() = %+v, %v, %v; want %+v", got, ok, err, head)
	}
	for _, bad := range []string{
		"meshproof-rollups 1 2",
		"meshproof-rollups 2 2 " + strings.Repeat("00", 32),
		"meshproof-rollups x 2 " + strings.Repeat("00", 32),
		"meshproof-rollups 1 2 " + strings.Repeat("0", 63),
	} {
		if _, _, err := (Checkpoint{Extensions: []string{bad}}).Rollups(); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
