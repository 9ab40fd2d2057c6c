package compact_test

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
)

// storedRoundTrip fails t unless JoinStored(SplitStored(r)), with r's
// columns passed through IDKey as a store keeps them, is r: its canonical
// bytes, its chain, and its JSON form as the API serves it. Through the
// shapes cache too.
func storedRoundTrip(t testing.TB, r *evidence.Record, shapes *compact.Shapes, n int64) (shape, rest []byte) {
	t.Helper()
	shape, rest, err := compact.SplitStored(r)
	if err != nil {
		t.Fatalf("SplitStored(%s): %v", r.ID, err)
	}
	if plain, _, err := compact.Split(r); err != nil || !bytes.Equal(plain, shape) {
		t.Fatalf("SplitStored(%s) has another shape than Split: %v", r.ID, err)
	}
	out := compact.OutsideOf(r)
	if out.ID, err = compact.IDOfKey(compact.IDKey(r.ID)); err != nil || out.ID != r.ID {
		t.Fatalf("IDOfKey(IDKey(%q)) = %q, %v", r.ID, out.ID, err)
	}
	if out.RequestID, err = compact.RequestIDOfKey(compact.RequestIDKey(r.RequestID)); err != nil || out.RequestID != r.RequestID {
		t.Fatalf("RequestIDOfKey(RequestIDKey(%q)) = %q, %v", r.RequestID, out.RequestID, err)
	}
	back, err := compact.JoinStored(shape, rest, out)
	if err != nil {
		t.Fatalf("JoinStored(%s): %v", r.ID, err)
	}
	sameRecord(t, back, r)
	cached, err := shapes.Join(n, rest, out, func(int64) ([]byte, error) { return shape, nil })
	if err != nil {
		t.Fatalf("Shapes.Join(%s): %v", r.ID, err)
	}
	sameRecord(t, cached, r)
	withJSON, js, err := shapes.JoinJSON(n, rest, out, func(int64) ([]byte, error) { return shape, nil })
	if err != nil {
		t.Fatalf("Shapes.JoinJSON(%s): %v", r.ID, err)
	}
	sameRecord(t, withJSON, r)
	if want, err := evidence.RecordJSON(withJSON); err != nil || !bytes.Equal(js, want) {
		t.Fatalf("JoinJSON(%s) gives JSON\n%s\nRecordJSON gives\n%s", r.ID, js, want)
	}
	return shape, rest
}

func sameRecord(t testing.TB, back, r *evidence.Record) {
	t.Helper()
	if got, want := back.Canonical(), r.Canonical(); !bytes.Equal(got, want) {
		t.Fatalf("Canonical of %q changed:\n got %q\nwant %q", r.ID, got, want)
	}
	if got, want := back.CanonicalJSON(), r.CanonicalJSON(); !bytes.Equal(got, want) {
		t.Fatalf("CanonicalJSON of %q changed:\n got %s\nwant %s", r.ID, got, want)
	}
	if back.Chain != r.Chain {
		t.Fatalf("chain of %q changed: got %+v, want %+v", r.ID, back.Chain, r.Chain)
	}
	// The JSON form of a version 1 record (MarshalJSON) writes the time in
	// its zone; the canonical forms, and so a joined record, in UTC.
	if r.Chain.Version == evidence.CanonicalV2 || r.Chain.Version != 0 && r.Time.Location() == time.UTC {
		got, err1 := evidence.RecordJSON(back)
		want, err2 := evidence.RecordJSON(r)
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Fatalf("JSON of %q changed (%v, %v):\n got %s\nwant %s", r.ID, err1, err2, got, want)
		}
	}
}

