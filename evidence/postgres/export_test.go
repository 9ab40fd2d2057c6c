package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// Classify is classify, for the tests of real PostgreSQL errors.
var Classify = classify

// CopyBare COPYs the rows Append would write for batch, encoded in the
// call as Append encodes them (shapes interned), into table: the baseline
// of BenchmarkAppend.
func (s *Store) CopyBare(ctx context.Context, table string, batch []*evidence.Record) error {
	rows, err := s.encode(ctx, batch)
	if err != nil {
		return err
	}
	_, err = s.pool.CopyFrom(ctx, pgx.Identifier{table}, recordColumns, &copySource{rows: rows})
	return err
}
