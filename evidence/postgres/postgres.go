// Package postgres is the evidence store a fleet of meshproof replicas
// shares: PostgreSQL through pgx, records in daily partitions written with
// COPY, rollups per minute (and summed per hour, day and week) updated in
// the same transaction, and retention by dropping whole days.
//
// Unlike the embedded SQLite store, its schema is never changed silently:
// Open refuses a database that `meshproof migrate --store DSN` (Migrate)
// has not brought to this version.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

func init() {
	d := evidence.Driver{
		Open: func(ctx context.Context, dsn string, opts evidence.Options) (evidence.Store, error) {
			s, err := Open(ctx, dsn, opts)
			if err != nil {
				return nil, err // not a nil *Store in a non-nil interface
			}
			return s, nil
		},
		Migrate: MigrateVersions,
	}
	evidence.Register("postgres", d)
	evidence.Register("postgresql", d)
}

// Store is an evidence.Store in a PostgreSQL database.
type Store struct {
	pool  *pgxpool.Pool
	parts *partitions
	keys  keyCache
	// forceSync sets synchronous_commit on for each write: Durable was
	// asked for and the server's default is off.
	forceSync bool
	// durable: Durable was asked for (fsync durability). A journal's
	// commits (journal.go) wait for the server's flush only then.
	durable   bool
	edges     edges        // the replicas' log edges
	writer    *writerCache // shape and replica numbers, for writers
	read      *shapeSet    // shapes and replica names, for readers
	summarize summarizer   // the request id index's new ranges (summarize.go)

	// The replicas this store journals for (OpenJournal), by name, and
	// the journaled records not yet applied (journal.go).
	journalsMu sync.Mutex
	journals   map[string]*journal
	jd         *storekit.Journaled
	closeOnce  sync.Once

	// pageForm forces how pages are read, for tests (formChosen: by
	// the estimate, query.go).
	pageForm pageForm
}

// pageForm is how a filtered page's records are read.
type pageForm int

const (
	formChosen pageForm = iota
	formByTime
	formByShape
)

var _ evidence.Store = (*Store)(nil)

// Open connects to the database dsn names (a pgx connection string, passed
// as is) and checks its schema: a database that is not migrated to this
// version is refused with an error wrapping evidence.ErrSchema that says
// what to run.
func Open(ctx context.Context, dsn string, opts evidence.Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: not a valid connection string (want postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...): %s", redact(dsn), scrub(err.Error(), dsn))
	}
	// Filters differ wildly in selectivity (one principal or all of
	// them), so plan each query for its values rather than caching a
	// generic plan per statement.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", redact(dsn), err)
	}
	s := &Store{pool: pool, parts: newPartitions(pool), keys: newKeyCache(), writer: newWriterCache(), read: newShapeSet(),
		summarize: summarizer{every: summarizeEvery}, jd: storekit.NewJournaled()}
	if err := s.open(ctx, dsn, opts); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, dsn string, opts evidence.Options) error {
	if err := s.checkConn(ctx, dsn, opts); err != nil {
		return err
	}
	// With the connection given back: a pool of one (pool_max_conns=1)
	// has no other.
	if err := s.parts.load(ctx); err != nil {
		return err
	}
	if err := s.preloadKeys(ctx); err != nil {
		return err
	}
	return s.recoverOrphans(ctx)
}

// checkConn checks the schema and the server's settings on one of the
// pool's connections.
func (s *Store) checkConn(ctx context.Context, dsn string, opts evidence.Options) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres store %s: cannot connect: %w", redact(dsn), err)
	}
	defer conn.Release()
	if err := checkSchema(ctx, conn.Conn(), dsn); err != nil {
		return err
	}
	s.durable = opts.Durable
	if opts.Durable {
		var sc string
		if err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_commit')").Scan(&sc); err != nil {
			return fmt.Errorf("postgres store %s: %w", redact(dsn), err)
		}
		s.forceSync = sc == "off"
	}
	return nil
}

// keysPreloaded is how many rollup keys Open reads ahead, newest first.
const keysPreloaded = 100_000

// preloadKeys fills the rollup key cache, so that the first report after
// a start does not name thousands of keys on the way (it more than tripled the first
// 30-day tls-check: docs/performance.md), and a writer
// finds the ids of the edges it already knows.
func (s *Store) preloadKeys(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT id, replica, source, destination_host, destination_principal, verdict, allowed
		FROM rollup_keys ORDER BY id DESC LIMIT $1`, keysPreloaded)
	if err != nil {
		return fmt.Errorf("postgres: rollup keys: %w", err)
	}
	var id int64
	var k evidence.RollupKey
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	if _, err := pgx.ForEachRow(rows, []any{&id, &k.Replica, &k.Source, &k.DestinationHost, &k.DestinationPrincipal, &k.Verdict, &k.Allowed}, func() error {
		s.keys.add(k, id)
		return nil
	}); err != nil {
		return fmt.Errorf("postgres: rollup keys: %w", err)
	}
	return nil
}

// Close applies what is journaled (what cannot be stays in the journal,
// for the next writer of its replica), lets the journals' locks go and
// releases the connections. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.settle(context.Background())
		s.jd.Stop()
		s.closeJournals()
		s.pool.Close()
	})
	return nil
}

// Pool is the store's connection pool, for tests and tools that need SQL.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// checkSchema refuses a database whose schema is not this version.
func checkSchema(ctx context.Context, conn *pgx.Conn, dsn string) error {
	v, err := schemaVersion(ctx, conn)
	if err != nil {
		return fmt.Errorf("postgres store %s: reading the schema version: %w", redact(dsn), err)
	}
	want := SchemaVersion
	switch {
	case v == 0:
		return fmt.Errorf("%w: postgres store %s has no meshproof schema; run: %s", evidence.ErrSchema, redact(dsn), migrateCommand(dsn))
	case v < want:
		return fmt.Errorf("%w: postgres store %s has schema version %d, this meshproof needs %d; run: %s", evidence.ErrSchema, redact(dsn), v, want, migrateCommand(dsn))
	case v > want:
		return newerSchema(dsn, v, want)
	}
	return nil
}

func newerSchema(dsn string, v, want int) error {
	return fmt.Errorf("%w: postgres store %s has schema version %d, newer than this meshproof's %d: run the newer meshproof that migrated it (migrate never downgrades)", evidence.ErrSchema, redact(dsn), v, want)
}

// migrateCommand is what to run to migrate dsn, quoted for a shell.
func migrateCommand(dsn string) string {
	return "meshproof migrate --store '" + redact(dsn) + "'"
}

// schemaVersion is the database's schema version, 0 when it has none.
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v)
	if isCode(err, "42P01") { // undefined_table
		return 0, nil
	}
	return v, err
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// isCode reports whether err is a PostgreSQL error with the SQLSTATE code.
func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// redact is dsn for messages: evidence.Redact, and a password parameter
// hidden too (which evidence.Redact leaves).
func redact(dsn string) string { return scrub(evidence.Redact(dsn), dsn) }

// scrub hides dsn's password (in the user info or a password parameter)
// in msg: parse and connect errors may quote the DSN.
func scrub(msg, dsn string) string {
	var secrets []string
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				secrets = append(secrets, pw)
			}
		}
	}
	if _, query, ok := strings.Cut(dsn, "?"); ok {
		if v, err := url.ParseQuery(query); err == nil {
			secrets = append(secrets, v["password"]...)
		}
	}
	for _, pw := range secrets {
		if pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// isServerError reports whether err is an error PostgreSQL sent (as opposed
// to a connection or client error).
func isServerError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}