// fixtures are the records of every existing fixture: the conformance
// suite's, version 1 and 2 chains, unchained, amendments, traffic.
func fixtures(t testing.TB) []*evidence.Record {
	var recs []*evidence.Record
	full := evidencetest.Full("01JNJ3ZQ8X0000000000000000", "replica-a", evidencetest.Base)
	amended := evidencetest.Amended("01JNJ3ZQ8X0000000000000001", "replica-a", evidencetest.Base)
	realAmendment := evidence.Amendment(full, evidence.Decision{HTTPStatus: 503}, "deadline passed")
	evidencetest.Link(evidence.Link{}, full, amended, realAmendment)
	recs = append(recs, full, amended, realAmendment)
	recs = append(recs, evidencetest.Varied(600, 50, 7).Records...)
	v1 := evidencetest.Varied(60, 60, 8).Records
	var head evidence.Link
	for _, r := range v1 {
		head = head.LinkV1(r)
	}
	recs = append(recs, v1...)
	recs = append(recs, evidencetest.Full("not-a-ulid", "", time.Time{}))
	m := traffic.New(t, 1, "replica-t")
	tr := m.Batch(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), time.Millisecond, 2000)
	evidencetest.Link(evidence.Link{}, tr[1:]...)
	return append(recs, tr...)
}

func TestStoredRoundTripFixtures(t *testing.T) {
	shapes := compact.NewShapes(64)
	byShape := map[string]int64{}
	restBytes := 0
	recs := fixtures(t)
	for _, r := range recs {
		shape, _, err := compact.SplitStored(r)
		if err != nil {
			t.Fatal(err)
		}
		n, ok := byShape[string(shape)]
		if !ok {
			n = int64(len(byShape) + 1)
			byShape[string(shape)] = n
		}
		_, rest := storedRoundTrip(t, r, shapes, n)
		restBytes += len(rest)
	}
	if shapes.Len() > 64 {
		t.Errorf("the cache holds %d shapes, more than its bound 64", shapes.Len())
	}
	t.Logf("%d records, %d shapes, stored rest %.1f bytes/record", len(recs), len(byShape), float64(restBytes)/float64(len(recs)))
}

// TestStoredRoundTripOdd: the odd records of TestRoundTripOdd, through the
// stored form. A version 2 record whose hash is not its leaf hash comes
// back with the leaf hash and ErrCheck (an edit, as a store reads it).
func TestStoredRoundTripOdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 2))
	times := []time.Time{{}, time.Unix(0, 0), time.Unix(-1, 999999999), time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(2026, 12, 6, 1, 2, 3, 4, time.FixedZone("x", 3600)),
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)}
	shapes := compact.NewShapes(8)
	for i := range 5000 {
		r := oddRecord(rng, times, i)
		leaf := evidence.LeafHashHex(r.CanonicalJSON())
		if r.Chain.Version == evidence.CanonicalV2 && r.Chain.Hash != leaf && len(r.Chain.Hash) == 64 && strings.ToLower(r.Chain.Hash) == r.Chain.Hash && isHex(r.Chain.Hash) {
			shape, rest, err := compact.SplitStored(r)
			if err != nil {
				t.Fatal(err)
			}
			back, err := compact.JoinStored(shape, rest, compact.OutsideOf(r))
			if !errors.Is(err, compact.ErrCheck) || back == nil || back.Chain.Hash != leaf {
				t.Fatalf("record %q with hash %s, not its leaf hash %s: JoinStored = %v, %v; want the leaf hash and ErrCheck", r.ID, r.Chain.Hash, leaf, back, err)
			}
			continue
		}
		storedRoundTrip(t, r, shapes, int64(i%20))
		shapes.Forget() // the shape numbers above are not the shapes'
	}
}

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// TestStoredRestLeavesOut: the stored rest of a traffic record holds none
// of its columns and only a check of its hash: far smaller than Split's.
func TestStoredRestLeavesOut(t *testing.T) {
	m := traffic.New(t, 4, "replica-t")
	recs := m.Batch(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), time.Millisecond, 1000)
	evidencetest.Link(evidence.Link{}, recs...)
	plain, stored, common := 0, 0, 0
	for _, r := range recs {
		_, rest, err := compact.Split(r)
		if err != nil {
			t.Fatal(err)
		}
		srest, err := compact.StoredRest(r)
		if err != nil {
			t.Fatal(err)
		}
		plain, stored = plain+len(rest), stored+len(srest)
		if srest[0] == compact.VersionCommon {
			common++
		}
		for _, col := range [][]byte{[]byte(r.ID), []byte(r.RequestID), []byte(r.Request.Path)} {
			if bytes.Contains(srest, col) {
				t.Fatalf("stored rest of %s holds %q", r.ID, col)
			}
		}
	}
	// id 16, time ~10, request id 16, path ~21, seq ~3, hash 32 - check 4.
	if d := float64(plain-stored) / float64(len(recs)); d < 90 {
		t.Errorf("the stored rest is %.1f bytes/record smaller than Split's, want at least 90", d)
	}
	// Every traffic record is in the usual layout (no tags written).
	if common != len(recs) {
		t.Errorf("%d of %d stored rests in the usual layout", common, len(recs))
	}
	t.Logf("rest %.1f bytes/record, stored rest %.1f", float64(plain)/float64(len(recs)), float64(stored)/float64(len(recs)))
}

