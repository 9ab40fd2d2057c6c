package evidencetest

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testAmendments writes records of allowed requests and amendments saying
// they were not let through: one in the batch after its record, one in the
// same batch, over a closed hour, and one record left as it was. The
// amended records are stored unchanged; Get finds each amendment by its
// id; the rollups count each request once, with its effective outcome; the
// chain verifies.
func testAmendments(t *testing.T, f Factory) {
	ctx := context.Background()
	b := f(t)
	const replica = "replica-amend"
	orig := func(id string, at time.Time) *evidence.Record {
		r := Full(id, replica, at)
		r.Amends, r.Truncated = nil, false
		r.Decision = evidence.Decision{Allowed: true, DecisionID: "dec-" + id, PolicyRevision: "rev-42"}
		return r
	}
	sent := evidence.Decision{Error: "the Check ended before this record was committed"}
	at := Base.Add(36 * time.Hour)
	a, kept, c := orig("01JQ00000000000000000AMND1", at), orig("01JQ00000000000000000AMND2", at.Add(time.Second)),
		orig("01JQ00000000000000000AMND3", at.Add(2*time.Hour))
	head := Link(evidence.Link{}, a, kept)
	write(t, b.Store, []*evidence.Record{a, kept})
	// a's amendment comes in the next batch, with c (two hours later: the
	// batch closes a's hour) and c's amendment.
	amendA := evidence.Amendment(a, sent, "")
	link := Link(head, amendA, c)
	amendC := evidence.Amendment(c, sent, "")
	Link(link, amendC)
	write(t, b.Store, []*evidence.Record{amendA, c, amendC})
	recs := []*evidence.Record{a, kept, amendA, c, amendC}

	for _, r := range []*evidence.Record{a, c} {
		got, err := b.Store.Get(ctx, r.ID)
		if err != nil {
			t.Fatalf("Get(%s): %v", r.ID, err)
		}
		sameRecords(t, "Get of an amended record", []*evidence.Record{got}, []*evidence.Record{r})
		am, err := b.Store.Get(ctx, evidence.AmendmentID(r.ID))
		if err != nil {
			t.Fatalf("Get(amendment of %s): %v", r.ID, err)
		}
		if eff := evidence.EffectiveOf(got, am); eff.Allowed || eff.AmendedBy != am.ID || eff.Error != sent.Error {
			t.Errorf("effective outcome of %s: %+v, want denied by its amendment", r.ID, eff)
		}
	}
	found, err := b.Store.Amendments(ctx, []string{a.ID, kept.ID, c.ID, amendA.ID, "01JQ00000000000000000NONE0"}, at, c.Time)
	if err != nil {
		t.Fatalf("Amendments: %v", err)
	}
	if len(found) != 2 || found[a.ID] == nil || found[a.ID].ID != amendA.ID || found[c.ID] == nil || found[c.ID].ID != amendC.ID {
		t.Errorf("Amendments: %v, want those of %s and %s", found, a.ID, c.ID)
	}
	if found, err := b.Store.Amendments(ctx, nil, time.Time{}, time.Time{}); err != nil || len(found) != 0 {
		t.Errorf("Amendments of nothing: %v, %v", found, err)
	}
	got, err := b.Store.Get(ctx, kept.ID)
	if err != nil {
		t.Fatal(err)
	}
	if eff := evidence.EffectiveOf(got, nil); !eff.Allowed || eff.AmendedBy != "" {
		t.Errorf("effective outcome of an unamended record: %+v", eff)
	}

	for _, tc := range []struct {
		q               evidence.AggregateQuery
		allowed, denied int64
	}{
		{evidence.AggregateQuery{Since: Base, Until: Base.Add(10 * 24 * time.Hour)}, 1, 2},
		{evidence.AggregateQuery{Since: at, Until: at.Add(time.Minute)}, 1, 1},
	} {
		q := tc.q
		want, ids := expectedGroups(recs, q)
		n := map[bool]int64{}
		for _, g := range want {
			n[g.Allowed] += g.Count
		}
		if n[true] != tc.allowed || n[false] != tc.denied {
			t.Fatalf("oracle: %+v, want %d allowed and %d denied", want, tc.allowed, tc.denied)
		}
		aggregated, err := b.Store.Aggregate(ctx, q)
		if err != nil {
			t.Fatalf("Aggregate: %v", err)
		}
		sameGroups(t, aggregated, want, ids)
	}
	st, err := b.Store.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if want := map[string]int64{"allowed": 1, "denied": 2}; !maps.Equal(nonzero(st.ByDecision), want) || st.Records != 5 {
		t.Errorf("Stats: %d records, by decision %v; want 5 records, %v", st.Records, st.ByDecision, want)
	}
	verifyIntact(t, b.Store, map[string]int64{replica: 5})
}
