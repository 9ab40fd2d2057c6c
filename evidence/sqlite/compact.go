package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// Schema 6 keeps a record compact (issue 15, evidence/compact): its shape,
// what every request of an edge, method and outcome shares, once in the
// shapes table, and in the record's row the shape's number, the columns
// the queries read (replica number, seq, time, edge, id, request id,
// path) and the rest, a few dozen bytes of binary. No JSON body, no hash:
// a reader joins shape, columns and rest back into the record, whose
// canonical bytes are the ones written (the chain hash of a version 2
// record, its leaf hash, is recomputed from them and compared with the
// rest's 4-byte check). The log keeps no tile of level 0: the records are
// its leaves.
var compactMigration = []string{
	`CREATE TABLE replicas (
		num  INTEGER PRIMARY KEY,
		name TEXT    NOT NULL UNIQUE
	)`,
	// method is the shape's request method, for the method filter (Verify
	// checks that it agrees with the shape); hash the SHA-256 of the shape,
	// body the shape compressed with zstd (packShape: 43 % of its size).
	`CREATE TABLE shapes (
		id     INTEGER PRIMARY KEY,
		hash   BLOB    NOT NULL UNIQUE,
		method TEXT    NOT NULL,
		body   BLOB    NOT NULL
	)`,
	// key is (the replica's number - 1) << 40 | seq, the rowid: rows are
	// stored in chain order and appended to the end (full pages), and an
	// index entry points at a row with one integer, which for the first
	// replica of a file (most files have one) is its seq: 3 or 4 bytes. rep and seq are read from
	// it (virtual: not stored); a query of a replica's seqs reads a range
	// of key. id is compact.IDKey of the id (16 bytes for a ULID), rid
	// compact.RequestIDKey of the request id (16 bytes for a UUID).
	`CREATE TABLE records6 (
		key     INTEGER PRIMARY KEY,
		rep     INTEGER GENERATED ALWAYS AS ((key >> 40) + 1) VIRTUAL,
		seq     INTEGER GENERATED ALWAYS AS (key & 1099511627775) VIRTUAL,
		time_ns INTEGER NOT NULL,
		edge    INTEGER NOT NULL,
		shape   INTEGER NOT NULL,
		id      BLOB    NOT NULL,
		rid     BLOB    NOT NULL,
		path    TEXT    NOT NULL,
		rest    BLOB    NOT NULL
	)`,
}

// compactIndexes are made after the copy (one sort each, not a B-tree
// grown row by row). Ids are found by a 10-byte key, their first 6 bytes
// (a ULID's millisecond) and last 4 (the low bits of its entropy, which
// meshproof's monotonic ULIDs of one millisecond all differ in: their high
// bits are the millisecond's first draw), not the whole 16 bytes; the
// row's id is compared after, and Append keeps them unique (idsWhere). Newest-first pages read records_time or
// records_edge; neither holds the id (16 bytes an entry): records of the
// same nanosecond are put in id order from their rows, a sort of the ties
// only. A broad edge filter (more than mergeEdges) reads records_time and
// checks each row's edge. A request id is looked up per chain segment of 32,768 links,
// as in schema 2 (inserts land in the current segment), by its last four
// bytes (a request id's random part, for a UUID or a counter; the row's
// own rid is compared after).
var compactIndexes = []string{
	`CREATE INDEX records_id ON records (substr(id, 1, 6) || substr(id, -4))`,
	`CREATE INDEX records_time ON records (time_ns)`,
	`CREATE INDEX records_edge ON records (edge, time_ns)`,
	`CREATE INDEX records_request ON records (seq >> 15, substr(rid, -4))`,
}

