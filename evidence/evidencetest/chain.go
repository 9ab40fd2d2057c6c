package evidencetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testVerifyIntact checks that Verify passes untouched chains, checking
// every record.
func testVerifyIntact(t *testing.T, f Factory) {
	b, fx := loaded(t, f, 300)
	verifyFixture(t, b, fx)
}

// testVerifyIntactWorkloads is testVerifyIntact over records with
// workloads: the columns and rollup keys they give must agree with the
// records as Verify recomputes them.
func testVerifyIntactWorkloads(t *testing.T, f Factory) {
	b, fx := loadedWorkloads(t, f, 300)
	verifyFixture(t, b, fx)
}

func verifyFixture(t *testing.T, b Backend, fx *Fixture) {
	counts := map[string]int64{}
	for _, r := range fx.Records {
		counts[r.Replica]++
	}
	for _, rep := range verifyIntact(t, b.Store, counts) {
		if rep.Head != fx.Heads[rep.Replica] || rep.Start != (evidence.Link{}) {
			t.Errorf("chain %s: from %+v to %+v, want from the start to %+v", rep.Replica, rep.Start, rep.Head, fx.Heads[rep.Replica])
		}
	}
	reps, err := b.Store.Replicas(context.Background())
	if err != nil || !slices.Equal(reps, Replicas) {
		t.Errorf("Replicas = %v, %v; want %v", reps, err, Replicas)
	}
}

// tamperChain is the chain the tamper cases edit: ten records of one
// replica, beside an intact chain of another.
func tamperChain(t *testing.T, f Factory) (Backend, []*evidence.Record) {
	b := f(t)
	rng := rand.New(rand.NewPCG(11, 11))
	var chain, other []*evidence.Record
	for i := range 10 {
		chain = append(chain, varied(rng, randomID(rng), "replica-a", Base.Add(time.Duration(i)*time.Minute), i))
		other = append(other, varied(rng, randomID(rng), "replica-b", Base.Add(time.Duration(i)*time.Minute), i))
	}
	Link(evidence.Link{}, chain...)
	Link(evidence.Link{}, other...)
	write(t, b.Store, chain[:6], other, chain[6:])
	return b, chain
}

// editBody replaces the first old in the stored bytes of the record id by
// new.
func editBody(ctx context.Context, tm Tamperer, id, old, new string, rehash bool) error {
	body, err := tm.Body(ctx, id)
	if err != nil {
		return err
	}
	edited := strings.Replace(string(body), old, new, 1)
	if edited == string(body) {
		return fmt.Errorf("record %s: %q not in its stored bytes %.200s", id, old, body)
	}
	return tm.SetBody(ctx, id, []byte(edited), rehash)
}

