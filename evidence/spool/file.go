package spool

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// schema is the spool's own: the records waiting for the store, keyed by
// their seq in the replica's chain (which keeps them in order and makes a
// retried write recognisable), and the last head the store is known to
// have, per replica, for a start while the store is down. A spooled record
// with a reason is one the store refused for its content: the drainer puts
// it in the store's quarantine rather than its records.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS spooled (
		seq     INTEGER PRIMARY KEY,
		replica TEXT NOT NULL,
		hash    TEXT NOT NULL,
		record  BLOB NOT NULL, -- json.Marshal of the record, chain included
		reason  TEXT           -- set: to be quarantined, refused for this
	)`,
	`CREATE TABLE IF NOT EXISTS known_heads (
		replica TEXT PRIMARY KEY,
		seq     INTEGER NOT NULL,
		hash    TEXT NOT NULL
	) WITHOUT ROWID`,
	`PRAGMA user_version = 2`, // 2: spooled.reason (added to a version 1 file when opened)
}

// file is the spool's SQLite file, written through one connection.
type file struct {
	path    string
	db      *sql.DB
	durable bool
}

// openFile opens (creating it if needed, readable by its owner only:
// evidence names every client of the mesh) the spool file at path.
func openFile(ctx context.Context, path string, durable bool) (*file, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("spool %q: want the path of a file (spooled evidence must outlive the process)", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if err := sqlite.CreatePrivate(abs); err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	// One connection: the spool has one writer at a time, and each write
	// sets synchronous on the connection it commits on.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	f := &file{path: abs, db: db, durable: durable}
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("spool %s: %w", path, err)
		}
	}
	// A spool of user_version 1 has no reason column yet.
	var hasReason int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('spooled') WHERE name = 'reason'").Scan(&hasReason); err != nil {
		db.Close()
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if hasReason == 0 {
		if _, err := db.ExecContext(ctx, "ALTER TABLE spooled ADD COLUMN reason TEXT"); err != nil {
			db.Close()
			return nil, fmt.Errorf("spool %s: %w", path, err)
		}
	}
	return f, nil
}

func (f *file) close() error { return f.db.Close() }

// state is what the file holds for replica: the records waiting, the last
// of them, the replicas they belong to, and the last known head.
type state struct {
	depth    int64
	tail     evidence.Link
	replicas []string
	known    evidence.Link
	hasKnown bool
}

func (f *file) state(ctx context.Context, replica string) (state, error) {
	var st state
	rows, err := f.db.QueryContext(ctx, "SELECT DISTINCT replica FROM spooled")
	if err != nil {
		return st, fmt.Errorf("spool %s: %w", f.path, err)
	}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return st, fmt.Errorf("spool %s: %w", f.path, err)
		}
		st.replicas = append(st.replicas, r)
	}
	rows.Close()
	var seq sql.NullInt64
	var hash sql.NullString
	err = f.db.QueryRowContext(ctx, "SELECT count(*), max(seq), (SELECT hash FROM spooled ORDER BY seq DESC LIMIT 1) FROM spooled").
		Scan(&st.depth, &seq, &hash)
	if err != nil {
		return st, fmt.Errorf("spool %s: %w", f.path, err)
	}
	st.tail = evidence.Link{Seq: uint64(seq.Int64), Hash: hash.String}
	var kseq int64
	err = f.db.QueryRowContext(ctx, "SELECT seq, hash FROM known_heads WHERE replica = ?", replica).Scan(&kseq, &st.known.Hash)
	switch {
	case err == nil:
		st.known.Seq, st.hasKnown = uint64(kseq), true
	case !errors.Is(err, sql.ErrNoRows):
		return st, fmt.Errorf("spool %s: %w", f.path, err)
	}
	return st, rows.Err()
}

// write runs fn in one transaction, committed with synchronous FULL when
// full is set (the commit reaches the disk before it returns), NORMAL
// otherwise (in WAL mode: atomic, and it survives a crash of the process,
// not necessarily of the machine).
func (f *file) write(ctx context.Context, full bool, fn func(tx *sql.Tx) error) error {
	conn, err := f.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("spool %s: %w", f.path, err)
	}
	defer conn.Close()
	sync := "NORMAL"
	if full {
		sync = "FULL"
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = "+sync); err != nil {
		return fmt.Errorf("spool %s: %w", f.path, err)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("spool %s: %w", f.path, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("spool %s: commit: %w", f.path, err)
	}
	return nil
}

// add writes batch to the spool in one transaction, durably when the spool
// was opened so. A reason marks the records as refused by the store, to be
// quarantined there.
func (f *file) add(ctx context.Context, batch []*evidence.Record, reason string) error {
	var why any
	if reason != "" {
		why = reason
	}
	return f.write(ctx, f.durable, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, "INSERT INTO spooled (seq, replica, hash, record, reason) VALUES (?, ?, ?, ?, ?)")
		if err != nil {
			return fmt.Errorf("spool %s: %w", f.path, err)
		}
		defer st.Close()
		for _, r := range batch {
			body, err := evidence.MarshalJSON(r)
			if err != nil {
				return fmt.Errorf("spool: encoding record %s: %w", r.ID, err)
			}
			if _, err := st.ExecContext(ctx, int64(r.Chain.Seq), r.Replica, r.Chain.Hash, body, why); err != nil {
				return fmt.Errorf("spool %s: %w", f.path, err)
			}
		}
		return nil
	})
}

// hashAt is the hash of the spooled record at seq ("" when there is none).
func (f *file) hashAt(ctx context.Context, seq uint64) (string, error) {
	var hash string
	err := f.db.QueryRowContext(ctx, "SELECT hash FROM spooled WHERE seq = ?", int64(seq)).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("spool %s: %w", f.path, err)
	}
	return hash, nil
}

// first returns up to n spooled records, oldest first, decoded, and the
// reasons of those to be quarantined (by seq).
func (f *file) first(ctx context.Context, n int) ([]*evidence.Record, map[uint64]string, error) {
	rows, err := f.db.QueryContext(ctx, "SELECT record, reason FROM spooled ORDER BY seq LIMIT ?", n)
	if err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", f.path, err)
	}
	defer rows.Close()
	var out []*evidence.Record
	var refused map[uint64]string
	for rows.Next() {
		var body []byte
		var reason sql.NullString
		if err := rows.Scan(&body, &reason); err != nil {
			return nil, nil, fmt.Errorf("spool %s: %w", f.path, err)
		}
		r := new(evidence.Record)
		if err := json.Unmarshal(body, r); err != nil {
			return nil, nil, fmt.Errorf("spool %s: a spooled record does not decode: %w", f.path, err)
		}
		if reason.Valid {
			if refused == nil {
				refused = map[uint64]string{}
			}
			refused[r.Chain.Seq] = reason.String
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("spool %s: %w", f.path, err)
	}
	return out, refused, nil
}

// forget removes the spooled records up to seq (they are in the store) and
// records head as the store's, in one transaction; it returns how many
// records it removed.
func (f *file) forget(ctx context.Context, seq uint64, replica string, head evidence.Link) (int64, error) {
	var n int64
	err := f.write(ctx, false, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM spooled WHERE seq <= ?", int64(seq))
		if err != nil {
			return fmt.Errorf("spool %s: %w", f.path, err)
		}
		if n, err = res.RowsAffected(); err != nil {
			return fmt.Errorf("spool %s: %w", f.path, err)
		}
		return setKnown(ctx, tx, replica, head)
	})
	return n, err
}

// saveKnown records head as the last head the store is known to have.
func (f *file) saveKnown(ctx context.Context, replica string, head evidence.Link) error {
	return f.write(ctx, false, func(tx *sql.Tx) error { return setKnown(ctx, tx, replica, head) })
}

func setKnown(ctx context.Context, tx *sql.Tx, replica string, head evidence.Link) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO known_heads (replica, seq, hash) VALUES (?, ?, ?)
		ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`, replica, int64(head.Seq), head.Hash)
	if err != nil {
		return fmt.Errorf("spool: recording the store's head: %w", err)
	}
	return nil
}
