package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// DeleteBefore removes each replica's chain up to its first record that
// must stay (see retentionCut), oldest first, at most batch records per transaction; each
// transaction also moves the chain's checkpoint to the last link it
// removed, so the checkpoint and the remaining chain agree at every
// moment, even if retention stops halfway. The cut is the start of the
// hour t falls in: first the replica's rollups of every hour before it
// are sealed (evidence.RollupSeal), then their records go. Rollup buckets
// that begin before rollupsBefore go too, with their seals. A zero time
// leaves that part alone.
func (s *Store) DeleteBefore(ctx context.Context, t, rollupsBefore time.Time, batch int) (int64, error) {
	s.settle(ctx)
	if batch <= 0 {
		batch = 1000
	}
	var total int64
	if !t.IsZero() {
		replicas, err := s.Replicas(ctx)
		if err != nil {
			return 0, err
		}
		until := evidence.SealsUntil(t)
		for _, replica := range replicas {
			if err := s.seal(ctx, replica, until); err != nil {
				return total, err
			}
			n, err := s.deleteChainBefore(ctx, replica, evidence.Nanos(evidence.HourStart(until)), batch)
			total += n
			if err != nil {
				return total, err
			}
		}
	}
	if !rollupsBefore.IsZero() {
		if err := s.deleteRollupsBefore(ctx, floorDiv(rollupsBefore.Unix(), 60)); err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *Store) deleteChainBefore(ctx context.Context, replica string, tns int64, batch int) (int64, error) {
	cut, err := s.retentionCut(ctx, replica, tns)
	if err != nil || !cut.Valid {
		return 0, err
	}
	var total int64
	for {
		n, err := s.deleteChainBatch(ctx, replica, cut.Int64, batch)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// retentionCut is the last seq of replica retention may remove: the one
// before its first record that must stay, or its last record when none
// must. A record must stay when its time is at or after the cut, or when
// its stored time is before evidence.MinTime: a time an older meshproof
// stored wrapped (a record stamped beyond 2262) or one edited in the
// store, whose age is unknown. A record's time, which an upload chooses,
// never takes the records after it in the chain along.
func (s *Store) retentionCut(ctx context.Context, replica string, tns int64) (sql.NullInt64, error) {
	// One statement, one snapshot: a record written meanwhile comes after
	// the last seq it reads. The first subquery walks the chain from its
	// start (the primary key; +time_ns keeps the planner off the time
	// index) and stops at the first record to keep: it reads the records
	// retention removes, and one more.
	var cut sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(
			(SELECT seq FROM records WHERE `+repRange+` AND (+time_ns >= ?4 OR +time_ns < ?5) ORDER BY key LIMIT 1) - 1,
			(SELECT max(key) & 1099511627775 FROM records WHERE `+repRange+`))`,
		replica, 0, maxSeq, tns, evidence.MinTimeNS).Scan(&cut); err != nil {
		return cut, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	return cut, nil
}

// deleteChainBatch removes up to batch records of replica after its
// checkpoint and at most seq cut, and moves the checkpoint to the last.
func (s *Store) deleteChainBatch(ctx context.Context, replica string, cut int64, batch int) (int64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	defer tx.Rollback()
	start, err := link(tx.QueryRowContext(ctx, `SELECT seq, hash FROM chain_checkpoints WHERE replica = ?`, replica))
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	// The batch's last record: the batch-th after the checkpoint, or the
	// last before the cut when fewer remain.
	var seq int64
	err = tx.QueryRowContext(ctx, `SELECT seq FROM records WHERE `+repRange+`
		ORDER BY key LIMIT 1 OFFSET ?4`, replica, int64(start.Seq), cut, batch-1).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRowContext(ctx, `SELECT seq FROM records WHERE `+repRange+`
			ORDER BY key DESC LIMIT 1`, replica, int64(start.Seq), cut).Scan(&seq)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	// The hash of the last record removed: the chain's checkpoint.
	hash, _, err := s.storedHash(ctx, tx, replica, uint64(seq))
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	// The log's level-0 tiles of removed records go with them (the tiles
	// above stand for them in every newer record's proof); the part of the
	// tile the cut ends in is kept.
	base, _, hasLog, err := logBase(ctx, tx, replica)
	if err != nil {
		return 0, err
	}
	if hasLog && uint64(seq) > base {
		if err := s.keepLeafTile(ctx, tx, replica, base, uint64(seq)); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tlog_tiles WHERE replica = ? AND level = 0 AND n < ?`,
			replica, (uint64(seq)-base)>>evidence.TileHeight); err != nil {
			return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM records WHERE `+repRange, replica, 0, seq)
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	// The hash as the stored record says (for a v1 chain, the one Verify
	// checks the next record's prev_hash against).
	if _, err := tx.ExecContext(ctx, `INSERT INTO chain_checkpoints (replica, seq, hash) VALUES (?, ?, ?)
		ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`,
		replica, seq, hash); err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("evidence sqlite: retention of %s: %w", replica, err)
	}
	return res.RowsAffected()
}

// rollupWindow is how many minutes of buckets of each span one retention
// transaction removes: some thousands of rows, not millions.
var rollupWindow = map[int64]int64{1: 60, 60: 1440, 1440: 43200, 10080: 100800}

// deleteRollupsBefore moves the horizon to minute cutoff and removes the
// buckets of every span that begin before it (queries read the remaining
// minutes of a bucket cut in two, never a count of minutes that are gone),
// and the seals of the hours whose minutes are gone in part or whole.
func (s *Store) deleteRollupsBefore(ctx context.Context, cutoff int64) error {
	if err := s.setHorizon(ctx, cutoff); err != nil {
		return err
	}
	for _, span := range spans {
		last := cutoff - 1 // the last bucket start to remove
		for {
			var first sql.NullInt64
			if err := s.r.QueryRowContext(ctx, `SELECT min(minute) FROM rollups WHERE span = ?`, span).Scan(&first); err != nil {
				return fmt.Errorf("evidence sqlite: rollup retention: %w", err)
			}
			if !first.Valid || first.Int64 > last {
				break
			}
			end := min(first.Int64+rollupWindow[span]-1, last)
			if err := s.deleteRollups(ctx, span, first.Int64, end); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) setHorizon(ctx context.Context, cutoff int64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.ExecContext(ctx, `INSERT INTO rollup_horizon (one, minute) VALUES (1, ?)
		ON CONFLICT (one) DO UPDATE SET minute = max(minute, excluded.minute)`, cutoff); err != nil {
		return fmt.Errorf("evidence sqlite: rollup retention: %w", err)
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM rollup_seals WHERE hour * 60 < (SELECT minute FROM rollup_horizon)`); err != nil {
		return fmt.Errorf("evidence sqlite: rollup retention: %w", err)
	}
	return nil
}

func (s *Store) deleteRollups(ctx context.Context, span, first, last int64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.ExecContext(ctx, `DELETE FROM rollups WHERE span = ? AND minute >= ? AND minute <= ?`,
		span, first, last); err != nil {
		return fmt.Errorf("evidence sqlite: rollup retention: %w", err)
	}
	return nil
}
