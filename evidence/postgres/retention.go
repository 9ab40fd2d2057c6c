package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// DeleteBefore removes the records older than t: whole days by dropping
// their partitions, then the older rows of the day t falls in, batch rows
// per transaction. Per replica it removes no record from its first one
// that must stay on (see retentionCuts): a record's time never takes the
// records after it in the chain along. Each transaction first saves, per
// replica, the highest link it removes as the chain's checkpoint, and
// removes any record of that replica still below it (records a few
// milliseconds apart can straddle midnight out of seq order), so that
// every stored chain starts right after its checkpoint. Rollups older than
// rollupsBefore go too, in batches. It returns the number of records
// removed.
func (s *Store) DeleteBefore(ctx context.Context, t, rollupsBefore time.Time, batch int) (int64, error) {
	s.settle(ctx)
	if batch <= 0 {
		batch = 1000
	}
	var n int64
	if _, ok := unixNano(t); ok {
		// Retention cuts at the start of the hour t falls in, once the
		// hours before it are sealed (evidence.RollupSeal).
		until := evidence.SealsUntil(t)
		replicas, err := s.Replicas(ctx)
		if err != nil {
			return n, fmt.Errorf("postgres: retention: %w", err)
		}
		for _, replica := range replicas {
			if err := s.seal(ctx, replica, until); err != nil {
				return n, fmt.Errorf("postgres: retention: %w", err)
			}
		}
		t = evidence.HourStart(until)
	}
	if cut, ok := unixNano(t); ok {
		cuts, err := s.retentionCuts(ctx, cut)
		if err != nil {
			return n, fmt.Errorf("postgres: retention: %w", err)
		}
		days, err := listPartitions(ctx, s.pool)
		if err != nil {
			return n, fmt.Errorf("postgres: retention: %w", err)
		}
		for _, d := range days {
			if (d+1)*dayNS > cut {
				break
			}
			if d*dayNS < evidence.MinTimeNS {
				continue // wrapped or edited times: kept (retentionCuts)
			}
			m, err := s.dropPartition(ctx, d, cuts)
			n += m
			if err != nil {
				return n, fmt.Errorf("postgres: retention: dropping %s: %w", partitionName(d), err)
			}
		}
		for {
			m, done, err := s.deleteRows(ctx, cut, cuts, batch)
			n += m
			if err != nil {
				return n, fmt.Errorf("postgres: retention: %w", err)
			}
			if done {
				break
			}
		}
	}
	if minute, ok := unixNano(rollupsBefore); ok {
		if err := s.deleteRollups(ctx, floorDiv(minute, int64(time.Minute)), batch); err != nil {
			return n, fmt.Errorf("postgres: retention of rollups: %w", err)
		}
	}
	return n, nil
}

// retentionCuts is, per replica, the last seq retention may remove: the
// one before its first record that must stay, or its last record when
// none must. A record must stay when its time is at or after cut, or when
// its stored time is before evidence.MinTime: a time an older meshproof
// stored wrapped (a record stamped beyond 2262) or one edited in the
// store, whose age is unknown. A replica missing from the map (it wrote
// its first record meanwhile) keeps everything.
func (s *Store) retentionCuts(ctx context.Context, cut int64) (map[string]int64, error) {
	replicas, err := s.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	cuts := make(map[string]int64, len(replicas))
	for _, replica := range replicas {
		// One statement, one snapshot: a record written meanwhile comes
		// after the last seq it reads. The first subquery reads the
		// chain in seq order (the primary key of each partition that may
		// hold a record to keep) and stops at the first.
		var last *int64
		if err := s.pool.QueryRow(ctx, `SELECT coalesce(
				(SELECT chain & `+seqMask+` FROM records WHERE chain >= `+chainBase("$1")+` AND chain <= `+chainBase("$1")+` | `+seqMask+`
					AND (time_ns >= $2 OR time_ns < $3) ORDER BY chain LIMIT 1) - 1,
				(SELECT max(chain) & `+seqMask+` FROM records WHERE chain >= `+chainBase("$1")+` AND chain <= `+chainBase("$1")+` | `+seqMask+`))`,
			replica, cut, evidence.MinTimeNS).Scan(&last); err != nil {
			return nil, fmt.Errorf("the retention cut of %s: %w", replica, err)
		}
		if last != nil {
			cuts[replica] = *last
		}
	}
	return cuts, nil
}

