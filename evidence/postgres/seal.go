package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// sealHoursPerTx bounds the hours one transaction seals (the first
// retention after an upgrade seals every hour the store holds) while it
// holds the replica's head, which that replica's appends wait for.
const sealHoursPerTx = 24

// seal seals replica's rollups of every hour before until (Unix hours)
// not sealed yet: retention calls it before it removes their records.
func (s *Store) seal(ctx context.Context, replica string, until int64) error {
	for {
		var done bool
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) (err error) {
			done, err = sealSome(ctx, tx, replica, until)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: sealing the rollups of %s: %w", replica, err)
		}
		if done {
			return nil
		}
	}
}

func sealSome(ctx context.Context, tx pgx.Tx, replica string, until int64) (bool, error) {
	// The head row, locked: the replica's appends (which read seal_through
	// with it) wait, so none counts a record in an hour being sealed.
	head, err := sealHead(ctx, tx, replica, " FOR UPDATE")
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	next := head.Through
	if next == 0 {
		var first *int64
		if err := tx.QueryRow(ctx, `SELECT min(b.minute) FROM rollups AS b JOIN rollup_keys AS k ON k.id = b.key
			WHERE k.replica = $1 AND b.minute >= coalesce((SELECT minute FROM rollup_horizon), $2)`,
			replica, int64(math.MinInt64)).Scan(&first); err != nil {
			return false, err
		}
		next = until - 1
		if first != nil {
			next = min(next, floorDiv(*first, 60))
		}
	}
	if next >= until {
		return true, nil
	}
	end := min(until, next+sealHoursPerTx)
	b := &pgx.Batch{}
	for h := next; h < end; h++ {
		rows, err := tx.Query(ctx, `SELECT 1::bigint, `+bucketColumns+` FROM rollups AS b JOIN rollup_keys AS k ON k.id = b.key
			WHERE b.minute >= $1 AND b.minute < $2 AND k.replica = $3`, h*60, h*60+60, replica)
		if err != nil {
			return false, err
		}
		buckets, err := pgx.CollectRows(rows, scanBucket)
		if err != nil {
			return false, err
		}
		var seal evidence.RollupSeal
		seal, head = head.Seal(h, buckets)
		b.Queue(`INSERT INTO rollup_seals (replica, hour, digest, prev, chain) VALUES ($1, $2, $3, $4, $5)`,
			replica, h, seal.Digest[:], seal.Prev[:], seal.Chain[:])
	}
	b.Queue(`UPDATE chain_heads SET seal_first = $2, seal_through = $3, seal_chain = $4 WHERE replica = $1`,
		replica, head.First, head.Through, head.Chain[:])
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	return end == until, nil
}

// sealHead reads replica's seal head (lock: "" or a locking clause);
// pgx.ErrNoRows when it has no chain.
func sealHead(ctx context.Context, q querier, replica, lock string) (evidence.SealHead, error) {
	var first, through int64
	var chain []byte
	if err := q.QueryRow(ctx, `SELECT seal_first, seal_through, seal_chain FROM chain_heads WHERE replica = $1`+lock,
		replica).Scan(&first, &through, &chain); err != nil {
		return evidence.SealHead{}, err
	}
	return evidence.MakeSealHead(replica, first, through, chain)
}

// bucketColumns follow a span: the bucket's first minute (as m) and
// the columns of a rollups row (b) joined with its key (k).
const bucketColumns = `b.minute, k.replica, k.source, k.destination_host, k.destination_principal, k.verdict, k.allowed,
	b.count, b.first_ns, b.last_ns, b.example_id`

func scanBucket(row pgx.CollectableRow) (evidence.RollupBucket, error) {
	var b evidence.RollupBucket
	err := row.Scan(&b.Span, &b.Minute, &b.Replica, &b.Source, &b.DestinationHost, &b.DestinationPrincipal,
		&b.Verdict, &b.Allowed, &b.Count, &b.FirstNS, &b.LastNS, &b.Example)
	return b, err
}

