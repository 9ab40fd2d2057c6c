package postgres

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// walkPage is how many records Walk holds at a time.
const walkPage = 1000

// Walk calls fn for each record of replica's chain in seq order, with the
// index columns stored beside it. A row that no longer decodes is passed
// as a record holding only its id and seq, which Verify reports as edited.
// The shapes are read afresh for each walk: Verify sees what is stored
// now, not what this process read before.
func (s *Store) Walk(ctx context.Context, replica string, fn func(*evidence.Record, evidence.Stored) error) error {
	s.settle(ctx)
	set := newShapeSet()
	id, ok, err := knownReplica(ctx, s.pool, replica)
	if err != nil || !ok {
		return err
	}
	// (chain, time_ns): unique per replica.
	after := [2]int64{chainKey(id, 0), math.MinInt64}
	for {
		rs, err := s.pool.Query(ctx, `SELECT `+rowColumns+` FROM records
			WHERE chain >= $1 AND chain <= $4 AND (chain, time_ns) > ($1, $2) ORDER BY chain, time_ns LIMIT $3`,
			after[0], after[1], walkPage, chainKey(id, maxSeq))
		if err != nil {
			return fmt.Errorf("postgres: walk %s: %w", replica, err)
		}
		rows, err := collectRows(rs)
		if err == nil {
			err = set.resolve(ctx, s.pool, rows)
		}
		if err != nil {
			return fmt.Errorf("postgres: walk %s: %w", replica, err)
		}
		for _, r := range rows {
			rec, st := set.decodeRow(r)
			if err := fn(rec, st); err != nil {
				return err
			}
		}
		if len(rows) < walkPage {
			return nil
		}
		last := rows[len(rows)-1]
		after = [2]int64{chainKey(last.replica, last.seq), last.timeNS}
	}
}

// Replicas lists the replicas with a chain: a recorded head, a
// checkpoint, or records (so that a chain whose head row was deleted is
// still walked, and its forged tail found).
func (s *Store) Replicas(ctx context.Context) ([]string, error) {
	s.settle(ctx)
	rows, err := s.pool.Query(ctx, `SELECT name FROM replicas p
			WHERE EXISTS (SELECT 1 FROM records WHERE chain >= p.id::bigint << 44 AND chain < (p.id::bigint + 1) << 44)
		UNION SELECT replica FROM chain_heads WHERE seq > 0
		UNION SELECT replica FROM chain_checkpoints
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("postgres: replicas: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: replicas: %w", err)
	}
	return names, nil
}

// Aggregate counts records by edge, verdict and outcome from the rollups.
func (s *Store) Aggregate(ctx context.Context, q evidence.AggregateQuery) ([]evidence.Group, error) {
	s.settle(ctx)
	if err := q.Validate(); err != nil {
		return nil, err
	}
	counts, err := s.counts(ctx, q.Since, q.Until)
	if err != nil {
		return nil, err
	}
	return groupsOf(counts, q.Destination), nil
}

// AggregateSeries answers Aggregate's counts per point of q, in one read
// of the rollups (seriesCounts).
func (s *Store) AggregateSeries(ctx context.Context, q evidence.SeriesQuery) ([]evidence.PointGroup, error) {
	s.settle(ctx)
	if q.Until.IsZero() {
		q.Until = time.Now()
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	byPoint, err := s.seriesCounts(ctx, q)
	if err != nil {
		return nil, err
	}
	var gs storekit.Groups
	for _, c := range byPoint {
		gs.Add(c.point, c.key, c.count, c.first, c.last, c.example)
	}
	return gs.Points(), nil
}

// groupsOf merges the counts of keys into groups (the replicas' counts of
// one edge add up), those of destination only when it is set, most
// requests first.
func groupsOf(counts []keyCount, destination string) []evidence.Group {
	var gs storekit.Groups
	for _, c := range counts {
		if destination == "" || destination == c.key.DestinationHost || destination == c.key.DestinationPrincipal {
			gs.Add(0, c.key, c.count, c.first, c.last, c.example)
		}
	}
	points := gs.Points()
	groups := make([]evidence.Group, len(points))
	for i, p := range points {
		groups[i] = p.Group
	}
	slices.SortFunc(groups, func(a, b evidence.Group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Source, b.Source),
			strings.Compare(a.DestinationHost, b.DestinationHost), strings.Compare(a.DestinationPrincipal, b.DestinationPrincipal),
			strings.Compare(string(a.Verdict), string(b.Verdict)), cmp.Compare(boolInt(a.Allowed), boolInt(b.Allowed)))
	})
	return groups
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Stats summarises the store; the counts by verdict and decision come
// from the rollups.
func (s *Store) Stats(ctx context.Context, since time.Time) (evidence.Stats, error) {
	s.settle(ctx)
	st := evidence.Stats{ByVerdict: map[evidence.Verdict]int64{}, ByDecision: map[string]int64{}, Replicas: map[string]evidence.Link{}}
	var oldest, newest *int64
	err := s.pool.QueryRow(ctx, "SELECT count(*), min(time_ns), max(time_ns) FROM records").Scan(&st.Records, &oldest, &newest)
	if err != nil {
		return st, fmt.Errorf("postgres: stats: %w", err)
	}
	if oldest != nil {
		st.Oldest, st.Newest = time.Unix(0, *oldest).UTC(), time.Unix(0, *newest).UTC()
	}
	counts, err := s.counts(ctx, since, time.Time{})
	if err != nil {
		return st, err
	}
	for _, c := range counts {
		st.ByVerdict[evidence.Verdict(c.key.Verdict)] += c.count
		st.ByDecision[map[bool]string{true: "allowed", false: "denied"}[c.key.Allowed]] += c.count
	}
	err = s.pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
		WHERE c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'records'::regclass)
			OR c.oid IN ('chain_heads'::regclass, 'chain_checkpoints'::regclass, 'rollup_keys'::regclass,
				'rollups'::regclass, 'rollups_hourly'::regclass, 'rollups_daily'::regclass, 'rollups_weekly'::regclass,
				'rollup_horizon'::regclass, 'schema_version'::regclass, 'quarantine'::regclass,
				'shapes'::regclass, 'replicas'::regclass)`).Scan(&st.SizeBytes)
	if err != nil {
		return st, fmt.Errorf("postgres: stats: size: %w", err)
	}
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM quarantine").Scan(&st.Quarantined); err != nil {
		return st, fmt.Errorf("postgres: stats: quarantine: %w", err)
	}
	rows, err := s.pool.Query(ctx, "SELECT replica, seq, hash FROM chain_heads WHERE seq > 0")
	if err != nil {
		return st, fmt.Errorf("postgres: stats: %w", err)
	}
	var replica string
	var l evidence.Link
	_, err = pgx.ForEachRow(rows, []any{&replica, &l.Seq, &l.Hash}, func() error {
		st.Replicas[replica] = l
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("postgres: stats: %w", err)
	}
	return st, nil
}