// testTamper edits, deletes, reorders and forges rows behind the store's
// back, each on a fresh backend, and checks that Verify names the first
// broken link.
func testTamper(t *testing.T, f Factory) {
	other := func(v evidence.Verdict) evidence.Verdict {
		if v == evidence.Plaintext {
			return evidence.MTLS
		}
		return evidence.Plaintext
	}
	cases := []struct {
		name   string
		tamper func(ctx context.Context, tm Tamperer, chain []*evidence.Record) error
		kinds  []string
		seq    uint64 // of the first broken link
		id     int    // index in chain of the record named, -1 for none
		// atHead: a transparency log may report the break at the chain's
		// end instead: records moved with their own hashes still hash
		// right, and only the log's root, which covers the order, differs.
		atHead bool
	}{
		{"edited content", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.SetVerdict(ctx, c[4].ID, other(c[4].Verdict))
		}, []string{evidence.BreakEdited}, 5, 4, false},
		{"edited index column", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.SetVerdictColumn(ctx, c[4].ID, other(c[4].Verdict))
		}, []string{evidence.BreakEdited}, 5, 4, false},
		{"deleted in the middle", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.Delete(ctx, c[4].ID)
		}, []string{evidence.BreakDeleted}, 6, 5, false},
		{"deleted first", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.Delete(ctx, c[0].ID)
		}, []string{evidence.BreakDeleted}, 2, 1, false},
		{"deleted last", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.Delete(ctx, c[9].ID)
		}, []string{evidence.BreakTruncated}, 10, -1, false},
		{"swapped", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.SwapContent(ctx, c[3].ID, c[6].ID)
		}, []string{evidence.BreakReordered, evidence.BreakEdited}, 4, 6, true},
		{"swapped neighbours", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return tm.SwapContent(ctx, c[7].ID, c[8].ID)
		}, []string{evidence.BreakReordered, evidence.BreakEdited}, 8, 8, true},
		// What encoding/json would read one way and a stricter reader
		// another: a second member of another case, a duplicate, an
		// unknown member. Each with the hash recomputed too, as an
		// attacker who knows the format would.
		{"case-variant member", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return editBody(ctx, tm, c[4].ID, `"verdict":`, `"Verdict":"mtls","verdict":`, false)
		}, []string{evidence.BreakEdited}, 5, 4, false},
		{"case-variant member, rehashed", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return editBody(ctx, tm, c[4].ID, `"verdict":`, `"Verdict":"mtls","verdict":`, true)
		}, []string{evidence.BreakEdited}, 5, 4, false},
		{"duplicate member, rehashed", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return editBody(ctx, tm, c[4].ID, `"decision":{"allowed":`, `"decision":{"allowed":true,"allowed":`, true)
		}, []string{evidence.BreakEdited}, 5, 4, false},
		{"unknown member, rehashed", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			return editBody(ctx, tm, c[4].ID, `"decision":{`, `"approved_by":"CISO","decision":{`, true)
		}, []string{evidence.BreakEdited}, 5, 4, false},
		{"forged after the head", func(ctx context.Context, tm Tamperer, c []*evidence.Record) error {
			forged := Full("01JQ000000000000000FORGED1", "replica-a", Base.Add(time.Hour))
			Link(evidence.Link{Seq: c[9].Chain.Seq, Hash: c[9].Chain.Hash}, forged)
			return tm.AppendForged(ctx, forged)
		}, []string{evidence.BreakForged}, 11, -1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			b, chain := tamperChain(t, f)
			if err := tc.tamper(ctx, b.Tamper, chain); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			reports, err := evidence.Verify(ctx, b.Store)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(reports) != 2 {
				t.Fatalf("Verify reported %d chains, want 2", len(reports))
			}
			for _, rep := range reports {
				if rep.Replica != "replica-a" {
					if rep.Broken != nil || rep.Checked != 10 {
						t.Errorf("untouched chain %s: checked %d, broken %+v", rep.Replica, rep.Checked, rep.Broken)
					}
					continue
				}
				br := rep.Broken
				if br == nil {
					t.Fatalf("chain %s: tampering went unnoticed (%d records checked)", rep.Replica, rep.Checked)
				}
				if tc.atHead && rep.Log != nil && br.Seq == 10 && br.ID == "" {
					continue
				}
				if !slices.Contains(tc.kinds, br.Kind) || br.Seq != tc.seq {
					t.Errorf("broken link %+v, want %v at seq %d", *br, tc.kinds, tc.seq)
				}
				if tc.id >= 0 && br.ID != chain[tc.id].ID {
					t.Errorf("broken link names record %q, want %q", br.ID, chain[tc.id].ID)
				}
			}
		})
	}
}

// testRollupTamper: a rollup group turned from plaintext to mtls (what
// every report reads) is found by Verify, which counts the records again.
func testRollupTamper(t *testing.T, f Factory) {
	ctx := context.Background()
	b, _ := loaded(t, f, 300)
	reports, err := evidence.Verify(ctx, b.Store)
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reports {
		if rep.Broken != nil {
			t.Fatalf("before the edit: %s broken: %+v", rep.Replica, *rep.Broken)
		}
	}
	if err := b.Tamper.FlipRollupVerdict(ctx, evidence.Plaintext, evidence.MTLS); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	// As meshproof verify would see it: opened afresh (a store may keep
	// the rollup groups' names in memory).
	reports, err = evidence.Verify(ctx, b.Reopen(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reports {
		if rep.Replica == evidence.RollupsReplica {
			if rep.Broken == nil || !strings.Contains(rep.Broken.Detail, "plaintext") {
				t.Fatalf("rollups report %+v: want the plaintext group named", rep)
			}
			return
		}
	}
	t.Fatalf("a rollup edited from plaintext to mtls went unnoticed: %+v", reports)
}
