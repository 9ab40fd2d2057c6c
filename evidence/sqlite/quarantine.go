package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// classify marks the errors SQLite gives for the data itself as permanent
// (see evidence.ErrPermanent): SQLITE_CONSTRAINT (a record id already
// stored), SQLITE_MISMATCH and SQLITE_TOOBIG. Everything else (SQLITE_BUSY
// and LOCKED, I/O errors, a full disk, a read-only file) is transient, and
// a chain conflict stays one.
func classify(err error) error {
	var se *sqlite.Error
	if err == nil || errors.Is(err, evidence.ErrChainConflict) || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG:
		return evidence.Permanent(err)
	}
	return err
}

// Quarantine keeps rec, refused for reason, in the quarantine table at its
// place in the chain, and moves the head past it (see evidence.Writer).
func (s *Store) Quarantine(ctx context.Context, rec *evidence.Record, reason string) error {
	s.settle(ctx)
	err := s.quarantineDirect(ctx, rec, reason)
	if err == nil {
		s.appended.Store(true) // for Sync
		s.noteStored(rec.Replica, rec.Chain.Seq)
	}
	return err
}

// quarantineDirect is Quarantine without settling the journal first.
func (s *Store) quarantineDirect(ctx context.Context, rec *evidence.Record, reason string) error {
	replica := rec.Replica
	if replica == "" {
		return errors.New("evidence sqlite: quarantine: a record without a replica")
	}
	e := storekit.QuarantineEntry(rec, reason, time.Now())
	s.wmu.Lock()
	defer s.wmu.Unlock()
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	defer conn.Close()
	err = s.quarantine(ctx, conn, rec, e)
	if err != nil && !errors.Is(err, evidence.ErrChainConflict) {
		conn.Raw(func(any) error { return driver.ErrBadConn })
		return fmt.Errorf("evidence sqlite: quarantine of record %s (seq %d of %s): %w", e.ID, e.Seq, replica, err)
	}
	return err
}

func (s *Store) quarantine(ctx context.Context, conn *sql.Conn, rec *evidence.Record, e evidence.Quarantined) error {
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	head, err := link(tx.StmtContext(ctx, s.st.head).QueryRowContext(ctx, e.Replica))
	if err != nil {
		return err
	}
	c := rec.Chain
	if c.Seq != head.Seq+1 || (c.Version != evidence.CanonicalV2 && c.PrevHash != head.Hash) {
		if c.Seq <= head.Seq {
			// Quarantined (or stored) before: a commit in doubt.
			hash, found, err := s.storedHash(ctx, tx, e.Replica, c.Seq)
			if err != nil {
				return err
			}
			if found && hash == c.Hash {
				return nil
			}
		}
		return fmt.Errorf("%w: replica %s: the quarantined record is seq %d after %.12s, the store's head is seq %d (%.12s)",
			evidence.ErrChainConflict, e.Replica, c.Seq, c.PrevHash, head.Seq, head.Hash)
	}
	body := e.Record
	if body == nil {
		body = []byte{}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO quarantine (replica, seq, id, prev_hash, hash, body, reason, quarantined_ns)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, e.Replica, int64(e.Seq), e.ID, e.PrevHash, e.Hash, body, e.Reason, e.At.UnixNano()); err != nil {
		return err
	}
	// Its leaf stays in the log: the log is the chain's order.
	s.pendingLog, s.pendingEdge = "", nil
	if err := s.appendLog(ctx, tx, head, []*evidence.Record{rec}, nil); err != nil {
		return err
	}
	root, err := s.logRoot()
	if err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, s.st.setHead).ExecContext(ctx, e.Replica, int64(c.Seq), c.Hash, root); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if s.pendingEdge != nil {
		s.logs[s.pendingLog] = s.pendingEdge
		s.pendingLog, s.pendingEdge = "", nil
	}
	return nil
}

// Quarantined lists the quarantined records of replica ("": all), in seq
// order.
func (s *Store) Quarantined(ctx context.Context, replica string) ([]evidence.Quarantined, error) {
	s.settle(ctx)
	rows, err := s.r.QueryContext(ctx, `SELECT replica, seq, id, prev_hash, hash, body, reason, quarantined_ns
		FROM quarantine WHERE ?1 = '' OR replica = ?1 ORDER BY replica, seq`, replica)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: quarantined: %w", err)
	}
	defer rows.Close()
	var out []evidence.Quarantined
	for rows.Next() {
		var e evidence.Quarantined
		var seq, at int64
		if err := rows.Scan(&e.Replica, &seq, &e.ID, &e.PrevHash, &e.Hash, &e.Record, &e.Reason, &at); err != nil {
			return nil, fmt.Errorf("evidence sqlite: quarantined: %w", err)
		}
		e.Seq, e.At = uint64(seq), time.Unix(0, at).UTC()
		if len(e.Record) == 0 {
			e.Record = nil
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence sqlite: quarantined: %w", err)
	}
	return out, nil
}
