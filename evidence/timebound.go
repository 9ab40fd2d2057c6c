package evidence

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// A record's time is stored as int64 Unix nanoseconds, which hold 1677 to
// 2262: beyond, UnixNano wraps, and a record stamped in 2300 would be
// stored as if from 1715, older than any retention cut. Every record's
// time must therefore lie in [MinTime, MaxTime): checked where records
// enter (a Check's clock, /logs, the Recorder, each store's Append, the
// spool's drain). Retention treats a stored time below MinTime as unknown,
// and keeps the record.
var (
	// MinTime is the earliest time a record may have: no mesh evidence
	// predates it, and a clock before it is broken.
	MinTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	// MaxTime is the first time a record may not have: a little before
	// the end of int64 nanoseconds (2262-04-11), so that a day, hour or
	// minute after any record's is still representable.
	MaxTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// MinTimeNS and MaxTimeNS are MinTime and MaxTime in Unix nanoseconds.
var (
	MinTimeNS = MinTime.UnixNano()
	MaxTimeNS = MaxTime.UnixNano()
)

// ErrTimeRange is a record time outside [MinTime, MaxTime).
var ErrTimeRange = errors.New("time out of range")

// CheckTime says whether t can be a record's time: an error wrapping
// ErrTimeRange, naming t and the range, when it cannot.
func CheckTime(t time.Time) error {
	if t.Before(MinTime) || !t.Before(MaxTime) {
		return fmt.Errorf("%w: %s is not within [%s, %s)", ErrTimeRange,
			t.UTC().Format(time.RFC3339Nano), MinTime.Format(time.RFC3339), MaxTime.Format(time.RFC3339))
	}
	return nil
}

// CheckTimes checks the time of every record of a batch (see CheckTime):
// a store's last line of defence, so that no wrapped time is ever stored.
func CheckTimes(batch []*Record) error {
	for _, r := range batch {
		if err := CheckTime(r.Time); err != nil {
			return fmt.Errorf("evidence: record %s (replica %s, seq %d): %w", r.ID, r.Replica, r.Chain.Seq, err)
		}
	}
	return nil
}

// Nanos is t in Unix nanoseconds, saturated to the int64 range instead of
// wrapping: a bound of a query or of retention far in the past or future
// stays on its side of every stored time.
func Nanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// Minute bounds MinuteTime keeps to: every minute an int64 nanosecond
// time falls in, and no more (minute*60 seconds never overflows).
const (
	minMinute = math.MinInt64/int64(time.Minute) - 1
	maxMinute = math.MaxInt64 / int64(time.Minute)
)

// minuteOf is the Unix minute holding t (floored, also before 1970).
func minuteOf(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s%60 < 0 {
		m--
	}
	return m
}

// wrappedNanos is what UnixNano gave for t before times were bounded:
// the nanoseconds wrapped to int64, as an older meshproof stored them.
func wrappedNanos(t time.Time) int64 {
	return int64(uint64(t.Unix())*uint64(time.Second) + uint64(t.Nanosecond()))
}

// columnsMatch says whether a record's stored index columns are the ones
// it derives. A time outside the range int64 nanoseconds hold may be
// stored wrapped, as an older meshproof wrote it: that is how the record
// was stored, not an edit (retention keeps such a record, see MinTime).
func columnsMatch(stored Columns, r *Record) bool {
	want := ColumnsOf(r)
	if stored.TimeNS != want.TimeNS && CheckTime(r.Time) != nil && stored.TimeNS == wrappedNanos(r.Time) {
		want.TimeNS = stored.TimeNS
	}
	return stored == want
}
