package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/archive"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
)

// archiveStore is a SQLite store of n records of realistic traffic, 15
// minutes apart, ending at end, and a signing key pair (key, key.pub).
func archiveStore(t *testing.T, n int, end time.Time) (dsn, key string) {
	t.Helper()
	ctx := context.Background()
	dsn = "sqlite:" + filepath.Join(t.TempDir(), "e.db")
	s, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := traffic.Write(ctx, s, traffic.New(t, 5, "r1"), n, end, 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	key = filepath.Join(t.TempDir(), "key")
	if err := runKeygen("archive.test", key, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	return dsn, key
}

// TestArchiveCommand: meshproof archive seals the whole days before
// --before, verify --archive checks them with the public key and calls an
// edited file BROKEN (exit 1), and wants the key.
func TestArchiveCommand(t *testing.T) {
	ctx := context.Background()
	end := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	dsn, key := archiveStore(t, 350, end)
	dir := filepath.Join(t.TempDir(), "archive")
	var out bytes.Buffer
	args := []string{"--store", dsn, "--before", end.Format(time.RFC3339), "--out", dir, "--signing-key", key}
	if err := execute(ctx, archiveCommand(&out), args); err != nil {
		t.Fatalf("archive: %v\n%s", err, &out)
	}
	for _, want := range []string{"r1       2026-11-19", "4 day(s) sealed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("archive output lacks %q:\n%s", want, &out)
		}
	}
	out.Reset()
	if err := execute(ctx, archiveCommand(&out), args); err != nil || !strings.Contains(out.String(), "already archived") || !strings.Contains(out.String(), "0 day(s) sealed") {
		t.Fatalf("archive again: %v\n%s", err, &out)
	}

	out.Reset()
	if err := runVerify([]string{"--archive", dir, "--public-key", key + ".pub"}, &out); err != nil {
		t.Fatalf("verify --archive: %v\n%s", err, &out)
	}
	if !strings.Contains(out.String(), "archive intact: 4 day(s)") {
		t.Errorf("verify --archive:\n%s", &out)
	}
	var usage usageError
	if err := runVerify([]string{"--archive", dir}, &out); !errors.As(err, &usage) {
		t.Errorf("verify --archive without --public-key = %v, want a usage error", err)
	}

	path := filepath.Join(archive.DayDir(dir, "r1", "2026-11-18"), archive.RecordsFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = runVerify([]string{"--archive", dir, "--public-key", key + ".pub"}, &out)
	if err != errBroken || !strings.Contains(out.String(), "archive BROKEN: "+filepath.Dir(path)) || !strings.Contains(out.String(), "records.parquet: SHA-256") {
		t.Fatalf("verify --archive of an edited file = %v:\n%s", err, &out)
	}
}

// TestRetentionKeepsWhatIsNotArchived: with --archive-dir, retention
// removes records only up to where the archive holds every record of
// every replica: nothing when the archive cannot be written, and with
// one, exactly the archived days, while retention alone would remove
// nearly all.
func TestRetentionKeepsWhatIsNotArchived(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC()
	const n = 350
	o := defaultEvidenceOptions()
	o.Retention, o.RollupRetention = time.Hour, 0
	o.Archive = archiveOptions{After: 48 * time.Hour, Every: time.Hour}
	count := func(t *testing.T, s evidence.Store) int64 {
		t.Helper()
		c, err := s.Count(ctx, evidence.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	open := func(t *testing.T) (evidence.Store, *archiveState, string) {
		dsn, key := archiveStore(t, n, now)
		s, err := evidence.Open(ctx, dsn, evidence.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		signer, err := evidence.LoadSigner(key)
		if err != nil {
			t.Fatal(err)
		}
		return s, &archiveState{o: o.Archive, signer: signer, log: zerolog.Nop()}, key
	}

	t.Run("archive fails", func(t *testing.T) {
		s, arch, _ := open(t)
		// A file where the directory should be: nothing can be sealed.
		arch.o.Dir = filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(arch.o.Dir, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		retainOnce(ctx, s, o, arch, now, zerolog.Nop())
		if got := count(t, s); got != n {
			t.Fatalf("retention removed %d records that are not archived", n-got)
		}
	})

	t.Run("archive holds the days", func(t *testing.T) {
		s, arch, key := open(t)
		arch.o.Dir = filepath.Join(t.TempDir(), "archive")
		retainOnce(ctx, s, o, arch, now, zerolog.Nop())
		var archived int64
		for _, d := range arch.safe.Days {
			archived += d.Records
		}
		cut := arch.safe.Safe["r1"]
		if want := now.Add(-o.Archive.After).Truncate(24 * time.Hour); !cut.Equal(want) {
			t.Fatalf("archived before %v, want %v", cut, want)
		}
		left := count(t, s)
		if archived == 0 || left+archived != n {
			t.Fatalf("%d records archived, %d left in the store: %d records lost or kept twice", archived, left, n-left-archived)
		}
		older, err := s.Count(ctx, evidence.Filter{Until: cut})
		if err != nil {
			t.Fatal(err)
		}
		if older != 0 {
			t.Fatalf("%d records before %v left in the store", older, cut)
		}
		verifiers, err := evidence.LoadVerifiers([]string{key + ".pub"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Verify(ctx, arch.o.Dir, verifiers); err != nil {
			t.Fatalf("the archive: %v", err)
		}
		reports, err := evidence.VerifyWith(ctx, s, evidence.VerifyOptions{Verifiers: verifiers})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reports {
			if r.Broken != nil {
				t.Fatalf("the store after retention: %s: %+v", r.Replica, r.Broken)
			}
		}
	})
}