// migrateCompact (to 6) copies the records of schema 5 into the compact
// table in key order, one page at a time, in the migration's
// transaction, then drops the old table and makes the indexes. A stored
// record that does not decode (edited behind the store's back) stops the
// migration: it names the record, and the file stays as it was.
func migrateCompact(ctx context.Context, tx *sql.Tx) error {
	shapes := map[[32]byte]int64{}
	reps := map[string]int64{}
	ins := `INSERT INTO records6 (key, time_ns, edge, shape, id, rid, path, rest) VALUES `
	chunk, err := tx.PrepareContext(ctx, ins+rows(migrateChunk, 8))
	if err != nil {
		return err
	}
	defer chunk.Close()
	one, err := tx.PrepareContext(ctx, ins+rows(1, 8))
	if err != nil {
		return err
	}
	defer one.Close()
	var afterRep string
	afterSeq := int64(-1) << 62
	for {
		page, err := tx.QueryContext(ctx, `SELECT replica, seq, id, time_ns, edge, hash, body FROM records
			WHERE (replica, seq) > (?, ?) ORDER BY replica, seq LIMIT 4096`, afterRep, afterSeq)
		if err != nil {
			return err
		}
		var args [][]any
		for page.Next() {
			var replica, id, hash string
			var seq, tns, edge int64
			var body []byte
			if err := page.Scan(&replica, &seq, &id, &tns, &edge, &hash, &body); err != nil {
				page.Close()
				return err
			}
			afterRep, afterSeq = replica, seq
			if seq <= 0 || seq > maxSeq {
				page.Close()
				return fmt.Errorf("replica %s: seq %d out of the range schema 6 keeps (1 to %d)", replica, seq, maxSeq)
			}
			r, err := evidence.DecodeStored(id, body, uint64(seq), hash)
			if err != nil {
				page.Close()
				return fmt.Errorf("replica %s, seq %d: %w (run meshproof verify with the meshproof that wrote the file)", replica, seq, err)
			}
			shape, rest, err := compact.SplitStored(r)
			if err != nil {
				page.Close()
				return fmt.Errorf("replica %s, seq %d, record %s: %w", replica, seq, id, err)
			}
			rep, ok := reps[replica]
			if !ok {
				if err := tx.QueryRowContext(ctx, `INSERT INTO replicas (name) VALUES (?) RETURNING num`, replica).Scan(&rep); err != nil {
					page.Close()
					return err
				}
				reps[replica] = rep
			}
			sum := sha256.Sum256(shape)
			n, ok := shapes[sum]
			if !ok {
				if err := tx.QueryRowContext(ctx, `INSERT INTO shapes (hash, method, body) VALUES (?, ?, ?) RETURNING id`,
					sum[:], r.Request.Method, packShape(shape)).Scan(&n); err != nil {
					page.Close()
					return err
				}
				shapes[sum] = n
			}
			// The time column as it was (a wrapped time of an older
			// meshproof stays what it is; the rest then holds the time).
			args = append(args, []any{keyOf(rep, seq), tns, edge, n, compact.IDKey(id), compact.RequestIDKey(r.RequestID), r.Request.Path, rest})
		}
		page.Close()
		if err := page.Err(); err != nil {
			return err
		}
		flat := make([]any, 0, 8*migrateChunk)
		if err := chunked(len(args), migrateChunk, func(start, end int, st *sql.Stmt) error {
			flat = flat[:0]
			for _, a := range args[start:end] {
				flat = append(flat, a...)
			}
			_, err := tx.StmtContext(ctx, st).ExecContext(ctx, flat...)
			return err
		}, chunk, one); err != nil {
			return err
		}
		if len(args) < 4096 {
			break
		}
	}
	stmts := append([]string{`DROP TABLE records`, `ALTER TABLE records6 RENAME TO records`}, compactIndexes...)
	// The tiles of level 0 are the records now; kept are those that
	// retention cut into (their removed leaves are nowhere else) and the
	// ones before (removed with their records already, or should a
	// checkpoint reach back into them).
	stmts = append(stmts, `DELETE FROM tlog_tiles WHERE level = 0 AND n > (SELECT (coalesce(
			(SELECT c.seq FROM chain_checkpoints AS c WHERE c.replica = tlog_tiles.replica), 0) - l.base) >> 8
		FROM tlog_logs AS l WHERE l.replica = tlog_tiles.replica)`)
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// migrateChunk is the rows per INSERT of the migration.
const migrateChunk = 64

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(compact.MaxShapeBytes))
)

// packShape is a shape as the shapes table keeps it: zstd.
func packShape(shape []byte) []byte { return zenc.EncodeAll(shape, make([]byte, 0, len(shape)/2)) }

// unpackShape is the shape packShape made b of, at most
// compact.MaxShapeBytes.
func unpackShape(b []byte) ([]byte, error) {
	shape, err := zdec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("compact: shape: zstd: %w", err)
	}
	return shape, nil
}

// idsWhere is the condition selecting the rows of n ids, parameters ?1
// to ?n, through records_id.
func idsWhere(n int) string {
	var b strings.Builder
	b.WriteString("substr(id, 1, 6) || substr(id, -4) IN (")
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "substr(?%d, 1, 6) || substr(?%d, -4)", i, i)
	}
	b.WriteString(") AND id IN (")
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "?%d", i)
	}
	b.WriteString(")")
	return b.String()
}

// idRangeSQL finds whether any stored id has a records_id key between ?1
// and ?2. The key is text (|| makes text of blobs, keeping their bytes),
// compared byte by byte: the bounds are given as strings.
const idRangeSQL = `SELECT 1 FROM records WHERE substr(id, 1, 6) || substr(id, -4) BETWEEN ?1 AND ?2 LIMIT 1`

