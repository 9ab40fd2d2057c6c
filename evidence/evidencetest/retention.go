package evidencetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testRetention removes records older than a cut at midnight UTC (where a
// backend that drops daily partitions can) in small batches, and rollups
// older than an earlier cut: the rest stays, each chain's checkpoint is
// its last removed link, and every chain still verifies.
func testRetention(t *testing.T, f Factory) {
	ctx := context.Background()
	b, fx := loaded(t, f, 600)
	day := 24 * time.Hour
	cut, rollupCut := Base.Add(2*day), Base.Add(day)
	var kept, removed []*evidence.Record
	lastRemoved := map[string]evidence.Link{}
	for _, r := range fx.Records {
		if r.Time.Before(cut) {
			removed = append(removed, r)
			lastRemoved[r.Replica] = evidence.Link{Seq: r.Chain.Seq, Hash: r.Chain.Hash}
		} else {
			kept = append(kept, r)
		}
	}
	aggAll := evidence.AggregateQuery{Since: Base.Add(-day), Until: Base.Add(10 * day)}
	groupsBefore, _ := expectedGroups(fx.Records, aggAll)

	n, err := b.Store.DeleteBefore(ctx, cut, rollupCut, 7)
	if err != nil {
		t.Fatalf("DeleteBefore: %v", err)
	}
	if n != int64(len(removed)) {
		t.Errorf("DeleteBefore removed %d records, want %d", n, len(removed))
	}
	sameRecords(t, "kept", everything(t, b.Store, evidence.Filter{}, evidence.MaxLimit), NewestFirst(kept, evidence.Filter{}))
	if _, err := b.Store.Get(ctx, removed[len(removed)-1].ID); !errors.Is(err, evidence.ErrNotFound) {
		t.Errorf("Get(a removed record) = %v, want ErrNotFound", err)
	}
	counts := map[string]int64{}
	for _, r := range kept {
		counts[r.Replica]++
	}
	for _, rep := range verifyIntact(t, b.Store, counts) {
		if rep.Start != lastRemoved[rep.Replica] {
			t.Errorf("chain %s starts at %+v, want the last removed link %+v", rep.Replica, rep.Start, lastRemoved[rep.Replica])
		}
		if got, err := b.Store.Checkpoint(ctx, rep.Replica); err != nil || got != lastRemoved[rep.Replica] {
			t.Errorf("Checkpoint(%s) = %+v, %v; want %+v", rep.Replica, got, err, lastRemoved[rep.Replica])
		}
		if got, _ := b.Store.Head(ctx, rep.Replica); got != fx.Heads[rep.Replica] {
			t.Errorf("retention moved the head of %s to %+v, want %+v", rep.Replica, got, fx.Heads[rep.Replica])
		}
	}

	// Rollups are kept from their own cut, records or not.
	want, ids := expectedGroups(fx.Records, evidence.AggregateQuery{Since: rollupCut, Until: aggAll.Until})
	got, err := b.Store.Aggregate(ctx, aggAll)
	if err != nil {
		t.Fatalf("Aggregate: %v", err)
	}
	if len(want) == len(groupsBefore) {
		t.Fatalf("fixture: the rollup cut removes no group")
	}
	sameGroups(t, got, want, ids)
	if got, err := b.Store.Aggregate(ctx, evidence.AggregateQuery{Since: Base, Until: rollupCut}); err != nil || len(got) != 0 {
		t.Errorf("Aggregate before the rollup cut: %d groups, %v; want none", len(got), err)
	}
	if st, err := b.Store.Stats(ctx, time.Time{}); err != nil || st.Records != int64(len(kept)) {
		t.Errorf("Stats after retention: %d records, %v; want %d", st.Records, err, len(kept))
	}

	if n, err := b.Store.DeleteBefore(ctx, cut, rollupCut, 7); err != nil || n != 0 {
		t.Errorf("DeleteBefore again: %d, %v; want 0, nil", n, err)
	}
	// A zero time leaves records alone.
	if n, err := b.Store.DeleteBefore(ctx, time.Time{}, cut, 100); err != nil || n != 0 {
		t.Errorf("DeleteBefore(zero, rollups only): %d, %v; want 0, nil", n, err)
	}
	if got := everything(t, b.Store, evidence.Filter{}, evidence.MaxLimit); len(got) != len(kept) {
		t.Errorf("%d records after a rollup-only retention, want %d", len(got), len(kept))
	}

	// The chains go on after retention, and can be emptied entirely.
	more := Full("01JQ0000000000000000RETAIN", "replica-a", Base.Add(6*day))
	head := Link(fx.Heads["replica-a"], more)
	write(t, b.Store, []*evidence.Record{more})
	counts["replica-a"]++
	verifyIntact(t, b.Store, counts)
	if _, err := b.Store.DeleteBefore(ctx, Base.Add(30*day), time.Time{}, 1000); err != nil {
		t.Fatalf("DeleteBefore(everything): %v", err)
	}
	verifyIntact(t, b.Store, map[string]int64{"replica-a": 0, "replica-b": 0, "replica-c": 0})
	if got, _ := b.Store.Checkpoint(ctx, "replica-a"); got != head {
		t.Errorf("Checkpoint after removing everything = %+v, want the head %+v", got, head)
	}
}
