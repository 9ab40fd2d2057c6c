package archive_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/archive"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestSealWorkloads: the peers' workloads are columns (NAMESPACE/NAME, as
// the API's filters name them), the namespaces fall back to the
// workloads' as the stores' columns do, Verify holds both to the records,
// and an edit of a workload column is found.
func TestSealWorkloads(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fx := evidencetest.VariedWorkloads(300, 50, 12)
	for _, b := range fx.Batches {
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	skey, vkey, err := evidence.GenerateSigningKey("archive.test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	dir := filepath.Join(t.TempDir(), "archive")
	res, err := archive.Seal(ctx, s, archive.Options{Dir: dir, Before: evidencetest.Base.Add(4 * 24 * time.Hour), Signer: signer})
	if err != nil || len(res.Errors) > 0 {
		t.Fatal(err, res.Errors)
	}
	if _, err := archive.Verify(ctx, dir, note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
	byID := map[string]*evidence.Record{}
	for _, r := range fx.Records {
		byID[r.ID] = r
	}
	var shapes archive.Shapes
	var workloads, fallbacks int
	day := archive.DayDir(dir, "replica-a", "2025-03-04")
	rows := readRows(t, filepath.Join(day, archive.RecordsFile))
	for _, d := range res.Days {
		for _, row := range readRows(t, filepath.Join(archive.DayDir(dir, d.Replica, d.Date), archive.RecordsFile)) {
			rec, err := shapes.Record(&row)
			if err != nil {
				t.Fatal(err)
			}
			c := evidence.ColumnsOf(byID[rec.ID])
			if row.SourceWorkload != c.SourceWorkload || row.DestinationWorkload != c.DestinationWorkload ||
				row.SourceNamespace != c.SourceNamespace || row.DestinationNamespace != c.DestinationNamespace {
				t.Fatalf("seq %d: columns %q %q %q %q, want %+v", row.Seq, row.SourceWorkload, row.DestinationWorkload,
					row.SourceNamespace, row.DestinationNamespace, c)
			}
			if row.SourceWorkload != "" {
				workloads++
			}
			if rec.Source.SPIFFE == nil && row.SourceNamespace != "" {
				fallbacks++
			}
		}
	}
	if workloads == 0 || fallbacks == 0 {
		t.Fatalf("%d rows with a source workload, %d with the workload's namespace; want some of each", workloads, fallbacks)
	}
	i := 0
	for i < len(rows) && rows[i].SourceWorkload == "" {
		i++
	}
	if i == len(rows) {
		t.Fatal("fixture: no row of the day has a source workload")
	}
	rows[i].SourceWorkload = "legacy/other"
	rewrite(t, day, rows)
	_, err = archive.Verify(ctx, dir, note.VerifierList(v))
	var p *archive.Problem
	if !errors.As(err, &p) || !strings.Contains(err.Error(), "do not say what its record does") {
		t.Fatalf("verify after editing a workload column: %v", err)
	}
}

// TestArchiveBeforeWorkloads: an archive written before the workload
// columns (testdata/before-workloads: evidencetest.VariedWorkloads(90, 30,
// 11) in SQLite, sealed up to Base+2d by main at 9ecc27f, with its
// verifier key) still verifies, its rows read with empty workload columns,
// and its records still hold their workloads.
func TestArchiveBeforeWorkloads(t *testing.T) {
	vkey, err := os.ReadFile("testdata/before-workloads/verifier")
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "archive")
	if err := os.CopyFS(dir, os.DirFS("testdata/before-workloads/archive")); err != nil {
		t.Fatal(err)
	}
	checked, err := archive.Verify(context.Background(), dir, note.VerifierList(v))
	if err != nil || len(checked) != 6 {
		t.Fatalf("Verify = %d days, %v; want 6", len(checked), err)
	}
	var shapes archive.Shapes
	var workloads int
	for _, c := range checked {
		for _, row := range readRows(t, filepath.Join(archive.DayDir(dir, c.Replica, c.Date), archive.RecordsFile)) {
			rec, err := shapes.Record(&row)
			if err != nil {
				t.Fatal(err)
			}
			if row.SourceWorkload != "" || row.DestinationWorkload != "" {
				t.Fatalf("seq %d: workload columns %q %q in a file without them", row.Seq, row.SourceWorkload, row.DestinationWorkload)
			}
			if rec.Source.Workload != nil {
				workloads++
			}
		}
	}
	if workloads == 0 {
		t.Fatal("fixture: no record with a source workload")
	}
}
