package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// TestClassify: real errors from a real PostgreSQL are sorted into the data
// refused (permanent: quarantine) and everything else (transient: retry).
func TestClassify(t *testing.T) {
	dsn := postgrestest.DSN(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE t (id text PRIMARY KEY, n int CHECK (n > 0));
		INSERT INTO t VALUES ('a', 1)`); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) error {
		_, err := conn.Exec(ctx, sql, args...)
		if err == nil {
			t.Fatalf("%s: no error", sql)
		}
		return err
	}
	for _, tc := range []struct {
		what      string
		err       error
		permanent bool
	}{
		{"22021 a NUL byte in text", exec("INSERT INTO t VALUES ($1, 1)", "a\x00b"), true},
		{"22012 division by zero", exec("SELECT 1/0"), true},
		{"22003 out of range", exec("INSERT INTO t VALUES ('b', 3000000000)"), true},
		{"23505 unique violation", exec("INSERT INTO t VALUES ('a', 2)"), true},
		{"23502 not null", exec("INSERT INTO t VALUES (NULL, 2)"), true},
		{"54000 program limit", exec("SELECT array_fill(1, ARRAY[200000000])"), true},
		// A row with no partition: the store makes the partition.
		{"23514 check violation", exec("INSERT INTO t VALUES ('c', -1)"), false},
		// Schema and grants: a person fixes them, the same data then goes in.
		{"42P01 undefined table", exec("SELECT * FROM missing"), false},
		{"42501 insufficient privilege", exec("SET ROLE pg_read_all_data; INSERT INTO t VALUES ('d', 1)"), false},
	} {
		if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
			t.Fatal(err)
		}
		if got := evidence.IsPermanent(postgres.Classify(tc.err)); got != tc.permanent {
			t.Errorf("%s (%v): permanent %v, want %v", tc.what, tc.err, got, tc.permanent)
		}
		if !strings.Contains(tc.err.Error(), tc.what[:5]) {
			t.Errorf("%s: the error is %v", tc.what, tc.err)
		}
	}

	// Transient: the server going away, a timeout, no server at all.
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	var pid int
	if err := other.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	_, killed := other.Exec(ctx, "SELECT 1")
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, timeout := conn.Exec(tctx, "SELECT pg_sleep(30)")
	_, refused := pgx.Connect(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	for what, err := range map[string]error{"terminated connection": killed, "timeout": timeout, "connection refused": refused} {
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		if evidence.IsPermanent(postgres.Classify(err)) {
			t.Errorf("%s (%v): permanent, want transient", what, err)
		}
	}
}

// TestAppendRefusedRecord: records PostgreSQL itself refuses (a NUL byte in
// a text column, bypassing evidence.Bound) or that the store cannot keep (a
// time past what it stores) fail a batch with a permanent error, and
// AppendIsolating quarantines just them; the chain verifies.
func TestAppendRefusedRecord(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	var head evidence.Link
	now := time.Now().UTC().Truncate(time.Second)
	recs := chained("r1", &evidence.Link{}, every(now, time.Second, 20)...)
	recs[5].Request.Host = "ledger\x00evil"
	recs[13].Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	head = evidence.Link{}
	for _, r := range recs {
		head = head.Link(r) // again: the changes are in the hashes
	}
	err := s.Append(ctx, recs)
	if !evidence.IsPermanent(err) {
		t.Fatalf("Append = %v, want a permanent error", err)
	}
	n, err := evidence.AppendIsolating(ctx, s, recs, time.Minute)
	if err != nil || n != 2 {
		t.Fatalf("AppendIsolating = %d, %v; want 2 quarantined", n, err)
	}
	if got, err := s.Head(ctx, "r1"); err != nil || got != head {
		t.Fatalf("Head = %+v, %v; want %+v", got, err, head)
	}
	q, err := s.Quarantined(ctx, "r1")
	if err != nil || len(q) != 2 || q[0].Seq != 6 || q[1].Seq != 14 {
		t.Fatalf("Quarantined = %+v, %v; want seqs 6 and 14", q, err)
	}
	if !strings.Contains(q[0].Reason, "22021") || !strings.Contains(q[1].Reason, "out of range") {
		t.Errorf("reasons %q, %q: want the store's errors", q[0].Reason, q[1].Reason)
	}
	reps, err := evidence.Verify(ctx, s)
	if err != nil || len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != 18 || len(reps[0].Quarantined) != 2 {
		t.Fatalf("Verify = %+v, %v; want intact, 18 records checked and 2 quarantined", reps, err)
	}
	if _, err := s.Get(ctx, recs[5].ID); !errors.Is(err, evidence.ErrNotFound) {
		t.Errorf("Get of a quarantined record = %v, want ErrNotFound (it is not among the records)", err)
	}
}

// TestMigrateToQuarantine: a database of schema 1 holding records of a v1
// hash chain (testdata/schema1.sql.gz: written by the previous meshproof,
// with the tables of later schemas and their version rows taken away
// again) migrates to this schema, verifies intact, and quarantines a
// refused record of its new log.
func TestMigrateToQuarantine(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	restore(t, dsn, "testdata/schema1.sql.gz")
	if _, err := postgres.Open(ctx, dsn, evidence.Options{}); !errors.Is(err, evidence.ErrSchema) {
		t.Fatalf("Open of a schema 1 database = %v, want ErrSchema", err)
	}
	s := open(t, dsn) // migrates
	head, err := s.Head(ctx, "r1")
	if err != nil || head.Seq != 5 {
		t.Fatalf("Head = %+v, %v; want seq 5", head, err)
	}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC) // the fixture's
	next := head
	more := chained("r1", &next, every(now.Add(time.Minute), time.Second, 3)...)
	more[1].Request.Host = "bad\x00host"
	for _, r := range more {
		head = head.Link(r)
	}
	if n, err := evidence.AppendIsolating(ctx, s, more, time.Minute); err != nil || n != 1 {
		t.Fatalf("AppendIsolating = %d, %v; want 1 quarantined", n, err)
	}
	reps, err := evidence.Verify(ctx, s)
	if err != nil || len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != 7 || len(reps[0].Quarantined) != 1 {
		t.Fatalf("Verify = %+v, %v; want intact, 7 checked, 1 quarantined", reps, err)
	}
}
