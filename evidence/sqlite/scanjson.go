package sqlite

import (
	"context"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// ScanJSON calls fn with the JSON form of every record matching f (as
// evidence.RecordJSON makes it), newest first, one page at a time as Scan
// does: a record of canonical encoding v2 is its canonical bytes with the
// chain member put in front (evidence.AppendRecordJSON), the bytes its
// join hashed (compact.Shapes.JoinJSON), never encoded twice. fn must not
// keep body after it returns.
func (s *Store) ScanJSON(ctx context.Context, f evidence.Filter, fn func(body []byte) error) error {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return err
	}
	return storekit.ScanPages(ctx, func(cursor string) ([][]byte, string, bool, error) {
		bodies, next, err := s.bodies(ctx, f, cursor, scanPage)
		return bodies, next, next != "", err
	}, fn)
}

// QueryJSON returns one page of the records matching f as Query does,
// each record as its JSON form (see ScanJSON), and the next cursor.
func (s *Store) QueryJSON(ctx context.Context, f evidence.Filter, page evidence.PageRequest) ([][]byte, string, error) {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	return s.bodies(ctx, f, page.Cursor, page.Size())
}

// bodies reads one page of records as their JSON form (the bytes
// evidence.RecordJSON makes of the joined record: for version 2 the
// canonical bytes with the chain member in front, as schema 5 served its
// stored bytes).
func (s *Store) bodies(ctx context.Context, f evidence.Filter, cursor string, limit int) ([][]byte, string, error) {
	return readPage(ctx, s, f, cursor, limit, func(w *row) ([]byte, error) {
		return readJSON(ctx, s.r, s.shapes, w)
	})
}
