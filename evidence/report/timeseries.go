package report

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Bounds of a time series.
const (
	// MaxPoints is the most points a series has: a step too small for the
	// window is refused.
	MaxPoints = evidence.MaxSeriesPoints
	// MaxSeries is the most series an answer has: beyond, those with the
	// least traffic are left out and Truncated says so.
	MaxSeries = 200
	// DefaultPoints is about how many points the step chosen by default
	// gives.
	DefaultPoints = 120
)

// steps are the steps chosen by default, the smallest that gives at most
// DefaultPoints.
var steps = []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
	30 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, day, 2 * day, 7 * day}

const day = 24 * time.Hour

// TimeseriesQuery asks for the mTLS share and the plaintext requests of
// destinations over time.
type TimeseriesQuery struct {
	Since, Until time.Time // Until zero: now; Since may not be zero
	// Destination narrows to one destination (a host, or a principal with
	// the hosts it served, as StrictReadiness); Namespace to the
	// destinations of one namespace (as StrictReadinessByNamespace places
	// them). Not both.
	Destination, Namespace string
	// Step is the width of a point, whole minutes; zero chooses the
	// smallest of 1m, 2m, 5m, 10m, 15m, 30m, 1h, 2h, 3h, 6h, 12h, 1d, 2d
	// and 7d that gives at most DefaultPoints points.
	Step time.Duration
}

// Timeseries is the traffic of each destination, one point per step.
type Timeseries struct {
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
	StepSeconds int64     `json:"step_seconds"`
	// Series are the destinations with traffic in the window, those with
	// the most requests STRICT would refuse first, then the most requests.
	Series []Series `json:"series"`
	// Truncated says that series beyond MaxSeries were left out.
	Truncated bool `json:"truncated"`
}

// Series is one destination's points: every step of the window, zero or
// not, in time order.
type Series struct {
	Destination string  `json:"destination"` // principal, or host when it had none
	Namespace   string  `json:"namespace"`
	Workload    string  `json:"workload"`
	Points      []Point `json:"points"`

	plaintext, total int64
}

// Point is the requests of one step: from T to the next point's T (the
// first from Since, the last to Until). Steps are aligned on multiples of
// the step since the Unix epoch, in UTC.
type Point struct {
	T     time.Time `json:"t"`
	Total int64     `json:"total"`
	MTLS  int64     `json:"mtls"`
	// Plaintext is the requests STRICT would refuse: verdicts plaintext and
	// tls_server_only.
	Plaintext int64  `json:"plaintext"`
	Counts    Counts `json:"counts"`
}

// Validate checks q, naming the API's parameter at fault.
func (q TimeseriesQuery) Validate() error {
	if q.Destination != "" && q.Namespace != "" {
		return &evidence.FilterError{Field: "namespace", Msg: "give destination or namespace, not both"}
	}
	if err := checkNamespace(q.Namespace); err != nil {
		return err
	}
	if q.Since.IsZero() {
		return &evidence.FilterError{Field: "since", Msg: "required"}
	}
	if !q.Until.IsZero() && !q.Until.After(q.Since) {
		return &evidence.FilterError{Field: "until", Msg: "must be after since"}
	}
	if q.Step != 0 && (q.Step < time.Minute || q.Step%time.Minute != 0) {
		return &evidence.FilterError{Field: "step", Msg: "must be a whole number of minutes, at least 1m"}
	}
	return evidence.Filter{Destination: q.Destination}.Validate()
}

// chooseStep is q's step, or the one chosen by default.
func chooseStep(since, until time.Time, step time.Duration) (time.Duration, error) {
	points := func(step time.Duration) int64 {
		return evidence.SeriesQuery{Since: since, Until: until, Step: step}.Points()
	}
	if step == 0 {
		for _, s := range steps {
			if points(s) <= DefaultPoints {
				return s, nil
			}
		}
		step = steps[len(steps)-1]
	}
	if n := points(step); n > MaxPoints {
		if step == steps[len(steps)-1] {
			return 0, &evidence.FilterError{Field: "since", Msg: fmt.Sprintf("the window is too long: %d points of 7d, at most %d", n, MaxPoints)}
		}
		return 0, &evidence.FilterError{Field: "step", Msg: fmt.Sprintf("too small for the window: %d points, at most %d", n, MaxPoints)}
	}
	return step, nil
}

