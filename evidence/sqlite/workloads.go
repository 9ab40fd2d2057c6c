package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// Schema 7 puts the peers' Kubernetes workloads on edges (issue 16), as
// evidence.WorkloadRef names them (NAMESPACE/NAME, ” for none), so that
// the source_workload and destination_workload filters name edges like
// every other identity filter, through an index of edges (edges_src_wl,
// edges_dst_wl), never a scan of records. A workload is part of an edge's
// identity: the records of one principal from two workloads are two edges.
//
// The table is rebuilt (SQLite cannot change a UNIQUE constraint in
// place), keeping every edge's number, with ” for both workloads; then
// migrateWorkloads moves the records whose shape names a workload (data
// written by serve --kubernetes before this schema) to the edge their
// columns now give, whose namespaces are also the workload's where the
// record has no SPIFFE ID (evidence.Columns).
var workloadMigration = []string{
	`CREATE TABLE edges7 (
		id            INTEGER PRIMARY KEY,
		replica       TEXT    NOT NULL,
		src_principal TEXT    NOT NULL,
		src_td        TEXT    NOT NULL,
		src_ns        TEXT    NOT NULL,
		dst_principal TEXT    NOT NULL,
		dst_td        TEXT    NOT NULL,
		dst_ns        TEXT    NOT NULL,
		host          TEXT    NOT NULL,
		verdict       TEXT    NOT NULL,
		allowed       INTEGER NOT NULL,
		src_wl        TEXT    NOT NULL DEFAULT '',
		dst_wl        TEXT    NOT NULL DEFAULT '',
		UNIQUE (replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed, src_wl, dst_wl)
	)`,
	`INSERT INTO edges7 (id, replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed)
		SELECT id, replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed
		FROM edges ORDER BY id`,
	`DROP TABLE edges`,
	`ALTER TABLE edges7 RENAME TO edges`,
	`CREATE INDEX edges_src ON edges (src_principal)`,
	`CREATE INDEX edges_dst ON edges (dst_principal)`,
	`CREATE INDEX edges_host ON edges (host)`,
	// Not partial (WHERE src_wl <> ''): a query's src_wl = ? cannot be
	// proved to imply it, so SQLite would not use one.
	`CREATE INDEX edges_src_wl ON edges (src_wl)`,
	`CREATE INDEX edges_dst_wl ON edges (dst_wl)`,
}

