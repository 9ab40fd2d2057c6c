package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/archive"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// end is when the test traffic ends: noon of the fourth day it covers.
var end = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

type fixture struct {
	store     evidence.Store
	signer    note.Signer
	verifiers note.Verifiers
	dir       string
	n         int
}

// stores are the stores the archive is tested on: SQLite, and PostgreSQL
// (MESHPROOF_TEST_POSTGRES; skipped without it unless required).
var stores = []struct {
	name string
	open func(t *testing.T) evidence.Store
}{
	{"sqlite", func(t *testing.T) evidence.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"postgres", func(t *testing.T) evidence.Store { return postgrestest.Backend(t).Store }},
}

// eachStore runs test on each store.
func eachStore(t *testing.T, test func(t *testing.T, open func(t *testing.T) evidence.Store)) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) { test(t, st.open) })
	}
}

// newFixture writes n records of realistic traffic, 15 minutes apart
// ending at end (3 days and a bit), into a real store.
func newFixture(t *testing.T, open func(t *testing.T) evidence.Store, n int) *fixture {
	t.Helper()
	ctx := context.Background()
	s := open(t)
	if _, err := traffic.Write(ctx, s, traffic.New(t, 7, "replica-a"), n, end, 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := evidence.GenerateSigningKey("archive.test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{store: s, signer: signer, verifiers: note.VerifierList(v), dir: filepath.Join(t.TempDir(), "archive"), n: n}
}

func (f *fixture) seal(t *testing.T) archive.Result {
	t.Helper()
	res, err := archive.Seal(context.Background(), f.store, archive.Options{Dir: f.dir, Before: end, Signer: f.signer})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) > 0 {
		t.Fatalf("seal: %v", res.Errors)
	}
	return res
}

func (f *fixture) day(date string) string { return archive.DayDir(f.dir, "replica-a", date) }

func TestSealAndVerify(t *testing.T) { eachStore(t, testSealAndVerify) }

func testSealAndVerify(t *testing.T, open func(t *testing.T) evidence.Store) {
	f := newFixture(t, open, 350)
	res := f.seal(t)
	var dates []string
	var sealed int64
	for _, d := range res.Days {
		dates = append(dates, d.Date)
		sealed += d.Records
	}
	if got := strings.Join(dates, " "); got != "2026-11-16 2026-11-17 2026-11-18 2026-11-19" {
		t.Fatalf("sealed days %s", got)
	}
	// Every record before the day of end is sealed, and only those.
	ctx := context.Background()
	want, err := f.store.Count(ctx, evidence.Filter{Until: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if sealed != want {
		t.Fatalf("sealed %d records, the store has %d before the day of end", sealed, want)
	}
	if got := res.Safe["replica-a"]; !got.Equal(time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("safe before %v", got)
	}
	checked, err := archive.Verify(ctx, f.dir, f.verifiers)
	if err != nil {
		t.Fatal(err)
	}
	if len(checked) != 4 {
		t.Fatalf("verify checked %d days", len(checked))
	}

	// Each record rebuilt from its row is the stored one, byte for byte.
	var shapes archive.Shapes
	rows := 0
	for _, date := range dates {
		for _, row := range readRows(t, filepath.Join(f.day(date), archive.RecordsFile)) {
			rec, err := shapes.Record(&row)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := f.store.Get(ctx, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rec.CanonicalJSON(), stored.CanonicalJSON()) || rec.Chain != stored.Chain {
				t.Fatalf("seq %d: rebuilt\n%s\nstored\n%s", row.Seq, rec.CanonicalJSON(), stored.CanonicalJSON())
			}
			a, _ := evidence.MarshalJSON(rec)
			b, _ := evidence.MarshalJSON(stored)
			if !bytes.Equal(a, b) {
				t.Fatalf("seq %d: JSON differs:\n%s\n%s", row.Seq, a, b)
			}
			rows++
		}
	}
	if int64(rows) != want {
		t.Fatalf("%d rows", rows)
	}

	// Sealing again leaves the days as they are.
	again := f.seal(t)
	for _, d := range again.Days {
		if !d.Existing {
			t.Fatalf("day %s sealed again", d.Date)
		}
	}
}

func readRows(t *testing.T, path string) []archive.Row {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := parquet.Read[archive.Row](bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// rewrite writes rows as path's Parquet file and puts its new digest in the
// day's manifest, as someone editing the archive with care would.
func rewrite(t *testing.T, dayDir string, rows []archive.Row) {
	t.Helper()
	path := filepath.Join(dayDir, archive.RecordsFile)
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[archive.Row](&buf)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	fixManifest(t, dayDir)
}

// fixManifest puts the files' digests in the manifest.
func fixManifest(t *testing.T, dayDir string) {
	t.Helper()
	m, err := archive.ReadManifest(dayDir)
	if err != nil {
		t.Fatal(err)
	}
	for i, file := range m.Files {
		b, err := os.ReadFile(filepath.Join(dayDir, file.Name))
		if err != nil {
			t.Fatal(err)
		}
		m.Files[i].Bytes, m.Files[i].SHA256 = int64(len(b)), sha256Hex(b)
	}
	writeManifest(t, dayDir, m)
}

func TestVerifyFindsEdits(t *testing.T) {
	f := newFixture(t, stores[0].open, 350)
	f.seal(t)
	ctx := context.Background()
	pristine := t.TempDir()
	copyDir(t, f.dir, pristine)
	day := "2026-11-18"
	cases := []struct {
		name string
		edit func(t *testing.T)
		want string
	}{
		{"a byte of a Parquet file", func(t *testing.T) {
			path := filepath.Join(f.day(day), archive.RecordsFile)
			b, _ := os.ReadFile(path)
			b[len(b)/2] ^= 1
			os.WriteFile(path, b, 0o644)
		}, "records.parquet: SHA-256"},
		{"a record's request id, the digest mended", func(t *testing.T) {
			rows := readRows(t, filepath.Join(f.day(day), archive.RecordsFile))
			rows[3].RequestID[0] ^= 1
			rewrite(t, f.day(day), rows)
		}, "do not hash to the manifest's end_frontier"},
		{"a verdict column, the digest mended", func(t *testing.T) {
			rows := readRows(t, filepath.Join(f.day(day), archive.RecordsFile))
			rows[5].Verdict = "mtls_hacked"
			rewrite(t, f.day(day), rows)
		}, "do not say what its record does"},
		{"a record dropped, manifest mended", func(t *testing.T) {
			rows := readRows(t, filepath.Join(f.day(day), archive.RecordsFile))
			rewrite(t, f.day(day), append(rows[:10:10], rows[11:]...))
		}, "rows, the manifest says"},
		{"records and frontier recomputed: the proof fails", func(t *testing.T) {
			rows := readRows(t, filepath.Join(f.day(day), archive.RecordsFile))
			rows[3].RequestID[0] ^= 1
			rewrite(t, f.day(day), rows)
			// The end frontier the edited records give.
			m, _ := archive.ReadManifest(f.day(day))
			m.EndFrontier = frontierOf(t, m, rows)
			writeManifest(t, f.day(day), m)
		}, "are not leaves"},
		{"a day missing", func(t *testing.T) {
			os.RemoveAll(f.day("2026-11-17"))
		}, "a day is missing: seqs"},
		{"two days' files swapped", func(t *testing.T) {
			a, b := filepath.Join(f.day("2026-11-17"), archive.RecordsFile), filepath.Join(f.day(day), archive.RecordsFile)
			ba, _ := os.ReadFile(a)
			bb, _ := os.ReadFile(b)
			os.WriteFile(a, bb, 0o644)
			os.WriteFile(b, ba, 0o644)
		}, "the file was changed or swapped"},
		{"two days' directories swapped", func(t *testing.T) {
			a, b := f.day("2026-11-17"), f.day(day)
			os.Rename(a, a+".x")
			os.Rename(b, a)
			os.Rename(a+".x", b)
		}, "the day was moved or swapped"},
		{"the checkpoint of another key", func(t *testing.T) {
			skey, _, _ := evidence.GenerateSigningKey("archive.test")
			signer, _ := note.NewSigner(skey)
			cp, _ := os.ReadFile(filepath.Join(f.day(day), archive.CheckpointFile))
			c, err := evidence.ParseUnverified(cp)
			if err != nil {
				t.Fatal(err)
			}
			forged, err := note.Sign(&note.Note{Text: c.Text()}, signer)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(f.day(day), archive.CheckpointFile), forged, 0o644)
			fixManifest(t, f.day(day))
		}, "checkpoint signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.RemoveAll(f.dir)
			copyDir(t, pristine, f.dir)
			if _, err := archive.Verify(ctx, f.dir, f.verifiers); err != nil {
				t.Fatalf("before the edit: %v", err)
			}
			c.edit(t)
			_, err := archive.Verify(ctx, f.dir, f.verifiers)
			var p *archive.Problem
			if !errors.As(err, &p) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("verify after the edit: %v; want a problem saying %q", err, c.want)
			}
			t.Logf("verify: %v", err)
		})
	}
}

func TestRowFallback(t *testing.T) {
	// Records whose per-request fields take none of the columns' forms
	// keep their rest, and come back exactly.
	m := traffic.New(t, 3, "r")
	orig := m.Record(end)
	orig.Chain = evidence.Chain{Seq: 9, Version: evidence.CanonicalV2}
	amend := evidence.Amendment(orig, evidence.Decision{Allowed: false, HTTPStatus: 403}, "deadline")
	amend.Chain = evidence.Chain{Seq: 10, Version: evidence.CanonicalV2}
	odd := m.Record(end)
	odd.RequestID, odd.TraceID, odd.StreamID, odd.ID = "Not-A-UUID", "ABCDEF", "007", "not-a-ulid"
	odd.Chain = evidence.Chain{Seq: 11, Version: evidence.CanonicalV2}
	oldID := m.Record(end)
	oldID.Time = oldID.Time.Add(time.Second) // the ULID is of another millisecond
	oldID.Chain = evidence.Chain{Seq: 12, Version: evidence.CanonicalV2}
	var shapes archive.Shapes
	for i, rec := range []*evidence.Record{orig, amend, odd, oldID} {
		row, err := archive.MakeRow(rec)
		if err != nil {
			t.Fatal(err)
		}
		if (row.Rest == nil) != (i == 0) {
			t.Fatalf("record %d: rest %x", i, row.Rest)
		}
		got, err := shapes.Record(&row)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.CanonicalJSON(), rec.CanonicalJSON()) || got.Chain.Seq != rec.Chain.Seq {
			t.Fatalf("record %d:\n%s\n%s", i, got.CanonicalJSON(), rec.CanonicalJSON())
		}
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func writeManifest(t *testing.T, dayDir string, m *archive.Manifest) {
	t.Helper()
	b, err := archive.MarshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dayDir, archive.ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func frontierOf(t *testing.T, m *archive.Manifest, rows []archive.Row) []string {
	t.Helper()
	f, err := archive.FrontierOf(m, rows)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSealVaried: the conformance suite's varied records (three replicas,
// ids that are not ULIDs of their time, odd hosts and paths, headers, no
// request id or a shared one) are sealed per replica, rebuilt exactly (from
// their rest), and verify.
func TestSealVaried(t *testing.T) { eachStore(t, testSealVaried) }

func testSealVaried(t *testing.T, open func(t *testing.T) evidence.Store) {
	ctx := context.Background()
	s := open(t)
	fx := evidencetest.Varied(900, 40, 3)
	for _, b := range fx.Batches {
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{store: s, dir: filepath.Join(t.TempDir(), "archive")}
	skey, vkey, _ := evidence.GenerateSigningKey("varied")
	f.signer, _ = note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	f.verifiers = note.VerifierList(v)
	res, err := archive.Seal(ctx, s, archive.Options{Dir: f.dir, Before: evidencetest.Base.AddDate(0, 0, 30), Signer: f.signer})
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("seal: %v %v", err, res.Errors)
	}
	// Five days each, the last one not over (no later record): four sealed.
	if len(res.Days) != 3*4 {
		t.Fatalf("sealed %d days: %+v", len(res.Days), res.Days)
	}
	if _, err := archive.Verify(ctx, f.dir, f.verifiers); err != nil {
		t.Fatal(err)
	}
	var shapes archive.Shapes
	n, rests := 0, 0
	for _, d := range res.Days {
		for _, row := range readRows(t, filepath.Join(archive.DayDir(f.dir, d.Replica, d.Date), archive.RecordsFile)) {
			rec, err := shapes.Record(&row)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := s.Get(ctx, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rec.CanonicalJSON(), stored.CanonicalJSON()) || rec.Chain != stored.Chain || rec.Replica != d.Replica {
				t.Fatalf("%s seq %d: rebuilt\n%s\nstored\n%s", d.Replica, row.Seq, rec.CanonicalJSON(), stored.CanonicalJSON())
			}
			if row.Rest != nil {
				rests++
			}
			n++
		}
	}
	if n < 600 || rests != n {
		t.Fatalf("%d records rebuilt, %d from their rest", n, rests)
	}
	if !res.SafeBefore([]string{"replica-a", "replica-b", "replica-c"}).Equal(evidencetest.Base.AddDate(0, 0, 4)) {
		t.Fatalf("safe before %v", res.Safe)
	}
}

// TestSealClaimsItsDirectory: a run killed while it wrote a day leaves the
// day's temporary directory behind; the next run removes it and seals the
// day. A run that starts while another holds the directory is refused,
// naming it, and touches nothing.
func TestSealClaimsItsDirectory(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, stores[0].open, 300)
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	release, err := archive.Claim(f.dir) // a run in another process...
	if err != nil {
		t.Fatal(err)
	}
	// ...writing a day, aside.
	stale := filepath.Join(filepath.Dir(f.day("2026-11-18")), ".date=2026-11-18.tmp-4242")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, archive.RecordsFile), []byte("half a Parquet file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = archive.Seal(ctx, f.store, archive.Options{Dir: f.dir, Before: end, Signer: f.signer})
	if err == nil || !strings.Contains(err.Error(), "another run is sealing into "+f.dir) {
		t.Fatalf("Seal while another run holds the directory: %v, want a refusal naming it", err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("the refused run touched the other run's directory: %v", err)
	}
	release() // the other run is killed: its day stays half written

	res := f.seal(t)
	if len(res.Days) == 0 {
		t.Fatal("nothing sealed")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("what the killed run left is still there: %v", err)
	}
	if _, err := archive.Verify(ctx, f.dir, f.verifiers); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
