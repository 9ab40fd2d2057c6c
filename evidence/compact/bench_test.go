package compact_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
)

// BenchmarkCodec measures the codec over the traffic generator's records
// (chained, version 2): rest bytes/record and distinct shapes over
// MESHPROOF_BENCH_RECORDS records (100,000 unless set), then Split and Join
// per record.
//
//	go test -run '^$' -bench Codec -benchmem ./evidence/compact/
func BenchmarkCodec(b *testing.B) {
	n := 100000
	if v := os.Getenv("MESHPROOF_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("MESHPROOF_BENCH_RECORDS=%q: want a positive count", v)
		}
	}
	m := traffic.New(b, 3, "replica-bench")
	recs := m.Batch(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), time.Millisecond, n)
	evidencetest.Link(evidence.Link{}, recs...)
	shapes := map[string]int{}
	rests := make([][]byte, n)
	shapeOf := make([][]byte, n)
	restBytes, shapeBytes, jsonBytes := 0, 0, 0
	for i, r := range recs {
		shape, rest, err := compact.Split(r)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := shapes[string(shape)]; !ok {
			shapes[string(shape)] = len(shape)
			shapeBytes += len(shape)
		}
		rests[i], shapeOf[i] = rest, shape
		restBytes += len(rest)
		jsonBytes += len(r.CanonicalJSON())
	}
	b.Logf("%d records: rest %.1f bytes/record; %d distinct shapes, %.0f bytes each on average (%.2f bytes/record if each is kept once); canonical JSON %.1f bytes/record",
		n, float64(restBytes)/float64(n), len(shapes), float64(shapeBytes)/float64(len(shapes)),
		float64(shapeBytes)/float64(n), float64(jsonBytes)/float64(n))
	b.Run("Split", func(b *testing.B) {
		b.ReportAllocs()
		b.ReportMetric(float64(restBytes)/float64(n), "rest-bytes/record")
		b.ReportMetric(float64(len(shapes)), "shapes")
		for i := 0; b.Loop(); i++ {
			if _, _, err := compact.Split(recs[i%n]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Join", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := compact.Join(shapeOf[i%n], rests[i%n]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
