package evidence_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
)

// TestMarshalJSONIsEncodingJSON: MarshalJSON writes exactly what
// encoding/json does, over varied records and records full of the strings
// JSON encoders disagree on (HTML characters, U+2028, control bytes,
// invalid UTF-8, map keys to sort).
func TestMarshalJSONIsEncodingJSON(t *testing.T) {
	recs := evidencetest.Varied(3000, 100, 9).Records
	for _, s := range []string{"<script>&amp;</script>", "\u2028\u2029", "é漢字🙂", "\x00\x01\x1f\"\\/", "\xff\xfe bad utf8", "tab\tnl\n", ""} {
		r := evidencetest.Full("01HOSTILE", "r", evidencetest.Base)
		r.Request.Path, r.Source.Principal, r.XFCC.Raw = s, s, s
		r.Reasons = append(r.Reasons, s)
		r.XFCC.Elements[0].Other = map[string][]string{s: {s}, "b": {"c"}, "a": {s, s}}
		r.Headers = map[string]string{s: s, "z": "1", "a": s}
		recs = append(recs, r)
	}
	recs = append(recs, &evidence.Record{})
	for _, r := range recs {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := evidence.MarshalJSON(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("record %s: MarshalJSON = %v\n%s\nwant\n%s", r.ID, err, got, want)
		}
	}
}

func BenchmarkMarshalJSON(b *testing.B) {
	r := evidencetest.Full("01BENCH", "r", evidencetest.Base)
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("MarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := evidence.MarshalJSON(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
