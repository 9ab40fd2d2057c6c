package evidencetest

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testRollups compares Aggregate with counts computed from the raw records
// over windows aligned to days, hours and minutes, unaligned ones (a
// minute counts when it overlaps the window), and per destination.
func testRollups(t *testing.T, f Factory) {
	b, fx := loaded(t, f, filterRecords)
	rollupCases(t, b, fx)
}

// testRollupsWorkloads is testRollups over records with workloads: sources
// are keyed in the cluster's names (evidence.SourceKey), and the oracle
// must find workload keys among the groups.
func testRollupsWorkloads(t *testing.T, f Factory) {
	b, fx := loadedWorkloads(t, f, filterRecords)
	var workloads, mismatches int
	for _, r := range fx.Records {
		k := evidence.ParseSourceKey(evidence.SourceKey(r))
		if k.Workload() {
			workloads++
		}
		if k.Mismatch {
			mismatches++
		}
	}
	if workloads == 0 || mismatches == 0 {
		t.Fatalf("fixture: %d records keyed by workload, %d mismatched; want some of each", workloads, mismatches)
	}
	rollupCases(t, b, fx)
}

func rollupCases(t *testing.T, b Backend, fx *Fixture) {
	day, hour, minute := 24*time.Hour, time.Hour, time.Minute
	cases := []struct {
		name  string
		q     evidence.AggregateQuery
		empty bool
	}{
		{name: "everything", q: evidence.AggregateQuery{Since: Base, Until: Base.Add(10 * day)}},
		{name: "since zero", q: evidence.AggregateQuery{Until: Base.Add(2 * day)}},
		{name: "one day", q: evidence.AggregateQuery{Since: Base.Add(day), Until: Base.Add(2 * day)}},
		{name: "hours", q: evidence.AggregateQuery{Since: Base.Add(25 * hour), Until: Base.Add(27 * hour)}},
		{name: "minutes across days", q: evidence.AggregateQuery{Since: Base.Add(23*hour + 17*minute), Until: Base.Add(2*day + 3*hour + 41*minute)}},
		{name: "unaligned", q: evidence.AggregateQuery{Since: Base.Add(23*hour + 17*minute + 30*time.Second), Until: Base.Add(2*day + 3*hour + 41*minute + 10*time.Second)}},
		{name: "one minute", q: evidence.AggregateQuery{Since: fx.Records[600].Time.Truncate(minute), Until: fx.Records[600].Time.Truncate(minute).Add(minute)}},
		{name: "destination host", q: evidence.AggregateQuery{Since: Base, Until: Base.Add(3 * day), Destination: "ledger.payments:8443"}},
		{name: "destination principal", q: evidence.AggregateQuery{Since: Base.Add(day), Until: Base.Add(10 * day), Destination: "spiffe://cluster.local/ns/shop/sa/cart"}},
		{name: "destination hostile", q: evidence.AggregateQuery{Since: Base, Until: Base.Add(10 * day), Destination: "'; DROP TABLE records; --"}},
		{name: "nothing", q: evidence.AggregateQuery{Since: Base.Add(-day), Until: Base}, empty: true},
		{name: "unknown destination", q: evidence.AggregateQuery{Since: Base, Until: Base.Add(10 * day), Destination: "%"}, empty: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, ids := expectedGroups(fx.Records, tc.q)
			if tc.empty != (len(want) == 0) {
				t.Fatalf("fixture: %d groups expected; the case says empty=%v", len(want), tc.empty)
			}
			got, err := b.Store.Aggregate(context.Background(), tc.q)
			if err != nil {
				t.Fatalf("Aggregate: %v", err)
			}
			sameGroups(t, got, want, ids)
		})
	}
}

