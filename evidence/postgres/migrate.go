package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// migrations/NNNN_name.sql, applied in order; a file is never edited once
// released (a change is a new file).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations, checking they are numbered
// 1, 2, 3... without a gap.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	ms := make([]migration, 0, len(names))
	for i, name := range names { // fs.Glob sorts
		base := path.Base(name)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want number %04d", base, i+1)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	if len(ms) != SchemaVersion {
		return nil, fmt.Errorf("%d migrations embedded, SchemaVersion is %d", len(ms), SchemaVersion)
	}
	return ms, nil
}

// SchemaVersion is the schema version this meshproof reads and writes: the
// number of migrations.
const SchemaVersion = 10

// migrateLock is the advisory lock key that serialises migrations: two
// replicas running `meshproof migrate` at once apply each step once.
const migrateLock = 0x6d65736870726f66 // "meshprof"

// Migrate brings the schema of the database dsn names to this version:
// the migrations it lacks are applied in order in one transaction, under
// an advisory lock. It is idempotent, and refuses a newer schema.
func Migrate(ctx context.Context, dsn string) error {
	_, err := MigrateVersions(ctx, dsn)
	return err
}

// MigrateVersions is Migrate, saying from which schema version to which.
func MigrateVersions(ctx context.Context, dsn string) (evidence.Migrated, error) {
	// The pool's settings (pool_max_conns and the like), which Open takes
	// from the same string, are not the server's: parsed off, not sent.
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return evidence.Migrated{}, fmt.Errorf("postgres store %s: not a valid connection string (want postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...): %s", redact(dsn), scrub(err.Error(), dsn))
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return evidence.Migrated{}, fmt.Errorf("postgres store %s: cannot connect: %s", redact(dsn), scrub(err.Error(), dsn))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	from, err := migrate(ctx, conn, dsn)
	if err != nil {
		return evidence.Migrated{}, err
	}
	done := evidence.Migrated{From: from, To: SchemaVersion}
	// Days ahead get their partitions now, so that writers rarely have to
	// create one (which takes a lock on the table).
	now := time.Now()
	if evidence.CheckTime(now) != nil {
		return done, nil // a broken clock: writers create the days they need
	}
	today := dayOf(now.UnixNano())
	return done, createPartitions(ctx, conn, today, today+1, today+2, today+3)
}

// migrate applies the missing migrations in one transaction, and returns
// the version the database had (0: none).
func migrate(ctx context.Context, conn *pgx.Conn, dsn string) (from int, err error) {
	ms, err := loadMigrations()
	if err != nil {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The lock first: the version table itself is created under it.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return fmt.Errorf("postgres store %s: waiting for the migration lock: %w", redact(dsn), err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("postgres store %s: creating schema_version: %w", redact(dsn), err)
		}
		have, err := schemaVersion(ctx, tx)
		if err != nil {
			return err
		}
		from = have
		if have > SchemaVersion {
			return newerSchema(dsn, have, SchemaVersion)
		}
		for _, m := range ms[have:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("postgres store %s: migration %s: %w", redact(dsn), m.name, err)
			}
			if m.version == 5 {
				if err := convertV4(ctx, tx); err != nil {
					return fmt.Errorf("postgres store %s: migration %s: %w", redact(dsn), m.name, err)
				}
			}
			if m.version == 7 {
				if err := backfillWorkloads(ctx, tx); err != nil {
					return fmt.Errorf("postgres store %s: migration %s: %w", redact(dsn), m.name, err)
				}
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return fmt.Errorf("postgres store %s: recording migration %s: %w", redact(dsn), m.name, err)
			}
		}
		return nil
	})
	return from, err
}

