package spool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Drain pacing: records per write to the primary, the wait between
// attempts while it fails, and how often a failing drain is logged.
const (
	drainChunk   = 1000
	drainTimeout = 30 * time.Second
	retryMin     = 100 * time.Millisecond
	retryMax     = 3 * time.Second
	logInterval  = 30 * time.Second
)

// errConflict stops the drainer: the spool does not continue the
// primary's chain, which takes a person to sort out.
var errConflict = errors.New("chain conflict")

// errEmpty: the spool holds no record although depth counts some.
var errEmpty = errors.New("spool: no record to drain")

// drainer is the Store's goroutine: woken when the spool gets its first
// records (or holds some at Open), it drains them into the primary,
// backing off while the primary fails, until Close.
func (s *Store) drainer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		if err := s.drainAll(); errors.Is(err, errConflict) {
			return // the records stay spooled; Status and the log say why
		}
	}
}

// drainAll drains until the spool is empty, the drain conflicts with the
// primary's chain, or Close.
func (s *Store) drainAll() error {
	wait := retryMin
	var failures int
	var lastLog time.Time
	for s.depth.Load() > 0 {
		err := s.drainSome()
		switch {
		case err == nil:
			s.primaryWorks()
			wait, failures = retryMin, 0
			continue
		case errors.Is(err, evidence.ErrChainConflict):
			s.conflict.Store(true)
			s.log.Error().Err(err).Int64("spooled", s.depth.Load()).
				Msg("SPOOLED EVIDENCE CONFLICTS WITH THE STORE'S CHAIN: draining stopped, the records stay in the spool; is another process writing as this replica? (give every instance its own --replica)")
			return errConflict
		case s.ctx.Err() != nil:
			return s.ctx.Err()
		}
		s.primaryFailed()
		failures++
		if time.Since(lastLog) > logInterval {
			lastLog = time.Now()
			s.log.Error().Err(err).Int64("spooled", s.depth.Load()).Int("attempts", failures).
				Msg("draining the spool into the evidence store failed; retrying (logged once per 30s)")
		}
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
	return nil
}

// drainSome drains one chunk. The last one is drained holding mu, and the
// spool is then empty: Append writes to the primary from then on.
func (s *Store) drainSome() error {
	if s.depth.Load() > drainChunk {
		head, err := s.drainChunk(drainTimeout)
		if err == nil {
			s.mu.Lock()
			s.known, s.hasKnown = head, true
			s.mu.Unlock()
		}
		if !errors.Is(err, errEmpty) {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	head, err := s.drainChunk(primaryTimeout)
	switch {
	case errors.Is(err, errEmpty):
		// The count was wrong (it never should be): the file is the truth.
		s.log.Warn().Int64("counted", s.depth.Load()).Msg("spool: counted records the file does not hold")
		s.depth.Store(0)
	case err != nil:
		return err
	default:
		s.known, s.hasKnown = head, true
	}
	if s.depth.Load() > 0 {
		return nil
	}
	s.log.Info().Dur("spooled_for", time.Since(s.since).Round(time.Millisecond)).Uint64("seq", s.known.Seq).
		Msg("spool drained; evidence is written to the store again")
	return nil
}

// drainChunk writes the oldest spooled records to the primary, removes
// them from the spool, and returns the primary's head after them. Records
// the primary already holds (a drain interrupted between the two steps, or
// a write whose commit was in doubt) are dropped, once the primary's head
// is seen to be their chain.
func (s *Store) drainChunk(timeout time.Duration) (evidence.Link, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	recs, refused, err := s.file.first(ctx, drainChunk)
	if err != nil {
		return evidence.Link{}, err
	}
	if len(recs) == 0 {
		return evidence.Link{}, errEmpty
	}
	head, err := s.primary.Head(ctx, s.replica)
	if err != nil {
		return head, err
	}
	rest, err := after(recs, head)
	if err != nil {
		return head, err
	}
	// A record an older meshproof spooled with a time out of range: said
	// plainly, never handed to the primary to store wrapped.
	if err := evidence.CheckTimes(rest); err != nil {
		return head, fmt.Errorf("spool: draining: %w", err)
	}
	if len(rest) > 0 {
		if err := s.deliver(timeout, rest, refused); err != nil {
			return head, err
		}
		if l := linkOf(rest[len(rest)-1]); l.Seq > head.Seq {
			head = l
		}
	}
	if s.afterDeliver != nil {
		if err := s.afterDeliver(ctx); err != nil {
			return head, err
		}
	}
	last := recs[len(recs)-1].Chain.Seq
	n, err := s.file.forget(context.WithoutCancel(ctx), last, s.replica, head)
	if err != nil {
		return head, err
	}
	s.depth.Add(-n)
	s.m.drained.Add(float64(n))
	return head, nil
}

// deliver writes recs (one piece of the chain) to the primary: the ones
// spooled for quarantine (by seq in refused) into its quarantine, the others
// into its records, where any the primary refuses for their content are
// found and quarantined too (evidence.AppendIsolating): a refused record
// never stops the drain. Each call to the primary gets timeout.
func (s *Store) deliver(timeout time.Duration, recs []*evidence.Record, refused map[uint64]string) error {
	for len(recs) > 0 {
		if reason, ok := refused[recs[0].Chain.Seq]; ok {
			ctx, cancel := context.WithTimeout(s.ctx, timeout)
			err := s.primary.Quarantine(ctx, recs[0], reason)
			cancel()
			if err != nil {
				return err
			}
			recs = recs[1:]
			continue
		}
		run := 1
		for run < len(recs) {
			if _, ok := refused[recs[run].Chain.Seq]; ok {
				break
			}
			run++
		}
		n, err := evidence.AppendIsolating(s.ctx, s.primary, recs[:run], timeout)
		if n > 0 {
			s.m.quarantined.Add(float64(n))
			s.log.Error().Int("quarantined", n).Uint64("from_seq", recs[0].Chain.Seq).
				Msg("the evidence store refused spooled records for their content: kept apart in its quarantine, with the reason, at their places in the chain (meshproof verify lists them); the drain goes on")
		}
		if err != nil {
			return err
		}
		recs = recs[run:]
	}
	return nil
}

// after returns the records of recs (one chain, in order) that come after
// head, checking that the ones at or below it are the primary's: the
// record at head's seq must have head's hash.
func after(recs []*evidence.Record, head evidence.Link) ([]*evidence.Record, error) {
	first, last := recs[0].Chain, recs[len(recs)-1].Chain
	switch {
	case head.Seq < first.Seq:
		return recs, nil // the primary's Append checks that they follow
	case head.Seq > last.Seq:
		// The primary went on past these: its Append checks, by the last
		// record's hash, that they are what it holds.
		return recs, nil
	}
	k := head.Seq - first.Seq
	if got := recs[k].Chain.Hash; got != head.Hash {
		return nil, fmt.Errorf("%w: replica %s: the store's head is seq %d with hash %.12s, the spool has %.12s at that seq",
			evidence.ErrChainConflict, recs[k].Replica, head.Seq, head.Hash, got)
	}
	return recs[k+1:], nil
}
