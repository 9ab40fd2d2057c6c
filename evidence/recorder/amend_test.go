package recorder_test

import (
	"context"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// TestRecorderAmendsAfterItsBatch: a sync Check that stops waiting only
// once its record's batch is written still has the record amended, on its
// own, after it in the chain.
func TestRecorderAmendsAfterItsBatch(t *testing.T) {
	s, _ := openSQLite(t)
	cfg := recorder.DefaultConfig()
	cfg.Durability = recorder.Sync
	rec := newRecorder(t, cfg, s, "r1")
	r := record("01JQ0000000000000000000LATE")
	r.Decision.Allowed = true
	if err := recorder.RecordGivingUpLate(rec, r, context.DeadlineExceeded); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	orig, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	am, err := s.Get(ctx, evidence.AmendmentID(r.ID))
	if err != nil {
		t.Fatalf("the amendment: %v", err)
	}
	if eff := evidence.EffectiveOf(orig, am); eff.Allowed || eff.AmendedBy != am.ID || am.Chain.Seq != orig.Chain.Seq+1 {
		t.Fatalf("effective %+v; record seq %d, amendment seq %d", eff, orig.Chain.Seq, am.Chain.Seq)
	}
	if reps := verify(t, s); len(reps) != 1 || reps[0].Checked != 2 {
		t.Fatalf("chains: %+v", reps)
	}
}

// TestRecorderSyncDeniedNotAmended: a Check whose record already says the
// request was denied is not amended when it stops waiting: the record says
// what Envoy did (deny), whether or not the answer reached it.
func TestRecorderSyncDeniedNotAmended(t *testing.T) {
	s, _ := openSQLite(t)
	cfg := recorder.DefaultConfig()
	cfg.Durability = recorder.Sync
	rec := newRecorder(t, cfg, s, "r1")
	r := record("01JQ000000000000000000DENY")
	r.Decision = evidence.Decision{Allowed: false, HTTPStatus: 403}
	if err := recorder.RecordGivingUpLate(rec, r, context.DeadlineExceeded); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s); n != 1 {
		t.Fatalf("%d records, want the denied one alone", n)
	}
}
