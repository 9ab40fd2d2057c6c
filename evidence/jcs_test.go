package evidence_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
)

// jcsOracle is the canonical encoding as a JCS library makes it: the
// record's encoding/json form without "chain", canonicalized by jsontext
// (RFC 8785). CanonicalJSON must equal it byte for byte.
func jcsOracle(t testing.TB, r *evidence.Record) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "chain")
	b, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	v := jsontext.Value(b)
	if err := v.Canonicalize(); err != nil {
		t.Fatal(err)
	}
	return v
}

// hostile returns records full of what JSON encoders disagree on: HTML
// characters, U+2028, control bytes, invalid UTF-8, keys outside the BMP
// (sorted by UTF-16 code units, not bytes).
func hostile() []*evidence.Record {
	var recs []*evidence.Record
	for _, s := range []string{"<script>&amp;</script>", "\u2028\u2029\u007f", "é漢字🙂", "\x00\x01\x1f\"\\/\b\f",
		"\xff\xfe bad utf8", "tab\tnl\n\r", "", "\ufb01", "\U0001F600a"} {
		r := evidencetest.Full("01HOSTILE", "r", evidencetest.Base)
		r.Request.Path, r.Source.Principal, r.XFCC.Raw = s, s, s
		r.Reasons = append(r.Reasons, s)
		r.XFCC.Elements[0].Other = map[string][]string{s: {s}, "b": {"c"}, "a": {s, s}, "\ufb01": {"x"}, "\U0001F600": {"y"}}
		r.Headers = map[string]string{s: s, "z": "1", "a": s, "\uffff": "bmp", "\U00010000": "astral"}
		recs = append(recs, r)
	}
	return append(recs, &evidence.Record{}, &evidence.Record{Reasons: []string{}})
}

// TestCanonicalJSONIsJCS holds CanonicalJSON equal to a JCS library over
// varied, hostile and fully populated records.
func TestCanonicalJSONIsJCS(t *testing.T) {
	recs := append(evidencetest.Varied(2000, 100, 11).Records, hostile()...)
	recs = append(recs, everyField(t))
	for _, r := range recs {
		got, want := r.CanonicalJSON(), jcsOracle(t, r)
		if !bytes.Equal(got, want) {
			t.Fatalf("record %s: CanonicalJSON\n%s\nwant (JCS of encoding/json)\n%s", r.ID, got, want)
		}
	}
}

// TestCanonicalJSONEscapesAtEveryOffset: quote skips eight bytes at a time
// that need no escape; each character that does, at every offset from a
// string's start and end, is still escaped as JCS says.
func TestCanonicalJSONEscapesAtEveryOffset(t *testing.T) {
	for _, c := range []string{"\"", "\\", "\x00", "\x1f", "\n", "\x7f", " ", "~", "é", "\u2028", "🙂", "\xff", "\xc3"} {
		for before := range 18 {
			for _, after := range []int{0, 1, 7, 8, 9} {
				s := strings.Repeat("a", before) + c + strings.Repeat("z", after)
				r := &evidence.Record{ID: "x", Request: evidence.Request{Path: s}}
				if got, want := r.CanonicalJSON(), jcsOracle(t, r); !bytes.Equal(got, want) {
					t.Fatalf("%q: CanonicalJSON\n%s\nwant\n%s", s, got, want)
				}
			}
		}
	}
}

// TestCanonicalJSONRoundTrip: decoding the canonical bytes gives a record
// whose canonical bytes are the same (so a store that keeps them loses
// nothing), and the chain fields are not part of them.
func TestCanonicalJSONRoundTrip(t *testing.T) {
	recs := append(evidencetest.Varied(500, 100, 12).Records, everyField(t))
	for _, r := range recs {
		if strings.ContainsRune(r.Request.Path, '\ufffd') {
			continue
		}
		b := r.CanonicalJSON()
		var back evidence.Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if got := back.CanonicalJSON(); !bytes.Equal(got, b) {
			t.Fatalf("round trip changed the encoding:\n%s\n%s", got, b)
		}
		r2 := *r
		r2.Chain = evidence.Chain{Seq: 99, Hash: "x", PrevHash: "y", Version: 2}
		if !bytes.Equal(r2.CanonicalJSON(), b) {
			t.Fatal("the chain fields changed the canonical encoding")
		}
	}
}

