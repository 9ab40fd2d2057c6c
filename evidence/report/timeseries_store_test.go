package report

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// rolloutMesh is six hours from w0 of a rollout: the legacy client's
// plaintext to cart falls off hour by hour, frontend calls cart and
// ledger over mTLS, and legacy-db (never mTLS) takes plaintext.
func rolloutMesh(w0 time.Time) *mesh {
	m := &mesh{}
	for minute := range 6 * 60 {
		at := w0.Add(time.Duration(minute)*time.Minute + 7*time.Second)
		m.send(1+minute%3, at, frontendID, cartHost, cartID, evidence.MTLS)
		if minute%(1+minute/60) == 0 {
			m.send(1, at.Add(20*time.Second), "10.0.0.7", cartHost, "", evidence.Plaintext)
		}
		if minute%5 == 0 {
			m.send(2, at.Add(30*time.Second), frontendID, "ledger.payments:8443", ledgerID, evidence.MTLS)
			m.send(1, at.Add(40*time.Second), "10.0.0.8", "legacy-db.data.svc:5432", "", evidence.Plaintext)
		}
		if minute%17 == 0 {
			m.send(1, at.Add(50*time.Second), "10.0.0.9", cartHost, cartID, evidence.TLSServerOnly)
		}
	}
	return m
}

