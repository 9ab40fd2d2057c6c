package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
)

// TestVerifyListsQuarantined: verify calls a chain with a quarantined record
// intact (its links are checked) but says so, in text and in JSON, listing
// the record with the store's reason.
func TestVerifyListsQuarantined(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "e.db")
	s, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	recs := []*evidence.Record{
		evidencetest.Full("01JQ000000000000000000VER1", "r1", now),
		evidencetest.Full("01JQ000000000000000000VER2", "r1", now.Add(time.Second)),
		evidencetest.Full("01JQ000000000000000000VER3", "r1", now.Add(2*time.Second)),
	}
	recs[1] = evidencetest.Poison(recs[0])
	evidencetest.Link(evidence.Link{}, recs[0])
	if err := s.Append(ctx, recs[:1]); err != nil {
		t.Fatal(err)
	}
	evidencetest.Link(evidence.Link{Seq: 1, Hash: recs[0].Chain.Hash}, recs[1:]...)
	if n, err := evidence.AppendIsolating(ctx, s, recs[1:], time.Minute); err != nil || n != 1 {
		t.Fatalf("AppendIsolating = %d, %v", n, err)
	}
	s.Close()

	var out bytes.Buffer
	if err := runVerify([]string{"--store", dsn}, &out); err != nil {
		t.Fatalf("verify: %v\n%s", err, &out)
	}
	for _, want := range []string{"intact, 1 record(s) quarantined", "2 records in 1 chain(s) checked, 1 quarantined",
		"quarantined records of r1", `seq 2  record "01JQ000000000000000000VER1"`, "an id already stored"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("verify output lacks %q:\n%s", want, &out)
		}
	}
	out.Reset()
	if err := runVerify([]string{"--store", dsn, "--output", "json"}, &out); err != nil {
		t.Fatalf("verify --output json: %v", err)
	}
	var doc struct {
		Intact      bool `json:"intact"`
		Quarantined int  `json:"quarantined"`
		Chains      []evidence.ChainReport
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !doc.Intact || doc.Quarantined != 1 || len(doc.Chains) != 1 || len(doc.Chains[0].Quarantined) != 1 ||
		doc.Chains[0].Quarantined[0].Seq != 2 || doc.Chains[0].Quarantined[0].Reason == "" {
		t.Errorf("verify --output json: %s", &out)
	}
}

// TestVerifyRollupRetention: verify judges the rollups' horizon by
// --rollup-retention: rollups removed while younger than it are reported
// (exit 1), 0 does not judge, and a negative one is a usage error.
func TestVerifyRollupRetention(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "e.db")
	s, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fx := evidencetest.Varied(120, 40, 3)
	for _, b := range fx.Batches {
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Rollup retention as if run with a window that ended a day in.
	if _, err := s.DeleteBefore(ctx, time.Time{}, evidencetest.Base.Add(24*time.Hour), 100); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var out bytes.Buffer
	if err := runVerify([]string{"--store", dsn, "--rollup-retention", "0"}, &out); err != nil {
		t.Fatalf("verify --rollup-retention 0: %v\n%s", err, &out)
	}
	out.Reset()
	keep := time.Since(evidencetest.Base) + 48*time.Hour // rollups from before Base must still be there
	err = runVerify([]string{"--store", dsn, "--rollup-retention", keep.Round(time.Hour).String()}, &out)
	if err != errBroken || !strings.Contains(out.String(), "(rollups)") || !strings.Contains(out.String(), "--rollup-retention") {
		t.Fatalf("verify with a rollup retention longer than what is kept = %v:\n%s", err, &out)
	}
	var usage usageError
	if err := runVerify([]string{"--store", dsn, "--rollup-retention", "-1h"}, &out); !errors.As(err, &usage) {
		t.Errorf("verify --rollup-retention -1h = %v, want a usage error", err)
	}
}
