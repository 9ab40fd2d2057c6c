// Package spool keeps a replica serving while its evidence store (the
// PostgreSQL database a fleet shares) is unreachable or failing: the
// batches the store does not take are written to a local SQLite file
// instead, and a drainer writes them to the store, in order and once each,
// when it works again.
//
// The spool is a write-side detour only: reads go to the store. While the
// spool holds records every new batch goes there too, so that the chain
// reaches the store in order; once the drainer has emptied it, writes go
// to the store again.
package spool

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

// primaryTimeout bounds one write to the store while the spool is empty:
// past it the batch is spooled rather than keeping Checks waiting.
const primaryTimeout = 5 * time.Second

// Store is an evidence.Store that writes to a primary store, or to the
// spool file while the primary fails. One Store spools one replica's chain.
type Store struct {
	evidence.Reader // the primary's: spooled records are not queried
	primary         evidence.Store
	file            *file
	replica         string
	log             zerolog.Logger
	m               *Metrics

	// mu serialises Append, Head and the drainer's last step, which
	// empties the spool: no batch lands in the spool after the drainer
	// saw it empty.
	mu       sync.Mutex
	tail     evidence.Link // the last spooled record (depth > 0)
	known    evidence.Link // the primary's head, as last seen
	hasKnown bool
	since    time.Time // when spooling started

	// depth is how many records the spool holds. It rises in Append and
	// falls in the drainer, and only ever reaches 0 under mu.
	depth    atomic.Int64
	up       atomic.Bool // the primary's last operation worked
	conflict atomic.Bool // the drainer stopped on a chain conflict

	kick      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	afterDeliver func(ctx context.Context) error // tests: between the store's write and the spool's delete

	// The primary's journal, once open (OpenJournal, Journal); guarded
	// by mu.
	journal     evidence.Journaler
	quarantined func(n int, why error)
}

var (
	_ evidence.Store     = (*Store)(nil)
	_ evidence.Journaler = (*Store)(nil)
)

// Open opens the spool file at path (creating it if needed) for replica's
// chain, in front of primary, and starts draining what it holds. With
// opts.Durable every spooled batch is on disk before Append returns
// (synchronous FULL). m may be nil (metrics kept but not exported).
//
// A replica can start while the primary is down when the spool knows the
// primary's last head (it saves it with every write); Open fails when
// neither does.
func Open(ctx context.Context, primary evidence.Store, path, replica string, opts evidence.Options, log zerolog.Logger, m *Metrics) (*Store, error) {
	return open(ctx, primary, path, replica, opts, log, m, nil)
}

