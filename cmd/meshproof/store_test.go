package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