// TimeseriesOf reads the traffic of [q.Since, q.Until) per destination and
// step, from the rollups: one Aggregate over the window, which names the
// destinations, and one AggregateSeries.
func TimeseriesOf(ctx context.Context, r evidence.Reader, q TimeseriesQuery) (Timeseries, error) {
	if err := q.Validate(); err != nil {
		return Timeseries{}, err
	}
	since, until := window(q.Since, q.Until)
	if err := (evidence.AggregateQuery{Since: since, Until: until}).Validate(); err != nil {
		return Timeseries{}, err
	}
	step, err := chooseStep(since, until, q.Step)
	if err != nil {
		return Timeseries{}, err
	}
	all, err := r.Aggregate(ctx, evidence.AggregateQuery{Since: since, Until: until})
	if err != nil {
		return Timeseries{}, fmt.Errorf("report: %w", err)
	}
	keysOf := seriesKeys(all, q)
	sq := evidence.SeriesQuery{Since: since, Until: until, Step: step}
	bounds := sq.Boundaries()
	n := len(bounds) - 1
	// The series first, by their totals: points only for those kept.
	byKey := map[string]*Series{}
	for _, g := range all {
		for _, d := range keysOf(g) {
			s, ok := byKey[d.key]
			if !ok {
				s = &Series{Destination: d.key, Namespace: d.namespace, Workload: d.workload}
				byKey[d.key] = s
			}
			s.total += g.Count
			if !mutual(g.Verdict) && !suspect(g.Verdict) {
				s.plaintext += g.Count
			}
		}
	}
	ts := Timeseries{Since: since, Until: until, StepSeconds: int64(step / time.Second), Series: []Series{}}
	if len(byKey) == 0 {
		return ts, nil
	}
	kept := make([]*Series, 0, len(byKey))
	for _, s := range byKey {
		kept = append(kept, s)
	}
	slices.SortFunc(kept, func(a, b *Series) int {
		return cmp.Or(cmp.Compare(b.plaintext, a.plaintext), cmp.Compare(b.total, a.total), strings.Compare(a.Destination, b.Destination))
	})
	if len(kept) > MaxSeries {
		for _, s := range kept[MaxSeries:] {
			delete(byKey, s.Destination)
		}
		kept, ts.Truncated = kept[:MaxSeries], true
	}
	for _, s := range kept {
		s.Points = make([]Point, n)
		for i := range s.Points {
			s.Points[i] = Point{T: bounds[i], Counts: newCounts()}
		}
	}
	points, err := r.AggregateSeries(ctx, sq)
	if err != nil {
		return Timeseries{}, fmt.Errorf("report: %w", err)
	}
	for _, g := range points {
		for _, d := range keysOf(g.Group) {
			if s := byKey[d.key]; s != nil && g.Point < n {
				s.Points[g.Point].add(g.Group)
			}
		}
	}
	for _, s := range kept {
		ts.Series = append(ts.Series, *s)
	}
	return ts, nil
}

func (p *Point) add(g evidence.Group) {
	p.Counts[g.Verdict] += g.Count
	p.Total += g.Count
	switch g.Verdict {
	case evidence.MTLS:
		p.MTLS += g.Count
	case evidence.Plaintext, evidence.TLSServerOnly:
		p.Plaintext += g.Count
	}
}

// seriesKeys returns what series a group counts in: with q.Destination,
// the one series of that destination (a principal with the hosts it
// served in the window); else the group's destinations as
// StrictReadinessByNamespace places them, those of q.Namespace only when
// it is set.
func seriesKeys(all []evidence.Group, q TimeseriesQuery) func(evidence.Group) []dest {
	attr := newAttribution(all)
	if q.Destination != "" {
		d := attr.dest(q.Destination, strings.HasPrefix(q.Destination, "spiffe://"))
		served := map[string]bool{}
		for _, g := range all {
			if g.DestinationPrincipal == q.Destination && g.DestinationHost != q.Destination {
				served[g.DestinationHost] = true
			}
		}
		if !strings.HasPrefix(q.Destination, "spiffe://") {
			// A host that served principals belongs to them.
			if ps := attr.served[q.Destination]; len(ps) == 1 {
				d.namespace, d.workload = attr.dest(ps[0], true).namespace, attr.dest(ps[0], true).workload
			}
		}
		one := []dest{d}
		return func(g evidence.Group) []dest {
			if g.DestinationHost == q.Destination || g.DestinationPrincipal == q.Destination || served[g.DestinationHost] {
				return one
			}
			return nil
		}
	}
	return func(g evidence.Group) []dest {
		ds := attr.of(g)
		if q.Namespace != "" {
			ds = slices.DeleteFunc(slices.Clone(ds), func(d dest) bool { return d.namespace != q.Namespace })
		}
		return ds
	}
}
