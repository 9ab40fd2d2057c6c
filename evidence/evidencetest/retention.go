package evidencetest

import (
	"context"
	"errors"
	"fmt"
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

// testRetentionAbsurdTimes is the attack of a record stamped 2300-01-01:
// stored wrapped, as a meshproof before time bounds stored it (UnixNano
// gave a time in 1715), it looked older than any cut, and retention took
// its whole chain with it, 201 records of 201, Verify still intact. Now
// Append refuses such a time, and retention keeps a record with a stored
// time before evidence.MinTime, or at or after the cut, together with
// every record after it on its chain.
func testRetentionAbsurdTimes(t *testing.T, f Factory) {
	ctx := context.Background()
	b := f(t)
	chain := func(replica string, n int, at func(i int) time.Time) []*evidence.Record {
		recs := make([]*evidence.Record, n)
		for i := range recs {
			recs[i] = Full(fmt.Sprintf("absurd-%s-%03d", replica, i+1), replica, at(i))
		}
		Link(evidence.Link{}, recs...)
		return recs
	}
	minutes := func(i int) time.Time { return Base.Add(time.Duration(i) * time.Minute) }
	// replica-a: 200 records a minute apart, then one stamped 2300.
	a := chain("replica-a", 200, minutes)
	write(t, b.Store, a[:100], a[100:])
	headA := evidence.Link{Seq: 200, Hash: a[199].Chain.Hash}
	future := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	late := Full("absurd-replica-a-201", "replica-a", future)
	Link(headA, late)
	if err := b.Store.Append(ctx, []*evidence.Record{late}); !errors.Is(err, evidence.ErrTimeRange) {
		t.Fatalf("Append(a record stamped %s) = %v, want ErrTimeRange", future, err)
	}
	if got, err := b.Store.Head(ctx, "replica-a"); err != nil || got != headA {
		t.Fatalf("Head after a refused Append = %+v, %v; want %+v", got, err, headA)
	}
	wrapped := int64(uint64(future.Unix()) * uint64(time.Second))
	if wrapped >= 0 {
		t.Fatalf("fixture: %s wraps to %d, want a negative time", future, wrapped)
	}
	if err := b.Tamper.AppendStoredAt(ctx, late, wrapped); err != nil {
		t.Fatalf("storing a record as an older meshproof did: %v", err)
	}
	// replica-b: 10 records, the 5th stamped 2200 (a time a record may
	// have, far ahead of the others).
	bs := chain("replica-b", 10, func(i int) time.Time {
		if i == 4 {
			return time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		return minutes(i)
	})
	write(t, b.Store, bs)
	verifyIntact(t, b.Store, map[string]int64{"replica-a": 201, "replica-b": 10})

	retain := func(cut time.Time, want int64, checked map[string]int64, starts map[string]evidence.Link) {
		t.Helper()
		n, err := b.Store.DeleteBefore(ctx, cut, time.Time{}, 7)
		if err != nil {
			t.Fatalf("DeleteBefore(%s): %v", cut, err)
		}
		if n != want {
			t.Errorf("DeleteBefore(%s) removed %d records, want %d", cut, n, want)
		}
		for _, rep := range verifyIntact(t, b.Store, checked) {
			if rep.Start != starts[rep.Replica] {
				t.Errorf("after DeleteBefore(%s): chain %s starts at %+v, want %+v", cut, rep.Replica, rep.Start, starts[rep.Replica])
			}
		}
	}
	at := func(r *evidence.Record) evidence.Link { return evidence.Link{Seq: r.Chain.Seq, Hash: r.Chain.Hash} }
	// Every record is newer than the cut: nothing goes (the attack
	// removed all of replica-a).
	retain(Base.Add(-time.Hour), 0,
		map[string]int64{"replica-a": 201, "replica-b": 10}, map[string]evidence.Link{})
	// A cut within the hour after 60 of replica-a's (retention cuts at the
	// start of that hour): those go; replica-b's first four go, the one
	// stamped 2200 and those after it stay.
	retain(Base.Add(time.Hour+30*time.Second), 60+4,
		map[string]int64{"replica-a": 141, "replica-b": 6},
		map[string]evidence.Link{"replica-a": at(a[59]), "replica-b": at(bs[3])})
	// A cut after every honest time: the wrapped record stays, with
	// nothing after it; replica-b does not move.
	retain(Base.Add(300*24*time.Hour), 140,
		map[string]int64{"replica-a": 1, "replica-b": 6},
		map[string]evidence.Link{"replica-a": headA, "replica-b": at(bs[3])})
	if got, err := b.Store.Get(ctx, late.ID); err != nil || !got.Time.Equal(future) {
		t.Errorf("Get(the record stamped 2300) = %v, %v; want it kept", got, err)
	}
}