// TestJoinStoredFindsEdits: a shape edited to another valid shape, or a
// column that no longer holds the record's value, makes a record that
// does not hash to the check (ErrCheck; the seq is no part of the hashed
// bytes but the leaf's place in the log, which Verify checks); a shape that is not canonical,
// or carries a per-request field, does not decode.
func TestJoinStoredFindsEdits(t *testing.T) {
	r := evidencetest.Full("01JNJ3ZQ8X0000000000000000", "replica-a", evidencetest.Base)
	evidencetest.Link(evidence.Link{}, r)
	shape, rest, err := compact.SplitStored(r)
	if err != nil {
		t.Fatal(err)
	}
	out := compact.OutsideOf(r)
	edited := *r
	edited.Verdict = evidence.Plaintext
	otherShape, _, err := compact.SplitStored(&edited)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		shape []byte
		out   compact.Outside
	}{
		"another shape":      {otherShape, out},
		"another id":         {shape, compact.Outside{ID: "01JNJ3ZQ8X0000000000000009", TimeNS: out.TimeNS, RequestID: out.RequestID, Path: out.Path, Seq: out.Seq}},
		"another time":       {shape, compact.Outside{ID: out.ID, TimeNS: out.TimeNS + 1, RequestID: out.RequestID, Path: out.Path, Seq: out.Seq}},
		"another request id": {shape, compact.Outside{ID: out.ID, TimeNS: out.TimeNS, RequestID: "x", Path: out.Path, Seq: out.Seq}},
		"another path":       {shape, compact.Outside{ID: out.ID, TimeNS: out.TimeNS, RequestID: out.RequestID, Path: "/x", Seq: out.Seq}},
	} {
		back, err := compact.JoinStored(c.shape, rest, c.out)
		if !errors.Is(err, compact.ErrCheck) || back == nil {
			t.Errorf("%s: JoinStored = %v, %v; want the record and ErrCheck", name, back, err)
		}
	}
	for name, bad := range map[string]string{
		"case-variant member": strings.Replace(string(shape), `"verdict":`, `"Verdict":"mtls","verdict":`, 1),
		"duplicate member":    strings.Replace(string(shape), `"decision":{"allowed":`, `"decision":{"allowed":true,"allowed":`, 1),
		"unknown member":      strings.Replace(string(shape), `"decision":{`, `"approved_by":"CISO","decision":{`, 1),
		"space":               strings.Replace(string(shape), `,`, `, `, 1),
		"per-request field":   strings.Replace(string(shape), `"decision":{`, `"id":"x","decision":{`, 1),
		"not JSON":            string(shape[:len(shape)-1]),
	} {
		if bad == string(shape) {
			t.Fatalf("%s: the edit did not apply", name)
		}
		if _, err := compact.JoinStored([]byte(bad), rest, out); err == nil || errors.Is(err, compact.ErrCheck) {
			t.Errorf("%s: JoinStored = %v, want a decode error", name, err)
		}
		shapes := compact.NewShapes(4)
		if _, err := shapes.Join(1, rest, out, func(int64) ([]byte, error) { return []byte(bad), nil }); err == nil || shapes.Len() != 0 {
			t.Errorf("%s: Shapes.Join = %v, %d cached; want an error and nothing cached", name, err, shapes.Len())
		}
	}
	// A column a stored rest leaves out, empty.
	if _, err := compact.JoinStored(shape, rest, compact.Outside{TimeNS: out.TimeNS, RequestID: out.RequestID, Path: out.Path, Seq: out.Seq}); err == nil || !strings.Contains(err.Error(), "id") {
		t.Errorf("JoinStored without the id column = %v, want an error naming the id", err)
	}
	// A stored rest is not Split's: Join refuses it.
	if _, err := compact.Join(shape, rest); err == nil {
		t.Error("Join took a stored rest")
	}
	// Every prefix of a stored rest, in the usual layout and not, and
	// one with a byte more, is refused.
	tr := traffic.New(t, 5, "replica-t").Batch(evidencetest.Base, time.Millisecond, 1)[0]
	evidencetest.Link(evidence.Link{}, tr)
	common, crest, err := compact.SplitStored(tr)
	if err != nil || crest[0] != compact.VersionCommon {
		t.Fatalf("a traffic record's stored rest is not in the usual layout: %v", err)
	}
	if back, err := compact.JoinStored(common, crest, compact.OutsideOf(tr)); err != nil {
		t.Fatal(err)
	} else {
		sameRecord(t, back, tr)
	}
	for i := range len(crest) {
		if r, err := compact.JoinStored(common, crest[:i], compact.OutsideOf(tr)); err == nil {
			t.Errorf("JoinStored took the first %d of %d bytes of the rest: %+v", i, len(crest), r)
		}
	}
	if _, err := compact.JoinStored(common, append(crest[:len(crest):len(crest)], 0), compact.OutsideOf(tr)); err == nil {
		t.Error("JoinStored took the rest with a byte after it")
	}
	for i := range len(rest) {
		if r, err := compact.JoinStored(shape, rest[:i], out); err == nil {
			t.Errorf("JoinStored took the first %d of %d bytes of the rest: %+v", i, len(rest), r)
		}
	}
	if _, err := compact.JoinStored(shape, append(rest[:len(rest):len(rest)], 0), out); err == nil {
		t.Error("JoinStored took the rest with a byte after it")
	}
}