// TestTimeseriesStores: over both real stores, each series' points sum to
// what one Aggregate of the window says of its destination, for aligned
// and unaligned windows and several steps; points cover the window, one
// per step.
func TestTimeseriesStores(t *testing.T) {
	ctx := context.Background()
	w0 := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	for name, open := range realStores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			rolloutMesh(w0).write(t, s)
			for _, tc := range []struct {
				name         string
				since, until time.Time
				step         time.Duration
				points       int
				wantStep     time.Duration
			}{
				{"6h by default", w0, w0.Add(6 * time.Hour), 0, 72, 5 * time.Minute},
				{"6h by the hour", w0, w0.Add(6 * time.Hour), time.Hour, 6, time.Hour},
				{"6h by the minute", w0, w0.Add(6 * time.Hour), time.Minute, 360, time.Minute},
				{"unaligned, 7m steps", w0.Add(13*time.Minute + 29*time.Second), w0.Add(5*time.Hour + 3*time.Second), 7 * time.Minute, 42, 7 * time.Minute},
				{"a day around it, by default", w0.Add(-9 * time.Hour), w0.Add(15 * time.Hour), 0, 96, 15 * time.Minute},
				{"a week by day", w0.Add(-3 * 24 * time.Hour), w0.Add(4 * 24 * time.Hour), 24 * time.Hour, 8, 24 * time.Hour}, // days from midnight UTC
				{"one minute", w0.Add(61 * time.Minute), w0.Add(62 * time.Minute), 0, 1, time.Minute},
			} {
				ts, err := TimeseriesOf(ctx, s, TimeseriesQuery{Since: tc.since, Until: tc.until, Step: tc.step})
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if ts.StepSeconds != int64(tc.wantStep/time.Second) || ts.Truncated || !ts.Since.Equal(tc.since) || !ts.Until.Equal(tc.until) {
					t.Errorf("%s: step %ds truncated %v %s..%s", tc.name, ts.StepSeconds, ts.Truncated, ts.Since, ts.Until)
				}
				groups, err := s.Aggregate(ctx, evidence.AggregateQuery{Since: tc.since, Until: tc.until})
				if err != nil {
					t.Fatal(err)
				}
				attr := newAttribution(groups)
				want := map[string]Counts{}
				for _, g := range groups {
					for _, d := range attr.of(g) {
						if want[d.key] == nil {
							want[d.key] = newCounts()
						}
						want[d.key][g.Verdict] += g.Count
					}
				}
				got := map[string]Counts{}
				for _, sr := range ts.Series {
					if len(sr.Points) != tc.points || !sr.Points[0].T.Equal(tc.since) {
						t.Fatalf("%s: %s has %d points from %s, want %d from %s", tc.name, sr.Destination, len(sr.Points), sr.Points[0].T, tc.points, tc.since)
					}
					sum := newCounts()
					for i, p := range sr.Points {
						if i > 0 && (!p.T.After(sr.Points[i-1].T) || p.T.Unix()%int64(tc.wantStep/time.Second) != 0) {
							t.Fatalf("%s: point %d at %s after %s", tc.name, i, p.T, sr.Points[i-1].T)
						}
						var total int64
						for v, n := range p.Counts {
							sum[v] += n
							total += n
						}
						if total != p.Total || p.MTLS != p.Counts[evidence.MTLS] ||
							p.Plaintext != p.Counts[evidence.Plaintext]+p.Counts[evidence.TLSServerOnly] {
							t.Fatalf("%s: point %+v does not add up", tc.name, p)
						}
					}
					got[sr.Destination] = sum
				}
				if len(got) != len(want) {
					t.Errorf("%s: series %v, want %v", tc.name, slices.Sorted(mapsKeys(got)), slices.Sorted(mapsKeys(want)))
				}
				for k, w := range want {
					if !equalCounts(got[k], w) {
						t.Errorf("%s: %s sums to %v, the window's Aggregate to %v", tc.name, k, got[k], w)
					}
				}
			}

			// One destination: one series, named as asked; a principal
			// takes in its hosts' plaintext. A namespace: its series only.
			for _, dest := range []string{cartID, cartHost} {
				ts, err := TimeseriesOf(ctx, s, TimeseriesQuery{Since: w0, Until: w0.Add(6 * time.Hour), Destination: dest})
				if err != nil || len(ts.Series) != 1 || ts.Series[0].Destination != dest || ts.Series[0].Namespace != "shop" ||
					ts.Series[0].Workload != "cart" {
					t.Fatalf("destination %s: %+v, %v", dest, ts, err)
				}
				var plain int64
				for _, p := range ts.Series[0].Points {
					plain += p.Plaintext
				}
				if plain == 0 {
					t.Errorf("destination %s: no plaintext", dest)
				}
			}
			ts, err := TimeseriesOf(ctx, s, TimeseriesQuery{Since: w0, Until: w0.Add(6 * time.Hour), Namespace: "data"})
			if err != nil || len(ts.Series) != 1 || ts.Series[0].Destination != "legacy-db.data.svc:5432" || ts.Series[0].Workload != "legacy-db" {
				t.Errorf("namespace data: %+v, %v", ts, err)
			}
			// Series with the most requests STRICT refuses come first.
			ts, err = TimeseriesOf(ctx, s, TimeseriesQuery{Since: w0, Until: w0.Add(6 * time.Hour)})
			var order []string
			for _, sr := range ts.Series {
				order = append(order, sr.Destination)
			}
			if err != nil || !slices.Equal(order, []string{cartID, "legacy-db.data.svc:5432", ledgerID}) {
				t.Errorf("order %q, %v", order, err)
			}
		})
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestTimeseriesBounds: a step too small for the window, a window too long
// for any step, and more series than MaxSeries.
func TestTimeseriesBounds(t *testing.T) {
	ctx := context.Background()
	var groups []evidence.Group
	for i := range MaxSeries + 5 {
		groups = append(groups, g(sleepID, "h"+string(rune('a'+i%26))+string(rune('a'+i/26))+".ns:80", "", evidence.Plaintext, true, int64(1+i), 0, 1, "x"))
	}
	r := &groupsReader{groups: groups}
	ts, err := TimeseriesOf(ctx, r, TimeseriesQuery{Since: t0, Until: t0.Add(time.Hour)})
	if err != nil || len(ts.Series) != MaxSeries || !ts.Truncated || ts.Series[0].Destination != groups[len(groups)-1].DestinationHost {
		t.Errorf("%d series, truncated %v, first %v, %v", len(ts.Series), ts.Truncated, ts.Series[0].Destination, err)
	}
	for _, tc := range []struct {
		q     TimeseriesQuery
		field string
	}{
		{TimeseriesQuery{Since: t0, Until: t0.Add(MaxPoints*time.Minute + time.Second), Step: time.Minute}, "step"},
		{TimeseriesQuery{Since: t0, Until: t0.Add(MaxPoints * 7 * 24 * time.Hour * 2)}, "since"},
		{TimeseriesQuery{Since: t0, Until: t0.Add(time.Hour), Step: 30 * time.Second}, "step"},
		{TimeseriesQuery{Since: t0, Until: t0.Add(time.Hour), Step: 90 * time.Second}, "step"},
		{TimeseriesQuery{Until: t0.Add(time.Hour)}, "since"},
		{TimeseriesQuery{Since: t0, Until: t0}, "until"},
		{TimeseriesQuery{Since: t0, Destination: "x", Namespace: "y"}, "namespace"},
	} {
		r := &groupsReader{}
		var fe *evidence.FilterError
		if _, err := TimeseriesOf(ctx, r, tc.q); !errors.As(err, &fe) || fe.Field != tc.field || len(r.queries) != 0 {
			t.Errorf("%+v: %v (%d queries), want a FilterError on %s", tc.q, err, len(r.queries), tc.field)
		}
	}
	// Exactly MaxPoints is allowed.
	if _, err := TimeseriesOf(ctx, &groupsReader{}, TimeseriesQuery{Since: t0, Until: t0.Add(MaxPoints * time.Minute), Step: time.Minute}); err != nil {
		t.Errorf("%d points: %v", MaxPoints, err)
	}
}
