package recorder

import (
	"context"
	"errors"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Retry pacing while the store fails, and how often a failing store is
// logged (once per interval, not once per record).
const (
	retryMin    = 100 * time.Millisecond
	retryMax    = 5 * time.Second
	logInterval = 30 * time.Second
)

// writer is the recorder's single goroutine: it takes batches off the
// queue, chains them, and stores them, retrying a failed batch (the same
// records with the same links, so nothing is lost, doubled or reordered)
// until it is stored or Close gives up.
func (r *Recorder) writer() {
	defer close(r.done)
	batch := make([]*pending, 0, r.cfg.BatchSize)
	var carry []*pending
	for {
		// Amendments first: they follow their records, which are written.
		batch = append(append(batch[:0], carry...), r.takeLate()...)
		batch = r.collect(batch)
		if len(batch) == 0 {
			return // queue closed and drained
		}
		carry = r.write(batch)
	}
}

// collect waits for a first record, then takes more: up to a full batch,
// waiting up to FlushInterval for it in async mode. In sync and fsync
// mode (Checks are waiting) it takes what is already queued (the next
// group forms while this one commits), and then, when that is fewer than
// GroupSize records and Checks arrive fast enough to fill the group within
// GroupWait, waits for them, up to GroupWait: under load each commit then
// serves more Checks, for less CPU a Check, and a Check alone never waits.
// (Waiting whenever Checks were under way in meshproof, PostgreSQL's
// commit_siblings, did not pay: most of them were not, but on their way
// back from the client. See docs/performance.md.)
func (r *Recorder) collect(batch []*pending) []*pending {
	for len(batch) == 0 {
		select {
		case p, ok := <-r.queue:
			if !ok {
				return r.takeLate()
			}
			batch = r.took(batch, p)
		case <-r.kick:
			batch = r.takeLate()
		}
	}
	var deadline <-chan time.Time
	if r.cfg.Durability == Async {
		t := time.NewTimer(r.cfg.FlushInterval)
		defer t.Stop()
		deadline = t.C
	}
	waiting := false
	for len(batch) < r.cfg.BatchSize {
		select {
		case p, ok := <-r.queue:
			if !ok {
				return batch
			}
			batch = r.took(batch, p)
			continue
		default:
		}
		switch {
		case waiting && len(batch) >= r.cfg.GroupSize:
			return batch
		case deadline == nil && r.gather(len(batch)):
			t := time.NewTimer(r.cfg.GroupWait)
			defer t.Stop()
			deadline, waiting = t.C, true
		case deadline == nil:
			return batch
		}
		select {
		case p, ok := <-r.queue:
			if !ok {
				return batch
			}
			batch = r.took(batch, p)
		case <-deadline:
			return batch
		}
	}
	return batch
}

// took appends p to batch, noting when it was queued.
func (r *Recorder) took(batch []*pending, p *pending) []*pending {
	if !p.at.IsZero() {
		r.arrivals.add(p.at)
	}
	return append(batch, p)
}

// gather reports whether a sync or fsync group of n records waits for
// more: it holds fewer than GroupSize, its commits are slow enough for
// fewer of them to pay (a journal's flush, a round trip to PostgreSQL;
// not a copy into SQLite's mapped journal), and at the rate the last
// records were queued the rest would come within GroupWait.
func (r *Recorder) gather(n int) bool {
	size := min(r.cfg.GroupSize, r.cfg.BatchSize)
	if !r.cfg.Durability.Waits() || r.cfg.GroupWait <= 0 || n >= size || r.commits.mean < minGroupCommit {
		return false
	}
	gap, ok := r.arrivals.gap(clock())
	if !ok || gap*time.Duration(size-n) > r.cfg.GroupWait {
		return false
	}
	gathering()
	return true
}

// minGroupCommit is the mean commit below which groups never wait: a
// commit that cheap costs less CPU than the wait saves (SQLite's sync
// journal, a copy into a mapping, commits in some 10-30 µs; a flush or a
// PostgreSQL round trip takes 100-300 µs; docs/performance.md).
const minGroupCommit = 50 * time.Microsecond

// commits is the moving mean of a group's commit (and flush) time.
type commits struct{ mean time.Duration }

func (c *commits) add(d time.Duration) {
	if c.mean == 0 {
		c.mean = d
		return
	}
	c.mean += (d - c.mean) / 8
}

// clock is time.Now, and gathering is called when a group starts waiting;
// tests replace them.
var (
	clock     = time.Now
	gathering = func() {}
)

// arrivals keeps when the writer's last records were queued (the writer
// only).
type arrivals struct {
	at   [32]time.Time
	next int
	n    int
}

func (a *arrivals) add(t time.Time) {
	a.at[a.next] = t
	a.next = (a.next + 1) % len(a.at)
	a.n = min(a.n+1, len(a.at))
}

// gap is the mean time between the records kept, now counting as the
// next one's: a pause since the last makes it grow. ok is false with
// fewer than two.
func (a *arrivals) gap(now time.Time) (time.Duration, bool) {
	if a.n < 2 {
		return 0, false
	}
	oldest := a.at[(a.next-a.n+len(a.at))%len(a.at)]
	return now.Sub(oldest) / time.Duration(a.n), true
}

// write stores batch and answers its Checks. It returns the amendments of
// the records whose Checks stopped waiting meanwhile (see Recorder.amend),
// for the next batch.
//
// In fsync durability with a store that flushes apart from its commits
// (evidence.Syncer), the batch is flushed before its Checks are answered.
// The writer waits for the flush: the next batch, which gathers meanwhile,
// is the larger for it. Committing it while the flush runs was measured and
// made batches smaller, for more CPU a Check (docs/performance.md).
func (r *Recorder) write(batch []*pending) []*pending {
	recs := make([]*evidence.Record, len(batch))
	for i, p := range batch {
		recs[i] = p.rec // stamped by the caller (Stamp), checked by Record
	}
	start := clock()
	err := r.persist(recs)
	if err == nil && r.syncer != nil {
		err = r.flush()
	}
	if err == nil && r.cfg.Durability.Waits() {
		r.commits.add(clock().Sub(start))
	}
	return r.answer(batch, err)
}

// answer answers the Checks of batch, written (err nil) or not, and
// returns the amendments of those that stopped waiting meanwhile.
func (r *Recorder) answer(batch []*pending, err error) []*pending {
	var amendments []*pending
	for _, p := range batch {
		if p.ack == nil {
			continue
		}
		// Before the ack: a Check that stops waiting from now on finds
		// writerPassed and writes its amendment itself.
		if n := p.amend.Swap(writerPassed); n != nil && err == nil {
			amendments = append(amendments, &pending{rec: evidence.Amendment(p.rec, n.decision, "")})
		}
		p.ack <- err
	}
	return amendments
}

// link chains recs after head and returns the new head, and, when the
// store journals, the batch's journal lines (Link.LinkLine: each record
// encoded once for its hash and its line).
func (r *Recorder) link(head evidence.Link, recs []*evidence.Record) (evidence.Link, []byte) {
	if r.jr == nil {
		for _, rec := range recs {
			head = head.Link(rec)
		}
		return head, nil
	}
	lines := make([]byte, 0, 3072*len(recs))
	for _, rec := range recs {
		head, lines = head.LinkLine(rec, lines)
	}
	return head, lines
}

// persist chains recs after the head and writes them, retrying until it
// works or Close gives up; records the store refuses for their content are
// quarantined, not retried (see evidence.AppendIsolating). A retried batch keeps its
// links, so a commit that was in doubt is recognised and not written twice. A chain conflict means
// another process writes as this replica: the batch is chained again after
// the head the store has, so the chain stays whole, and it is said loudly.
func (r *Recorder) persist(recs []*evidence.Record) error {
	r.headMu.Lock()
	head, lines := r.link(r.head, recs)
	r.headMu.Unlock()
	wait := retryMin
	var failures int
	var lastLog time.Time
	for {
		start := time.Now()
		// Its own context: the Checks' are long gone.
		quarantined, err := r.appendIsolating(recs, lines)
		if errors.Is(err, evidence.ErrChainConflict) {
			var stored evidence.Link
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			stored, err = r.store.Head(ctx, r.replica)
			cancel()
			if err == nil {
				r.log.Warn().Str("replica", r.replica).Uint64("stored_seq", stored.Seq).
					Msg("another process writes evidence as this replica: give every instance its own --replica; chaining after the stored head")
				head, lines = r.link(stored, recs)
				quarantined, err = r.appendIsolating(recs, lines)
			}
		}
		if err == nil {
			r.headMu.Lock()
			r.head = head
			r.headMu.Unlock()
			r.m.written.Add(float64(len(recs) - quarantined))
			r.m.batch.Observe(float64(len(recs)))
			r.m.latency.Observe(time.Since(start).Seconds())
			r.m.up.Set(1)
			if failures > 0 {
				r.log.Info().Int("failed_attempts", failures).Msg("evidence store writable again; writing resumed")
			}
			return nil
		}
		failures++
		r.m.errors.Inc()
		r.m.up.Set(0)
		if time.Since(lastLog) > logInterval {
			lastLog = time.Now()
			r.log.Error().Err(err).Int("batch", len(recs)).Int("attempts", failures).Int("queued", len(r.queue)).
				Msg("evidence store write failed; retrying (logged once per 30s)")
		}
		select {
		case <-r.stop:
			r.m.dropped("shutdown").Add(float64(len(recs) + len(r.queue)))
			r.log.Error().Err(err).Int("lost", len(recs)+len(r.queue)).Msg("evidence: stopping with records that could not be stored")
			r.drainLost()
			return errors.Join(ErrClosed, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// flush makes what persist committed durable (fsync durability: see
// evidence.Syncer), retrying as persist does until it works or Close gives
// up; the batch's Checks are answered after it.
func (r *Recorder) flush() error {
	wait := retryMin
	var failures int
	var lastLog time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := r.syncer.Sync(ctx)
		cancel()
		if err == nil {
			if failures > 0 {
				r.log.Info().Int("failed_attempts", failures).Msg("evidence store flushes again; writing resumed")
			}
			return nil
		}
		failures++
		r.m.errors.Inc()
		if time.Since(lastLog) > logInterval {
			lastLog = time.Now()
			r.log.Error().Err(err).Int("attempts", failures).
				Msg("evidence store flush (fsync) failed; Checks wait, retrying (logged once per 30s)")
		}
		select {
		case <-r.stop:
			r.log.Error().Err(err).Msg("evidence: stopping with commits that could not be flushed: their Checks are denied, their records are in the store")
			return errors.Join(ErrClosed, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// writeTimeout bounds each call to the store.
const writeTimeout = 30 * time.Second

// appendIsolating writes recs; records the store refuses for their content
// are quarantined (see evidence.AppendIsolating) rather than retried for ever, which
// would stop every write after them.
//
// In sync and fsync durability with a store that journals, recs are
// committed to its journal (evidence.Journaler), which the store moves
// into its records itself; a batch the journal refuses for its content (a
// record that does not encode) is appended instead.
func (r *Recorder) appendIsolating(recs []*evidence.Record, lines []byte) (int, error) {
	if r.jr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := r.jr.Journal(ctx, recs, lines)
		cancel()
		if !errors.Is(err, evidence.ErrPermanent) {
			return 0, err
		}
	}
	n, err := evidence.AppendIsolating(context.Background(), r.store, recs, writeTimeout)
	if n > 0 {
		r.m.Quarantined.Add(float64(n))
		r.log.Error().Str("replica", r.replica).Int("quarantined", n).Int("batch", len(recs)).
			Msg("the evidence store refused records for their content: kept apart in its quarantine, with the reason, at their places in the chain (meshproof verify lists them); the rest of the batch is written")
	}
	return n, err
}

// drainLost answers every record still queued when Close gave up.
func (r *Recorder) drainLost() {
	for p := range r.queue {
		if p.ack != nil {
			p.ack <- ErrClosed
		}
	}
}
