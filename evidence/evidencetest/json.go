package evidencetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/meshproof/meshproof/evidence"
)

// testJSON checks that ScanJSON and QueryJSON give, for every filter, the
// records Scan and Query give, in the same order and pages, each as its
// JSON form on one line; that ScanJSON stops at fn's error; and that both
// refuse an invalid filter.
func testJSON(t *testing.T, f Factory) {
	b, _ := loaded(t, f, filterRecords)
	s := b.Store
	ctx := context.Background()
	yes := true
	for _, f := range []evidence.Filter{{}, {Verdicts: []evidence.Verdict{evidence.Plaintext}}, {Allowed: &yes, Since: Base.AddDate(0, 0, 2)}, {Source: "nobody"}} {
		var want [][]byte
		if err := b.Store.Scan(ctx, f, func(r *evidence.Record) error {
			j, err := evidence.RecordJSON(r)
			want = append(want, j)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		i := 0
		if err := s.ScanJSON(ctx, f, func(body []byte) error {
			if i >= len(want) || !bytes.Equal(body, want[i]) || bytes.IndexByte(body, '\n') >= 0 {
				t.Fatalf("filter %+v, ScanJSON record %d: %.80s, want %.80s", f, i, body, want[min(i, len(want)-1)])
			}
			i++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if i != len(want) {
			t.Errorf("filter %+v: ScanJSON gave %d records, want %d", f, i, len(want))
		}
		page := evidence.PageRequest{Limit: 7}
		for i := 0; ; {
			res, err := b.Store.Query(ctx, f, page)
			if err != nil {
				t.Fatal(err)
			}
			bodies, next, err := s.QueryJSON(ctx, f, page)
			if err != nil || next != res.Next || len(bodies) != len(res.Records) {
				t.Fatalf("filter %+v: QueryJSON = %d records, next %q, %v; Query: %d, %q", f, len(bodies), next, err, len(res.Records), res.Next)
			}
			for _, body := range bodies {
				if i >= len(want) || !bytes.Equal(body, want[i]) {
					t.Fatalf("filter %+v, QueryJSON record %d: %.80s", f, i, body)
				}
				i++
			}
			if next == "" {
				break
			}
			page.Cursor = next
		}
	}
	n := 0
	if err := s.ScanJSON(ctx, evidence.Filter{}, func([]byte) error { n++; return errStop }); !errors.Is(err, errStop) || n != 1 {
		t.Errorf("ScanJSON after fn's error: %v, %d calls", err, n)
	}
	if err := s.ScanJSON(ctx, evidence.Filter{Host: "a\x00"}, func([]byte) error { return nil }); err == nil {
		t.Error("ScanJSON accepts an invalid filter")
	}
	if _, _, err := s.QueryJSON(ctx, evidence.Filter{}, evidence.PageRequest{Cursor: "!not base64!"}); !errors.Is(err, evidence.ErrBadCursor) {
		t.Errorf("QueryJSON with a bad cursor: %v, want ErrBadCursor", err)
	}
}
