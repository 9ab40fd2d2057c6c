package storekit_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
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

// TestLinkLineIsAppendLines: the journal lines a writer makes as it links
// a batch (Link.LinkLine) are the bytes AppendLines makes of the linked
// batch, and read back to the same records: a journal given them holds
// what it would have written itself.
func TestLinkLineIsAppendLines(t *testing.T) {
	recs := evidencetest.Varied(300, 20, 5).Records
	recs = append(recs, evidencetest.EveryField(t))
	var head, again evidence.Link
	var lines []byte
	for _, r := range recs {
		head, lines = head.LinkLine(r, lines)
	}
	want, err := storekit.AppendLines(nil, recs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lines, want) {
		t.Fatalf("LinkLine's lines differ from AppendLines' (%d and %d bytes)", len(lines), len(want))
	}
	back, err := storekit.ReadLines(lines)
	if err != nil || len(back) != len(recs) {
		t.Fatalf("%d records read back of %d: %v", len(back), len(recs), err)
	}
	for i, r := range back {
		if again = again.Link(r); r.Chain != recs[i].Chain || !bytes.Equal(r.CanonicalJSON(), recs[i].CanonicalJSON()) {
			t.Fatalf("record %d reads back as another", i)
		}
	}
	if again != head {
		t.Fatalf("the lines' chain ends at %+v, the writer's at %+v", again, head)
	}
}

// BenchmarkJournalLines is a journaling writer's encoding of a record:
// linking it and then making its journal line (two canonical encodings),
// against Link.LinkLine (one).
func BenchmarkJournalLines(b *testing.B) {
	r := evidencetest.Full("01BENCH", "r", evidencetest.Base)
	batch := []*evidence.Record{r}
	b.Run("link+AppendLines", func(b *testing.B) {
		var head evidence.Link
		var buf []byte
		for b.Loop() {
			head = head.Link(r)
			var err error
			if buf, err = storekit.AppendLines(buf[:0], batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("LinkLine", func(b *testing.B) {
		var head evidence.Link
		var buf []byte
		for b.Loop() {
			head, buf = head.LinkLine(r, buf[:0])
		}
	})
}
