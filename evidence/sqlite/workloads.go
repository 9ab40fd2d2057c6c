package sqlite

import (
	"context"
	"database/sql"
	"fmt"

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
			if err == sql.ErrNoRows {
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
	return nil
}
