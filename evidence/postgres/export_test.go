package postgres

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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

// ShapeLookupSQL is planOf's query for f (its shapes and their
// estimate, over one day), and its arguments.
func ShapeLookupSQL(f evidence.Filter) (string, []any) {
	var a args
	w := shapeWhere(f, &a)
	return shapeEstimateSQL(w, &a, []int64{20000}, []string{partitionName(20000)}), a
}

// ReadPagesByTime and ReadPagesByShape force how the store reads a
// filtered page (ReadPagesByChoice: as it estimates).
func (s *Store) ReadPagesByTime()   { s.pageForm = formByTime }
func (s *Store) ReadPagesByShape()  { s.pageForm = formByShape }
func (s *Store) ReadPagesByChoice() { s.pageForm = formChosen }

// PageReadsByShape reports whether the store would read the first page of
// limit records matching f through its shapes' index, and the plan of
// that page's query as the store would run it.
func (s *Store) PageReadsByShape(ctx context.Context, f evidence.Filter, limit int) (bool, string, error) {
	p, err := s.planOf(ctx, f)
	if err != nil || p.none {
		return false, "", err
	}
	q, a := p.pageSQL(nil, limit+1)
	by := s.pageByShape(p.est, limit+1)
	if by {
		q = byShapeMark + q
	}
	b := &pgx.Batch{}
	if by {
		b.Queue(byShapeSettings)
	}
	b.Queue("EXPLAIN (COSTS OFF) "+q, a...)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	if by {
		if _, err := br.Exec(); err != nil {
			return false, "", err
		}
	}
	rs, err := br.Query()
	if err != nil {
		return false, "", err
	}
	lines, err := pgx.CollectRows(rs, pgx.RowTo[string])
	return by, strings.Join(lines, "\n"), err
}

// HoldApply keeps the store from applying its journal (as a writer that
// dies before it applies) until release is called.
func (s *Store) HoldApply() (release func()) {
	s.jd.ApplyMu.Lock()
	return s.jd.ApplyMu.Unlock
}

// LockKey is the advisory lock key of replica's journal writer.
var LockKey = lockKey
