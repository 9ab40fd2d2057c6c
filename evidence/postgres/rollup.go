package postgres

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// level is one granularity of rollups.
type level struct {
	table, unit string
	minutes     int64
}

// levels, finest first.
var levels = []level{
	{"rollups", "minute", 1},
	{"rollups_hourly", "hour", 60},
	{"rollups_daily", "day", 24 * 60},
	{"rollups_weekly", "week", 7 * 24 * 60},
}

// keyCache maps rollup keys (Minute zero) to their ids in rollup_keys and
// back; ids never change once given.
type keyCache struct {
	mu   sync.Mutex
	ids  map[evidence.RollupKey]int64
	keys map[int64]evidence.RollupKey
}

func newKeyCache() keyCache {
	return keyCache{ids: map[evidence.RollupKey]int64{}, keys: map[int64]evidence.RollupKey{}}
}

// add remembers a key's id; the caller holds mu.
func (c *keyCache) add(k evidence.RollupKey, id int64) {
	c.ids[k], c.keys[id] = id, k
}

// keyIDs returns where each record of batch counts in the rollups,
// creating the keys not stored yet. New keys are committed at once, apart
// from the batch: a key without counts is harmless, and other writers can
// use it.
func (s *Store) keyIDs(ctx context.Context, batch []*evidence.Record) ([]counted, error) {
	out := make([]counted, len(batch))
	// Records whose keys this store has not numbered yet (a new edge)
	// wait in a list.
	type waiting struct {
		i     int
		minus bool
		k     evidence.RollupKey
	}
	var wait []waiting
	var missing []evidence.RollupKey
	seen := map[evidence.RollupKey]bool{}
	s.keys.mu.Lock()
	for i, r := range batch {
		evidence.RollupDeltas(r, func(k evidence.RollupKey, delta int64) {
			out[i].minute = k.Minute
			k.Minute = 0
			id, ok := s.keys.ids[k]
			if !ok {
				if !seen[k] {
					seen[k] = true
					missing = append(missing, k)
				}
				wait = append(wait, waiting{i, delta < 0, k})
			}
			if delta < 0 {
				out[i].minus = id
			} else {
				out[i].plus = id
			}
		})
	}
	s.keys.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	ids := map[evidence.RollupKey]int64{}
	var cols [6][]string
	allowed := make([]bool, len(missing))
	for i, k := range missing {
		for j, v := range []string{k.Replica, k.Source, k.DestinationHost, k.DestinationPrincipal, k.Verdict} {
			cols[j] = append(cols[j], v)
		}
		allowed[i] = k.Allowed
	}
	const keys = "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[]) AS k(replica, source, host, principal, verdict, allowed)"
	if _, err := s.pool.Exec(ctx, `INSERT INTO rollup_keys (replica, source, destination_host, destination_principal, verdict, allowed)
		SELECT * FROM `+keys+` ON CONFLICT DO NOTHING`, cols[0], cols[1], cols[2], cols[3], cols[4], allowed); err != nil {
		return nil, fmt.Errorf("rollup keys: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT r.id, r.replica, r.source, r.destination_host, r.destination_principal, r.verdict, r.allowed
		FROM rollup_keys r JOIN `+keys+` ON r.replica = k.replica AND r.source = k.source AND r.destination_host = k.host
			AND r.destination_principal = k.principal AND r.verdict = k.verdict AND r.allowed = k.allowed`,
		cols[0], cols[1], cols[2], cols[3], cols[4], allowed)
	if err != nil {
		return nil, fmt.Errorf("rollup keys: %w", err)
	}
	var id int64
	var k evidence.RollupKey
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	_, err = pgx.ForEachRow(rows, []any{&id, &k.Replica, &k.Source, &k.DestinationHost, &k.DestinationPrincipal, &k.Verdict, &k.Allowed}, func() error {
		ids[k] = id
		s.keys.add(k, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rollup keys: %w", err)
	}
	for _, w := range wait {
		id := ids[w.k]
		if id == 0 {
			return nil, fmt.Errorf("rollup keys: %+v not stored", w.k)
		}
		if w.minus {
			out[w.i].minus = id
		} else {
			out[w.i].plus = id
		}
	}
	return out, nil
}

// counted is where a record counts in the rollups: its minute, the key it
// adds one to, and the key an amendment takes one from (key ids start at
// 1: 0 is none).
type counted struct{ minute, plus, minus int64 }

// rollup is the count of one key in one unit of time.
type rollup struct {
	count, first, last int64
	example            string
}

type unitKey struct{ unit, key int64 }

// queueRollups adds to b the upserts of the batch's counts at every level,
// counted here so that each row is written once per batch.
//
// Minutes before sealed belong to sealed hours, closed for good: their
// records are stored but not counted.
func queueRollups(b *pgx.Batch, batch []*evidence.Record, sealed int64, places []counted) {
	counts := make([]map[unitKey]*rollup, len(levels))
	for i := range counts {
		counts[i] = map[unitKey]*rollup{}
	}
	add := func(r *evidence.Record, minute, id, delta int64) {
		ns := evidence.Nanos(r.Time)
		for i, l := range levels {
			uk := unitKey{floorDiv(minute, l.minutes), id}
			if g := counts[i][uk]; g != nil {
				g.count += delta
				g.first, g.last = min(g.first, ns), max(g.last, ns)
			} else {
				counts[i][uk] = &rollup{count: delta, first: ns, last: ns, example: r.ID}
			}
		}
	}
	for j, r := range batch {
		p := places[j]
		if p.minute < sealed {
			continue
		}
		// One delta a record; two for an amendment (evidence.RollupDeltas).
		if p.plus != 0 {
			add(r, p.minute, p.plus, 1)
		}
		if p.minus != 0 {
			add(r, p.minute, p.minus, -1)
		}
	}
	for i, l := range levels {
		n := len(counts[i])
		units, keys, cs, firsts, lasts := make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
		examples := make([]string, 0, n)
		for uk, g := range counts[i] {
			units, keys, cs = append(units, uk.unit), append(keys, uk.key), append(cs, g.count)
			firsts, lasts, examples = append(firsts, g.first), append(lasts, g.last), append(examples, g.example)
		}
		// Table and column names are constants of this file.
		b.Queue(`INSERT INTO `+l.table+` AS r (`+l.unit+`, key, count, first_ns, last_ns, example_id)
			SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
			ON CONFLICT (`+l.unit+`, key) DO UPDATE SET count = r.count + excluded.count,
				first_ns = least(r.first_ns, excluded.first_ns), last_ns = greatest(r.last_ns, excluded.last_ns)`,
			units, keys, cs, firsts, lasts, examples)
	}
}

// span is a range [from, to) of one level's units.
type span struct {
	level    int
	from, to int64
}

// cover splits the minutes [from, to) into whole weeks, the whole days
// around them, the whole hours around those, and the minutes left at
// either end.
func cover(from, to int64) []span { return coverUpTo(from, to, len(levels)-1) }

// coverUpTo is cover with units of levels[top] at most.
func coverUpTo(from, to int64, top int) []span {
	var out []span
	var split func(lvl int, a, b int64)
	split = func(lvl int, a, b int64) {
		if a >= b {
			return
		}
		u := levels[lvl].minutes
		ua, ub := -floorDiv(-a, u), floorDiv(b, u)
		if lvl == 0 || ua >= ub {
			if lvl == 0 {
				out = append(out, span{0, a, b})
			} else {
				split(lvl-1, a, b)
			}
			return
		}
		split(lvl-1, a, ua*u)
		out = append(out, span{lvl, ua, ub})
		split(lvl-1, ub*u, b)
	}
	split(top, from, to)
	return out
}

// rollupRows is a FROM item with the rollup rows (key, count, first_ns,
// last_ns, example_id, and the bucket's first minute) that cover [since,
// until), until zero meaning now: a minute counts when any of it is in the
// range. Nothing before the retention horizon is read.
func rollupRows(ctx context.Context, q querier, a *args, since, until time.Time) (string, error) {
	return rollupRowsUpTo(ctx, q, a, since, until, len(levels)-1)
}

// rollupRowsUpTo is rollupRows with buckets of levels[top] at most.
func rollupRowsUpTo(ctx context.Context, q querier, a *args, since, until time.Time, top int) (string, error) {
	from, err := rollupHorizon(ctx, q)
	if err != nil {
		return "", err
	}
	if !since.IsZero() {
		from = max(from, floorDiv(since.Unix(), 60))
	}
	if until.IsZero() {
		until = time.Now()
	}
	secs := until.Unix()
	if until.Nanosecond() > 0 {
		secs++
	}
	to := -floorDiv(-secs, 60) // a minute counts when it starts before until
	return bucketRows(a, from, to, top), nil
}

// rollupHorizon is the first minute retention left (see seal.go).
func rollupHorizon(ctx context.Context, q querier) (int64, error) {
	from := int64(math.MinInt64)
	if err := q.QueryRow(ctx, "SELECT coalesce(max(minute), $1) FROM rollup_horizon", from).Scan(&from); err != nil {
		return 0, fmt.Errorf("postgres: rollup horizon: %w", err)
	}
	return from, nil
}

// bucketRows is a FROM item with the rollup rows of the minutes [from,
// to), buckets of levels[top] at most.
func bucketRows(a *args, from, to int64, top int) string {
	sql := "(SELECT key, count, first_ns, last_ns, example_id, minute FROM rollups WHERE false"
	for _, sp := range coverUpTo(from, to, top) {
		l := levels[sp.level]
		sql += " UNION ALL SELECT key, count, first_ns, last_ns, example_id, " + l.unit + " * " + strconv.FormatInt(l.minutes, 10) +
			" FROM " + l.table + " WHERE " + l.unit + " >= " + a.add(sp.from) + " AND " + l.unit + " < " + a.add(sp.to)
	}
	return sql + ") u"
}

// keysOf returns the keys with the given ids, reading those not cached.
func (s *Store) keysOf(ctx context.Context, ids []int64) (map[int64]evidence.RollupKey, error) {
	out := make(map[int64]evidence.RollupKey, len(ids))
	var missing []int64
	s.keys.mu.Lock()
	for _, id := range ids {
		if k, ok := s.keys.keys[id]; ok {
			out[id] = k
		} else {
			missing = append(missing, id)
		}
	}
	s.keys.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT id, replica, source, destination_host, destination_principal, verdict, allowed
		FROM rollup_keys WHERE id = ANY($1)`, missing)
	if err != nil {
		return nil, fmt.Errorf("rollup keys: %w", err)
	}
	var id int64
	var k evidence.RollupKey
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	if _, err := pgx.ForEachRow(rows, []any{&id, &k.Replica, &k.Source, &k.DestinationHost, &k.DestinationPrincipal, &k.Verdict, &k.Allowed}, func() error {
		out[id] = k
		s.keys.add(k, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("rollup keys: %w", err)
	}
	return out, nil
}

// keyCount is the counts of one rollup key over a time range.
type keyCount struct {
	key         evidence.RollupKey
	count       int64
	first, last int64
	example     string
}

// counts sums the rollups over [since, until) per key, in SQL (the many
// rows), and names the keys here (few, and cached).
func (s *Store) counts(ctx context.Context, since, until time.Time) ([]keyCount, error) {
	sums, err := s.sums(ctx, func(tx pgx.Tx, a *args) (string, error) {
		src, err := rollupRows(ctx, tx, a, since, until)
		return `SELECT 0, key, sum(count)::bigint, min(first_ns), max(last_ns), min(example_id) FROM ` + src + ` GROUP BY key`, err
	})
	out := make([]keyCount, len(sums))
	for i, c := range sums {
		out[i] = c.keyCount
	}
	return out, err
}

// pointCount is the counts of one rollup key over one point of a series.
type pointCount struct {
	point int
	keyCount
}

// seriesCounts sums the rollups of each point of q per key, as counts does
// for one range: the buckets of the largest level whose unit divides the
// step, each into the point it starts in.
func (s *Store) seriesCounts(ctx context.Context, q evidence.SeriesQuery) ([]pointCount, error) {
	from, to, second, step := q.SeriesMinutes()
	top := 0
	for i, l := range levels {
		if step%l.minutes == 0 {
			top = i
		}
	}
	return s.sums(ctx, func(tx pgx.Tx, a *args) (string, error) {
		// One arm per point, each summed per key: small hash
		// aggregates, where one over the window spills to disk.
		horizon, err := rollupHorizon(ctx, tx)
		if err != nil {
			return "", err
		}
		arms := []string{"SELECT 0, 0::bigint, 0::bigint, 0::bigint, 0::bigint, '' WHERE false"}
		for i, lo := 0, from; lo < to; i++ {
			hi := min(second+int64(i)*step, to)
			if kept := max(lo, horizon); kept < hi {
				arms = append(arms, `SELECT `+strconv.Itoa(i)+`, key, sum(count)::bigint, min(first_ns), max(last_ns), min(example_id)
					FROM `+bucketRows(a, kept, hi, top)+` GROUP BY key`)
			}
			lo = hi
		}
		return strings.Join(arms, " UNION ALL "), nil
	})
}

// sums runs the query build makes, in a read-only transaction: rows of
// point, key number, count, first_ns, last_ns and example_id; and names
// the keys here (few, and cached).
func (s *Store) sums(ctx context.Context, build func(tx pgx.Tx, a *args) (string, error)) ([]pointCount, error) {
	var out []pointCount
	var ids []int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// A few hundred thousand rows at most: parallel workers cost more
		// to start and gather than they save (twice as slow on two cores).
		if _, err := tx.Exec(ctx, "SET LOCAL max_parallel_workers_per_gather = 0"); err != nil {
			return err
		}
		var a args
		q, err := build(tx, &a)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, q, a...)
		if err != nil {
			return err
		}
		var id int64
		var c pointCount
		_, err = pgx.ForEachRow(rows, []any{&c.point, &id, &c.count, &c.first, &c.last, &c.example}, func() error {
			out, ids = append(out, c), append(ids, id)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: rollups: %w", err)
	}
	keys, err := s.keysOf(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	for i, id := range ids {
		out[i].key = keys[id]
	}
	return out, nil
}
