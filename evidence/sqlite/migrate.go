package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/meshproof/meshproof/evidence"
)

// migrations[i] brings the schema from version i to i+1. They are only ever
// appended to: a file written by any earlier version migrates forward.
var migrations = [][]string{
	{ // 1: records, chain heads and checkpoints, rollups.
		// body is json.Marshal of the record, the stored record itself; the
		// other columns are evidence.ColumnsOf it, for the indexes (Verify
		// checks that they still agree). body comes last so that filtering
		// on the columns does not read it.
		`CREATE TABLE records (
			replica       TEXT    NOT NULL,
			seq           INTEGER NOT NULL,
			id            TEXT    NOT NULL,
			time_ns       INTEGER NOT NULL,
			src_principal TEXT    NOT NULL,
			dst_principal TEXT    NOT NULL,
			src_td        TEXT    NOT NULL,
			dst_td        TEXT    NOT NULL,
			src_ns        TEXT    NOT NULL,
			dst_ns        TEXT    NOT NULL,
			source_key    TEXT    NOT NULL,
			verdict       TEXT    NOT NULL,
			allowed       INTEGER NOT NULL,
			method        TEXT    NOT NULL,
			host          TEXT    NOT NULL,
			path          TEXT    NOT NULL,
			request_id    TEXT    NOT NULL,
			hash          TEXT    NOT NULL,
			body          BLOB    NOT NULL,
			PRIMARY KEY (replica, seq)
		)`,
		`CREATE UNIQUE INDEX records_id ON records (id)`,
		// Newest-first pages, alone or after an equality on the leading
		// column: (time_ns, id) is the listing order and the cursor.
		`CREATE INDEX records_time ON records (time_ns, id)`,
		`CREATE INDEX records_src ON records (src_principal, time_ns, id)`,
		`CREATE INDEX records_dst ON records (dst_principal, time_ns, id)`,
		`CREATE INDEX records_verdict ON records (verdict, time_ns, id)`,
		`CREATE INDEX records_host ON records (host, time_ns, id)`,
		`CREATE INDEX records_request ON records (request_id)`,
		// The head as written with the last batch, apart from the records,
		// so that records removed from or added after the end show.
		`CREATE TABLE chain_heads (
			replica TEXT    NOT NULL PRIMARY KEY,
			seq     INTEGER NOT NULL,
			hash    TEXT    NOT NULL
		) WITHOUT ROWID`,
		// The last link retention removed: where the stored chain starts.
		`CREATE TABLE chain_checkpoints (
			replica TEXT    NOT NULL PRIMARY KEY,
			seq     INTEGER NOT NULL,
			hash    TEXT    NOT NULL
		) WITHOUT ROWID`,
		// Rollups per minute (span 1), hour (60), UTC day (1440) and week
		// (10080, aligned on the Unix epoch), all kept in the same
		// transaction as the records: an aggregate over 30 days reads a few
		// week rows per group plus the days, hours and minutes at the ends,
		// never 43,200 minutes of them. minute is the bucket's first Unix
		// minute. A group's identity (replica, edge, verdict, outcome) is
		// stored once in rollup_keys; the bucket rows carry its number, so
		// they stay small and an aggregate groups integers.
		`CREATE TABLE rollup_keys (
			id            INTEGER PRIMARY KEY,
			replica       TEXT    NOT NULL,
			source        TEXT    NOT NULL,
			dst_host      TEXT    NOT NULL,
			dst_principal TEXT    NOT NULL,
			verdict       TEXT    NOT NULL,
			allowed       INTEGER NOT NULL,
			UNIQUE (replica, source, dst_host, dst_principal, verdict, allowed)
		)`,
		`CREATE INDEX rollup_keys_host ON rollup_keys (dst_host)`,
		`CREATE INDEX rollup_keys_principal ON rollup_keys (dst_principal)`,
		`CREATE TABLE rollups (
			span       INTEGER NOT NULL,
			minute     INTEGER NOT NULL,
			key        INTEGER NOT NULL REFERENCES rollup_keys (id),
			count      INTEGER NOT NULL,
			first_ns   INTEGER NOT NULL,
			last_ns    INTEGER NOT NULL,
			example_id TEXT    NOT NULL,
			PRIMARY KEY (span, minute, key)
		) WITHOUT ROWID`,
	},
	{ // 2: one index by edge instead of four by column, a request id index
		// written in one place at a time, for ingest (three times as fast:
		// docs/performance.md).
		//
		// An edge is the identity part of a record that filters select on:
		// principals, trust domains and namespaces of both sides, host,
		// verdict, outcome, replica. A store holds thousands, not millions,
		// so a filter on any of them becomes a short list of edge numbers,
		// and one (edge, time_ns, id) index replaces the src, dst, host and
		// verdict ones: a batch touches one index spot per edge instead of
		// four per record.
		`CREATE TABLE edges (
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
			UNIQUE (replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed)
		)`,
		// A page's first step names the edges of its filter: by principal
		// or host through these, not a scan of thousands of edges.
		`CREATE INDEX edges_src ON edges (src_principal)`,
		`CREATE INDEX edges_dst ON edges (dst_principal)`,
		`CREATE INDEX edges_host ON edges (host)`,
		`INSERT INTO edges (replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed)
			SELECT DISTINCT replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed
			FROM records ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10`,
		// The row keeps what no edge says; body is still the stored record,
		// and last so that filtering on the columns does not read it. One
		// copy in key order rebuilds the table (a DROP COLUMN per column
		// would rewrite it once for each). Its indexes go with it.
		`CREATE TABLE records2 (
			replica    TEXT    NOT NULL,
			seq        INTEGER NOT NULL,
			id         TEXT    NOT NULL,
			time_ns    INTEGER NOT NULL,
			edge       INTEGER NOT NULL,
			method     TEXT    NOT NULL,
			path       TEXT    NOT NULL,
			request_id TEXT    NOT NULL,
			hash       TEXT    NOT NULL,
			body       BLOB    NOT NULL,
			PRIMARY KEY (replica, seq)
		)`,
		`INSERT INTO records2 (replica, seq, id, time_ns, edge, method, path, request_id, hash, body)
			SELECT r.replica, r.seq, r.id, r.time_ns, e.id, r.method, r.path, r.request_id, r.hash, r.body
			FROM records AS r JOIN edges AS e ON e.replica = r.replica AND e.src_principal = r.src_principal
				AND e.src_td = r.src_td AND e.src_ns = r.src_ns AND e.dst_principal = r.dst_principal
				AND e.dst_td = r.dst_td AND e.dst_ns = r.dst_ns AND e.host = r.host AND e.verdict = r.verdict
				AND e.allowed = r.allowed
			ORDER BY r.replica, r.seq`,
		`DROP TABLE records`,
		`ALTER TABLE records2 RENAME TO records`,
		`CREATE UNIQUE INDEX records_id ON records (id)`,
		// Newest-first pages: the listing order and the cursor, and the edge
		// so that a filter on edges is checked in the index, without the row.
		`CREATE INDEX records_time ON records (time_ns, id, edge)`,
		`CREATE INDEX records_edge ON records (edge, time_ns, id)`,
		// Request ids are random: an index on them alone takes each insert
		// to a different page of one that grows with the store. Led by a
		// chain segment (seq >> 15, 32,768 links), inserts land in the
		// current segment's part only; a lookup probes every segment, a few
		// hundred at 10M records.
		`CREATE INDEX records_request ON records (seq >> 15, request_id)`,
		// Rollups of the hour, day and week are written when an hour closes
		// (the first record of a later hour arrives), summed from its
		// minutes, rather than with every batch; an aggregate reads minutes
		// after the closed mark. Version 1 kept every span at every write,
		// so all it holds counts as closed: the mark is the hour after its
		// last minute.
		`CREATE TABLE rollup_closed (
			one    INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
			minute INTEGER NOT NULL
		)`,
		fmt.Sprintf(`INSERT INTO rollup_closed (one, minute) SELECT 1, coalesce(
			(SELECT max(minute) - ((max(minute) %% 60) + 60) %% 60 + 60 FROM rollups WHERE span = 1), %d)`, beginningOfTime),
	},
	{ // 3: the quarantine, records the store refused for their content
		// (evidence.ErrPermanent), kept apart with the reason. A quarantined
		// record keeps its place in its replica's chain: the head moves past
		// it as if it were stored, and verify walks records and quarantine
		// together, so the chain stays whole and nothing is erased. body is
		// json.Marshal of the record (empty when it would not encode).
		// Retention leaves the table alone: it is for a person to read.
		`CREATE TABLE quarantine (
			replica        TEXT    NOT NULL,
			seq            INTEGER NOT NULL,
			id             TEXT    NOT NULL,
			prev_hash      TEXT    NOT NULL,
			hash           TEXT    NOT NULL,
			body           BLOB    NOT NULL,
			reason         TEXT    NOT NULL,
			quarantined_ns INTEGER NOT NULL,
			PRIMARY KEY (replica, seq)
		) WITHOUT ROWID`,
	},
	// 4: each replica's transparency log and its signed checkpoints (see
	// tlog.go). Records written from now on are canonical encoding v2.
	logMigration,
	// 5: rollup seals and the rollups' horizon (see seal.go).
	sealMigration,
	// 6: compact records (see compact.go); migrateCompact copies them.
	compactMigration,
	// 7: the peers' workloads on edges (see workloads.go);
	// migrateWorkloads moves the records that have one to their edge.
	workloadMigration,
}