func sameGroups(t *testing.T, got, want []evidence.Group, ids map[groupKey]map[string]bool) {
	t.Helper()
	sortGroups(got)
	if len(got) != len(want) {
		t.Fatalf("%d groups, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i, g := range got {
		w := want[i]
		if keyOf(g) != keyOf(w) || g.Count != w.Count || !g.FirstSeen.Equal(w.FirstSeen) || !g.LastSeen.Equal(w.LastSeen) {
			t.Errorf("group %d:\n got %+v\nwant %+v", i, g, w)
			continue
		}
		if !ids[keyOf(w)][g.ExampleID] {
			t.Errorf("group %+v: example %q is not one of its records", keyOf(w), g.ExampleID)
		}
	}
}

// testStats checks the summary against the fixture.
func testStats(t *testing.T, f Factory) {
	b, fx := loaded(t, f, 300)
	since := Base.Add(2 * 24 * time.Hour)
	for _, at := range []time.Time{{}, since} {
		st, err := b.Store.Stats(context.Background(), at)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		byVerdict, byDecision := map[evidence.Verdict]int64{}, map[string]int64{}
		oldest, newest := fx.Records[0].Time, fx.Records[0].Time
		for _, r := range fx.Records {
			oldest, newest = minTime(oldest, r.Time), maxTime(newest, r.Time)
			if r.Time.Before(at) {
				continue
			}
			byVerdict[r.Verdict]++
			if r.Decision.Allowed {
				byDecision["allowed"]++
			} else {
				byDecision["denied"]++
			}
		}
		if st.Records != int64(len(fx.Records)) || !st.Oldest.Equal(oldest) || !st.Newest.Equal(newest) {
			t.Errorf("Stats: %d records from %s to %s, want %d from %s to %s", st.Records, st.Oldest, st.Newest, len(fx.Records), oldest, newest)
		}
		if !maps.Equal(nonzero(st.ByVerdict), byVerdict) || !maps.Equal(nonzero(st.ByDecision), byDecision) {
			t.Errorf("Stats since %s: by verdict %v, by decision %v; want %v, %v", at, st.ByVerdict, st.ByDecision, byVerdict, byDecision)
		}
		if !maps.Equal(st.Replicas, fx.Heads) {
			t.Errorf("Stats: replicas %v, want %v", st.Replicas, fx.Heads)
		}
		if st.SizeBytes <= 0 {
			t.Errorf("Stats: size %d bytes", st.SizeBytes)
		}
	}
}

func nonzero[K comparable](m map[K]int64) map[K]int64 {
	out := map[K]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// testRollupSeries checks AggregateSeries against the oracle, point by
// point: each point's groups are those of Aggregate over the point's
// range, for aligned and unaligned windows and steps of every bucket size.
func testRollupSeries(t *testing.T, f Factory) {
	b, fx := loaded(t, f, filterRecords)
	day, hour, minute := 24*time.Hour, time.Hour, time.Minute
	for _, tc := range []struct {
		name         string
		since, until time.Time
		step         time.Duration
	}{
		{"days", Base.Add(-day), Base.Add(6 * day), day},
		{"a week", Base.Add(-3 * day), Base.Add(11 * day), 7 * day},
		{"two days", Base, Base.Add(10 * day), 2 * day},
		{"hours, unaligned", Base.Add(5*hour + 17*minute + 30*time.Second), Base.Add(2*day + 3*hour + 41*minute + 10*time.Second), hour},
		{"three hours", Base.Add(-hour), Base.Add(3 * day), 3 * hour},
		{"7 minutes", Base.Add(day + 13*minute + 29*time.Second), Base.Add(day + 20*hour + 3*time.Second), 7 * minute},
		{"90 minutes", Base.Add(day), Base.Add(3 * day), 90 * minute},
		{"minutes", fx.Records[600].Time.Add(-3 * hour), fx.Records[600].Time.Add(5 * hour), minute},
		{"one minute", fx.Records[600].Time.Truncate(minute), fx.Records[600].Time.Truncate(minute).Add(minute), minute},
		{"part of a minute", fx.Records[600].Time.Add(-time.Second), fx.Records[600].Time.Add(time.Second), hour},
		{"nothing", Base.Add(-3 * day), Base, hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := evidence.SeriesQuery{Since: tc.since, Until: tc.until, Step: tc.step}
			got, err := b.Store.AggregateSeries(context.Background(), q)
			if err != nil {
				t.Fatalf("AggregateSeries: %v", err)
			}
			bounds := q.Boundaries()
			if int64(len(bounds)-1) != q.Points() {
				t.Fatalf("%d boundaries, %d points", len(bounds), q.Points())
			}
			byPoint := map[int][]evidence.Group{}
			for _, g := range got {
				if g.Point < 0 || g.Point >= len(bounds)-1 {
					t.Fatalf("point %d of %d", g.Point, len(bounds)-1)
				}
				byPoint[g.Point] = append(byPoint[g.Point], g.Group)
			}
			for i := range len(bounds) - 1 {
				want, ids := expectedGroups(fx.Records, evidence.AggregateQuery{Since: bounds[i], Until: bounds[i+1]})
				sameGroups(t, byPoint[i], want, ids)
			}
		})
	}
	for _, tc := range []struct {
		q     evidence.SeriesQuery
		field string
	}{
		{evidence.SeriesQuery{Since: Base, Until: Base.Add(day), Step: 30 * time.Second}, "step"},
		{evidence.SeriesQuery{Since: Base, Until: Base.Add(day), Step: 90 * time.Second}, "step"},
		{evidence.SeriesQuery{Since: Base, Until: Base.Add(day), Step: 2 * minute}, "step"},
		{evidence.SeriesQuery{Until: Base.Add(day), Step: hour}, "since"},
		{evidence.SeriesQuery{Since: Base, Until: Base, Step: hour}, "until"},
	} {
		var fe *evidence.FilterError
		if _, err := b.Store.AggregateSeries(context.Background(), tc.q); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a FilterError on %s", tc.q, err, tc.field)
		}
	}
}
