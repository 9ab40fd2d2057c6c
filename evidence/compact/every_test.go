package compact_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
	"github.com/meshproof/meshproof/evidence/evidencetest"
)

// TestRoundTripEveryField: a record with every field of every struct set,
// found by reflection (as evidence's own jcs_test does), round-trips, so a
// field added to Record does too: it goes in the shape unless Split blanks
// it.
func TestRoundTripEveryField(t *testing.T) {
	r := evidencetest.EveryField(t)
	roundTrip(t, r)
	r.Decision.DecisionID = r.ID
	r.ID += evidence.AmendmentSuffix
	r.Amends.ID = strings.TrimSuffix(r.ID, evidence.AmendmentSuffix)
	roundTrip(t, r)
}

// TestRoundTripGolden: the record of the canonical version 2 golden file
// (evidence/testdata) round-trips to the golden bytes.
func TestRoundTripGolden(t *testing.T) {
	want, err := os.ReadFile("../testdata/canonical-v2.golden")
	if err != nil {
		t.Fatal(err)
	}
	var r evidence.Record
	if err := json.Unmarshal(want, &r); err != nil {
		t.Fatal(err)
	}
	shape, rest, err := roundTripErr(&r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := joinBytes(shape, rest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, want) {
		t.Fatalf("golden record changed:\n got %s\nwant %s", back, want)
	}
}

func roundTripErr(r *evidence.Record) (shape, rest []byte, err error) { return compact.Split(r) }

func joinBytes(shape, rest []byte) ([]byte, error) {
	r, err := compact.Join(shape, rest)
	if err != nil {
		return nil, err
	}
	return r.CanonicalJSON(), nil
}
