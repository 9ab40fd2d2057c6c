package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/evidence"
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