// RollupBuckets reads the buckets of every level that begin in [fromHour,
// toHour) (see evidence.RollupAuditor), a day at a time, in one snapshot.
func (s *Store) RollupBuckets(ctx context.Context, fromHour, toHour int64, fn func(evidence.RollupBucket) error) error {
	s.settle(ctx)
	return s.readTx(ctx, func(tx pgx.Tx) error {
		var lo, hi *int64
		if err := tx.QueryRow(ctx, `SELECT least((SELECT min(minute) FROM rollups), (SELECT min(hour) * 60 FROM rollups_hourly),
				(SELECT min(day) * 1440 FROM rollups_daily), (SELECT min(week) * 10080 FROM rollups_weekly)),
			greatest((SELECT max(minute) FROM rollups), (SELECT max(hour) * 60 FROM rollups_hourly),
				(SELECT max(day) * 1440 FROM rollups_daily), (SELECT max(week) * 10080 FROM rollups_weekly))`).Scan(&lo, &hi); err != nil {
			return fmt.Errorf("postgres: reading the rollups: %w", err)
		}
		if lo == nil {
			return nil
		}
		from, to := max(fromHour, floorDiv(*lo, 60)), min(toHour, floorDiv(*hi, 60)+1)
		const day = 24
		for h := from; h < to; h += day {
			if err := bucketsOf(ctx, tx, h*60, min(h+day, to)*60, fn); err != nil {
				return err
			}
		}
		return nil
	})
}

// bucketsOf reads the buckets that begin in the minutes [from, to).
func bucketsOf(ctx context.Context, tx pgx.Tx, from, to int64, fn func(evidence.RollupBucket) error) error {
	var parts []string
	var args []any
	for i, l := range levels {
		// Table and column names are constants. A unit u begins at minute
		// u * l.minutes: those in [from, to) are from the first unit at or
		// after from to the last before to.
		parts = append(parts, fmt.Sprintf(`SELECT %d::bigint AS span, b.%s * %d AS minute, k.replica, k.source, k.destination_host,
				k.destination_principal, k.verdict, k.allowed, b.count, b.first_ns, b.last_ns, b.example_id
			FROM %s AS b JOIN rollup_keys AS k ON k.id = b.key
			WHERE b.%s >= $%d AND b.%s < $%d`, l.minutes, l.unit, l.minutes, l.table, l.unit, 2*i+1, l.unit, 2*i+2))
		args = append(args, -floorDiv(-from, l.minutes), -floorDiv(-to, l.minutes))
	}
	rows, err := tx.Query(ctx, strings.Join(parts, " UNION ALL ")+" ORDER BY 2", args...)
	if err != nil {
		return fmt.Errorf("postgres: reading the rollups: %w", err)
	}
	defer rows.Close()
	var b evidence.RollupBucket
	_, err = pgx.ForEachRow(rows, []any{&b.Span, &b.Minute, &b.Replica, &b.Source, &b.DestinationHost, &b.DestinationPrincipal,
		&b.Verdict, &b.Allowed, &b.Count, &b.FirstNS, &b.LastNS, &b.Example}, func() error { return fn(b) })
	if err != nil {
		return fmt.Errorf("postgres: reading the rollups: %w", err)
	}
	return nil
}

// RollupSeals reads replica's seals (see evidence.RollupAuditor).
func (s *Store) RollupSeals(ctx context.Context, replica string, fn func(evidence.RollupSeal) error) (head evidence.SealHead, err error) {
	s.settle(ctx)
	err = s.readTx(ctx, func(tx pgx.Tx) error {
		head, err = sealHead(ctx, tx, replica, "")
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("postgres: the rollup seals of %s: %w", replica, err)
		}
		rows, err := tx.Query(ctx, `SELECT hour, digest, prev, chain FROM rollup_seals WHERE replica = $1 ORDER BY hour`, replica)
		if err != nil {
			return fmt.Errorf("postgres: the rollup seals of %s: %w", replica, err)
		}
		var seal evidence.RollupSeal
		var digest, prev, chain []byte
		_, err = pgx.ForEachRow(rows, []any{&seal.Hour, &digest, &prev, &chain}, func() error {
			copy(seal.Digest[:], digest)
			copy(seal.Prev[:], prev)
			copy(seal.Chain[:], chain)
			return fn(seal)
		})
		if err != nil {
			return fmt.Errorf("postgres: the rollup seals of %s: %w", replica, err)
		}
		return nil
	})
	return head, err
}

// RollupBounds returns the rollups' horizon; every level counts every
// record at once, so nothing waits to be closed (see
// evidence.RollupAuditor).
func (s *Store) RollupBounds(ctx context.Context) (horizon, closed int64, err error) {
	s.settle(ctx)
	if err := s.pool.QueryRow(ctx, `SELECT coalesce((SELECT max(minute) FROM rollup_horizon), $1)`, int64(math.MinInt64)).Scan(&horizon); err != nil {
		return 0, 0, fmt.Errorf("postgres: reading the rollup horizon: %w", err)
	}
	return horizon, math.MaxInt64, nil
}
