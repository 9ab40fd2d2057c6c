package sqlite_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestScanJSON checks that ScanJSON and QueryJSON give, for every filter,
// the records Scan and Query give, in the same order, each as its JSON form
// on one line, and that ScanJSON stops at fn's error.
func TestScanJSON(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fx := evidencetest.Varied(1200, 100, 5)
	for _, b := range fx.Batches {
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	yes := true
	for _, f := range []evidence.Filter{{}, {Verdicts: []evidence.Verdict{evidence.Plaintext}}, {Allowed: &yes, Since: evidencetest.Base.AddDate(0, 0, 2)}, {Source: "nobody"}} {
		var want [][]byte
		if err := s.Scan(ctx, f, func(r *evidence.Record) error {
			b, err := json.Marshal(r)
			want = append(want, b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		i := 0
		if err := s.ScanJSON(ctx, f, func(body []byte) error {
			if i >= len(want) || !bytes.Equal(body, want[i]) || bytes.IndexByte(body, '\n') >= 0 {
				t.Fatalf("filter %+v, record %d: %.80s, want %.80s", f, i, body, want[min(i, len(want)-1)])
			}
			i++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if i != len(want) {
			t.Errorf("filter %+v: %d records, want %d", f, i, len(want))
		}
		// QueryJSON pages as Query does.
		page := evidence.Page{Limit: 7}
		for i := 0; ; {
			res, err := s.Query(ctx, f, page)
			if err != nil {
				t.Fatal(err)
			}
			bodies, next, err := s.QueryJSON(ctx, f, page)
			if err != nil || next != res.Next || len(bodies) != len(res.Records) {
				t.Fatalf("filter %+v: QueryJSON = %d records, next %q, %v; Query: %d, %q", f, len(bodies), next, err, len(res.Records), res.Next)
			}
			for _, b := range bodies {
				if !bytes.Equal(b, want[i]) {
					t.Fatalf("filter %+v, QueryJSON record %d: %.80s, want %.80s", f, i, b, want[i])
				}
				i++
			}
			if next == "" {
				break
			}
			page.Cursor = next
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := s.ScanJSON(ctx, evidence.Filter{}, func([]byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("ScanJSON after fn's error: %v, %d calls", err, n)
	}
	if err := s.ScanJSON(ctx, evidence.Filter{Host: "a\x00"}, func([]byte) error { return nil }); err == nil {
		t.Error("ScanJSON accepts an invalid filter")
	}
}
