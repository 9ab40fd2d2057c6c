package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/meshproof/meshproof/evidence"
)

// sealMigration (5) keeps the rollup seals (see evidence.RollupSeal) and
// the rollups' retention horizon.
var sealMigration = []string{
	// Where each replica's seals stand: hours seal_first to seal_through-1
	// are sealed, seal_chain is the last seal. Append reads seal_through:
	// a record of a sealed hour is not counted in the rollups any more.
	`ALTER TABLE chain_heads ADD COLUMN seal_first INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE chain_heads ADD COLUMN seal_through INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE chain_heads ADD COLUMN seal_chain BLOB NOT NULL DEFAULT x''`,
	`CREATE TABLE rollup_seals (
		replica TEXT    NOT NULL,
		hour    INTEGER NOT NULL,
		digest  BLOB    NOT NULL,
		prev    BLOB    NOT NULL,
		chain   BLOB    NOT NULL,
		PRIMARY KEY (replica, hour)
	) WITHOUT ROWID`,
	// Buckets that begin before this minute were removed by retention (of
	// every span: an hour, day or week only partly kept is gone, and its
	// remaining minutes answer for it). A store that kept every span of a
	// bucket its minutes have partly left starts at its first minute.
	`CREATE TABLE rollup_horizon (
		one    INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
		minute INTEGER NOT NULL
	)`,
	`INSERT INTO rollup_horizon (one, minute) SELECT 1, min(minute) FROM rollups WHERE span = 1 HAVING count(*) > 0`,
}

// sealHoursPerTx bounds the hours one transaction seals (the first
// retention after an upgrade seals every hour the store holds).
const sealHoursPerTx = 24

// seal seals replica's rollups of every hour before until (Unix hours)
// that is not sealed yet: retention calls it before it removes the records
// of those hours.
func (s *Store) seal(ctx context.Context, replica string, until int64) error {
	for {
		done, err := s.sealSome(ctx, replica, until)
		if err != nil {
			return fmt.Errorf("evidence sqlite: sealing the rollups of %s: %w", replica, err)
		}
		if done {
			return nil
		}
	}
}

