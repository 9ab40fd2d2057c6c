package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// classify marks the errors PostgreSQL gives for the data itself as
// permanent (see evidence.ErrPermanent): SQLSTATE classes 22 (data
// exception), 23 (integrity constraint: an id already stored) and 54
// (program limit: a row or index entry too large). 23514, a row no
// partition takes, is not: Append makes the partition and tries again.
// Everything else (connection, timeouts, 40001 and 40P01, 42 schema and
// privileges, 53 resources, 57 shutdown) is transient.
func classify(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code == "23514" {
		return err
	}
	switch pe.Code[:min(2, len(pe.Code))] {
	case "22", "23", "54":
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
		s.noteStored(rec.Replica, rec.Chain.Seq)
	}
	return err
}

// quarantineDirect is Quarantine without settle (applyPending's own).
func (s *Store) quarantineDirect(ctx context.Context, rec *evidence.Record, reason string) error {
	replica := rec.Replica
	if replica == "" {
		return errors.New("postgres: quarantine: a record without a replica")
	}
	e := storekit.QuarantineEntry(rec, reason, time.Now())
	var edge *evidence.TreeEdge
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if s.forceSync {
			if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
				return err
			}
		}
		var head evidence.Link
		var seq int64
		err := tx.QueryRow(ctx, `INSERT INTO chain_heads AS h (replica, seq, hash) VALUES ($1, 0, '')
			ON CONFLICT (replica) DO UPDATE SET seq = h.seq RETURNING seq, hash`, replica).Scan(&seq, &head.Hash)
		if err != nil {
			return fmt.Errorf("locking the head of %s: %w", replica, err)
		}
		head.Seq = uint64(seq)
		c := rec.Chain
		if c.Seq != head.Seq+1 || (c.Version != evidence.CanonicalV2 && c.PrevHash != head.Hash) {
			if c.Seq <= head.Seq {
				// Quarantined (or stored) before: a commit in doubt.
				hash, err := s.hashAt(ctx, tx, replica, int64(c.Seq), nil)
				if err != nil {
					return err
				}
				if hash != "" && hash == c.Hash {
					return nil
				}
			}
			return fmt.Errorf("%w: replica %s: the quarantined record is seq %d (prev_hash %s), the chain's head is seq %d (%s)",
				evidence.ErrChainConflict, replica, c.Seq, short(c.PrevHash), head.Seq, short(head.Hash))
		}
		body := e.Record
		if body == nil {
			body = []byte{}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO quarantine (replica, seq, id, prev_hash, hash, body, reason, quarantined_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, replica, int64(e.Seq), e.ID, e.PrevHash, e.Hash, body, e.Reason, e.At); err != nil {
			return err
		}
		// Its leaf stays in the log: the log is the chain's order.
		var root []byte
		b := &pgx.Batch{}
		if root, edge, err = s.appendLog(ctx, tx, head, []*evidence.Record{rec}, nil, b); err != nil {
			return err
		}
		b.Queue("UPDATE chain_heads SET seq = $2, hash = $3, root = $4, updated_at = now() WHERE replica = $1",
			replica, int64(c.Seq), c.Hash, root)
		return tx.SendBatch(ctx, b).Close()
	})
	if err == nil && edge != nil {
		s.edges.put(replica, edge)
	}
	if err != nil && !errors.Is(err, evidence.ErrChainConflict) {
		return fmt.Errorf("postgres: quarantine of record %s (seq %d of %s): %w", e.ID, e.Seq, replica, err)
	}
	return err
}

// Quarantined lists the quarantined records of replica ("": all), in seq
// order.
func (s *Store) Quarantined(ctx context.Context, replica string) ([]evidence.Quarantined, error) {
	s.settle(ctx)
	rows, err := s.pool.Query(ctx, `SELECT replica, seq, id, prev_hash, hash, body, reason, quarantined_at
		FROM quarantine WHERE $1 = '' OR replica = $1 ORDER BY replica, seq`, replica)
	if err != nil {
		return nil, fmt.Errorf("postgres: quarantined: %w", err)
	}
	var out []evidence.Quarantined
	var e evidence.Quarantined
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&e.Replica, &seq, &e.ID, &e.PrevHash, &e.Hash, &e.Record, &e.Reason, &e.At}, func() error {
		e.Seq, e.At = uint64(seq), e.At.UTC()
		if len(e.Record) == 0 {
			e.Record = nil
		} else {
			e.Record = append([]byte(nil), e.Record...)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: quarantined: %w", err)
	}
	return out, nil
}