// TestCanonicalJSONGolden pins version 2: stored records are these bytes,
// and their leaf hashes are in signed checkpoints. Never update a golden
// file of a released format: a new field gets a file of its own, and the
// records before it (canonical-v2.golden, without workloads) keep theirs.
func TestCanonicalJSONGolden(t *testing.T) {
	for _, tt := range []struct {
		golden    string
		workloads bool
	}{
		{"testdata/canonical-v2.golden", false},
		{"testdata/canonical-v2-workload.golden", true}, // serve --kubernetes (issue 16)
	} {
		t.Run(tt.golden, func(t *testing.T) {
			r := evidencetest.Full("01M8EEGE75048W02ZYF3AQ760D", "mp-0", time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC))
			if !tt.workloads {
				r.Source.Workload, r.Destination.Workload = nil, nil
			}
			got := r.CanonicalJSON()
			if os.Getenv("MESHPROOF_UPDATE_GOLDEN") == "1" {
				if _, err := os.Stat(tt.golden); err == nil {
					t.Fatalf("%s exists: a released format's golden file is never rewritten", tt.golden)
				}
				if err := os.WriteFile(tt.golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tt.golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("canonical encoding v2 changed:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

// TestJCSStringVectors: the string escapes of RFC 8785 section 3.2.2.2 and
// its sorting example (section 3.2.3), through the encoder's own path.
func TestJCSStringVectors(t *testing.T) {
	r := &evidence.Record{Headers: map[string]string{
		"\u20ac":     "Euro Sign",
		"\r":         "Carriage Return",
		"\ufb33":     "Hebrew Letter Dalet With Dagesh",
		"1":          "One",
		"\U0001f600": "Emoji: Grinning Face",
		"\u0080":     "Control",
		"\u00f6":     "Latin Small Letter O With Diaeresis",
	}, Reasons: []string{"\u20ac$\u000f\nA'B\"\\\\\"/"}}
	b := r.CanonicalJSON()
	const wantHeaders = `"headers":{"\r":"Carriage Return","1":"One","` + "\u0080" + `":"Control","` + "\u00f6" +
		`":"Latin Small Letter O With Diaeresis","` + "\u20ac" + `":"Euro Sign","` + "\U0001f600" +
		`":"Emoji: Grinning Face","` + "\ufb33" + `":"Hebrew Letter Dalet With Dagesh"}`
	if !bytes.Contains(b, []byte(wantHeaders)) {
		t.Errorf("headers not in RFC 8785 order:\n%s", b)
	}
	const wantString = `"reasons":["` + "\u20ac" + `$\u000f\nA'B\"\\\\\"/"]`
	if !bytes.Contains(b, []byte(wantString)) {
		t.Errorf("string not escaped as RFC 8785 says:\n%s", b)
	}
}

// everyField returns a record with every field of every struct set to a
// value that is not zero, found by reflection, so that a field added to
// Record without being added to CanonicalJSON fails TestCanonicalJSONIsJCS.
func everyField(t testing.TB) *evidence.Record {
	r := evidencetest.EveryField(t)
	r.Chain = evidence.Chain{}
	return r
}

func BenchmarkCanonicalJSON(b *testing.B) {
	r := evidencetest.Full("01BENCH", "r", evidencetest.Base)
	b.ReportAllocs()
	for b.Loop() {
		evidence.LeafHash(r.CanonicalJSON())
	}
}

// BenchmarkRecordCost is the evidence writer's own work per record, before
// and after the transparency log: v1 hashed the record's v1 encoding into
// the chain and stored its JSON; v2 encodes it canonically twice (Link's
// hash, the store's body) and hashes the leaf; tree is the log's upkeep
// per leaf (ns/leaf), in batches of 16 (a sync group at 16 Checks in
// flight) with a root per batch.
func BenchmarkRecordCost(b *testing.B) {
	r := evidencetest.Full("01BENCH", "r", evidencetest.Base)
	b.Run("v1-chain+json", func(b *testing.B) {
		b.ReportAllocs()
		var head evidence.Link
		for b.Loop() {
			head = head.LinkV1(r)
			if _, err := evidence.MarshalJSON(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("v2-leaf+body", func(b *testing.B) {
		b.ReportAllocs()
		var head evidence.Link
		for b.Loop() {
			head = head.Link(r)
			if _, err := evidence.StoredBody(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tree", func(b *testing.B) {
		b.ReportAllocs()
		leaves := make([]string, 16)
		for i := range leaves {
			leaves[i] = evidence.LeafHashHex([]byte{byte(i)})
		}
		var batch []*evidence.Record
		for _, h := range leaves {
			batch = append(batch, &evidence.Record{Chain: evidence.Chain{Hash: h, Version: evidence.CanonicalV2}})
		}
		hs, err := evidence.LeafHashes(batch)
		if err != nil {
			b.Fatal(err)
		}
		e, _ := evidence.NewTreeEdge(0, nil)
		start := time.Now()
		for b.Loop() {
			e.Append(hs)
			if _, err := e.Root(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*len(hs)), "ns/leaf")
	})
}
