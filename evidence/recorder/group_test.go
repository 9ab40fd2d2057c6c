package recorder_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// fakeClock advances by step at every reading, and by what advance adds.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func newClock(step time.Duration) *fakeClock {
	return &fakeClock{t: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), step: step}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// slowCommits makes each Append take d on the clock, as a flush or a
// round trip to PostgreSQL does.
type slowCommits struct {
	*flushLog
	clock *fakeClock
	d     time.Duration
}

func (s slowCommits) Append(ctx context.Context, b []*evidence.Record) error {
	s.clock.advance(s.d)
	return s.flushLog.Append(ctx, b)
}

// groups are the records of each Append, in order.
func groups(l *flushLog) [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]string
	for _, e := range l.events {
		if e.kind == "append" {
			out = append(out, e.ids)
		}
	}
	return out
}

// TestGroupWaitsForArrivals: in sync and fsync durability, when commits
// are slow and Checks arrive fast enough to fill a group within
// --evidence-group-wait, a group of fewer records waits for them and
// commits them together.
func TestGroupWaitsForArrivals(t *testing.T) {
	for _, d := range []recorder.Durability{recorder.Sync, recorder.FSync} {
		t.Run(string(d), func(t *testing.T) {
			waiting := make(chan struct{}, 1)
			clk := newClock(time.Microsecond)
			recorder.SetClock(t, clk.now, func() { waiting <- struct{}{} })
			s, _ := openSQLite(t)
			l := &flushLog{Store: s, sync: s.(evidence.Syncer)}
			cfg := recorder.DefaultConfig()
			cfg.Durability, cfg.GroupSize, cfg.GroupWait = d, 4, 100*time.Millisecond
			r := newRecorder(t, cfg, slowCommits{l, clk, 200 * time.Microsecond}, "r1")
			ctx := context.Background()
			// The first has no arrivals before it to go by: committed alone.
			if err := r.Record(ctx, record("a")); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			send := func(id string) {
				wg.Go(func() { errs <- r.Record(ctx, record(id)) })
			}
			send("b")
			select {
			case <-waiting:
			case <-time.After(30 * time.Second):
				t.Fatal("the group of b did not wait for more records, though they came a microsecond apart")
			}
			for _, id := range []string{"c", "d", "e"} {
				send(id)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			gs := groups(l)
			if len(gs) < 2 || len(gs[0]) != 1 || len(gs[1]) != 4 {
				t.Fatalf("groups %v: want a alone, then b with three more", gs)
			}
		})
	}
}

// TestGroupAloneDoesNotWait: a Check that comes long after the last one
// is committed without waiting for others; so is every Check when commits
// are fast (SQLite's mapped sync journal), with --evidence-group-wait 0,
// or in async durability.
func TestGroupAloneDoesNotWait(t *testing.T) {
	for _, tt := range []struct {
		name   string
		d      recorder.Durability
		step   time.Duration
		commit time.Duration
		wait   time.Duration
	}{
		{"sparse", recorder.Sync, time.Second, 200 * time.Microsecond, 100 * time.Millisecond},
		{"fast-commits", recorder.Sync, time.Microsecond, 10 * time.Microsecond, 100 * time.Millisecond},
		{"off", recorder.FSync, time.Microsecond, 200 * time.Microsecond, 0},
		{"async", recorder.Async, time.Microsecond, 200 * time.Microsecond, 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var waited atomic.Int32
			clk := newClock(tt.step)
			recorder.SetClock(t, clk.now, func() { waited.Add(1) })
			s, _ := openSQLite(t)
			cfg := recorder.DefaultConfig()
			cfg.Durability, cfg.GroupSize, cfg.GroupWait = tt.d, 4, tt.wait
			cfg.FlushInterval = time.Millisecond
			l := &flushLog{Store: s, sync: s.(evidence.Syncer)}
			r := newRecorder(t, cfg, slowCommits{l, clk, tt.commit}, "r1")
			for i := range 5 {
				if err := r.Record(context.Background(), record("x"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := waited.Load(); n != 0 {
				t.Fatalf("%d groups waited for more records", n)
			}
			if n := count(t, s); n != 5 {
				t.Fatalf("%d records stored, want 5", n)
			}
		})
	}
}
