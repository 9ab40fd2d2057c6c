package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// withPassword adds a password to dsn (the test cluster trusts loopback, so
// any password connects), to see that no message shows it.
func withPassword(t *testing.T, dsn, pw string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

func TestOpenRefusesUnmigratedSchema(t *testing.T) {
	ctx := context.Background()
	dsn := withPassword(t, postgrestest.DSN(t), "s3cret-pw")
	for _, scheme := range []string{"postgres", "postgresql"} {
		t.Run(scheme, func(t *testing.T) {
			dsn := scheme + strings.TrimPrefix(dsn, "postgres")
			_, err := evidence.Open(ctx, dsn, evidence.Options{})
			if !errors.Is(err, evidence.ErrSchema) {
				t.Fatalf("Open before migrate: %v, want ErrSchema", err)
			}
			advice := "run: meshproof migrate --store '" + evidence.Redact(dsn) + "'"
			if !strings.Contains(err.Error(), advice) {
				t.Errorf("Open before migrate: %q\ndoes not say %q", err, advice)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("the error shows the password: %q", err)
			}
		})
	}
	if err := evidence.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	s, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatalf("Open after migrate: %v", err)
	}
	s.Close()
}

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	for i := range 3 {
		if err := postgres.Migrate(ctx, dsn); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	versions := schemaVersions(t, dsn)
	if len(versions) == 0 || versions[0] != 1 || versions[len(versions)-1] != len(versions) {
		t.Fatalf("schema_version holds %v, want 1..N once each", versions)
	}
	s, err := postgres.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestConcurrentMigrate(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	const replicas = 4
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			errs[i] = postgres.Migrate(ctx, dsn)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate in replica %d: %v", i, err)
		}
	}
	want := schemaVersions(t, dsn)
	if len(want) != postgres.SchemaVersion {
		t.Fatalf("schema_version holds %v after concurrent migrations, want each of 1..%d once", want, postgres.SchemaVersion)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	if err := postgres.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, "INSERT INTO schema_version (version, name) VALUES ($1, 'from the future')", postgres.SchemaVersion+1)
	_, err := postgres.Open(ctx, dsn, evidence.Options{})
	if !errors.Is(err, evidence.ErrSchema) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer schema: %v, want ErrSchema saying it is newer", err)
	}
	if err := postgres.Migrate(ctx, dsn); !errors.Is(err, evidence.ErrSchema) {
		t.Errorf("Migrate of a newer schema: %v, want ErrSchema", err)
	}
}

func TestOpenBadDSNHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://u:hunter2@127.0.0.1:notaport/db",
		"postgres://u@127.0.0.1:notaport/db?password=hunter2",
		"postgres://u@127.0.0.1:1/db?password=hunter2&connect_timeout=1",
	} {
		for name, err := range map[string]error{
			"Open":    func() error { _, err := postgres.Open(context.Background(), dsn, evidence.Options{}); return err }(),
			"Migrate": postgres.Migrate(context.Background(), dsn),
		} {
			if err == nil || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("%s(%s): %v, want an error without the password", name, dsn, err)
			}
		}
	}
}

func schemaVersions(t *testing.T, dsn string) []int {
	t.Helper()
	conn := connect(t, dsn)
	rows, err := conn.Query(context.Background(), "SELECT version FROM schema_version ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t testing.TB, dsn, sql string, args ...any) {
	t.Helper()
	if _, err := connect(t, dsn).Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestPoolSettingsInTheDSN: a connection string with the pool's own
// settings (pool_max_conns=1, as a small replica would run) migrates and
// opens. Migrate sent pool_max_conns to the server ("unrecognized
// configuration parameter"), and Open held its one connection while it
// read the partitions on another, so a pool of one never opened.
func TestPoolSettingsInTheDSN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := postgrestest.DSN(t) + "&pool_max_conns=1"
	if _, err := postgres.MigrateVersions(ctx, dsn); err != nil {
		t.Fatalf("Migrate with pool_max_conns in the DSN: %v", err)
	}
	s, err := postgres.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatalf("Open with pool_max_conns=1: %v", err)
	}
	defer s.Close()
	var head evidence.Link
	if err := s.Append(ctx, chained("r1", &head, every(time.Now().Add(-time.Minute), time.Millisecond, 3)...)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Count(ctx, evidence.Filter{}); err != nil || n != 3 {
		t.Fatalf("Count = %d, %v; want 3", n, err)
	}
}
