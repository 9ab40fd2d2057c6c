package evidencetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testIdempotent appends batches a second time, as a writer does when a
// commit was in doubt: nothing is stored twice, no rollup counts twice.
func testIdempotent(t *testing.T, f Factory) {
	ctx := context.Background()
	b, fx := loaded(t, f, 300)
	q := evidence.AggregateQuery{Since: Base, Until: Base.Add(10 * 24 * time.Hour)}
	before, err := b.Store.Aggregate(ctx, q)
	if err != nil {
		t.Fatalf("Aggregate: %v", err)
	}
	write(t, b.Store, fx.Batches...)                                // every batch again
	write(t, b.Store, fx.Batches[len(fx.Batches)-1])                // the last one a third time
	write(t, b.Store, fx.Batches[0], fx.Batches[len(fx.Batches)/2]) // and older ones
	sameRecords(t, "after appending twice", everything(t, b.Store, evidence.Filter{}, evidence.MaxLimit),
		NewestFirst(fx.Records, evidence.Filter{}))
	after, err := b.Store.Aggregate(ctx, q)
	if err != nil {
		t.Fatalf("Aggregate: %v", err)
	}
	if !reflect.DeepEqual(after, before) {
		t.Errorf("rollups changed by appending stored batches again:\n got %+v\nwant %+v", after, before)
	}
	for replica, want := range fx.Heads {
		if got, err := b.Store.Head(ctx, replica); err != nil || got != want {
			t.Errorf("Head(%s) = %+v, %v; want %+v", replica, got, err, want)
		}
	}
}

// testChainConflict appends batches that do not follow the head: each
// fails with ErrChainConflict and changes nothing; the right one still
// goes in.
func testChainConflict(t *testing.T, f Factory) {
	ctx := context.Background()
	b, fx := loaded(t, f, 60)
	const replica = "replica-a"
	head := fx.Heads[replica]
	rng := rand.New(rand.NewPCG(3, 3))
	next := func(n int) []*evidence.Record {
		out := make([]*evidence.Record, n)
		for i := range out {
			out[i] = varied(rng, randomID(rng), replica, Base.Add(6*24*time.Hour+time.Duration(i)*time.Second), i)
		}
		return out
	}
	stored := ofReplica(fx.Records, replica)
	rewritten := next(3) // other records in place of the last three stored
	Link(evidence.Link{Seq: stored[len(stored)-4].Chain.Seq, Hash: stored[len(stored)-4].Chain.Hash}, rewritten...)
	gap, fresh := next(2), next(2)
	Link(evidence.Link{Seq: head.Seq + 1, Hash: strings.Repeat("e", 64)}, gap...)
	freshGap := next(1)
	freshGap[0].Replica = "replica-new"
	Link(evidence.Link{Seq: 1, Hash: strings.Repeat("a", 64)}, freshGap...)
	for name, batch := range map[string][]*evidence.Record{
		"a gap after the head":          gap,
		"stored seqs, other records":    rewritten,
		"a new chain not starting at 1": freshGap,
	} {
		if err := b.Store.Append(ctx, batch); !errors.Is(err, evidence.ErrChainConflict) {
			t.Errorf("%s: Append = %v, want an error wrapping ErrChainConflict", name, err)
		}
	}
	sameRecords(t, "after the conflicts", everything(t, b.Store, evidence.Filter{}, evidence.MaxLimit), NewestFirst(fx.Records, evidence.Filter{}))
	if got, _ := b.Store.Head(ctx, replica); got != head {
		t.Fatalf("Head moved to %+v after conflicting batches, want %+v", got, head)
	}
	newHead := Link(head, fresh...)
	write(t, b.Store, fresh)
	if got, err := b.Store.Head(ctx, replica); err != nil || got != newHead {
		t.Errorf("Head = %+v, %v after a good batch; want %+v", got, err, newHead)
	}
	verifyIntact(t, b.Store, map[string]int64{"replica-a": int64(len(stored) + 2),
		"replica-b": int64(len(ofReplica(fx.Records, "replica-b"))), "replica-c": int64(len(ofReplica(fx.Records, "replica-c")))})
}

// testHeadAndReopen checks heads after writes and after a restart, and
// that opening an already migrated store again is fine.
func testHeadAndReopen(t *testing.T, f Factory) {
	ctx := context.Background()
	b, fx := loaded(t, f, 120)
	s := b.Store
	for range 2 {
		s = b.Reopen(t)
		for replica, want := range fx.Heads {
			if got, err := s.Head(ctx, replica); err != nil || got != want {
				t.Errorf("after Reopen: Head(%s) = %+v, %v; want %+v", replica, got, err, want)
			}
		}
		sameRecords(t, "after Reopen", everything(t, s, evidence.Filter{}, evidence.MaxLimit), NewestFirst(fx.Records, evidence.Filter{}))
	}
	more := Full("01JQ00000000000000000MORE1", "replica-b", Base.Add(7*24*time.Hour))
	want := Link(fx.Heads["replica-b"], more)
	write(t, s, []*evidence.Record{more})
	if got, err := s.Head(ctx, "replica-b"); err != nil || got != want {
		t.Errorf("Head after writing on the reopened store = %+v, %v; want %+v", got, err, want)
	}
	counts := map[string]int64{}
	for _, r := range append(fx.Records, more) {
		counts[r.Replica]++
	}
	verifyIntact(t, s, counts)
}

// verifyIntact runs evidence.Verify and fails unless every chain is intact
// with the given number of records checked.
func verifyIntact(t testing.TB, s evidence.Store, checked map[string]int64) []evidence.ChainReport {
	t.Helper()
	reports, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	got := map[string]int64{}
	for _, r := range reports {
		if r.Broken != nil {
			t.Errorf("Verify: chain %s broken: %+v", r.Replica, *r.Broken)
		}
		got[r.Replica] = r.Checked
	}
	if fmt.Sprint(got) != fmt.Sprint(checked) {
		t.Errorf("Verify checked %v, want %v", got, checked)
	}
	return reports
}