// TestShapesCopies: a record joined through the cache is a deep copy: a
// caller editing it does not change the next record of that shape.
func TestShapesCopies(t *testing.T) {
	r := evidencetest.Full("01JNJ3ZQ8X0000000000000000", "replica-a", evidencetest.Base)
	r.Headers = map[string]string{"x-tenant": "a"}
	evidencetest.Link(evidence.Link{}, r)
	shape, rest, err := compact.SplitStored(r)
	if err != nil {
		t.Fatal(err)
	}
	shapes := compact.NewShapes(2)
	load := func(int64) ([]byte, error) { return shape, nil }
	a, err := shapes.Join(1, rest, compact.OutsideOf(r), load)
	if err != nil {
		t.Fatal(err)
	}
	a.Reasons[0] = "edited"
	a.Headers["x-tenant"] = "edited"
	a.Source.SPIFFE.ID = "edited"
	a.Source.Certificate.URISANs[0] = "edited"
	a.XFCC.Elements[0].URI = append(a.XFCC.Elements[0].URI[:0], "edited")
	a.Destination.SPIFFE.Namespace = "edited"
	b, err := shapes.Join(1, rest, compact.OutsideOf(r), load)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, b, r)
	// Concurrent joins and evictions (go test -race).
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := shapes.Join(int64((g+i)%5), rest, compact.OutsideOf(r), load); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if shapes.Len() > 2 {
		t.Errorf("%d shapes cached, bound 2", shapes.Len())
	}
}