func open(ctx context.Context, primary evidence.Store, path, replica string, opts evidence.Options, log zerolog.Logger, m *Metrics,
	afterDeliver func(context.Context) error) (*Store, error) {
	if replica == "" {
		return nil, errors.New("spool: a replica name is needed (a spool holds one replica's chain)")
	}
	f, err := openFile(ctx, path, opts.Durable)
	if err != nil {
		return nil, err
	}
	s := &Store{
		Reader: primary, primary: primary, file: f, replica: replica,
		log:  log.With().Str("component", "spool").Str("spool", f.path).Logger(),
		m:    m.orNew(),
		kick: make(chan struct{}, 1), afterDeliver: afterDeliver,
	}
	if err := s.load(ctx); err != nil {
		f.close()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	depth := func() float64 { return float64(s.depth.Load()) }
	s.m.depth.Store(&depth)
	s.wg.Add(1)
	go s.drainer()
	if s.depth.Load() > 0 {
		s.log.Warn().Int64("spooled", s.depth.Load()).Uint64("seq", s.tail.Seq).
			Msg("the spool holds evidence from before; draining it into the evidence store")
		s.wake()
	}
	return s, nil
}

// load reads the spool's state and, when it is empty, the primary's head.
func (s *Store) load(ctx context.Context) error {
	st, err := s.file.state(ctx, s.replica)
	if err != nil {
		return err
	}
	for _, r := range st.replicas {
		if r != s.replica {
			return fmt.Errorf("spool %s holds %d records of replica %q, not %q: serve as --replica %s until it is drained, or give this replica a spool file of its own",
				s.file.path, st.depth, r, s.replica, r)
		}
	}
	s.tail, s.known, s.hasKnown = st.tail, st.known, st.hasKnown
	s.depth.Store(st.depth)
	s.up.Store(true)
	if st.depth > 0 {
		s.since = time.Now()
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, primaryTimeout)
	defer cancel()
	head, err := s.primary.Head(hctx, s.replica)
	switch {
	case err == nil:
		s.sawPrimaryHead(ctx, head)
	case !s.hasKnown:
		return fmt.Errorf("spool %s: the evidence store is unreachable, and the spool does not know where the chain of replica %s ends there (it has never written through this spool): start once with the store reachable: %w",
			s.file.path, s.replica, err)
	default:
		s.primaryFailed()
		s.log.Warn().Err(err).Uint64("seq", s.known.Seq).
			Msg("evidence store unreachable at start; resuming the chain at the last head the spool knows, spooling until the store is back")
	}
	return nil
}

// Append writes batch to the primary while the spool is empty, or to the
// spool when the primary fails (with anything but a chain conflict, which
// is returned as is) or the spool already holds records. See
// evidence.Writer.
func (s *Store) Append(ctx context.Context, batch []*evidence.Record) error {
	return s.write(ctx, batch, s.primary.Append)
}

// Journal is Append for a writer whose Checks wait (evidence.Journaler):
// while the spool is empty, batch is committed to the primary's journal
// when it has one (opening it first if OpenJournal could not), else
// appended; otherwise, or when the primary fails, it is spooled.
func (s *Store) Journal(ctx context.Context, batch []*evidence.Record, lines []byte) error {
	return s.write(ctx, batch, func(ctx context.Context, batch []*evidence.Record) error {
		return s.journalPrimary(ctx, batch, lines)
	})
}

// OpenJournal opens the primary's journal of the spool's replica (see
// evidence.Journaler), which applies what a writer that stopped left in
// it. A primary that cannot be reached is no error: Journal opens it once
// it can, and spools meanwhile. Another writer of the replica is
// (evidence.ErrWriterLocked).
func (s *Store) OpenJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error {
	if replica != s.replica {
		return fmt.Errorf("spool: a journal of replica %q asked of the spool of %q", replica, s.replica)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quarantined = quarantined
	pctx, cancel := context.WithTimeout(ctx, primaryTimeout)
	defer cancel()
	err := s.openPrimaryJournal(pctx)
	if errors.Is(err, evidence.ErrWriterLocked) {
		return err
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("evidence store's journal not opened; spooling until it can be")
	}
	return nil
}

// openPrimaryJournal opens the primary's journal, once. Called with mu
// held.
func (s *Store) openPrimaryJournal(ctx context.Context) error {
	jr, ok := s.primary.(evidence.Journaler)
	if s.journal != nil || !ok {
		return nil
	}
	err := jr.OpenJournal(ctx, s.replica, s.quarantined)
	switch {
	case err == nil:
		s.journal = jr
	case errors.Is(err, errNoJournal):
		return nil // the store has none: Append
	}
	return err
}

// journalPrimary commits batch to the primary's journal, or appends it
// to a primary that has none. Called with mu held.
func (s *Store) journalPrimary(ctx context.Context, batch []*evidence.Record, lines []byte) error {
	if err := s.openPrimaryJournal(ctx); err != nil {
		return err
	}
	if s.journal == nil {
		return s.primary.Append(ctx, batch)
	}
	return s.journal.Journal(ctx, batch, lines)
}

// write writes batch to the primary with commit while the spool is empty,
// or to the spool (see Append).
func (s *Store) write(ctx context.Context, batch []*evidence.Record, commit func(context.Context, []*evidence.Record) error) error {
	if len(batch) == 0 {
		return nil
	}
	if r := batch[0].Replica; r != s.replica {
		return fmt.Errorf("spool: a batch of replica %q given to the spool of %q", r, s.replica)
	}
	// Refused here, not taken for the primary failing: a spooled record
	// the primary refuses would stop the drain.
	if err := evidence.CheckTimes(batch); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.depth.Load() == 0 {
		pctx, cancel := context.WithTimeout(ctx, primaryTimeout)
		err := commit(pctx, batch)
		cancel()
		if err == nil {
			s.sawPrimaryHead(ctx, linkOf(batch[len(batch)-1]))
			return nil
		}
		if errors.Is(err, evidence.ErrChainConflict) || errors.Is(err, evidence.ErrWriterLocked) {
			return err // the Recorder chains again after Head; spooling would not help
		}
		if evidence.IsPermanent(err) {
			// The store refuses these records for their content, and
			// would refuse them from the spool too: the caller finds
			// them (evidence.AppendIsolating) and quarantines them.
			s.primaryWorks()
			return err
		}
		s.primaryFailed()
		s.since = time.Now()
		s.log.Warn().Err(err).Uint64("seq", batch[0].Chain.Seq).
			Msg("evidence store write failed; spooling evidence to the local file until the store is back")
	}
	return s.spool(ctx, batch, "")
}

// Quarantine puts rec, refused by the store for reason, in the store's
// quarantine while the spool is empty; otherwise (or when the store fails)
// it is spooled marked for quarantine, and the drainer puts it there in its
// turn. See evidence.Writer.
func (s *Store) Quarantine(ctx context.Context, rec *evidence.Record, reason string) error {
	if rec.Replica != s.replica {
		return fmt.Errorf("spool: a record of replica %q given to the spool of %q", rec.Replica, s.replica)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.depth.Load() == 0 {
		pctx, cancel := context.WithTimeout(ctx, primaryTimeout)
		err := s.primary.Quarantine(pctx, rec, reason)
		cancel()
		if err == nil {
			s.sawPrimaryHead(ctx, linkOf(rec))
			return nil
		}
		if errors.Is(err, evidence.ErrChainConflict) {
			return err
		}
		s.primaryFailed()
		s.since = time.Now()
		s.log.Warn().Err(err).Uint64("seq", rec.Chain.Seq).
			Msg("evidence store write failed; spooling evidence to the local file until the store is back")
	}
	return s.spool(ctx, []*evidence.Record{rec}, reason)
}

// spool writes batch to the file after the spool's tail (or, when empty,
// the primary's last known head), marked for quarantine when reason is
// set. Called with mu held.
func (s *Store) spool(ctx context.Context, batch []*evidence.Record, reason string) error {
	head, checked := s.tail, true
	if s.depth.Load() == 0 {
		head, checked = s.known, s.hasKnown
	}
	first, last := batch[0].Chain, batch[len(batch)-1].Chain
	switch {
	case checked && last.Seq <= head.Seq && s.depth.Load() > 0:
		// Spooled before, the commit in doubt?
		hash, err := s.file.hashAt(ctx, last.Seq)
		if err != nil {
			return err
		}
		if hash == last.Hash {
			return nil
		}
		fallthrough
	case checked && (first.Seq != head.Seq+1 || (first.Version != evidence.CanonicalV2 && first.PrevHash != head.Hash)):
		return fmt.Errorf("%w: replica %s: the batch starts at seq %d after %.12s, the spool's head is seq %d (%.12s)",
			evidence.ErrChainConflict, s.replica, first.Seq, first.PrevHash, head.Seq, head.Hash)
	}
	if err := s.file.add(ctx, batch, reason); err != nil {
		// A commit that failed may yet have landed: read the truth back.
		if st, serr := s.file.state(ctx, s.replica); serr == nil {
			s.tail = st.tail
			s.depth.Store(st.depth)
		}
		return err
	}
	s.tail = evidence.Link{Seq: last.Seq, Hash: last.Hash}
	if s.depth.Add(int64(len(batch))) == int64(len(batch)) {
		s.wake()
	}
	return nil
}

// Sync flushes the primary's commits when it is an evidence.Syncer (a
// SQLite store); the spool's own are flushed as they are made when it was
// opened Durable, and a Durable PostgreSQL store flushes with each commit.
func (s *Store) Sync(ctx context.Context) error {
	if sy, ok := s.primary.(evidence.Syncer); ok {
		return sy.Sync(ctx)
	}
	return nil
}

var _ evidence.Syncer = (*Store)(nil)

// Head is the last link of replica's chain as this replica will continue
// it: the last spooled record while the spool holds records, else the
// primary's head, else (the primary down) the last head the spool knows.
// Other replicas' heads are the primary's.
func (s *Store) Head(ctx context.Context, replica string) (evidence.Link, error) {
	if replica != s.replica {
		return s.primary.Head(ctx, replica)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.depth.Load() > 0 {
		return s.tail, nil
	}
	head, err := s.primary.Head(ctx, replica)
	if err == nil {
		s.sawPrimaryHead(ctx, head)
		return head, nil
	}
	if !s.hasKnown {
		return evidence.Link{}, err
	}
	s.primaryFailed()
	s.log.Warn().Err(err).Uint64("seq", s.known.Seq).Msg("evidence store unreachable; the chain continues at the last head the spool knows")
	return s.known, nil
}

// sawPrimaryHead notes head as the primary's, in memory and in the file
// (for a start while the primary is down). Called with mu held.
func (s *Store) sawPrimaryHead(ctx context.Context, head evidence.Link) {
	s.primaryWorks()
	if s.hasKnown && s.known == head {
		return
	}
	s.known, s.hasKnown = head, true
	if err := s.file.saveKnown(context.WithoutCancel(ctx), s.replica, head); err != nil {
		s.log.Warn().Err(err).Msg("spool: cannot save the evidence store's head; a start while the store is down would not know it")
	}
}

func (s *Store) primaryWorks() {
	s.up.Store(true)
	s.m.up.Set(1)
}

func (s *Store) primaryFailed() {
	s.up.Store(false)
	s.m.up.Set(0)
}

func linkOf(r *evidence.Record) evidence.Link {
	return evidence.Link{Seq: r.Chain.Seq, Hash: r.Chain.Hash}
}

// SaveCheckpoint is the primary's: checkpoints sign the store's logs.
func (s *Store) SaveCheckpoint(ctx context.Context, c evidence.SignedCheckpoint) error {
	return s.primary.SaveCheckpoint(ctx, c)
}

// DeleteBefore is the primary's: retention applies to the store.
func (s *Store) DeleteBefore(ctx context.Context, t, rollupsBefore time.Time, batch int) (int64, error) {
	return s.primary.DeleteBefore(ctx, t, rollupsBefore, batch)
}

// Status says whether evidence is being spooled rather than stored.
type Status struct {
	// Degraded: the store failed its last write or read of the chain, or
	// the spool holds records not yet in the store.
	Degraded bool `json:"degraded"`
	// Spooled is how many records wait in the spool.
	Spooled int `json:"spooled"`
	// Reason says why, when Degraded.
	Reason string `json:"reason,omitempty"`
}

// Status is the spool's state, for health detail. It never blocks.
func (s *Store) Status() Status {
	n := int(s.depth.Load())
	st := Status{Spooled: n, Degraded: n > 0 || !s.up.Load()}
	switch {
	case s.conflict.Load():
		st.Reason = "spooled evidence does not continue the store's chain of this replica: draining stopped (see the log)"
	case !s.up.Load():
		st.Reason = fmt.Sprintf("evidence store unreachable or failing: evidence is spooled locally (%d records) until it is back", n)
	case n > 0:
		st.Reason = fmt.Sprintf("draining %d spooled records into the evidence store", n)
	}
	return st
}

// Close stops the drainer (what is left in the spool is drained after the
// next Open) and closes the spool file and the primary. It is safe to call
// more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.closeErr = errors.Join(s.file.close(), s.primary.Close())
	})
	return s.closeErr
}

// Path is the spool file.
func (s *Store) Path() string { return s.file.path }

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
