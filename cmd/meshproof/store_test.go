package main

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/rs/zerolog"
)

// TestReadersNeverCreateTheStore: verify and serve --role query on a
// mistyped SQLite path fail naming the path (verify exits 1), and leave no
// file behind: they used to create an empty store, which verify reported
// as holding no chains, with exit 0.
func TestReadersNeverCreateTheStore(t *testing.T) {
	for _, args := range [][]string{{"verify"}, {"verify", "--output", "json"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "MISTYPED.db")
			var stdout, stderr strings.Builder
			code := run(append(args, "--store", "sqlite:"+path), &stdout, &stderr)
			if code != 1 || !strings.Contains(stderr.String(), path) || !strings.Contains(stderr.String(), "does not exist") {
				t.Errorf("exit %d, stderr %q, stdout %q; want 1 and an error naming %s", code, stderr.String(), stdout.String(), path)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("the store was created: %v", entries)
			}
		})
	}

	t.Run("serve --role query", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "MISTYPED.db")
		o, err := parseServe(t, "--role", "query", "--store", "sqlite:"+path, "--http-addr", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// Done already: a server that opened the store stops at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err = serve(ctx, o, zerolog.Nop())
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("serve --role query = %v; want an error naming %s", err, path)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("the store was created: %v", entries)
		}
	})

	// migrate still creates a store, and verify then reads it.
	path := filepath.Join(t.TempDir(), "evidence.db")
	var out strings.Builder
	if code := run([]string{"migrate", "--store", "sqlite:" + path}, &out, &out); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"verify", "--store", "sqlite:" + path}, &out, &out); code != 0 || !strings.Contains(out.String(), "no chains") {
		t.Fatalf("verify of a new store: exit %d: %s", code, out.String())
	}
}

// TestMigrateSaysWhatItDid: migrate on a new store says it created the
// schema, on an up-to-date one that it is, on an older one from which
// version to which; for a SQLite file and a PostgreSQL database. It used to
// say "schema up to date" for a store it had just created.
func TestMigrateSaysWhatItDid(t *testing.T) {
	v := sqlite.SchemaVersion
	dir := t.TempDir()
	old := filepath.Join(dir, "schema1.db")
	gunzipTo(t, "../../evidence/sqlite/testdata/schema1.db.gz", old)
	check := func(t *testing.T, store string, want ...string) {
		for _, want := range want {
			code, stdout, stderr := cli(t, "migrate", "--store", store)
			if code != 0 || stdout != evidence.Redact(store)+": "+want+"\n" {
				t.Errorf("migrate %s: exit %d, %q, want %q\n%s", evidence.Redact(store), code, stdout, want, stderr)
			}
		}
	}
	check(t, "sqlite:"+filepath.Join(dir, "new.db"), fmt.Sprintf("created schema v%d", v), fmt.Sprintf("schema v%d up to date", v))
	check(t, "sqlite:"+old, fmt.Sprintf("migrated schema v1 → v%d", v), fmt.Sprintf("schema v%d up to date", v))
	t.Run("postgres", func(t *testing.T) {
		check(t, postgrestest.DSN(t), fmt.Sprintf("created schema v%d", postgres.SchemaVersion), fmt.Sprintf("schema v%d up to date", postgres.SchemaVersion))
	})
}

func gunzipTo(t *testing.T, gz, path string) {
	t.Helper()
	f, err := os.Open(gz)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
