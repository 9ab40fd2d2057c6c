package postgres

import (
	"context"
	"sync/atomic"
	"time"
)

// Request ids are indexed by a BRIN bloom index (migrations/0006): a bloom
// filter of the ids of each range of 32 heap pages, some 2 bytes a record,
// kept up on insert at almost no cost, where a B-tree on random keys cost a
// descent of the tree per row and 30 bytes (docs/performance.md). A
// lookup reads every range's filter and the few ranges that may hold the
// id; a range not yet summarized has no filter, and every lookup reads all
// of it. PostgreSQL summarizes a range when the next one starts
// (autosummarize), through autovacuum, whose queue of such requests is
// small and may drop them under heavy ingest: Append summarizes the new
// ranges itself, at most every summarizeEvery, so that a lookup never
// reads more than that much traffic unfiltered.

// summarizeEvery is how often Append summarizes new ranges of the request
// id index.
const summarizeEvery = 5 * time.Second

// summarizer claims the next summarization for one of the Appends that
// run at once.
type summarizer struct {
	every time.Duration
	next  atomic.Int64 // Unix ns of the next one due
}

// due claims the summarization due at now, if any.
func (s *summarizer) due(now time.Time) bool {
	n := s.next.Load()
	return now.UnixNano() >= n && s.next.CompareAndSwap(n, now.Add(s.every).UnixNano())
}

// summarizeRequests summarizes the request id index's new ranges in every
// partition, when due. It is housekeeping after a commit: a failure (a
// lock held by a VACUUM, which summarizes them too, past lock_timeout)
// leaves lookups slower, not wrong, and the next one tries again.
func (s *Store) summarizeRequests(ctx context.Context) {
	if !s.summarize.due(time.Now()) {
		return
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '100ms'"); err != nil {
		return
	}
	if _, err := tx.Exec(ctx, `SELECT brin_summarize_new_values(relid) FROM pg_partition_tree('records_request_uuid'::regclass) WHERE isleaf`); err != nil {
		return
	}
	tx.Commit(ctx)
}
