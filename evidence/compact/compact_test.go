package compact_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
)

// roundTrip fails t unless Join(Split(r)) has r's canonical bytes, both
// versions, and its chain.
func roundTrip(t testing.TB, r *evidence.Record) (shape, rest []byte) {
	t.Helper()
	shape, rest, err := compact.Split(r)
	if err != nil {
		t.Fatalf("Split(%s): %v", r.ID, err)
	}
	back, err := compact.Join(shape, rest)
	if err != nil {
		t.Fatalf("Join(%s): %v", r.ID, err)
	}
	if got, want := back.Canonical(), r.Canonical(); !bytes.Equal(got, want) {
		t.Fatalf("Canonical of %q changed:\n got %q\nwant %q", r.ID, got, want)
	}
	if got, want := back.CanonicalJSON(), r.CanonicalJSON(); !bytes.Equal(got, want) {
		t.Fatalf("CanonicalJSON of %q changed:\n got %s\nwant %s", r.ID, got, want)
	}
	if back.Chain != r.Chain {
		t.Fatalf("chain of %q changed: got %+v, want %+v", r.ID, back.Chain, r.Chain)
	}
	return shape, rest
}

func TestRoundTripFixtures(t *testing.T) {
	for _, r := range fixtures(t) {
		roundTrip(t, r)
	}
}

// TestTrafficShapes: records of one edge, method and decision have one
// shape, and the traffic's rest is small.
func TestTrafficShapes(t *testing.T) {
	m := traffic.New(t, 2, "replica-t")
	recs := m.Batch(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), time.Millisecond, 20000)
	evidencetest.Link(evidence.Link{}, recs...)
	shapes := map[string]bool{}
	byKey := map[string]string{}
	edges := map[string]bool{}
	restBytes, mismatch := 0, 0
	for _, r := range recs {
		shape, rest := roundTrip(t, r)
		restBytes += len(rest)
		shapes[string(shape)] = true
		edge := r.Source.Address + " " + r.Source.Principal + " -> " + r.Destination.Address + " " + r.Request.Host
		edges[edge] = true
		// An mtls_mismatch edge's XFCC names a workload picked per request.
		xfcc := ""
		if r.XFCC != nil {
			xfcc = r.XFCC.Raw
		}
		if r.Verdict == evidence.MTLSMismatch {
			mismatch++
		}
		key := fmt.Sprintf("%s %s %v %s", edge, r.Request.Method, r.Decision.Allowed, xfcc)
		if prev, ok := byKey[key]; ok && prev != string(shape) {
			t.Fatalf("two records of %s have different shapes:\n%s\n%s", key, prev, shape)
		}
		byKey[key] = string(shape)
	}
	if len(shapes) != len(byKey) {
		t.Errorf("%d shapes for %d (edge, method, decision)", len(shapes), len(byKey))
	}
	// 4 methods (GET, POST, PUT, DELETE) x allowed or denied per edge.
	if len(shapes) > len(edges)*8+mismatch {
		t.Errorf("%d shapes for %d edges and %d mtls_mismatch records", len(shapes), len(edges), mismatch)
	}
	t.Logf("%d records: %d edges, %d shapes (%d mtls_mismatch records), rest %.1f bytes/record", len(recs), len(edges),
		len(shapes), mismatch, float64(restBytes)/float64(len(recs)))
}