// backfillWorkloads (migration 7) sets the columns of the shapes that hold
// a workload from their bodies: both workloads, the namespaces and the
// source key, as evidence.ColumnsOf gives them now. A shape that does not
// decode stops the migration, naming it.
func backfillWorkloads(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, body FROM shapes ORDER BY id`)
	if err != nil {
		return fmt.Errorf("reading the shapes: %w", err)
	}
	type update struct {
		id int32
		c  evidence.Columns
	}
	var updates []update
	rekeyed := map[int32]*evidence.Record{}
	var id int32
	var body []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &body}, func() error {
		shape, err := unpackShape(body)
		if err != nil {
			return fmt.Errorf("shape %d: %w", id, err)
		}
		r, err := compact.DecodeShape(shape)
		if err != nil {
			return fmt.Errorf("shape %d: %w (run meshproof verify with the meshproof that wrote the database)", id, err)
		}
		if r.Source.Workload != nil || r.Destination.Workload != nil {
			updates = append(updates, update{id, evidence.ColumnsOf(r)})
			if oldSourceKey(r) != evidence.SourceKey(r) {
				rekeyed[id] = r
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	for _, u := range updates {
		b.Queue(`UPDATE shapes SET source_workload = $2, destination_workload = $3, source_namespace = $4,
			destination_namespace = $5, source_key = $6 WHERE id = $1`,
			u.id, u.c.SourceWorkload, u.c.DestinationWorkload, u.c.SourceNamespace, u.c.DestinationNamespace, u.c.SourceKey)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("setting the workloads of shapes: %w", err)
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
// identity now marked) from the rollup keys schema 6 counted them under to
// the keys evidence.SourceKey gives now, at every level, as Append counts
// (queueRollups), so that verify's rollup check agrees with the records
// again. Minutes a seal closed (their records are not counted) and buckets
// retention removed (before the horizon) are left alone. An old bucket
// keeps its first and last times and example (aggregates leave a key of
// count 0 out).
func rekeyRollups(ctx context.Context, tx pgx.Tx, shapes map[int32]*evidence.Record) error {
	if len(shapes) == 0 {
		return nil
	}
	horizon := int64(math.MinInt64)
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(minute), $1) FROM rollup_horizon", horizon).Scan(&horizon); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	sealed := map[string]int64{}
	rows, err := tx.Query(ctx, `SELECT replica, seal_through FROM chain_heads`)
	if err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	var replica string
	var through int64
	if _, err := pgx.ForEachRow(rows, []any{&replica, &through}, func() error {
		sealed[replica] = through
		return nil
	}); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	type bucket struct {
		level int
		unit  int64
		key   evidence.RollupKey // Minute 0
	}
	sums := map[bucket]*rollup{}
	add := func(b bucket, delta, ns int64, id string) {
		if g := sums[b]; g != nil {
			g.count += delta
			g.first, g.last = min(g.first, ns), max(g.last, ns)
			return
		}
		sums[b] = &rollup{count: delta, first: ns, last: ns, example: id}
	}
	ids := make([]int32, 0, len(shapes))
	for id := range shapes {
		ids = append(ids, id)
	}
	rows, err = tx.Query(ctx, `SELECT shape, time_ns, id FROM records WHERE shape = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	var shape int32
	var ns int64
	var idk []byte
	if _, err := pgx.ForEachRow(rows, []any{&shape, &ns, &idk}, func() error {
		tmpl := shapes[shape]
		id, err := idOf(idk)
		if err != nil {
			return err
		}
		r := *tmpl
		r.Time = time.Unix(0, ns).UTC()
		minute := floorDiv(r.Time.Unix(), 60)
		if minute < sealed[r.Replica] || minute < horizon {
			return nil
		}
		oldKey, newKey := oldSourceKey(tmpl), evidence.SourceKey(tmpl)
		evidence.RollupDeltas(&r, func(k evidence.RollupKey, delta int64) {
			k.Minute = 0
			for i, l := range levels {
				unit := floorDiv(minute, l.minutes)
				if unit*l.minutes < horizon {
					continue // removed by retention
				}
				k.Source = oldKey
				add(bucket{i, unit, k}, -delta, ns, id)
				k.Source = newKey
				add(bucket{i, unit, k}, delta, ns, id)
			}
		})
		return nil
	}); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	keyIDs := map[evidence.RollupKey]int64{}
	b := &pgx.Batch{}
	for bk, g := range sums {
		if g.count == 0 {
			continue
		}
		k := bk.key
		id, ok := keyIDs[k]
		if !ok {
			if err := tx.QueryRow(ctx, `WITH n AS (INSERT INTO rollup_keys (replica, source, destination_host, destination_principal, verdict, allowed)
					VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id)
				SELECT id FROM n UNION ALL SELECT id FROM rollup_keys WHERE replica = $1 AND source = $2 AND destination_host = $3
					AND destination_principal = $4 AND verdict = $5 AND allowed = $6`,
				k.Replica, k.Source, k.DestinationHost, k.DestinationPrincipal, k.Verdict, k.Allowed).Scan(&id); err != nil {
				return fmt.Errorf("rollup key: %w", err)
			}
			keyIDs[k] = id
		}
		l := levels[bk.level]
		// Table and column names are constants of rollup.go.
		b.Queue(`INSERT INTO `+l.table+` AS r (`+l.unit+`, key, count, first_ns, last_ns, example_id) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (`+l.unit+`, key) DO UPDATE SET count = r.count + excluded.count,
				first_ns = least(r.first_ns, excluded.first_ns), last_ns = greatest(r.last_ns, excluded.last_ns)`,
			bk.unit, id, g.count, g.first, g.last, g.example)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("rollups: %w", err)
	}
	return nil
}
