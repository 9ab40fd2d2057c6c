package report

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// storyRecord is one request of the README's story ("Run with Istio"): sleep calls
// httpbin over mTLS; a legacy client without a sidecar calls it in
// plaintext (PERMISSIVE: no principal on either side) until it is given a
// sidecar.
func storyRecord(i int, at time.Time, legacyClient bool, head *evidence.Link) *evidence.Record {
	r := &evidence.Record{
		ID: fmt.Sprintf("01STORY%019d", i), Time: at, Replica: "r1",
		Request:  evidence.Request{Method: "GET", Host: httpbin, Path: "/headers", Protocol: "HTTP/1.1"},
		Decision: evidence.Decision{Allowed: true},
	}
	switch {
	case !legacyClient:
		r.Source = evidence.Peer{Address: "10.244.0.9", Principal: sleepID}
		r.Destination = evidence.Peer{Address: "10.244.0.5", Port: 8000, Principal: httpbinID}
		r.Verdict, r.Reasons = evidence.MTLS, []string{"client certificate presented"}
	default:
		r.Source = evidence.Peer{Address: legacy}
		r.Destination = evidence.Peer{Address: "10.244.0.5", Port: 8000}
		r.Verdict, r.Reasons = evidence.Plaintext, []string{"no TLS identity on either side"}
	}
	*head = head.Link(r)
	return r
}

// TestReportsFromSQLite runs both reports over a real store: day one has
// mTLS and plaintext traffic to httpbin, day two mTLS only.
func TestReportsFromSQLite(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	day1, day2 := t0, t0.Add(24*time.Hour)
	var head evidence.Link
	var batch []*evidence.Record
	for i := range 60 {
		batch = append(batch, storyRecord(i, day1.Add(time.Duration(i)*time.Minute), i%3 == 0, &head))
	}
	for i := range 30 {
		batch = append(batch, storyRecord(100+i, day2.Add(time.Duration(i)*time.Minute), false, &head))
	}
	if err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}

	rep, err := TLSCheck(ctx, s, Query{Since: day1, Until: day2})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 {
		t.Fatalf("rows = %+v, want one for httpbin", rep.Rows)
	}
	row := rep.Rows[0]
	if row.Destination != httpbin || row.DestinationPrincipal != httpbinID || row.Status != StatusPlaintext ||
		row.Server != ServerMixed || row.Total != 60 || row.Counts[evidence.Plaintext] != 20 || len(row.Clients) != 2 ||
		row.Clients[0].Client != legacy || row.Clients[0].Counts[evidence.Plaintext] != 20 {
		t.Errorf("day one row = %+v", row)
	}
	if got, err := s.Get(ctx, row.Clients[0].ExampleID); err != nil || got.Verdict != evidence.Plaintext {
		t.Errorf("legacy client's example %q = %v, %v; want a plaintext record", row.Clients[0].ExampleID, got, err)
	}

	for _, dest := range []string{httpbin, httpbinID} {
		sr, err := StrictReadiness(ctx, s, dest, day1, day2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sr.Ready || len(sr.Blocking) != 1 || sr.Blocking[0].Client.Client != legacy || sr.Blocking[0].Count != 20 ||
			sr.Reason != "1 client still sends plaintext" {
			t.Errorf("day one, %s: %+v", dest, sr)
		}
		got, err := s.Get(ctx, sr.Blocking[0].ExampleID)
		if err != nil || got.Verdict != evidence.Plaintext {
			t.Errorf("day one, %s: example %s = %v, %v; want a plaintext record", dest, sr.Blocking[0].ExampleID, got, err)
		}
		sr, err = StrictReadiness(ctx, s, dest, day2, day2.Add(24*time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !sr.Ready || sr.Total != 30 || len(sr.Blocking) != 0 {
			t.Errorf("day two, %s: %+v, want ready", dest, sr)
		}
	}
}