// odd returns a random string of the kinds the fast paths must tell apart
// from their own.
func odd(rng *rand.Rand) string {
	hex := func(n int, upper bool) string {
		const lo, up = "0123456789abcdef", "0123456789ABCDEF"
		b := make([]byte, n)
		for i := range b {
			if upper {
				b[i] = up[rng.IntN(16)]
			} else {
				b[i] = lo[rng.IntN(16)]
			}
		}
		return string(b)
	}
	uuid := func(upper bool) string {
		h := hex(32, upper)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	switch rng.IntN(20) {
	case 0:
		return ""
	case 1:
		return uuid(false)
	case 2:
		return uuid(true)
	case 3:
		return hex(32, false)
	case 4:
		return hex(32, true)
	case 5:
		return hex(64, false)
	case 6:
		return hex(64, true)
	case 7:
		return fmt.Sprint(rng.Uint64())
	case 8:
		return "0"
	case 9:
		return "007"
	case 10:
		return "18446744073709551616" // 2^64: not a uint64
	case 11:
		return "-1"
	case 12:
		return "01ARZ3NDEKTSV4RRFFQ69G5FAV" // a ULID
	case 13:
		return "01arz3ndektsv4rrffq69g5fav" // a ULID in lower case: not canonical
	case 14:
		return "8ZZZZZZZZZZZZZZZZZZZZZZZZZ" // overflows 128 bits
	case 15:
		return "/ünïcode/✓/" + hex(4, false)
	case 16:
		return strings.Repeat("x", rng.IntN(3000))
	case 17:
		return "01ARZ3NDEKTSV4RRFFQ69G5FAV" + evidence.AmendmentSuffix
	case 18:
		return "a\x00b\"\\\n"
	default:
		return fmt.Sprintf("req-%d", rng.IntN(1000))
	}
}

func TestRoundTripOdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 1))
	times := []time.Time{{}, time.Unix(0, 0), time.Unix(-1, 999999999), time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(2026, 12, 6, 1, 2, 3, 4, time.FixedZone("x", 3600)),
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range 5000 {
		r := oddRecord(rng, times, i)
		roundTrip(t, r)
	}
}

func TestSplitRefusesInvalidUTF8(t *testing.T) {
	r := evidencetest.Full("x", "r", evidencetest.Base)
	r.Request.Host = "a\xffb"
	if _, _, err := compact.Split(r); err == nil {
		t.Fatal("Split took a host that is not UTF-8")
	}
}

func TestJoinRefuses(t *testing.T) {
	r := evidencetest.Full("01ARZ3NDEKTSV4RRFFQ69G5FAV", "r", evidencetest.Base)
	r.Decision.DecisionID = r.ID
	evidencetest.Link(evidence.Link{}, r)
	shape, rest, err := compact.Split(r)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][2][]byte{
		"empty rest":        {shape, nil},
		"other version":     {shape, append([]byte{2}, rest[1:]...)},
		"trailing bytes":    {shape, append(bytes.Clone(rest), 0)},
		"oversized rest":    {shape, make([]byte, compact.MaxRestBytes+1)},
		"oversized shape":   {make([]byte, compact.MaxShapeBytes+1), rest},
		"shape not JSON":    {[]byte("{"), rest},
		"tag past the last": {shape, append(append(bytes.Clone(rest[:7]), rest[7]|0xf0), rest[8:]...)},
	}
	// One field set, the others empty, on a shape with nothing in it.
	one := func(field int, tag byte, payload ...byte) [2][]byte {
		b := make([]byte, 8, 8+len(payload))
		b[0] = compact.Version
		b[1+field/2] = tag << (4 * (field % 2))
		return [2][]byte{[]byte("{}"), append(b, payload...)}
	}
	cases["nanoseconds of 1e9"] = one(1, 8, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03)
	cases["the zero time as a time"] = one(1, 8, 0xff, 0xdb, 0x8f, 0xf9, 0xce, 0x03, 0)
	cases["a ULID tag on the path"] = one(7, 2, make([]byte, 16)...)
	cases["an unknown tag"] = one(0, 15)
	cases["port 0 written"] = one(5, 6, 0)
	cases["port over 32 bits"] = one(5, 6, 0x80, 0x80, 0x80, 0x80, 0x10)
	cases["seq 0 written"] = one(9, 6, 0)
	cases["chain version 0 written"] = one(12, 7, 0)
	cases["decision id = an empty id"] = one(6, 9)
	cases["amends id without amends"] = one(8, 1, 1, 'x')
	cases["raw of length 0"] = one(7, 1, 0)
	cases["raw longer than the rest"] = one(7, 1, 5, 'x')
	cases["bad uvarint"] = one(3, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	for n := 1; n < len(rest); n++ {
		cases[fmt.Sprintf("truncated to %d", n)] = [2][]byte{shape, rest[:n]}
	}
	for name, c := range cases {
		if _, err := compact.Join(c[0], c[1]); err == nil {
			t.Errorf("%s: Join took it", name)
		} else if !strings.HasPrefix(err.Error(), "compact: ") {
			t.Errorf("%s: error %q does not say where it comes from", name, err)
		} else if !strings.HasPrefix(name, "truncated") {
			t.Logf("%s: %v", name, err)
		}
	}
}