// migrationFuncs[i] runs after the statements of migrations[i], in the same
// transaction: what SQL alone cannot do.
var migrationFuncs = map[int]func(context.Context, *sql.Tx) error{
	5: migrateCompact,
	6: migrateWorkloads,
}

// SchemaVersion is the schema this code writes.
var SchemaVersion = len(migrations)

const createVersionTable = `CREATE TABLE IF NOT EXISTS schema_version (
	one     INTEGER NOT NULL PRIMARY KEY CHECK (one = 1),
	version INTEGER NOT NULL
)`

// migrate brings the schema up to SchemaVersion, and returns the version
// the file had (0: new). An up-to-date file is only read, so that a
// read-only one still opens for queries and verification.
func migrate(ctx context.Context, db *sql.DB) (from int, err error) {
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return v, err
	}
	if v == SchemaVersion {
		return v, nil
	}
	if v > SchemaVersion {
		return v, newerSchema(v)
	}
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: one migrator at a time
	if err != nil {
		return v, fmt.Errorf("migrating the schema: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, createVersionTable); err != nil {
		return v, fmt.Errorf("migrating the schema: %w", err)
	}
	// Read again inside the transaction: another process may have migrated.
	if err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); errors.Is(err, sql.ErrNoRows) {
		v = 0
	} else if err != nil {
		return v, fmt.Errorf("reading the schema version: %w", err)
	}
	if v > SchemaVersion {
		return v, newerSchema(v)
	}
	for i := v; i < SchemaVersion; i++ {
		for _, stmt := range migrations[i] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return v, fmt.Errorf("migrating the schema to version %d: %w", i+1, err)
			}
		}
		if fn := migrationFuncs[i]; fn != nil {
			if err := fn(ctx, tx); err != nil {
				return v, fmt.Errorf("migrating the schema to version %d: %w", i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (one, version) VALUES (1, ?)
		ON CONFLICT (one) DO UPDATE SET version = excluded.version`, SchemaVersion); err != nil {
		return v, fmt.Errorf("recording the schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return v, fmt.Errorf("migrating the schema: %w", err)
	}
	if v > 0 && v < 6 {
		if err := compactFile(ctx, db); err != nil {
			return v, err
		}
	}
	return v, nil
}

// compactFile gives the file's free pages back after migration 6, which
// copied the records into a tenth of the space their old table held:
// VACUUM rewrites the file (through the WAL, which the checkpoint then
// truncates).
func compactFile(ctx context.Context, db *sql.DB) error {
	var free int64
	if err := db.QueryRowContext(ctx, `SELECT freelist_count FROM pragma_freelist_count`).Scan(&free); err != nil {
		return fmt.Errorf("after migrating the schema: %w", err)
	}
	if free == 0 {
		return nil
	}
	for _, q := range []string{`VACUUM`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("after migrating the schema (%s: it can be run by hand later): %w", q, err)
		}
	}
	return nil
}

// schemaVersion reads the version, 0 for a new file.
func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'`).Scan(&n)
	if err != nil {
		if strings.Contains(err.Error(), "not a database") {
			return 0, fmt.Errorf("not an SQLite database (is the path right?): %w", err)
		}
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	var v int
	if err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	return v, nil
}

func newerSchema(v int) error {
	return fmt.Errorf("%w: the file has schema version %d, written by a newer meshproof; this one knows up to version %d: run the newer meshproof (or keep this file for it and use another)",
		evidence.ErrSchema, v, SchemaVersion)
}
