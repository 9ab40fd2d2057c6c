package sqlite

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// Aggregate answers counts grouped by edge, verdict and outcome from the
// rollups. A minute counts when it overlaps [Since, Until): the range is
// widened to whole minutes, then read as whole days, whole hours and
// single minutes, whichever rows cover it with the fewest.
func (s *Store) Aggregate(ctx context.Context, q evidence.AggregateQuery) ([]evidence.Group, error) {
	s.settle(ctx)
	until := q.Until
	if until.IsZero() {
		until = time.Now()
	}
	horizon, closed, err := s.RollupBounds(ctx)
	if err != nil {
		return nil, err
	}
	// Before the horizon, retention removed the buckets (every span that
	// began before it): nothing is left to read there.
	u := rollupUnion(max(firstMinute(q.Since), horizon), endMinute(until), closed, q.Destination)
	// Sum the buckets per group number first (small integer rows), then
	// name the groups; replicas of one edge merge in the outer query.
	rows, err := s.r.QueryContext(ctx, `SELECT k.source, k.dst_host, k.dst_principal, k.verdict, k.allowed,
			sum(b.count), min(b.first_ns), max(b.last_ns), min(b.example_id)
		FROM (SELECT key, sum(count) AS count, min(first_ns) AS first_ns, max(last_ns) AS last_ns,
				min(example_id) AS example_id
			FROM (`+u.sql+`) GROUP BY key) AS b
		JOIN rollup_keys AS k ON k.id = b.key
		GROUP BY k.source, k.dst_host, k.dst_principal, k.verdict, k.allowed
		HAVING sum(b.count) > 0
		ORDER BY k.source, k.dst_host, k.dst_principal, k.verdict, k.allowed`, u.args...)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: aggregate: %w", err)
	}
	defer rows.Close()
	var out []evidence.Group
	for rows.Next() {
		var g evidence.Group
		var verdict string
		var first, last int64
		if err := rows.Scan(&g.Source, &g.DestinationHost, &g.DestinationPrincipal, &verdict, &g.Allowed,
			&g.Count, &first, &last, &g.ExampleID); err != nil {
			return nil, fmt.Errorf("evidence sqlite: aggregate: %w", err)
		}
		g.Verdict = evidence.Verdict(verdict)
		g.FirstSeen, g.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence sqlite: aggregate: %w", err)
	}
	return out, nil
}

// Minute bounds: far enough for any record, small enough that no bucket
// arithmetic overflows.
const (
	beginningOfTime = -(int64(1) << 40) / 1440 * 1440
	endOfTime       = (int64(1) << 40) / 1440 * 1440
)

// firstMinute is the minute holding t; the zero time is the beginning.
func firstMinute(t time.Time) int64 {
	if t.IsZero() {
		return beginningOfTime
	}
	return max(floorDiv(t.Unix(), 60), beginningOfTime)
}

// endMinute is the first minute wholly at or after t.
func endMinute(t time.Time) int64 {
	m := floorDiv(t.Unix(), 60)
	if t.Unix()%60 != 0 || t.Nanosecond() != 0 {
		m++
	}
	return min(m, endOfTime)
}

// bucketRange is the buckets of one span with first minute in [lo, hi).
type bucketRange struct{ span, lo, hi int64 }

// cover splits the minutes [a, b) into ranges of whole buckets, coarsest
// first: at most two ranges of minutes and two of hours around the days.
func cover(a, b int64) []bucketRange { return coverUpTo(a, b, len(spans)-1) }

// coverUpTo is cover with buckets of spans[top] at most.
func coverUpTo(a, b int64, top int) []bucketRange {
	var out []bucketRange
	for p := a; p < b; {
		for i := top; i >= 0; i-- {
			span := spans[i]
			if p%span != 0 {
				continue
			}
			q := floorDiv(b, span) * span
			if i+1 <= top {
				coarser := spans[i+1]
				q = min(q, (floorDiv(p, coarser)+1)*coarser) // stop at the next coarser bucket
			}
			if q > p {
				out = append(out, bucketRange{span, p, q})
				p = q
				break
			}
		}
	}
	return out
}

type union struct {
	sql  string
	args []any
}