// migrateWorkloads (to 7) reads every shape, and for each that names a
// workload finds or makes the edge of its columns and moves its records
// there, in one pass over the records (a shape is one edge's: the edge's
// columns are all in the shape). A shape that does not decode stops the
// migration, naming it.
func migrateWorkloads(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, body FROM shapes ORDER BY id`)
	if err != nil {
		return err
	}
	moved := map[int64]edgeKey{}
	rekeyed := map[int64]*evidence.Record{} // shapes whose source key changed
	for rows.Next() {
		var id int64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			rows.Close()
			return err
		}
		shape, err := unpackShape(body)
		if err != nil {
			rows.Close()
			return fmt.Errorf("shape %d: %w", id, err)
		}
		r, err := compact.DecodeShape(shape)
		if err != nil {
			rows.Close()
			return fmt.Errorf("shape %d: %w (run meshproof verify with the meshproof that wrote the file)", id, err)
		}
		if r.Source.Workload == nil && r.Destination.Workload == nil {
			continue
		}
		moved[id] = edgeOf(evidence.ColumnsOf(r))
		if oldSourceKey(r) != evidence.SourceKey(r) {
			rekeyed[id] = r
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(moved) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE moved_shapes (shape INTEGER PRIMARY KEY, edge INTEGER NOT NULL)`); err != nil {
		return err
	}
	edges := map[edgeKey]int64{}
	for shape, e := range moved {
		id, ok := edges[e]
		if !ok {
			err := tx.QueryRowContext(ctx, findEdgeSQL, e.args()...).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				err = tx.QueryRowContext(ctx, newEdgeSQL, e.args()...).Scan(&id)
			}
			if err != nil {
				return fmt.Errorf("edge of shape %d: %w", shape, err)
			}
			edges[e] = id
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO moved_shapes (shape, edge) VALUES (?, ?)`, shape, id); err != nil {
			return err
		}
	}
	for _, q := range []string{
		`UPDATE records SET edge = m.edge FROM temp.moved_shapes AS m WHERE records.shape = m.shape`,
		// An edge no record names any more (its records had workloads) is
		// left: a filter's edge list may name it and finds nothing.
		`DROP TABLE temp.moved_shapes`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return rekeyRollups(ctx, tx, rekeyed)
}

// oldSourceKey is the source key schema 6 counted r under: its principal,
// else its address (evidence.SourceKey without the workload).
func oldSourceKey(r *evidence.Record) string {
	if r.Source.Principal != "" {
		return r.Source.Principal
	}
	return r.Source.Address
}

// rekeyRollups moves the counts of the records of shapes (whose source key
// changed: a plaintext client now keyed by its workload, a mismatched
// identity now marked) from the rollup groups schema 6 counted them in to
// the groups evidence.SourceKey gives now, bucket by bucket, in every span
// a record counts in (minutes; hours, days and weeks too for closed hours,
// as Append counts), so that verify's rollup check agrees with the records
// again. Minutes a seal closed (their records are not counted) and buckets
// retention removed (before the horizon) are left alone. An old bucket
// keeps its first and last times and example (aggregates leave a group of
// count 0 out).
func rekeyRollups(ctx context.Context, tx *sql.Tx, shapes map[int64]*evidence.Record) error {
	if len(shapes) == 0 {
		return nil
	}
	var closed int64
	var horizon sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT minute FROM rollup_closed), (SELECT minute FROM rollup_horizon)`).Scan(&closed, &horizon); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	sealed := map[string]int64{}
	hrows, err := tx.QueryContext(ctx, `SELECT replica, seal_through FROM chain_heads`)
	if err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	for hrows.Next() {
		var replica string
		var through int64
		if err := hrows.Scan(&replica, &through); err != nil {
			hrows.Close()
			return fmt.Errorf("rollups: %w", err)
		}
		sealed[replica] = through
	}
	hrows.Close()
	if err := hrows.Err(); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	type bucket struct {
		span, minute int64
		group        evidence.RollupKey // Minute 0
	}
	type sum struct {
		count, first, last int64
		example            string
	}
	sums := map[bucket]*sum{}
	var order []bucket
	add := func(b bucket, delta, ns int64, id string) {
		if s, ok := sums[b]; ok {
			s.count += delta
			s.first, s.last = min(s.first, ns), max(s.last, ns)
			return
		}
		sums[b] = &sum{delta, ns, ns, id}
		order = append(order, b)
	}
	// One pass over the records (no index leads with shape), probing a
	// temporary table of the shapes.
	if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE rekeyed_shapes (shape INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	for shape := range shapes {
		if _, err := tx.ExecContext(ctx, `INSERT INTO temp.rekeyed_shapes (shape) VALUES (?)`, shape); err != nil {
			return fmt.Errorf("rollups: %w", err)
		}
	}
	rs, err := tx.QueryContext(ctx, `SELECT r.shape, r.time_ns, r.id FROM records AS r JOIN temp.rekeyed_shapes AS s ON s.shape = r.shape`)
	if err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	for rs.Next() {
		var shape, ns int64
		var idKey any
		if err := rs.Scan(&shape, &ns, &idKey); err != nil {
			rs.Close()
			return fmt.Errorf("rollups: %w", err)
		}
		id, err := compact.IDOfKey(idKey)
		if err != nil {
			rs.Close()
			return fmt.Errorf("rollups of shape %d: %w", shape, err)
		}
		tmpl := shapes[shape]
		oldKey, newKey := oldSourceKey(tmpl), evidence.SourceKey(tmpl)
		r := *tmpl
		r.Time = time.Unix(0, ns).UTC()
		minute := floorDiv(r.Time.Unix(), 60)
		if minute < sealed[r.Replica] || horizon.Valid && minute < horizon.Int64 {
			continue
		}
		evidence.RollupDeltas(&r, func(g evidence.RollupKey, delta int64) {
			g.Minute = 0
			of := spans[:1]
			if minute < closed {
				of = spans[:]
			}
			for _, span := range of {
				start := floorDiv(minute, span) * span
				if horizon.Valid && start < horizon.Int64 {
					continue // removed by retention
				}
				g.Source = oldKey
				add(bucket{span, start, g}, -delta, ns, id)
				g.Source = newKey
				add(bucket{span, start, g}, delta, ns, id)
			}
		})
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE temp.rekeyed_shapes`); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	groups := map[evidence.RollupKey]int64{}
	for _, b := range order {
		s := sums[b]
		if s.count == 0 {
			continue
		}
		id, ok := groups[b.group]
		if !ok {
			g := b.group
			args := []any{g.Replica, g.Source, g.DestinationHost, g.DestinationPrincipal, g.Verdict, g.Allowed}
			err := tx.QueryRowContext(ctx, `SELECT id FROM rollup_keys WHERE replica = ? AND source = ? AND dst_host = ?
				AND dst_principal = ? AND verdict = ? AND allowed = ?`, args...).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				err = tx.QueryRowContext(ctx, `INSERT INTO rollup_keys (replica, source, dst_host, dst_principal, verdict, allowed)
					VALUES (?, ?, ?, ?, ?, ?) RETURNING id`, args...).Scan(&id)
			}
			if err != nil {
				return fmt.Errorf("rollup group: %w", err)
			}
			groups[b.group] = id
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(upsertSQL, rows(1, rollupParams)),
			b.span, b.minute, id, s.count, s.first, s.last, s.example); err != nil {
			return fmt.Errorf("rollups: %w", err)
		}
	}
	return nil
}