func (s *Store) sealSome(ctx context.Context, replica string, until int64) (bool, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	head, err := sealHead(ctx, tx, replica)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil // no chain (yet)
	}
	if err != nil {
		return false, err
	}
	next := head.Through
	if next == 0 {
		// The first seal: from the replica's first minute still whole.
		var first sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT min(b.minute) FROM rollups AS b JOIN rollup_keys AS k ON k.id = b.key
			WHERE b.span = 1 AND k.replica = ? AND b.minute >= coalesce((SELECT minute FROM rollup_horizon), ?)`,
			replica, int64(math.MinInt64)).Scan(&first); err != nil {
			return false, err
		}
		next = until - 1
		if first.Valid {
			next = min(next, floorDiv(first.Int64, 60))
		}
	}
	if next >= until {
		return true, nil
	}
	end := min(until, next+sealHoursPerTx)
	for h := next; h < end; h++ {
		buckets, err := minuteBuckets(ctx, tx, replica, h)
		if err != nil {
			return false, err
		}
		var seal evidence.RollupSeal
		seal, head = head.Seal(h, buckets)
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollup_seals (replica, hour, digest, prev, chain) VALUES (?, ?, ?, ?, ?)`,
			replica, h, seal.Digest[:], seal.Prev[:], seal.Chain[:]); err != nil {
			return false, err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE chain_heads SET seal_first = ?, seal_through = ?, seal_chain = ? WHERE replica = ?`,
		head.First, head.Through, head.Chain[:], replica); err != nil {
		return false, err
	}
	return end == until, tx.Commit()
}

// sealHead reads replica's seal head; sql.ErrNoRows when it has no chain.
func sealHead(ctx context.Context, q querier, replica string) (evidence.SealHead, error) {
	var first, through int64
	var chain []byte
	if err := q.QueryRowContext(ctx, `SELECT seal_first, seal_through, seal_chain FROM chain_heads WHERE replica = ?`,
		replica).Scan(&first, &through, &chain); err != nil {
		return evidence.SealHead{}, err
	}
	return evidence.MakeSealHead(replica, first, through, chain)
}

// bucketColumns read a rollups row joined with its key (as b and k).
const bucketColumns = `b.span, b.minute, k.replica, k.source, k.dst_host, k.dst_principal, k.verdict, k.allowed,
	b.count, b.first_ns, b.last_ns, b.example_id`

func scanBucket(rows *sql.Rows) (evidence.RollupBucket, error) {
	var b evidence.RollupBucket
	err := rows.Scan(&b.Span, &b.Minute, &b.Replica, &b.Source, &b.DestinationHost, &b.DestinationPrincipal,
		&b.Verdict, &b.Allowed, &b.Count, &b.FirstNS, &b.LastNS, &b.Example)
	return b, err
}

// minuteBuckets reads replica's minute buckets of an hour.
func minuteBuckets(ctx context.Context, q querier, replica string, hour int64) ([]evidence.RollupBucket, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+bucketColumns+` FROM rollups AS b JOIN rollup_keys AS k ON k.id = b.key
		WHERE b.span = 1 AND b.minute >= ? AND b.minute < ? AND k.replica = ?`, hour*60, hour*60+60, replica)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []evidence.RollupBucket
	for rows.Next() {
		b, err := scanBucket(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// RollupBuckets reads the buckets that begin in [fromHour, toHour) (see
// evidence.RollupAuditor), a day at a time, in one snapshot.
func (s *Store) RollupBuckets(ctx context.Context, fromHour, toHour int64, fn func(evidence.RollupBucket) error) error {
	s.settle(ctx)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	defer tx.Rollback()
	// Where the buckets are: the days in between are read, not all of time.
	var lo, hi sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT min(m), max(m) FROM (SELECT min(minute) AS m FROM rollups WHERE span = ?1
		UNION ALL SELECT max(minute) FROM rollups WHERE span = ?1 UNION ALL SELECT min(minute) FROM rollups WHERE span = ?2
		UNION ALL SELECT max(minute) FROM rollups WHERE span = ?2 UNION ALL SELECT min(minute) FROM rollups WHERE span = ?3
		UNION ALL SELECT max(minute) FROM rollups WHERE span = ?3 UNION ALL SELECT min(minute) FROM rollups WHERE span = ?4
		UNION ALL SELECT max(minute) FROM rollups WHERE span = ?4)`, spans[0], spans[1], spans[2], spans[3]).Scan(&lo, &hi); err != nil {
		return fmt.Errorf("evidence sqlite: reading the rollups: %w", err)
	}
	if !lo.Valid {
		return nil
	}
	from, to := max(fromHour, floorDiv(lo.Int64, 60)), min(toHour, floorDiv(hi.Int64, 60)+1)
	const day = 24
	for h := from; h < to; h += day {
		if err := s.bucketsOf(ctx, tx, h*60, min(h+day, to)*60, fn); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) bucketsOf(ctx context.Context, tx *sql.Tx, from, to int64, fn func(evidence.RollupBucket) error) error {
	rows, err := tx.QueryContext(ctx, `SELECT `+bucketColumns+` FROM rollups AS b JOIN rollup_keys AS k ON k.id = b.key
		WHERE b.span IN (1, 60, 1440, 10080) AND b.minute >= ? AND b.minute < ? ORDER BY b.minute`, from, to)
	if err != nil {
		return fmt.Errorf("evidence sqlite: reading the rollups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		b, err := scanBucket(rows)
		if err != nil {
			return fmt.Errorf("evidence sqlite: reading the rollups: %w", err)
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("evidence sqlite: reading the rollups: %w", err)
	}
	return nil
}

// RollupSeals reads replica's seals (see evidence.RollupAuditor).
func (s *Store) RollupSeals(ctx context.Context, replica string, fn func(evidence.RollupSeal) error) (evidence.SealHead, error) {
	s.settle(ctx)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return evidence.SealHead{}, fmt.Errorf("evidence sqlite: %w", err)
	}
	defer tx.Rollback()
	head, err := sealHead(ctx, tx, replica)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return head, fmt.Errorf("evidence sqlite: the rollup seals of %s: %w", replica, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT hour, digest, prev, chain FROM rollup_seals WHERE replica = ? ORDER BY hour`, replica)
	if err != nil {
		return head, fmt.Errorf("evidence sqlite: the rollup seals of %s: %w", replica, err)
	}
	defer rows.Close()
	for rows.Next() {
		var seal evidence.RollupSeal
		var digest, prev, chain []byte
		if err := rows.Scan(&seal.Hour, &digest, &prev, &chain); err != nil {
			return head, fmt.Errorf("evidence sqlite: the rollup seals of %s: %w", replica, err)
		}
		copy(seal.Digest[:], digest)
		copy(seal.Prev[:], prev)
		copy(seal.Chain[:], chain)
		if err := fn(seal); err != nil {
			return head, err
		}
	}
	if err := rows.Err(); err != nil {
		return head, fmt.Errorf("evidence sqlite: the rollup seals of %s: %w", replica, err)
	}
	return head, nil
}

// RollupBounds returns the rollups' horizon and closed mark (see
// evidence.RollupAuditor).
func (s *Store) RollupBounds(ctx context.Context) (horizon, closed int64, err error) {
	s.settle(ctx)
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce((SELECT minute FROM rollup_horizon), ?), (SELECT minute FROM rollup_closed)`,
		int64(math.MinInt64)).Scan(&horizon, &closed); err != nil {
		return 0, 0, fmt.Errorf("evidence sqlite: reading the rollups' bounds: %w", err)
	}
	return horizon, closed, nil
}
