package spool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

func chain(head *evidence.Link, n int) []*evidence.Record {
	recs := make([]*evidence.Record, n)
	now := time.Now().UTC()
	for i := range recs {
		recs[i] = evidencetest.Full(fmt.Sprintf("r-%06d", head.Seq+1), "r", now.Add(time.Duration(i)*time.Microsecond))
		*head = head.Link(recs[i])
	}
	return recs
}

func TestAfter(t *testing.T) {
	var h evidence.Link
	before := chain(&h, 3)
	recs := chain(&h, 5) // seq 4..8
	beyond := h
	chain(&beyond, 2)
	tests := []struct {
		name     string
		head     evidence.Link
		wantSeqs []uint64 // of the records left to write
		conflict bool
	}{
		{name: "head just before", head: linkOf(before[2]), wantSeqs: []uint64{4, 5, 6, 7, 8}},
		{name: "head further before (the primary finds the gap)", head: linkOf(before[0]), wantSeqs: []uint64{4, 5, 6, 7, 8}},
		{name: "head at the first", head: linkOf(recs[0]), wantSeqs: []uint64{5, 6, 7, 8}},
		{name: "head in the middle", head: linkOf(recs[2]), wantSeqs: []uint64{7, 8}},
		{name: "head at the last", head: linkOf(recs[4]), wantSeqs: nil},
		{name: "head beyond (the primary checks they are stored)", head: beyond, wantSeqs: []uint64{4, 5, 6, 7, 8}},
		{name: "head in the middle, another hash", head: evidence.Link{Seq: 6, Hash: "0000"}, conflict: true},
		{name: "head at the first, another hash", head: evidence.Link{Seq: 4, Hash: "0000"}, conflict: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, err := after(recs, tt.head)
			if tt.conflict {
				if !errors.Is(err, evidence.ErrChainConflict) {
					t.Fatalf("after: %v, want ErrChainConflict", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, r := range rest {
				seqs = append(seqs, r.Chain.Seq)
			}
			if fmt.Sprint(seqs) != fmt.Sprint(tt.wantSeqs) {
				t.Fatalf("left %v, want %v", seqs, tt.wantSeqs)
			}
		})
	}
}

// TestSynchronousFull: with Durable, spooled batches commit with
// synchronous FULL (on disk when Append returns); the head bookkeeping and
// a spool opened without Durable use NORMAL.
func TestSynchronousFull(t *testing.T) {
	tests := []struct {
		name    string
		durable bool
		want    int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{
		{"durable", true, 2},
		{"not durable", false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f, err := openFile(ctx, filepath.Join(t.TempDir(), "spool.db"), tt.durable)
			if err != nil {
				t.Fatal(err)
			}
			defer f.close()
			var h evidence.Link
			if err := f.add(ctx, chain(&h, 3), ""); err != nil {
				t.Fatal(err)
			}
			var got int
			if err := f.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("synchronous after a spooled batch: %d, want %d", got, tt.want)
			}
			if err := f.saveKnown(ctx, "r", h); err != nil {
				t.Fatal(err)
			}
			if err := f.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&got); err != nil || got != 1 {
				t.Errorf("synchronous after saving the head: %d, %v; want 1", got, err)
			}
		})
	}
}

// TestDrainInterrupted: the drainer's write to the primary succeeds, and
// the process is stopped before it removes the records from the spool (a
// crash between the two steps). Opened again on the same file, the drain
// finds them stored, drops them, and writes the rest: every record once.
func TestDrainInterrupted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dbPath, spoolPath := filepath.Join(dir, "evidence.db"), filepath.Join(dir, "spool.db")
	openPrimary := func() *sqlite.Store {
		p, err := sqlite.Open(ctx, dbPath, evidence.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Written to the primary, then spooled while it is closed (failing).
	primary := openPrimary()
	s, err := Open(ctx, primary, spoolPath, "r", evidence.Options{Durable: true}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var head evidence.Link
	want := chain(&head, 100)
	if err := s.Append(ctx, want); err != nil {
		t.Fatal(err)
	}
	primary.Close()
	for range 5 {
		b := chain(&head, 500)
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	if st := s.Status(); st.Spooled != 2500 {
		t.Fatalf("status: %+v, want 2500 spooled", st)
	}
	s.Close()

	// Reopened with the primary back; stopped after the first chunk is
	// written to the primary, before the spool forgets it.
	delivered := make(chan struct{})
	s, err = open(ctx, openPrimary(), spoolPath, "r", evidence.Options{Durable: true}, zerolog.Nop(), nil,
		func(ctx context.Context) error {
			close(delivered)
			<-ctx.Done()
			return ctx.Err()
		})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-delivered:
	case <-time.After(30 * time.Second):
		t.Fatal("the drainer never wrote to the primary")
	}
	s.Close()
	check := openPrimary()
	if h, err := check.Head(ctx, "r"); err != nil || h.Seq != 100+drainChunk {
		t.Fatalf("primary head after the interrupted drain: %+v, %v; want seq %d", h, err, 100+drainChunk)
	}
	check.Close()

	// Opened again: the drain resumes.
	m := NewMetrics(nil)
	s, err = Open(ctx, openPrimary(), spoolPath, "r", evidence.Options{Durable: true}, zerolog.Nop(), m)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().Spooled > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not drained: %+v", s.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()

	check = openPrimary()
	defer check.Close()
	var got []*evidence.Record
	if err := check.Walk(ctx, "r", func(r *evidence.Record, _ evidence.Stored) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("the primary holds %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Chain != want[i].Chain {
			t.Fatalf("record %d: %s %+v, want %s %+v", i, got[i].ID, got[i].Chain, want[i].ID, want[i].Chain)
		}
	}
	reps, err := evidence.Verify(ctx, check)
	if err != nil || len(reps) != 1 || reps[0].Broken != nil {
		t.Fatalf("verify: %+v, %v", reps, err)
	}
}

// TestSpoolFileVersion1: a spool file written before quarantine (no reason
// column) opens, and what it holds drains as records.
func TestSpoolFileVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	f, err := openFile(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	var h evidence.Link
	recs := chain(&h, 2)
	if err := f.add(ctx, recs, ""); err != nil {
		t.Fatal(err)
	}
	// Back to version 1's table.
	for _, q := range []string{"ALTER TABLE spooled DROP COLUMN reason", "PRAGMA user_version = 1"} {
		if _, err := f.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	f.close()
	if f, err = openFile(ctx, path, false); err != nil {
		t.Fatalf("opening a version 1 spool: %v", err)
	}
	defer f.close()
	got, refused, err := f.first(ctx, 10)
	if err != nil || len(got) != 2 || len(refused) != 0 {
		t.Fatalf("first = %d records, %v refused, %v; want 2, none", len(got), refused, err)
	}
	if err := f.add(ctx, chain(&h, 1), "refused"); err != nil {
		t.Fatal(err)
	}
	if _, refused, err = f.first(ctx, 10); err != nil || refused[3] != "refused" {
		t.Fatalf("refused = %v, %v; want seq 3", refused, err)
	}
}