// rollupUnion selects the rollup rows covering the minutes [a, b), each
// range through the primary key: whole buckets of every span before the
// closed mark, minutes after it.
func rollupUnion(a, b, closed int64, destination string) union {
	return rollupUnionUpTo(a, b, closed, destination, len(spans)-1)
}

// rollupUnionUpTo is rollupUnion with buckets of spans[top] at most.
func rollupUnionUpTo(a, b, closed int64, destination string, top int) union {
	ranges := coverUpTo(a, min(b, closed), top)
	if from := max(a, closed); from < b {
		ranges = append(ranges, bucketRange{1, from, b})
	}
	if len(ranges) == 0 {
		return union{sql: `SELECT * FROM rollups WHERE 0`}
	}
	var u union
	parts := make([]string, 0, len(ranges))
	for _, r := range ranges {
		part := `SELECT * FROM rollups WHERE span = ? AND minute >= ? AND minute < ?`
		u.args = append(u.args, r.span, r.lo, r.hi)
		if destination != "" {
			part += ` AND key IN (SELECT id FROM rollup_keys WHERE dst_host = ? UNION SELECT id FROM rollup_keys WHERE dst_principal = ?)`
			u.args = append(u.args, destination, destination)
		}
		parts = append(parts, part)
	}
	u.sql = strings.Join(parts, " UNION ALL ")
	return u
}

// AggregateSeries answers Aggregate's counts per point of q, in one
// query: the buckets of the largest span that divides the step (and finer
// ones at the window's ends), each summed into the point it starts in.
func (s *Store) AggregateSeries(ctx context.Context, q evidence.SeriesQuery) ([]evidence.PointGroup, error) {
	s.settle(ctx)
	if q.Until.IsZero() {
		q.Until = time.Now()
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	horizon, closed, err := s.RollupBounds(ctx)
	if err != nil {
		return nil, err
	}
	from, to, second, step := q.SeriesMinutes()
	top := 0
	for i, span := range spans {
		if step%span == 0 {
			top = i
		}
	}
	// One arm per point, each summed per key number (a small sort per
	// point, as Aggregate's), then the keys named in one more query;
	// replicas of one edge merge here.
	var arms []string
	var args []any
	for i, a := 0, from; a < to; i++ {
		b := min(second+int64(i)*step, to)
		if u := rollupUnionUpTo(max(a, horizon), b, closed, "", top); len(u.args) > 0 {
			arms = append(arms, `SELECT `+strconv.Itoa(i)+`, key, sum(count), min(first_ns), max(last_ns), min(example_id)
				FROM (`+u.sql+`) GROUP BY key`)
			args = append(args, u.args...)
		}
		a = b
	}
	if len(arms) == 0 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, strings.Join(arms, " UNION ALL "), args...)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: aggregate series: %w", err)
	}
	type pointKey struct {
		point int
		key   int64
	}
	type sums struct {
		count, first, last int64
		example            string
	}
	byKey := map[pointKey]sums{}
	ids := map[int64]bool{}
	for rows.Next() {
		var pk pointKey
		var c sums
		if err := rows.Scan(&pk.point, &pk.key, &c.count, &c.first, &c.last, &c.example); err != nil {
			rows.Close()
			return nil, fmt.Errorf("evidence sqlite: aggregate series: %w", err)
		}
		byKey[pk], ids[pk.key] = c, true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence sqlite: aggregate series: %w", err)
	}
	names, err := s.rollupKeys(ctx, ids)
	if err != nil {
		return nil, err
	}
	var groups storekit.Groups
	for pk, c := range byKey {
		groups.Add(pk.point, names[pk.key], c.count, c.first, c.last, c.example)
	}
	return groups.Points(), nil
}

// rollupKeys names the rollup keys numbered ids.
func (s *Store) rollupKeys(ctx context.Context, ids map[int64]bool) (map[int64]evidence.RollupKey, error) {
	out := make(map[int64]evidence.RollupKey, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, source, dst_host, dst_principal, verdict, allowed FROM rollup_keys`)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: rollup keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var k evidence.RollupKey
		if err := rows.Scan(&id, &k.Source, &k.DestinationHost, &k.DestinationPrincipal, &k.Verdict, &k.Allowed); err != nil {
			return nil, fmt.Errorf("evidence sqlite: rollup keys: %w", err)
		}
		if ids[id] {
			out[id] = k
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence sqlite: rollup keys: %w", err)
	}
	return out, nil
}