func FuzzJoin(f *testing.F) {
	r := evidencetest.Full("01ARZ3NDEKTSV4RRFFQ69G5FAV", "r", evidencetest.Base)
	r.Decision.DecisionID = r.ID
	evidencetest.Link(evidence.Link{}, r)
	shape, rest, err := compact.Split(r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shape, rest)
	f.Add([]byte("{}"), []byte{1, 0, 0, 0, 0, 0, 0, 0})
	a := evidencetest.Amended("x"+evidence.AmendmentSuffix, "r", time.Time{})
	a.Amends.ID = "x"
	shape, rest, err = compact.Split(a)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shape, rest)
	f.Fuzz(func(t *testing.T, shape, rest []byte) {
		r, err := compact.Join(shape, rest)
		if err != nil {
			return
		}
		// What Join takes, Split gives back as it was (its rest, at least:
		// the shape may be JSON written otherwise).
		_, rest2, err := compact.Split(r)
		if err != nil {
			return // a shape with a string that is not UTF-8
		}
		r2, err := compact.Join(shape, rest2)
		if err != nil {
			t.Fatalf("Join of Split of Join: %v", err)
		}
		if !bytes.Equal(r.Canonical(), r2.Canonical()) {
			t.Fatal("Join of Split of Join differs")
		}
	})
}

// oddRecord is the i-th record of the odd-value round trips: odd strings
// everywhere a per-request field is, a time from times, ports, decision
// ids, amendments and chain fields at their edges, every other record
// linked (v1 or v2), every 50th with its edge parts left out.
func oddRecord(rng *rand.Rand, times []time.Time, i int) *evidence.Record {
	r := evidencetest.Full(odd(rng), "replica-"+odd(rng), times[rng.IntN(len(times))])
	r.RequestID, r.StreamID, r.TraceID = odd(rng), odd(rng), odd(rng)
	r.Request.Path = odd(rng)
	r.Source.Port = []uint32{0, 1, 65535, math.MaxUint32}[rng.IntN(4)]
	switch rng.IntN(3) {
	case 0:
		r.Decision.DecisionID = r.ID
	case 1:
		r.Decision.DecisionID = odd(rng)
	}
	switch rng.IntN(4) {
	case 0:
		r.Amends = &evidence.Amends{ID: odd(rng), Allowed: rng.IntN(2) == 0}
	case 1:
		r.Amends = &evidence.Amends{ID: r.ID}
		r.ID += evidence.AmendmentSuffix
	}
	r.Chain = evidence.Chain{Seq: []uint64{0, 1, math.MaxUint64}[rng.IntN(3)], PrevHash: odd(rng), Hash: odd(rng),
		Version: []int{0, 1, evidence.CanonicalV2, -3, math.MaxInt32}[rng.IntN(5)]}
	if i%2 == 0 {
		var head evidence.Link
		if i%4 == 0 {
			head.LinkV1(r)
		} else {
			head.Link(r)
		}
	}
	if i%50 == 0 {
		r.Headers, r.XFCC, r.Reasons, r.Source.Certificate = nil, nil, nil, nil
		r.Request = evidence.Request{Path: r.Request.Path}
	}
	return r
}
