package evidence

import (
	"fmt"
	"time"
)

// SeriesQuery asks Reader.AggregateSeries for Aggregate's counts per
// step of a window.
type SeriesQuery struct {
	Since, Until time.Time // Since is required; Until zero: now
	// Step is the width of a point, whole minutes. The points start at
	// Since, then at every multiple of Step since the Unix epoch before
	// Until (Boundaries).
	Step time.Duration
}

// MaxSeriesPoints bounds the points of a SeriesQuery.
const MaxSeriesPoints = 500

// PointGroup is a Group of one point of a series: Point indexes the
// query's Boundaries.
type PointGroup struct {
	Point int
	Group
}

// Validate checks q as AggregateQuery.Validate checks an aggregate query;
// Until must be set (a store resolves a zero one to now first).
func (q SeriesQuery) Validate() error {
	switch {
	case q.Since.IsZero():
		return &FilterError{Field: "since", Msg: "required"}
	case !q.Until.After(q.Since):
		return &FilterError{Field: "until", Msg: "must be after since"}
	case q.Step < time.Minute || q.Step%time.Minute != 0:
		return &FilterError{Field: "step", Msg: "must be a whole number of minutes, at least 1m"}
	}
	if n := q.Points(); n > MaxSeriesPoints {
		return &FilterError{Field: "step", Msg: fmt.Sprintf("too small for the window: %d points, at most %d", n, MaxSeriesPoints)}
	}
	return nil
}

// Points is how many points q has: len(Boundaries()) - 1.
func (q SeriesQuery) Points() int64 {
	s := int64(q.Step / time.Second)
	last := floorDiv(q.Until.Unix(), s)
	if q.Until.Unix()%s == 0 && q.Until.Nanosecond() == 0 {
		last-- // Until is a boundary: no point starts there
	}
	return last - floorDiv(q.Since.Unix(), s) + 1
}

// Boundaries are the starts of q's points, and Until: Since, then each
// multiple of Step after it and before Until. Point i covers
// [Boundaries[i], Boundaries[i+1]); as Aggregate's, its counts take in
// every minute that overlaps it, and no minute counts in two points
// (every boundary but Since and Until is a whole minute).
func (q SeriesQuery) Boundaries() []time.Time {
	out := []time.Time{q.Since.UTC()}
	for t := q.firstStep(); t.Before(q.Until); t = t.Add(q.Step) {
		out = append(out, t)
	}
	return append(out, q.Until.UTC())
}

// firstStep is the first multiple of Step after Since.
func (q SeriesQuery) firstStep() time.Time {
	s := int64(q.Step / time.Second)
	return time.Unix((floorDiv(q.Since.Unix(), s)+1)*s, 0).UTC()
}

// SeriesMinutes is what a store needs to read q from its rollups, in Unix
// minutes: the minutes [from, to) (those overlapping the window), and
// where the second point starts and each point's width. A bucket that
// starts at minute m counts in point 0 when m < second, else in point
// 1 + (m - second) / step. A bucket of any span that divides step
// belongs to one point only: the boundaries after the first are
// multiples of step.
func (q SeriesQuery) SeriesMinutes() (from, to, second, step int64) {
	from = floorDiv(q.Since.Unix(), 60)
	to = floorDiv(q.Until.Unix(), 60)
	if q.Until.Unix()%60 != 0 || q.Until.Nanosecond() != 0 {
		to++
	}
	return from, to, q.firstStep().Unix() / 60, int64(q.Step / time.Minute)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
