// Package recorder is the evidence write path: Stamp makes a record what
// the store keeps, and a Recorder takes stamped records from Checks and
// decision log uploads and writes them, in batches and in chain order, to
// an evidence.Writer (group commit in sync durability, amendments for
// Checks that stopped waiting, quarantine of records the store refuses).
// It imports evidence; evidence never imports it.
package recorder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
)

// Durability says when a Check may return.
type Durability string

// Durabilities.
const (
	// Async: a Check returns once its record is queued; a batch writer
	// stores it shortly after. A clean stop (SIGTERM) writes everything
	// queued; a crash loses what was queued.
	Async Durability = "async"
	// Sync: a Check returns only once the transaction holding its record
	// has committed (group commit: many Checks share one transaction). No
	// allowed request without its evidence, even across kill -9 of
	// meshproof: the commit is in the store's hands (SQLite's WAL in the
	// operating system's cache; PostgreSQL's server, flushed as its
	// synchronous_commit says). A power loss or an operating system crash
	// may lose SQLite's last commits.
	Sync Durability = "sync"
	// FSync: as Sync, and the record is on stable storage (flushed) before
	// the Check returns: it survives a power loss too. SQLite: the writer
	// flushes the WAL after its commits (evidence.Syncer), one flush for
	// every commit made while the last ran; PostgreSQL: synchronous_commit
	// is on for meshproof's writes whatever the server's default.
	FSync Durability = "fsync"
)

// Waits reports whether a Check waits for its record's commit.
func (d Durability) Waits() bool { return d == Sync || d == FSync }

// Overflow says what happens when the queue is full (the store is slow or
// down).
type Overflow string

// Overflow policies.
const (
	// Block waits up to BlockTimeout for room, then denies the request.
	Block Overflow = "block"
	// Drop lets the request through without evidence, and counts it.
	Drop Overflow = "drop"
	// Deny denies the request at once.
	Deny Overflow = "deny"
)

