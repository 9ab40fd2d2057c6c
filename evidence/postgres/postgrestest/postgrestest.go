// Package postgrestest gives tests a real PostgreSQL: a fresh database per
// test on the throwaway cluster test/run starts (DSN), the conformance
// suite's Backend over it, and private clusters a fault test can stop and
// start (NewCluster).
//
// Without a cluster the tests skip, saying how to run them; with
// MESHPROOF_REQUIRE_POSTGRES=1 (as in CI) they fail instead.
package postgrestest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// The environment that names the test cluster.
const (
	// EnvDSN names a cluster the tests may create databases on, e.g.
	// postgres://postgres@127.0.0.1:PORT/meshproof?sslmode=disable, as
	// printed by `test/postgres start DIR`.
	EnvDSN = "MESHPROOF_TEST_POSTGRES"
	// EnvRequire set to 1 makes a missing cluster a failure, not a skip.
	EnvRequire = "MESHPROOF_REQUIRE_POSTGRES"
)

const howTo = "start one with `test/postgres start /tmp/mp-pg` and export " + EnvDSN +
	"=<the DSN it prints> (see DEVELOPERS.md); test/run does this itself"

// Required reports whether PostgreSQL tests must run (EnvRequire=1).
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// unavailable skips t, or fails it when PostgreSQL is required.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s=1 but %s: %s", EnvRequire, why, howTo)
	}
	t.Skipf("PostgreSQL tests skipped: %s; to run them, %s", why, howTo)
}

// AdminDSN is the DSN of the test cluster's meshproof database, for
// statements that need no fresh database. It skips t when there is no
// cluster (or fails it, see Required).
func AdminDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		unavailable(t, EnvDSN+" is not set")
	}
	return dsn
}

// DSN creates an empty database on the test cluster, dropped when the
// test ends, and returns its DSN. It skips t when there is no cluster (or
// fails it, see Required).
func DSN(t testing.TB) string {
	t.Helper()
	admin := AdminDSN(t)
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s=%s: want a postgres:// URL", EnvDSN, evidence.Redact(admin))
	}
	name := databaseName(t.Name())
	execSQL(t, admin, `CREATE DATABASE "`+name+`"`)
	t.Cleanup(func() { execSQL(t, admin, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`) })
	u.Path = "/" + name
	return u.String()
}

// execSQL runs one statement on its own connection.
func execSQL(t testing.TB, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("test cluster %s: %v", evidence.Redact(dsn), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("test cluster %s: %s: %v", evidence.Redact(dsn), sql, err)
	}
}

// databaseName is a valid, unique database name that says which test made
// it (a leftover one then says where it came from).
func databaseName(test string) string {
	var b strings.Builder
	b.WriteString("mpt_")
	for _, r := range strings.ToLower(test) {
		if b.Len() >= 48 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	rnd := make([]byte, 5)
	rand.Read(rnd)
	return b.String() + "_" + hex.EncodeToString(rnd)
}