// sqliteLess orders id keys as SQLite orders the column: TEXT before BLOB,
// each bytewise.
func sqliteLess(a, b any) int {
	as, aText := a.(string)
	bs, bText := b.(string)
	switch {
	case aText && bText:
		return strings.Compare(as, bs)
	case aText:
		return -1
	case bText:
		return 1
	}
	return bytes.Compare(a.([]byte), b.([]byte))
}

// TestIDKey: every id comes back from its key, a canonical ULID is 16
// bytes, and keys sort as the ids do.
func TestIDKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ids := []string{"", "0", "00000000000000000000000000", "0000000000000000000000000", "000000000000000000000000000",
		"7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ.amended", "8", "80000000000000000000000000", "zzz", "~",
		"01HOST000100000000000000001", "01HOST0001000000000000000001", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAW",
		"01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAV.amended", "01ARZ3NDEKTSV4RRFFQ69G5FAI", "01ARZ3NDEKTSV4RRFFQ69G5FA\x00",
		"01ARZ3NDEKTSV4RRFFQ69G5FAVX", "01ARZ3NDEKTSV4RRFFQ69G5FA/", "01ARZ3NDEKTSV4RRFFQ69G5FA:", "-", " ", "\xff", "01ARZ3NDEKTSV4RRFFQ69G5FAV\xff",
		"dec-01ARZ3NDEKTSV4RRFFQ69G5FAV", "amended-x", "not-a-ulid"}
	newULID := func() string {
		var u ulid.ULID
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		return u.String()
	}
	for i := range 2000 {
		switch i % 4 {
		case 0:
			ids = append(ids, newULID())
		case 1:
			ids = append(ids, newULID()+evidence.AmendmentSuffix)
		case 2:
			ids = append(ids, odd(rng))
		default:
			b := make([]byte, rng.IntN(30))
			for j := range b {
				b[j] = "0179AHIZaz.-\x00\xff"[rng.IntN(14)]
			}
			ids = append(ids, string(b))
		}
	}
	for _, id := range ids {
		k := compact.IDKey(id)
		back, err := compact.IDOfKey(k)
		if err != nil || back != id {
			t.Fatalf("IDOfKey(IDKey(%q)) = %q, %v", id, back, err)
		}
		if u, err := ulid.ParseStrict(id); err == nil && u.String() == id {
			if b, ok := k.([]byte); !ok || len(b) != 16 {
				t.Fatalf("IDKey(%q) = %x, want the ULID's 16 bytes", id, k)
			}
		}
	}
	byID := slices.Clone(ids)
	slices.Sort(byID)
	byID = slices.Compact(byID)
	byKey := slices.Clone(byID)
	slices.SortStableFunc(byKey, func(a, b string) int { return sqliteLess(compact.IDKey(a), compact.IDKey(b)) })
	for i := range byID {
		if byID[i] != byKey[i] {
			t.Fatalf("keys sort otherwise than ids at %d: %q by id, %q by key", i, byID[i], byKey[i])
		}
	}
	for _, bad := range []any{[]byte{1, 2}, []byte("0123456789abcdef\x02x"), "01ARZ3NDEKTSV4RRFFQ69G5FAV", nil, 3,
		append(compact.IDKey("01ARZ3NDEKTSV4RRFFQ69G5FAV.amended").([]byte)[:16:16], append([]byte{1}, "01ARZ3NDEKTSV4RRFFQ69G5FAW.amended"...)...)} {
		if id, err := compact.IDOfKey(bad); err == nil {
			t.Errorf("IDOfKey(%v) = %q, want an error", bad, id)
		}
	}
}
