package storekit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/meshproof/meshproof/evidence"
)

// What both stores' journals (evidence.Journaler) share: the records
// journaled and not yet moved into the records (applied), the goroutine
// that applies them, the form a journal keeps records in, and how a
// recovery chains what it finds after the stored head.

// How journaled records are applied: at most ApplyEvery after a Journal,
// at once when ApplyMax wait. With PendingMax waiting (the store does not
// take them: a disk gone read-only), Journal takes no more until an apply
// brings them down: the writer's queue fills and its overflow policy
// decides, rather than memory growing without a bound.
const (
	ApplyEvery = 50 * time.Millisecond
	ApplyMax   = 10_000
	PendingMax = 4 * ApplyMax
)

// Journaled is what a store journaled and has not applied yet, in journal
// order, and the goroutine (Start) that applies it.
type Journaled struct {
	ApplyMu sync.Mutex // held by an apply: one at a time

	mu   sync.Mutex
	recs []*evidence.Record
	n    atomic.Int64

	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	started  atomic.Bool
	stopOnce sync.Once
}

// NewJournaled returns an empty Journaled; Start starts its applier.
func NewJournaled() *Journaled {
	return &Journaled{kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// Add queues batch after what waits, and returns how many records wait.
func (j *Journaled) Add(batch []*evidence.Record) int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recs = append(j.recs, batch...)
	j.n.Store(int64(len(j.recs)))
	return int64(len(j.recs))
}

// Len is how many records wait.
func (j *Journaled) Len() int64 { return j.n.Load() }

// Get is a copy of the waiting record id, nil when none waits.
func (j *Journaled) Get(id string) *evidence.Record {
	if j.n.Load() == 0 {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range j.recs {
		if r.ID == id {
			c := *r
			return &c
		}
	}
	return nil
}

// Waits reports whether a record of replica waits.
func (j *Journaled) Waits(replica string) bool {
	if j.n.Load() == 0 {
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range j.recs {
		if r.Replica == replica {
			return true
		}
	}
	return false
}

// Take is what waits now, for an apply; Applied says how it went.
func (j *Journaled) Take() []*evidence.Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.recs
}

// Applied drops taken (what Take returned) from what waits, but for the
// records of the replicas in failed, which wait on, before what was added
// since.
func (j *Journaled) Applied(taken []*evidence.Record, failed map[string]bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var keep []*evidence.Record
	for _, r := range taken {
		if failed[r.Replica] {
			keep = append(keep, r)
		}
	}
	j.recs = append(keep, j.recs[len(taken):]...)
	if len(j.recs) == 0 {
		j.recs = nil
	}
	j.n.Store(int64(len(j.recs)))
}

// Admit is called before a Journal commits: with PendingMax records
// waiting it applies first, and refuses the batch (nothing committed) when
// they still wait.
func (j *Journaled) Admit(ctx context.Context, apply func(context.Context) error) error {
	if j.Len() < PendingMax {
		return nil
	}
	err := apply(ctx)
	if n := j.Len(); n >= PendingMax {
		return fmt.Errorf("%d journaled records wait to be applied, which fails (%v): no more are taken until they are", n, err)
	}
	return nil
}

// Committed is called once a Journal committed its batch, waiting being
// how many records wait now: at ApplyMax it applies them at once, else it
// wakes the applier. An apply that fails is not the Journal's error (the
// batch is committed: a writer told otherwise would journal it again); the
// applier tries again.
func (j *Journaled) Committed(ctx context.Context, waiting int64, apply func(context.Context) error) {
	if waiting >= ApplyMax && apply(ctx) == nil {
		return
	}
	j.Kick()
}

// Kick wakes the applier: it applies ApplyEvery later.
func (j *Journaled) Kick() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// Start runs the applier, which applies ApplyEvery after each Kick until
// Stop; an apply that fails is tried again ApplyEvery later (its records
// stay journaled meanwhile). Only the first Start starts it.
func (j *Journaled) Start(apply func(ctx context.Context) error) {
	if j.started.Swap(true) {
		return
	}
	go j.run(apply)
}

func (j *Journaled) run(apply func(ctx context.Context) error) {
	defer close(j.done)
	for {
		select {
		case <-j.stop:
			return
		case <-j.kick:
		}
		select {
		case <-j.stop:
			return
		case <-time.After(ApplyEvery):
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := apply(ctx); err != nil {
			j.Kick()
		}
		cancel()
	}
}

// Stop ends the applier and waits for it; it is safe to call more than
// once, and without Start. No Start starts it after a Stop.
func (j *Journaled) Stop() {
	j.stopOnce.Do(func() { close(j.stop) })
	if j.started.Swap(true) {
		<-j.done
	} else {
		close(j.done)
	}
}

// ApplyRun appends one replica's journaled records (in chain order) to w,
// the store's writer that does not settle, after head (the replica's head
// as stored: an apply that failed part way stored some already). Records
// the store refuses for their content are quarantined
// (evidence.AppendIsolating), each write bounded by timeout, and said to
// quarantined with the number and the refusal.
func ApplyRun(ctx context.Context, w evidence.Writer, head evidence.Link, recs []*evidence.Record, quarantined func(n int, why error), timeout time.Duration) error {
	for len(recs) > 0 && recs[0].Chain.Seq <= head.Seq {
		recs = recs[1:]
	}
	if len(recs) == 0 {
		return nil
	}
	err := w.Append(ctx, recs)
	if errors.Is(err, evidence.ErrPermanent) {
		var q int
		why := err
		if q, err = evidence.AppendIsolating(ctx, w, recs, timeout); q > 0 {
			quarantined(q, why)
		}
	}
	return err
}

// JournalHead is a journal's replica's last seq, journaled or stored, and
// the check that a batch follows it. The zero value is seq 0.
type JournalHead struct {
	mu   sync.Mutex
	last uint64
}

// Last is the last seq journaled or stored.
func (h *JournalHead) Last() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Advance says seq is journaled or stored; the head never goes back.
func (h *JournalHead) Advance(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = max(h.last, seq)
}

// Check checks a batch of replica from first to last: dup when it was
// journaled before (the writer tried it again: it is taken as it was), nil
// when it starts right after the head. Otherwise the head may have moved
// without the journal (another process wrote as the replica): stored
// gives the replica's head as stored, once what waits is applied, and the
// batch follows that when nothing of the replica still waits (waits);
// else it is a chain conflict (evidence.ErrChainConflict), which the
// writer answers by chaining the batch again after the head.
func (h *JournalHead) Check(ctx context.Context, replica string, first, last uint64,
	stored func(context.Context) (evidence.Link, error), waits func() bool) (dup bool, err error) {
	h.mu.Lock()
	dup, follows := last <= h.last, first == h.last+1
	h.mu.Unlock()
	if dup || follows {
		return dup, nil
	}
	head, err := stored(ctx)
	if err != nil {
		return false, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if first == head.Seq+1 && !waits() {
		h.last = head.Seq
		return false, nil
	}
	return false, fmt.Errorf("%w: replica %s: the batch starts at seq %d, the journal's head is seq %d (stored: %d)",
		evidence.ErrChainConflict, replica, first, h.last, head.Seq)
}

// ApplyTaken applies what waits (Take) replica by replica, each run in its
// order, through apply, and drops what it applied (Applied): a replica
// whose run fails keeps its records waiting, and the others go on. It
// returns the replicas that failed, how many replicas it took, and the
// first failure. The caller holds ApplyMu.
func (j *Journaled) ApplyTaken(apply func(replica string, run []*evidence.Record) error) (failed map[string]bool, replicas int, err error) {
	recs := j.Take()
	order, runs := Runs(recs)
	failed = map[string]bool{}
	for _, replica := range order {
		if e := apply(replica, runs[replica]); e != nil {
			failed[replica] = true
			err = cmp.Or(err, e)
		}
	}
	j.Applied(recs, failed)
	return failed, len(order), err
}

// Recover applies what a recovery read from replica's journal (recs, in
// any order, stored ones among them) after head, the replica's head as
// stored: through apply, in runs of at most ApplyMax. The records after a
// gap, which the chain cannot take, go to keep, which keeps them beside
// the store and says where (Unchained); that is said to quarantined, with
// 0: they are not counted, being in no chain.
func Recover(ctx context.Context, replica string, head evidence.Link, recs []*evidence.Record, quarantined func(n int, why error),
	keep func(missing uint64, after []*evidence.Record) (why error, err error), apply func(ctx context.Context, run []*evidence.Record) error) error {
	todo, after, err := Chain(replica, head, recs)
	if err != nil {
		return err
	}
	if len(after) > 0 {
		why, err := keep(head.Seq+uint64(len(todo))+1, after)
		if err != nil {
			return err
		}
		quarantined(0, why)
	}
	for len(todo) > 0 {
		n := min(len(todo), ApplyMax)
		if err := apply(ctx, todo[:n]); err != nil {
			return fmt.Errorf("applying the journal of replica %s: %w", replica, err)
		}
		todo = todo[n:]
	}
	return nil
}

// Runs splits recs by replica, each in its order, with the replicas in the
// order of their first record.
func Runs(recs []*evidence.Record) (order []string, runs map[string][]*evidence.Record) {
	runs = map[string][]*evidence.Record{}
	for _, r := range recs {
		if runs[r.Replica] == nil {
			order = append(order, r.Replica)
		}
		runs[r.Replica] = append(runs[r.Replica], r)
	}
	return order, runs
}

// AppendLines appends batch to dst as a journal keeps it: each record's
// JSON (evidence.RecordJSON) on a line. A record that does not encode is
// refused as permanent (evidence.ErrPermanent): no retry would change it.
func AppendLines(dst []byte, batch []*evidence.Record) ([]byte, error) {
	for _, r := range batch {
		b, err := evidence.RecordJSON(r)
		if err != nil {
			return dst, evidence.Permanent(fmt.Errorf("encoding record %s: %w", r.ID, err))
		}
		dst = append(append(dst, b...), '\n')
	}
	return dst, nil
}

// Lines appends batch's lines to dst: lines as given (Journal's, made
// when the writer linked the batch), or made by AppendLines when nil.
func Lines(dst []byte, batch []*evidence.Record, lines []byte) ([]byte, error) {
	switch {
	case lines != nil && dst == nil:
		return lines, nil
	case lines != nil:
		return append(dst, lines...), nil
	}
	return AppendLines(dst, batch)
}

// ReadLines reads the records AppendLines wrote.
func ReadLines(payload []byte) ([]*evidence.Record, error) {
	var out []*evidence.Record
	for line := range bytes.Lines(payload) {
		r := new(evidence.Record)
		if err := jsonv2.Unmarshal(bytes.TrimSuffix(line, []byte("\n")), r, jsonv2.RejectUnknownMembers(true)); err != nil {
			return nil, fmt.Errorf("a journaled record does not decode: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Chain orders replica's journaled records (a recovery's, in any order)
// and splits them after the replica's stored head: todo follows head
// without a gap; after is what follows a gap (the journal lost records),
// which cannot be chained there. Records at or before head (applied, or
// journaled twice) are left out.
func Chain(replica string, head evidence.Link, recs []*evidence.Record) (todo, after []*evidence.Record, err error) {
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b *evidence.Record) int {
		return cmp.Compare(a.Chain.Seq, b.Chain.Seq)
	})
	next := head.Seq + 1
	for _, r := range recs {
		switch {
		case r.Replica != replica:
			return nil, nil, fmt.Errorf("the journal of replica %s holds a record of %q", replica, r.Replica)
		case r.Chain.Seq < next:
			// applied, or journaled twice
		case r.Chain.Seq == next && len(after) == 0:
			todo = append(todo, r)
			next++
		default:
			after = append(after, r)
		}
	}
	return todo, after, nil
}

// Unchained is what a recovery says of the records Chain put after a gap,
// and where it kept them.
func Unchained(replica string, after []*evidence.Record, missing uint64, where string) error {
	return fmt.Errorf("the journal of replica %s misses seq %d (lost by a power loss in sync durability?): "+
		"the %d records after it, which cannot be chained, are kept in %s", replica, missing, len(after), where)
}