// idIndexKey is the bytes of a blob id key's records_id key, its first 6
// and last 4 bytes; nil for a text key (substr counts its characters, not
// bytes).
func idIndexKey(key any) []byte {
	k, ok := key.([]byte)
	if !ok || len(k) < 10 {
		return nil
	}
	return append(k[:6:6], k[len(k)-4:]...)
}

// row is a record's row as the readers select it (rowCols).
type row struct {
	seq, timeNS, shape int64
	id, rid            any
	path               string
	rest               []byte
}

// rowCols are the columns of a row, for a table aliased r or none.
const rowCols = `seq, time_ns, shape, id, rid, path, rest`

func (w *row) dest() []any {
	return []any{&w.seq, &w.timeNS, &w.shape, &w.id, &w.rid, &w.path, &w.rest}
}

// outside is what the row's columns hold of its record.
func (w *row) outside() (compact.Outside, error) {
	id, err := compact.IDOfKey(w.id)
	if err != nil {
		return compact.Outside{}, fmt.Errorf("seq %d: %w", w.seq, err)
	}
	rid, err := compact.RequestIDOfKey(w.rid)
	if err != nil {
		return compact.Outside{}, fmt.Errorf("record %s: %w", id, err)
	}
	return compact.Outside{ID: id, TimeNS: w.timeNS, RequestID: rid, Path: w.path, Seq: uint64(w.seq)}, nil
}

// join is the record of a row, its shape from shapes (loaded through q
// when missing). A record that no longer matches its hash's check comes
// back with an error wrapping compact.ErrCheck.
func join(ctx context.Context, q querier, shapes *compact.Shapes, w *row) (*evidence.Record, error) {
	out, err := w.outside()
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: %w", err)
	}
	r, err := shapes.Join(w.shape, w.rest, out, shapeLoader(ctx, q))
	if err != nil {
		return r, fmt.Errorf("evidence sqlite: record %s: %w", out.ID, err)
	}
	return r, nil
}

// shapeLoader reads a shape through q.
func shapeLoader(ctx context.Context, q querier) func(id int64) ([]byte, error) {
	return func(id int64) ([]byte, error) {
		var body []byte
		if err := q.QueryRowContext(ctx, `SELECT body FROM shapes WHERE id = ?`, id).Scan(&body); err != nil {
			return nil, fmt.Errorf("shape %d: %w", id, err)
		}
		return unpackShape(body)
	}
}

// readJSON is the JSON form of a row's record as the API serves it
// (evidence.RecordJSON), for the readers (see read).
func readJSON(ctx context.Context, q querier, shapes *compact.Shapes, w *row) ([]byte, error) {
	out, err := w.outside()
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: %w", err)
	}
	_, js, err := shapes.JoinJSON(w.shape, w.rest, out, shapeLoader(ctx, q))
	if err != nil && !errors.Is(err, compact.ErrCheck) {
		return nil, fmt.Errorf("evidence sqlite: record %s: %w", out.ID, err)
	}
	return js, nil
}

// read is join for the readers: a record edited behind the store's back
// (ErrCheck) is served as it now reads; Verify reports it.
func read(ctx context.Context, q querier, shapes *compact.Shapes, w *row) (*evidence.Record, error) {
	r, err := join(ctx, q, shapes, w)
	if err != nil && !errors.Is(err, compact.ErrCheck) {
		return nil, err
	}
	return r, nil
}

// A row's key: (the replica's number - 1) << seqBits | seq.
const (
	seqBits = 40
	maxSeq  = 1<<seqBits - 1
)

func keyOf(rep, seq int64) int64 { return (rep-1)<<seqBits | seq }

// repKey is the key of seq 0 of the replica named by parameter ?1: its
// rows are the keys (repKey, repKey + maxSeq].
const repKey = `(((SELECT num FROM replicas WHERE name = ?1) - 1) << 40)`

// repRange is a condition on key: the replica's seqs after ?2 up to ?3.
const repRange = `key > ` + repKey + ` + ?2 AND key <= ` + repKey + ` + ?3`

// storedHash is the chain hash of replica's record at seq as stored: a
// quarantined record's, or the stored record's (recomputed for version
// 2); found is false when neither holds the seq.
func (s *Store) storedHash(ctx context.Context, q querier, replica string, seq uint64) (hash string, found bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT hash FROM quarantine WHERE replica = ? AND seq = ?`, replica, int64(seq)).Scan(&hash)
	if err == nil {
		return hash, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", false, err
	}
	var w row
	err = q.QueryRowContext(ctx, `SELECT `+rowCols+` FROM records WHERE key = `+repKey+` + ?2`, replica, int64(seq)).Scan(w.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	r, err := read(ctx, q, s.shapes, &w)
	if err != nil {
		return "", false, err
	}
	return r.Chain.Hash, true, nil
}
