package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestClassify: real errors from SQLite are sorted into the data refused
// (permanent: quarantine) and everything else (transient: retry).
func TestClassify(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	open := func(params string) *sql.DB {
		db, err := sql.Open("sqlite", "file:"+path+"?"+params)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		return db
	}
	db := open("_pragma=busy_timeout(0)")
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER CHECK (n > 0));
		INSERT INTO t VALUES (1, 'a', 1)`); err != nil {
		t.Fatal(err)
	}
	exec := func(db *sql.DB, q string) error {
		_, err := db.ExecContext(ctx, q)
		if err == nil {
			t.Fatalf("%s: no error", q)
		}
		return err
	}
	ro := open("mode=ro")
	busy := open("_pragma=busy_timeout(0)&_txlock=immediate")
	tx, err := busy.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	busyErr := exec(db, "INSERT INTO t VALUES (9, 'z', 1)")
	tx.Rollback()
	for _, tc := range []struct {
		what      string
		err       error
		permanent bool
	}{
		{"UNIQUE constraint", exec(db, "INSERT INTO t VALUES (2, 'a', 1)"), true},
		{"CHECK constraint", exec(db, "INSERT INTO t VALUES (3, 'c', -1)"), true},
		{"datatype mismatch", exec(db, "INSERT INTO t VALUES ('x', 'd', 1)"), true},
		{"too big", exec(db, "SELECT zeroblob(2000000000)"), true},
		{"database is locked", busyErr, false},
		{"readonly", exec(ro, "INSERT INTO t VALUES (4, 'e', 1)"), false},
		{"no such table", exec(db, "SELECT * FROM missing"), false},
	} {
		if !strings.Contains(tc.err.Error(), tc.what) {
			t.Errorf("%s: the error is %v", tc.what, tc.err)
		}
		if got := evidence.IsPermanent(sqlite.Classify(tc.err)); got != tc.permanent {
			t.Errorf("%s (%v): permanent %v, want %v", tc.what, tc.err, got, tc.permanent)
		}
	}
	conflict := fmt.Errorf("%w: test", evidence.ErrChainConflict)
	if evidence.IsPermanent(sqlite.Classify(conflict)) {
		t.Errorf("a chain conflict classified permanent")
	}
}

// TestMigrateFromSchema2 opens a file written by schema 2, before the
// quarantine (testdata/schema2.db.gz: evidencetest.Varied(240, 40, 2)
// appended by the schema-2 store, then closed): it verifies intact with no
// quarantined record, and a record refused afterwards is quarantined on it.
func TestMigrateFromSchema2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "schema2.db")
	unzip(t, "testdata/schema2.db.gz", path)
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open (migrating): %v", err)
	}
	defer s.Close()
	fx := evidencetest.Varied(240, 40, 2)
	counts := map[string]int64{}
	for _, r := range fx.Records {
		counts[r.Replica]++
	}
	verify := func(quarantined int) {
		t.Helper()
		reps, err := evidence.Verify(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		q := 0
		for _, r := range reps {
			if r.Broken != nil || r.Checked != counts[r.Replica] {
				t.Errorf("chain %s: %d checked (want %d), broken %+v", r.Replica, r.Checked, counts[r.Replica], r.Broken)
			}
			q += len(r.Quarantined)
		}
		if q != quarantined {
			t.Errorf("%d quarantined, want %d", q, quarantined)
		}
	}
	verify(0)
	replica := evidencetest.Replicas[0]
	var stored *evidence.Record
	for _, r := range fx.Records {
		if r.Replica == replica {
			stored = r
			break
		}
	}
	recs := []*evidence.Record{
		evidencetest.Full("01JQ0000000000000000MIG2A1", replica, evidencetest.Base.Add(9*24*time.Hour)),
		evidencetest.Poison(stored),
		evidencetest.Full("01JQ0000000000000000MIG2A2", replica, evidencetest.Base.Add(9*24*time.Hour+time.Second)),
	}
	evidencetest.Link(fx.Heads[replica], recs...)
	if n, err := evidence.AppendIsolating(ctx, s, recs, time.Minute); err != nil || n != 1 {
		t.Fatalf("AppendIsolating = %d, %v; want 1 quarantined", n, err)
	}
	counts[replica] += 2
	verify(1)
}
