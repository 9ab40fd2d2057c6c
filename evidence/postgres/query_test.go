package postgres_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// TestHostileFilterValues passes values that would break SQL built from
// text, LIKE patterns, and strings PostgreSQL rejects outright.
func TestHostileFilterValues(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	var head evidence.Link
	recs := chained("r1", &head, every(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), time.Minute, 5)...)
	recs[0].Source.Principal = "'; DROP TABLE records; --"
	recs[1].Source.Principal = "100%_sure\\"
	recs[2].Source.Principal = "\U0010FFFFmax"
	head = evidence.Link{}
	for _, r := range recs {
		head = head.Link(r)
	}
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    evidence.Filter
		want int
	}{
		{"quote", evidence.Filter{Source: "'; DROP TABLE records; --"}, 1},
		{"quote prefix", evidence.Filter{SourcePrefix: "';"}, 1},
		{"percent is not a wildcard", evidence.Filter{SourcePrefix: "%"}, 0},
		{"underscore is not a wildcard", evidence.Filter{SourcePrefix: "100__"}, 0},
		{"percent literal", evidence.Filter{SourcePrefix: "100%_"}, 1},
		{"backslash", evidence.Filter{Source: "100%_sure\\"}, 1},
		{"highest code point", evidence.Filter{SourcePrefix: "\U0010FFFF"}, 1},
		{"path prefix", evidence.Filter{PathPrefix: "/"}, 5},
		{"request id empty is no filter", evidence.Filter{RequestID: ""}, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Query(ctx, tc.f, evidence.PageRequest{})
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if len(res.Records) != tc.want {
				t.Errorf("Query: %d records, want %d", len(res.Records), tc.want)
			}
		})
	}
	for _, f := range []evidence.Filter{{Source: "\xff\xfe"}, {SourcePrefix: "spiffe\xff"}, {Host: "\xc3"}} {
		var fe *evidence.FilterError
		if _, err := s.Query(ctx, f, evidence.PageRequest{}); !errors.As(err, &fe) {
			t.Errorf("Query(%+v): %v, want a FilterError", f, err)
		}
	}
	for _, c := range []string{storekit.EncodeCursor(1, "\xff\xfe"), storekit.EncodeCursor(1, "a\x00b")} {
		if _, err := s.Query(ctx, evidence.Filter{}, evidence.PageRequest{Cursor: c}); !errors.Is(err, evidence.ErrBadCursor) {
			t.Errorf("Query with a forged cursor %q: %v, want ErrBadCursor", c, err)
		}
	}
	if _, err := s.Get(ctx, "\xff"); !errors.Is(err, evidence.ErrNotFound) {
		t.Error("Get of a non-UTF-8 id found something")
	}
	if st, _ := s.Stats(ctx, time.Time{}); st.Records != 5 {
		t.Fatalf("records: %d, want 5 (still there)", st.Records)
	}
}

// TestAggregateRanges compares Aggregate's totals over random ranges, which
// mix weeks, days, hours and minutes of rollups, before and after rollup
// retention, with counts over the raw records.
func TestAggregateRanges(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var times []time.Time
	// Bursts a few seconds apart, and gaps of up to three hours: about
	// six weeks in all, so that every level of rollups is read.
	for at := start; len(times) < 3000; {
		times = append(times, at)
		gap := time.Duration(rng.Int64N(int64(2 * time.Minute)))
		if rng.IntN(5) == 0 {
			gap = time.Duration(rng.Int64N(int64(3 * time.Hour)))
		}
		at = at.Add(gap)
	}
	var head evidence.Link
	recs := chained("r1", &head, times...)
	for i := 0; i < len(recs); i += 500 {
		if err := s.Append(ctx, recs[i:min(i+500, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	end := times[len(times)-1]
	// count is the records whose minute overlaps [since, until).
	count := func(since, until time.Time) int64 {
		var n int64
		for _, at := range times {
			m := at.Truncate(time.Minute)
			if (since.IsZero() || m.Add(time.Minute).After(since)) && (until.IsZero() || m.Before(until)) {
				n++
			}
		}
		return n
	}
	check := func(since, until time.Time) {
		t.Helper()
		gs, err := s.Aggregate(ctx, evidence.AggregateQuery{Since: since, Until: until})
		if err != nil {
			t.Fatal(err)
		}
		var got int64
		for _, g := range gs {
			got += g.Count
		}
		if want := count(since, until); got != want {
			t.Errorf("Aggregate(%s, %s) counts %d, want %d", since.Format(time.RFC3339Nano), until.Format(time.RFC3339Nano), got, want)
		}
	}
	randomTime := func() time.Time {
		return start.Add(time.Duration(rng.Int64N(int64(end.Sub(start) + time.Hour))))
	}
	check(time.Time{}, time.Time{})
	check(start, end)
	check(start.Add(time.Hour), start.Add(5*time.Hour))
	check(start.Add(7*24*time.Hour), start.Add(35*24*time.Hour))
	for range 60 {
		a, b := randomTime(), randomTime()
		if b.Before(a) {
			a, b = b, a
		}
		check(a, b)
	}
	cut := start.Add(9*24*time.Hour + 17*time.Minute + 30*time.Second)
	if _, err := s.DeleteBefore(ctx, time.Time{}, cut, 7); err != nil {
		t.Fatal(err)
	}
	times = dropBefore(times, cut.Truncate(time.Minute))
	check(time.Time{}, time.Time{})
	check(start, cut.Add(3*time.Hour))
	check(cut.Add(-time.Minute), cut.Add(time.Minute))
	for range 20 {
		a := randomTime()
		check(a, a.Add(time.Duration(rng.Int64N(int64(48*time.Hour)))))
	}
}

func dropBefore(times []time.Time, t time.Time) []time.Time {
	var out []time.Time
	for _, at := range times {
		if !at.Before(t) {
			out = append(out, at)
		}
	}
	return out
}
