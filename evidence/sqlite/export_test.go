package sqlite

import (
	"context"
	"strings"

	"github.com/meshproof/meshproof/evidence"
)

// PackShape and UnpackShape are how the shapes table keeps a shape.
var PackShape, UnpackShape = packShape, unpackShape

// Plan is SQLite's plan for the page query of f after cursor.
func (s *Store) Plan(ctx context.Context, f evidence.Filter, cursor string) (string, error) {
	q, args, err := s.querySQL(ctx, f, cursor, 101)
	if err != nil {
		return "", err
	}
	return s.explain(ctx, q, args)
}

// CountPlan is SQLite's plan for the count of f ("" when no edge
// matches: no query).
func (s *Store) CountPlan(ctx context.Context, f evidence.Filter) (string, error) {
	q, args, ok, err := s.countSQL(ctx, f)
	if err != nil || !ok {
		return "", err
	}
	return s.explain(ctx, q, args)
}

// EdgePlan is the plan of the query that names f's edges.
func (s *Store) EdgePlan(ctx context.Context, f evidence.Filter) (string, error) {
	w, _ := edgeWhere(f)
	return s.explain(ctx, "SELECT id FROM edges"+w.String()+" LIMIT 101", w.args)
}

func (s *Store) explain(ctx context.Context, q string, args []any) (string, error) {
	rows, err := s.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			return "", err
		}
		lines = append(lines, detail)
	}
	return strings.Join(lines, "; "), rows.Err()
}

// GetPlan is SQLite's plan for Get, and for Append's check of a chunk's ids.
func (s *Store) GetPlan(ctx context.Context) (get, check string, err error) {
	if get, err = s.explain(ctx, `SELECT `+rowCols+` FROM records WHERE `+idsWhere(1), []any{"x"}); err != nil {
		return "", "", err
	}
	args := make([]any, idsChunk)
	for i := range args {
		args[i] = "x"
	}
	check, err = s.explain(ctx, `SELECT id FROM records WHERE `+idsWhere(idsChunk)+` LIMIT 1`, args)
	return get, check, err
}

// IDRangePlan is SQLite's plan for Append's check that no stored id falls
// in the range of a batch's.
func (s *Store) IDRangePlan(ctx context.Context) (string, error) {
	return s.explain(ctx, idRangeSQL, []any{"0123456789", "9876543210"})
}

// Classify is classify, for the tests of real SQLite errors.
var Classify = classify

// HoldApply keeps the store from applying its journal (as a writer that
// dies before it applies) until release is called.
func (s *Store) HoldApply() (release func()) {
	s.jd.ApplyMu.Lock()
	return s.jd.ApplyMu.Unlock
}
