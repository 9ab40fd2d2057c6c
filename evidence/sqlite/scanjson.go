package sqlite

import (
	"context"
	"fmt"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// ScanJSON calls fn with the stored JSON of every record matching f,
// newest first, one page at a time as Scan does, without decoding it: the
// bytes are the record's JSON form as Append wrote it (json.Marshal), one
// line. Export streams them as they are, sparing a decode and an encode
// per record (most of Scan's cost). A record of canonical encoding v2 is
// its canonical bytes with the chain member put in front
// (evidence.AppendRecordJSON). fn must not keep body after it returns.
func (s *Store) ScanJSON(ctx context.Context, f evidence.Filter, fn func(body []byte) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	return storekit.ScanPages(ctx, func(cursor string) ([][]byte, string, bool, error) {
		bodies, next, err := s.bodies(ctx, f, cursor, scanPage)
		return bodies, next, next != "", err
	}, fn)
}

// QueryJSON returns one page of the records matching f as Query does,
// each record as its stored JSON (see ScanJSON), and the next cursor.
func (s *Store) QueryJSON(ctx context.Context, f evidence.Filter, page evidence.PageRequest) ([][]byte, string, error) {
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	return s.bodies(ctx, f, page.Cursor, page.Size())
}

// bodies reads one page of stored records: no rows stay open after it.
func (s *Store) bodies(ctx context.Context, f evidence.Filter, cursor string, limit int) ([][]byte, string, error) {
	q, args, err := s.querySQL(ctx, f, cursor, limit+1)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.readStmt(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("evidence sqlite: scan: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, limit)
	var t int64
	var id string
	for rows.Next() {
		if len(out) == limit {
			return out, storekit.EncodeCursor(t, id), nil
		}
		var body []byte
		var seq int64
		var hash string
		if err := rows.Scan(&t, &id, &seq, &hash, &body); err != nil {
			return nil, "", fmt.Errorf("evidence sqlite: scan: %w", err)
		}
		if evidence.StoredVersion(body) != evidence.CanonicalV1 {
			body = evidence.AppendRecordJSON(make([]byte, 0, len(body)+128), body, uint64(seq), hash)
		}
		out = append(out, body)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("evidence sqlite: scan: %w", err)
	}
	return out, "", nil
}
