package storekit_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// TestCursor: a cursor round-trips for any time a column holds and any id
// a record may have; anything else is ErrBadCursor, naming the cursor cut
// short.
func TestCursor(t *testing.T) {
	for _, ns := range []int64{math.MinInt64, -1, 0, 1, time.Date(2025, 6, 1, 12, 0, 0, 1, time.UTC).UnixNano(), math.MaxInt64} {
		for _, id := range []string{"", "01JQ", strings.Repeat("x", evidence.MaxFieldBytes)} {
			gotNS, gotID, err := storekit.DecodeCursor(storekit.EncodeCursor(ns, id))
			if err != nil || gotNS != ns || gotID != id {
				t.Fatalf("cursor of %d, %.8q: %d, %.8q, %v", ns, id, gotNS, gotID, err)
			}
		}
	}
	for _, c := range []string{"!not base64!", "AAAA", storekit.EncodeCursor(0, strings.Repeat("x", evidence.MaxFieldBytes+1))} {
		_, _, err := storekit.DecodeCursor(c)
		if !errors.Is(err, evidence.ErrBadCursor) || len(err.Error()) > 100 {
			t.Errorf("DecodeCursor(%.20q): %v, want ErrBadCursor, short", c, err)
		}
	}
}

// TestQuarantineEntry: what a store keeps of a refused record is safe for
// any store: valid UTF-8 without NUL bytes, bounded, the JSON kept whole.
func TestQuarantineEntry(t *testing.T) {
	r := &evidence.Record{ID: "id\x00\xff", Time: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), Replica: "r", Verdict: evidence.MTLS}
	evidence.Link{}.Link(r)
	long := string(make([]byte, 10*storekit.MaxReasonBytes))
	e := storekit.QuarantineEntry(r, "bad \x00 byte "+long, time.Now())
	if e.ID != "id\uFFFD\uFFFD" || len(e.Reason) > storekit.MaxReasonBytes || e.Seq != 1 || len(e.Record) == 0 {
		t.Errorf("entry %q, reason of %d bytes, seq %d, %d bytes of JSON", e.ID, len(e.Reason), e.Seq, len(e.Record))
	}
}
