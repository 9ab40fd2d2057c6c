package postgres

import (
	"context"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Classify is classify, for the tests of real PostgreSQL errors.
var Classify = classify

// CopyBare COPYs the rows Append would write for batch, encoded in the
// call as Append encodes them (shapes interned), into table: the baseline
// of BenchmarkAppend.
func (s *Store) CopyBare(ctx context.Context, table string, batch []*evidence.Record) error {
	rep, err := s.replicaID(ctx, batch[0].Replica)
	if err != nil {
		return err
	}
	rows, err := baseRows(batch, rep)
	if err != nil {
		return err
	}
	enc := s.encodeAhead(batch, rows)
	defer enc.close()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := s.copyRows(ctx, tx, table, enc, 0); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	s.remember(enc)
	return nil
}

// SummarizeEvery sets how often Append summarizes the request id index.
func (s *Store) SummarizeEvery(d time.Duration) {
	s.summarize.every = d
	s.summarize.next.Store(0)
}

// RequestLookupSQL is the query of the first page of a request id filter,
// and its arguments.
func RequestLookupSQL(requestID string) (string, []any) {
	var a args
	return "SELECT " + rowColumns + " FROM records WHERE " + requestCond(requestID, &a) + " ORDER BY time_ns DESC LIMIT 100", a
}

// ShapeLookupSQL is planOf's first query for f, and its arguments.
func ShapeLookupSQL(f evidence.Filter) (string, []any) {
	var a args
	return "SELECT id FROM shapes WHERE " + shapeWhere(f, &a), a
}

// HoldApply keeps the store from applying its journal (as a writer that
// dies before it applies) until release is called.
func (s *Store) HoldApply() (release func()) {
	s.jd.ApplyMu.Lock()
	return s.jd.ApplyMu.Unlock
}

// LockKey is the advisory lock key of replica's journal writer.
var LockKey = lockKey