// cutArrays are cuts as the two arrays deleteRows joins on.
func cutArrays(cuts map[string]int64) ([]string, []int64) {
	replicas, lasts := make([]string, 0, len(cuts)), make([]int64, 0, len(cuts))
	for r, l := range cuts {
		replicas, lasts = append(replicas, r), append(lasts, l)
	}
	return replicas, lasts
}

// unixNano is t in ns, ok false for a zero time.
func unixNano(t time.Time) (int64, bool) {
	return clampNano(t), !t.IsZero()
}

// retentionTx runs fn in a transaction that holds the partition lock (so
// that two replicas running retention do not drop the same day twice) and
// does not wait long for table locks.
func (s *Store) retentionTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '10s'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(partitionLock)); err != nil {
			return err
		}
		return fn(tx)
	})
}

// dropPartition drops one day, after saving each replica's checkpoint,
// when every record in it is within its replica's cut; else the rows
// that are go one by one (deleteRows).
func (s *Store) dropPartition(ctx context.Context, day int64, cuts map[string]int64) (int64, error) {
	name := partitionName(day)
	var n int64
	var kept bool
	err := s.retentionTx(ctx, func(tx pgx.Tx) error {
		n = 0
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil || !exists {
			return err // dropped by another replica meanwhile
		}
		// name is made from an integer. A record beyond its replica's cut
		// is looked for first, through the primary key: a day that must
		// stay is not read whole every time retention runs.
		for replica, c := range cuts {
			var beyond bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+name+" WHERE chain > "+chainBase("$1")+" | $2 AND chain <= "+chainBase("$1")+" | "+seqMask+")",
				replica, c).Scan(&beyond); err != nil {
				return err
			}
			if beyond {
				kept = true
				return nil
			}
		}
		rows, err := tx.Query(ctx, "SELECT p.name, max(r.chain & "+seqMask+"), count(*) FROM "+name+" r JOIN replicas p ON p.id = r.chain >> 44 GROUP BY p.name")
		if err != nil {
			return err
		}
		var replica string
		var last, count int64
		lasts := map[string]int64{}
		if _, err := pgx.ForEachRow(rows, []any{&replica, &last, &count}, func() error {
			lasts[replica] = last
			n += count
			return nil
		}); err != nil {
			return err
		}
		for replica, seq := range lasts {
			if c, ok := cuts[replica]; !ok || seq > c {
				n, kept = 0, true
				return nil
			}
		}
		for replica, seq := range lasts {
			if err := s.keepLeafTile(ctx, tx, replica, seq); err != nil {
				return err
			}
		}
		cps := map[string]link{}
		for replica, seq := range lasts {
			hash, err := s.hashIn(ctx, tx, name, replica, seq)
			if err != nil {
				return err
			}
			cps[replica] = link{seq, hash}
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+name); err != nil {
			return err
		}
		m, err := saveCheckpoints(ctx, tx, cps)
		n += m
		return err
	})
	if err == nil && !kept {
		s.parts.forgetDay(day)
	}
	return n, err
}

// deleteRows deletes up to batch records older than cut and within their
// replica's cut (retentionCuts), oldest first, saving checkpoints; done is
// true when none was left.
func (s *Store) deleteRows(ctx context.Context, cut int64, cuts map[string]int64, batch int) (n int64, done bool, err error) {
	replicas, lasts := cutArrays(cuts)
	err = s.retentionTx(ctx, func(tx pgx.Tx) error {
		n, done = 0, false
		// The records this transaction removes; the logs keep the part of
		// the level-0 tile each replica's cut ends in.
		const doomed = `SELECT l.replica, c.chain, c.chain & ` + seqMask + ` AS seq, c.time_ns FROM records c
				JOIN replicas p ON p.id = c.chain >> 44
				JOIN unnest($3::text[], $4::bigint[]) AS l (replica, last) ON p.name = l.replica COLLATE "C" AND c.chain & ` + seqMask + ` <= l.last
				WHERE c.time_ns >= $5 AND c.time_ns < $1 ORDER BY c.time_ns LIMIT $2`
		rows, err := tx.Query(ctx, `SELECT replica, max(seq) FROM (`+doomed+`) d GROUP BY replica`,
			cut, batch, replicas, lasts, evidence.MinTimeNS)
		if err != nil {
			return err
		}
		var replica string
		var seq int64
		ends := map[string]int64{}
		if _, err := pgx.ForEachRow(rows, []any{&replica, &seq}, func() error {
			ends[replica] = seq
			return nil
		}); err != nil {
			return err
		}
		for replica, seq := range ends {
			if err := s.keepLeafTile(ctx, tx, replica, seq); err != nil {
				return err
			}
		}
		rows, err = tx.Query(ctx, `DELETE FROM records r
			USING (`+doomed+`) d
			WHERE r.chain = d.chain AND r.time_ns = d.time_ns
			RETURNING d.replica, r.time_ns, r.chain, r.shape, r.id, r.request_id, r.path, r.rest`, cut, batch, replicas, lasts, evidence.MinTimeNS)
		if err != nil {
			return err
		}
		lastRows := map[string]row{}
		var r row
		var chain int64
		if _, err := pgx.ForEachRow(rows, []any{&replica, &r.timeNS, &chain, &r.shape, &r.id, &r.requestID, &r.path, &r.rest}, func() error {
			n++
			r.replica, r.seq = int32(chain>>chainBits), chain&maxSeq
			if l, ok := lastRows[replica]; !ok || r.seq > l.seq {
				lastRows[replica] = r
			}
			return nil
		}); err != nil {
			return err
		}
		cps := map[string]link{}
		for replica, r := range lastRows {
			hash, err := s.hashOf(ctx, tx, r)
			if err != nil {
				return err
			}
			cps[replica] = link{r.seq, hash}
		}
		done = n == 0
		m, err := saveCheckpoints(ctx, tx, cps)
		n += m
		return err
	})
	return n, done, err
}

