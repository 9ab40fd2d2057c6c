package authz_test

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestExplainRecordIsStampedCopy: the record Explain returns is the record as
// stored (stamped: replica and bounds), taken before it was handed over,
// so that reading it races with nothing the recorder does. It used to be
// the recorder's live record, bounded and linked by its writer after the
// Check had answered (a data race, and an unbounded record to print).
func TestExplainRecordIsStampedCopy(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rc := recorder.DefaultConfig()
	rc.FlushInterval = time.Hour // the writer holds the record until Close
	rec, err := recorder.New(ctx, rc, "replica-a", store, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close(context.Background()) })
	svc, err := authz.NewServer(authz.Config{StatusOnError: 403, Replica: "replica-a"}, noCacheEngine(t, allowTrue), rec, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := svc.Explain(ctx, authztest.NewRequest(authztest.MTLS(srcID, dstID), authztest.Path("/"+strings.Repeat("p", evidence.MaxFieldBytes))))
	got := res.Record
	if got == nil || got.ID != res.EvidenceID || got.Replica != "replica-a" || len(got.Request.Path) != evidence.MaxFieldBytes || !got.Truncated {
		if got == nil {
			t.Fatal("Explain returned no record")
		}
		t.Fatalf("Explain's record is not stamped: id %s (evidence id %s), replica %q, path %d bytes, truncated %v",
			got.ID, res.EvidenceID, got.Replica, len(got.Request.Path), got.Truncated)
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got.Chain != (evidence.Chain{}) {
		t.Errorf("Explain's record was linked by the writer (chain %+v): it is the recorder's", got.Chain)
	}
	stored, err := store.Get(ctx, res.EvidenceID)
	if err != nil {
		t.Fatal(err)
	}
	stored.Chain = evidence.Chain{}
	stored.Time, got.Time = stored.Time.UTC(), got.Time.UTC().Truncate(0)
	if !reflect.DeepEqual(stored, got) {
		t.Errorf("stored\n%+v\nExplain returned\n%+v", stored, got)
	}
}