// Config configures a Recorder.
type Config struct {
	Durability    Durability    `json:"durability"`
	Overflow      Overflow      `json:"overflow"`
	QueueSize     int           `json:"queue_size"`
	BatchSize     int           `json:"batch_size"`
	FlushInterval time.Duration `json:"flush_interval"`
	BlockTimeout  time.Duration `json:"block_timeout"`
	// GroupSize and GroupWait: in sync and fsync durability, a group of
	// fewer than GroupSize records waits up to GroupWait for more before
	// its commit, when Checks arrive fast enough to fill it in that time
	// (collect). Each commit (a journal's flush, a round trip to
	// PostgreSQL) then serves more Checks; a Check alone never waits.
	// GroupWait 0: a group is what is queued when the writer gets to it.
	GroupSize int           `json:"group_size"`
	GroupWait time.Duration `json:"group_wait"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Durability: Async,
		Overflow:   Block,
		QueueSize:  100_000,
		// At most: a batch is what is queued when the writer gets to it.
		// Under sustained load, larger transactions touch each index page
		// once for more records: 10,000-record batches ingest nearly three
		// times as fast as 1,000-record ones (docs/performance.md).
		BatchSize:     10_000,
		FlushInterval: 50 * time.Millisecond,
		BlockTimeout:  50 * time.Millisecond,
		// Measured with loadbench (docs/performance.md): fsync at 16
		// concurrent Checks from 0.58 to 0.67 of the ceiling.
		GroupSize: 6,
		GroupWait: time.Millisecond,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch c.Durability {
	case Async, Sync, FSync:
	default:
		return fmt.Errorf("evidence-durability %q: want async, sync or fsync", c.Durability)
	}
	switch c.Overflow {
	case Block, Deny:
	case Drop:
		if c.Durability.Waits() {
			return fmt.Errorf("evidence-overflow drop contradicts evidence-durability %s (no allowed request without its evidence): use block or deny", c.Durability)
		}
	default:
		return fmt.Errorf("evidence-overflow %q: want block, drop or deny", c.Overflow)
	}
	if c.QueueSize < 1 || c.BatchSize < 1 || c.FlushInterval <= 0 || c.BlockTimeout <= 0 {
		return errors.New("evidence queue size, batch size, flush interval and block timeout must be positive")
	}
	if c.GroupSize < 1 {
		return fmt.Errorf("evidence group size %d: want at least 1", c.GroupSize)
	}
	if c.GroupWait < 0 || c.GroupWait > maxGroupWait {
		return fmt.Errorf("evidence group wait %s: want 0 to %s", c.GroupWait, maxGroupWait)
	}

	return nil
}

// maxGroupWait bounds GroupWait: every Check of a group may wait that long.
const maxGroupWait = 100 * time.Millisecond

// Errors Record returns; the Check is then denied.
var (
	ErrQueueFull = errors.New("evidence queue full")
	ErrClosed    = errors.New("evidence recorder stopped")
	// ErrNotCommitted: in sync durability, the caller stopped waiting
	// (its context ended) before the record was committed. The record was
	// queued and is written all the same; when it lets the request through,
	// an amendment saying the request was not is written after it.
	ErrNotCommitted = errors.New("evidence not yet committed")
	// ErrReplica: a record handed over is not stamped for the recorder's
	// replica (see Stamp). It names another chain, or none.
	ErrReplica = errors.New("evidence record not stamped for this recorder's replica")
)

// Stamp makes rec what the store keeps, and is the one place that does: it
// names the replica whose chain rec goes into and bounds it (evidence.Bound:
// over-long fields cut and Truncated set, bytes no store keeps replaced).
// Call it once, when the record is complete and before anyone reads it:
// the Check's answer, meshproof eval's output and the Recorder all see the
// stamped record. The Recorder refuses a record stamped for another
// replica (ErrReplica) and changes nothing in it but its link (Chain).
func Stamp(rec *evidence.Record, replica string) {
	rec.Replica = replica
	evidence.Bound(rec)
}

// Recorder takes records from Checks and writes them, in batches and in
// chain order, to a Store. One Recorder writes one replica's chain.
type Recorder struct {
	cfg     Config
	replica string
	store   evidence.Writer
	log     zerolog.Logger
	m       *Metrics

	queue    chan *pending
	mu       sync.RWMutex // held for reading by Record, for writing by RecordBatch and Close
	shut     bool
	done     chan struct{}
	stop     chan struct{} // closed by Close when its time is up: stop retrying
	stopOnce sync.Once

	headMu sync.Mutex
	head   evidence.Link // after the writer's last successful write

	// Amendments of records already written when their Check stopped
	// waiting (see amend); the writer takes them with its next batch.
	lateMu sync.Mutex
	late   []*pending
	kick   chan struct{} // wakes the writer for them; one slot

	// arrivals is when the writer's last records were queued, commits
	// how long its commits take (collect; the writer only).
	arrivals arrivals
	commits  commits

	// syncer flushes commits in fsync durability (nil otherwise, or when
	// the store's commits flush by themselves).
	syncer evidence.Syncer
	// jr commits batches to the store's journal in sync and fsync
	// durability (evidence.Journaler; nil otherwise).
	jr evidence.Journaler
}

type pending struct {
	rec *evidence.Record
	ack chan error // sync durability only
	at  time.Time  // when it was queued (sync durability only)
	// letThrough: the record says the request is let through (allowed,
	// or dry run), read before the record is handed over.
	letThrough bool
	// amend holds what the Check answered instead, once it stopped
	// waiting; the writer swaps in writerPassed after the record's batch.
	amend atomic.Pointer[sentInstead]
}

// sentInstead is what a Check that stopped waiting for its record answered.
type sentInstead struct{ decision evidence.Decision }

// writerPassed marks a pending whose batch the writer is done with.
var writerPassed = &sentInstead{}

var ackPool = sync.Pool{New: func() any { return make(chan error, 1) }}

// New starts a recorder for replica, resuming its chain at the head
// the store holds.
// m may be nil (metrics are then kept but not exported).
func New(ctx context.Context, cfg Config, replica string, store evidence.Writer, log zerolog.Logger, m *Metrics) (*Recorder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if replica == "" {
		return nil, errors.New("evidence: a replica name is needed (it names the chain)")
	}
	met, lg := m.orNew(), log.With().Str("component", "evidence").Logger()
	jr, _ := store.(evidence.Journaler)
	if !cfg.Durability.Waits() {
		jr = nil
	}
	if jr != nil {
		// Before the head is read: what a writer that stopped left in the
		// journal is stored first.
		quarantined := func(n int, why error) {
			if n == 0 {
				lg.Error().Err(why).Str("replica", replica).Msg("evidence: the journal could not be applied whole")
				return
			}
			met.Quarantined.Add(float64(n))
			lg.Error().Err(why).Str("replica", replica).Int("quarantined", n).
				Msg("the evidence store refused journaled records for their content as it applied them: kept apart in its quarantine, with the reason, at their places in the chain (meshproof verify lists them)")
		}
		if err := jr.OpenJournal(ctx, replica, quarantined); err != nil {
			return nil, fmt.Errorf("evidence: %w", err)
		}
	}
	head, err := store.Head(ctx, replica)
	if err != nil {
		return nil, fmt.Errorf("evidence: reading the chain head of %s: %w", replica, err)
	}
	r := &Recorder{
		cfg: cfg, replica: replica, store: store,
		log:   lg,
		m:     met,
		queue: make(chan *pending, cfg.QueueSize),
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		stop:  make(chan struct{}),
		head:  head,
		jr:    jr,
	}
	if sy, ok := store.(evidence.Syncer); ok && cfg.Durability == FSync {
		r.syncer = sy
	}
	depth := func() float64 { return float64(len(r.queue)) }
	r.m.depth.Store(&depth)
	r.m.capacity.Set(float64(cap(r.queue)))
	go r.writer()
	return r, nil
}

// Record hands a record over, stamped (Stamp). In sync durability it
// returns once the record is committed, or with an error wrapping
// ErrNotCommitted and ctx's error when the caller stops waiting (the record
// is still written). An error means the request must be denied. A record
// stamped for another replica is refused with an error wrapping
// ErrReplica, one whose time is out of range (see evidence.CheckTime) with
// an error wrapping evidence.ErrTimeRange. The record belongs to the
// recorder from now on.
//
// A Check that stops waiting is over: its answer never reaches Envoy, whose
// ext_authz call has failed (deadline) or was cancelled. When its record
// says the request was let through, that record would be wrong, and it
// cannot be changed (it may be in a batch being written, and is chained):
// the recorder writes an amendment after it, in the same chain, saying the
// request was not let through (see evidence.Amends).
func (r *Recorder) Record(ctx context.Context, rec *evidence.Record) error {
	if err := r.check(rec); err != nil {
		return err
	}
	r.mu.RLock()
	if r.shut {
		r.mu.RUnlock()
		return ErrClosed
	}
	p := &pending{rec: rec}
	if r.cfg.Durability.Waits() {
		p.ack = ackPool.Get().(chan error)
		p.at = clock()
		p.letThrough = rec.Decision.Allowed || rec.Decision.DryRun
	}
	err := r.enqueue(ctx, p)
	r.mu.RUnlock()
	if err != nil || p.ack == nil {
		return err
	}
	select {
	case err := <-p.ack:
		ackPool.Put(p.ack)
		return err
	case <-ctx.Done():
		r.amend(p, ctx.Err())
		return fmt.Errorf("%w: %w", ErrNotCommitted, ctx.Err())
	}
}

// amend has the amendment of p's record written, when the record says the
// request was let through: with p's batch when the writer has not finished
// it (the writer takes it then, so it follows the record in the chain: same
// batch or the next), else on its own, right after. A record that says
// denied needs none: Envoy denied the request either way.
func (r *Recorder) amend(p *pending, cause error) {
	if !p.letThrough {
		return
	}
	n := &sentInstead{decision: evidence.Decision{
		Allowed: false,
		Error: "the Check ended (" + cause.Error() + ") before this record was committed: its answer never " +
			"reached Envoy, whose ext_authz call failed (Envoy then denies, unless failure_mode_allow is set)",
	}}
	if p.amend.CompareAndSwap(nil, n) {
		return // the writer takes it after the record's batch
	}
	// The writer is done with the record's batch and is sending its acks.
	if err := <-p.ack; err != nil {
		return // the record was not stored (Close gave up): nothing to amend
	}
	a := &pending{rec: evidence.Amendment(p.rec, n.decision, "")}
	r.lateMu.Lock()
	r.late = append(r.late, a)
	r.lateMu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
		r.log.Error().Str("evidence_id", p.rec.ID).Msg("evidence: the recorder stopped before an amendment could be written: the record says allowed, the request was not")
		r.m.dropped("shutdown").Inc()
	default:
	}
}

// takeLate returns the amendments amend left for the writer.
func (r *Recorder) takeLate() []*pending {
	r.lateMu.Lock()
	defer r.lateMu.Unlock()
	l := r.late
	r.late = nil
	return l
}

// RecordBatch hands recs over as one unbroken run of the chain: either all
// of them are queued, with no other record between them, or none is and it
// returns an error wrapping ErrQueueFull (the queue has not room for all of
// them now), ErrReplica (a record not stamped for this replica, see Stamp),
// evidence.ErrTimeRange (a record's time is out of range, see CheckTime) or
// ErrClosed. It never waits for room and never drops: its
// caller is an upload whose client retries, so the client is told to come
// back rather than a Check kept waiting behind it. In sync durability it
// returns once every record is committed, or with ctx's error when the
// caller stops waiting (they are still written). The records belong to the
// recorder from now on.
func (r *Recorder) RecordBatch(ctx context.Context, recs []*evidence.Record) error {
	if len(recs) == 0 {
		return nil
	}
	for _, rec := range recs {
		if err := r.check(rec); err != nil {
			return err
		}
	}
	// Refused before taking the lock, when plainly full: a pending Lock
	// would hold up every Check's Record meanwhile.
	if free := cap(r.queue) - len(r.queue); len(recs) > free {
		return fmt.Errorf("%w: %d records, room for %d", ErrQueueFull, len(recs), free)
	}
	ps := make([]*pending, len(recs))
	now := clock()
	for i, rec := range recs {
		ps[i] = &pending{rec: rec}
		if r.cfg.Durability.Waits() {
			ps[i].ack = ackPool.Get().(chan error)
			ps[i].at = now
		}
	}
	if err := r.enqueueAll(ps); err != nil {
		for _, p := range ps {
			if p.ack != nil {
				ackPool.Put(p.ack)
			}
		}
		return err
	}
	if !r.cfg.Durability.Waits() {
		return nil
	}
	var first error
	for i, p := range ps {
		select {
		case err := <-p.ack:
			ackPool.Put(p.ack)
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			return fmt.Errorf("evidence not yet committed (%d of %d records confirmed): %w", i, len(ps), ctx.Err())
		}
	}
	return first
}

// check refuses a record not stamped for this replica (a caller's
// mistake: the record is not changed to fit), and one no store may hold:
// its time would wrap.
func (r *Recorder) check(rec *evidence.Record) error {
	if rec.Replica != r.replica {
		return fmt.Errorf("%w: record %s is stamped for replica %q, this recorder writes %q's chain", ErrReplica, rec.ID, rec.Replica, r.replica)
	}
	if err := evidence.CheckTime(rec.Time); err != nil {
		r.m.dropped("time_range").Inc()
		return fmt.Errorf("evidence: record %s: %w", rec.ID, err)
	}
	return nil
}

// enqueueAll queues every one of ps, or none of them.
func (r *Recorder) enqueueAll(ps []*pending) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shut {
		return ErrClosed
	}
	// Holding mu for writing, nobody else sends: the writer only takes
	// from the queue, so the room counted now is there for every send.
	if free := cap(r.queue) - len(r.queue); len(ps) > free {
		return fmt.Errorf("%w: %d records, room for %d", ErrQueueFull, len(ps), free)
	}
	for _, p := range ps {
		r.queue <- p
	}
	return nil
}

func (r *Recorder) enqueue(ctx context.Context, p *pending) error {
	select {
	case r.queue <- p:
		return nil
	default:
	}
	switch r.cfg.Overflow {
	case Drop:
		r.m.dropped("queue_full").Inc()
		return nil
	case Deny:
		r.m.dropped("denied").Inc()
		return ErrQueueFull
	}
	t := time.NewTimer(r.cfg.BlockTimeout)
	defer t.Stop()
	select {
	case r.queue <- p:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	r.m.dropped("block_timeout").Inc()
	return ErrQueueFull
}

// Close stops taking records, writes everything queued, and returns when it
// is stored, or when ctx ends (then the records still queued are lost, and
// counted).
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if !r.shut {
		r.shut = true
		close(r.queue) // no Record is between its check and its send: mu
	}
	r.mu.Unlock()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.stopOnce.Do(func() { close(r.stop) })
		<-r.done
		return fmt.Errorf("evidence: stopped before everything queued was stored: %w", ctx.Err())
	}
}

// Head is the chain head after the last successful write.
func (r *Recorder) Head() evidence.Link {
	r.headMu.Lock()
	defer r.headMu.Unlock()
	return r.head
}