// hashIn is the chain hash of replica's record at seq in the partition
// table, recomputed from the record.
func (s *Store) hashIn(ctx context.Context, tx pgx.Tx, table, replica string, seq int64) (string, error) {
	// table is a partition's name, made from an integer.
	rs, err := tx.Query(ctx, "SELECT "+rowColumns+" FROM "+table+
		" WHERE chain = "+chainBase("$1")+" | $2 ORDER BY time_ns LIMIT 1", replica, seq)
	if err != nil {
		return "", err
	}
	rows, err := collectRows(rs)
	if err != nil {
		return "", err
	}
	if len(rows) != 1 {
		return "", fmt.Errorf("record %d of %s not found", seq, replica)
	}
	return s.hashOf(ctx, tx, rows[0])
}

// hashOf is the chain hash of the record a row holds. Retention refuses to
// remove a record that does not decode (meshproof verify names it).
func (s *Store) hashOf(ctx context.Context, tx pgx.Tx, r row) (string, error) {
	recs, err := s.decodeRows(ctx, tx, []row{r})
	if err != nil {
		return "", fmt.Errorf("removing seq %d: %w", r.seq, err)
	}
	return leafHex(recs[0]), nil
}

type link struct {
	seq  int64
	hash string
}

// saveCheckpoints records each replica's last removed link (unless a later
// one is already recorded) and removes the replica's records still at or
// below it, returning how many.
func saveCheckpoints(ctx context.Context, tx pgx.Tx, cps map[string]link) (int64, error) {
	var n int64
	for replica, cp := range cps {
		if _, err := tx.Exec(ctx, `INSERT INTO chain_checkpoints AS c (replica, seq, hash) VALUES ($1, $2, $3)
			ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, saved_at = now()
			WHERE c.seq < excluded.seq`, replica, cp.seq, cp.hash); err != nil {
			return n, fmt.Errorf("checkpoint of %s: %w", replica, err)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM records WHERE chain >= `+chainBase("$1")+`
			AND chain <= `+chainBase("$1")+` | (SELECT seq FROM chain_checkpoints WHERE replica = $1)`, replica)
		if err != nil {
			return n, fmt.Errorf("records of %s below its checkpoint: %w", replica, err)
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

// deleteRollups moves the rollup horizon to minute and deletes the rows
// before it, batch at a time: at each level, the units that begin before it
// (the remaining minutes of such an hour or day answer for it).
func (s *Store) deleteRollups(ctx context.Context, minute int64, batch int) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO rollup_horizon AS h (minute) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET minute = greatest(h.minute, excluded.minute)`, minute); err != nil {
		return err
	}
	// The seals of hours whose minutes are gone in part or whole.
	if _, err := s.pool.Exec(ctx, `DELETE FROM rollup_seals WHERE hour * 60 < (SELECT minute FROM rollup_horizon)`); err != nil {
		return err
	}
	for _, l := range levels {
		below := -floorDiv(-minute, l.minutes)
		for {
			// Table and column names are constants.
			tag, err := s.pool.Exec(ctx, "DELETE FROM "+l.table+" WHERE ctid = ANY(ARRAY(SELECT ctid FROM "+l.table+
				" WHERE "+l.unit+" < $1 LIMIT $2))", below, batch)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				break
			}
		}
	}
	return nil
}
