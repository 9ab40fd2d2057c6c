package evidence

import (
	"errors"
	"math"
	"testing"
	"time"
)

// extremeTimes are the times a clock, an upload or a stored row may give,
// around every edge: the zero time (year 1), the ends of int64
// nanoseconds (1677, 2262), the epoch, the bounds of a record's time, and
// beyond (2300, 9999), negative Unix times included.
var extremeTimes = []struct {
	t  time.Time
	ok bool // CheckTime accepts it
}{
	{time.Time{}, false},
	{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), false},
	{time.Unix(0, math.MinInt64).Add(-time.Nanosecond), false}, // 1677-09-21, just before int64 ns
	{time.Unix(0, math.MinInt64), false},
	{time.Date(1677, 12, 31, 23, 59, 59, 0, time.UTC), false},
	{time.Unix(-1, 0), false},
	{time.Unix(0, -1), false},
	{time.Unix(0, 0), false},
	{MinTime.Add(-time.Nanosecond), false},
	{MinTime, true},
	{time.Date(2026, 12, 6, 6, 0, 0, 123456789, time.FixedZone("CET", 3600)), true},
	{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), true},
	{MaxTime.Add(-time.Nanosecond), true},
	{MaxTime, false},
	{time.Unix(0, math.MaxInt64), false}, // 2262-04-11T23:47:16.854775807Z
	{time.Unix(0, math.MaxInt64).Add(time.Nanosecond), false},
	{time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), false},
	{time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), false},
	{time.Unix(math.MaxInt64/4, 0), false},
	{time.Unix(math.MinInt64/4, 0), false},
}

func TestTimeBoundsExtremes(t *testing.T) {
	for _, tc := range extremeTimes {
		err := CheckTime(tc.t)
		if (err == nil) != tc.ok {
			t.Errorf("CheckTime(%s) = %v, want ok %v", tc.t, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrTimeRange) {
			t.Errorf("CheckTime(%s) = %v, want ErrTimeRange", tc.t, err)
		}
		checkConversions(t, tc.t)
	}
	// The attack: 2300 wrapped is a time in 1715, older than any cut.
	if w := wrappedNanos(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)); w >= 0 {
		t.Errorf("wrappedNanos(2300) = %d, want negative (the fixture of the retention tests)", w)
	}
	if got := Nanos(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)); got != math.MaxInt64 {
		t.Errorf("Nanos(2300) = %d, want MaxInt64 (saturated, never wrapped)", got)
	}
	if got := Nanos(time.Time{}); got != math.MinInt64 {
		t.Errorf("Nanos(the zero time) = %d, want MinInt64", got)
	}
}

// FuzzTimeBounds checks, for any time, that CheckTime accepts exactly
// [MinTime, MaxTime), that no conversion a store makes wraps, and that
// every one of them round-trips for a time CheckTime accepts. The seed
// corpus (the extreme times) runs with go test.
func FuzzTimeBounds(f *testing.F) {
	for _, tc := range extremeTimes {
		f.Add(tc.t.Unix(), int64(tc.t.Nanosecond()))
	}
	f.Add(int64(math.MaxInt64), int64(999999999))
	f.Add(int64(math.MinInt64), int64(0))
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		tm := time.Unix(sec, nsec%int64(time.Second))
		ok := !tm.Before(MinTime) && tm.Before(MaxTime)
		if err := CheckTime(tm); (err == nil) != ok {
			t.Fatalf("CheckTime(%s) = %v, want ok %v", tm, err, ok)
		}
		checkConversions(t, tm)
	})
}

// checkConversions checks the conversions of one time.
func checkConversions(t *testing.T, tm time.Time) {
	t.Helper()
	ns := Nanos(tm)
	lo, hi := time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)
	switch {
	case tm.Before(lo):
		if ns != math.MinInt64 {
			t.Fatalf("Nanos(%s) = %d, want MinInt64", tm, ns)
		}
	case tm.After(hi):
		if ns != math.MaxInt64 {
			t.Fatalf("Nanos(%s) = %d, want MaxInt64", tm, ns)
		}
	case !time.Unix(0, ns).Equal(tm):
		t.Fatalf("Nanos(%s) = %d, which is %s", tm, ns, time.Unix(0, ns))
	}
	r := &Record{ID: "r", Time: tm}
	if c := ColumnsOf(r); c.TimeNS != ns {
		t.Fatalf("ColumnsOf(%s).TimeNS = %d, want %d", tm, c.TimeNS, ns)
	}
	// The stored minute, and the minute read back: never wrapped.
	m := RollupOf(r).Minute
	start := MinuteTime(m)
	if u := start.Unix(); u/60 != m && (m >= minMinute && m <= maxMinute) {
		t.Fatalf("MinuteTime(%d) = %s, minute %d", m, start, u/60)
	}
	if start.Before(lo.Add(-time.Minute)) || start.After(hi) {
		t.Fatalf("MinuteTime(%d) = %s, outside int64 nanoseconds", m, start)
	}
	if CheckTime(tm) != nil {
		// Verify reads a time an older meshproof stored wrapped as
		// stored, not as an edit; any other column is an edit.
		stored := ColumnsOf(r)
		stored.TimeNS = wrappedNanos(tm)
		if !columnsMatch(stored, r) {
			t.Fatalf("columnsMatch: %s stored wrapped (%d) reads as edited", tm, stored.TimeNS)
		}
		return
	}
	// Within the bounds: exact, and the minute holds the time.
	if ns != tm.UnixNano() {
		t.Fatalf("Nanos(%s) = %d, UnixNano %d", tm, ns, tm.UnixNano())
	}
	if !start.Equal(tm.Truncate(time.Minute)) || tm.Sub(start) >= time.Minute || tm.Before(start) {
		t.Fatalf("RollupOf(%s).Minute = %d, which starts at %s", tm, m, start)
	}
	stored := ColumnsOf(r)
	stored.TimeNS++
	if columnsMatch(stored, r) {
		t.Fatalf("columnsMatch: an edited time of %s reads as intact", tm)
	}
}
