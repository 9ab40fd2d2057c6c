package recorder_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	_ "github.com/meshproof/meshproof/evidence/sqlite"
)

func openSQLite(t *testing.T) (evidence.Store, string) {
	t.Helper()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "e.db")
	s, err := evidence.Open(context.Background(), dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

func record(id string) *evidence.Record {
	return &evidence.Record{ID: id, Time: time.Now().UTC(), Replica: "r1", Verdict: evidence.MTLS, Reasons: []string{"r"},
		Source: evidence.Peer{Principal: "spiffe://td/a"}, Request: evidence.Request{Host: "h", Method: "GET"}}
}

func newRecorder(t *testing.T, cfg recorder.Config, w evidence.Writer, replica string) *recorder.Recorder {
	t.Helper()
	r, err := recorder.New(context.Background(), cfg, replica, w, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

func count(t *testing.T, s evidence.Store) int {
	t.Helper()
	n := 0
	if err := s.Scan(context.Background(), evidence.Filter{}, func(*evidence.Record) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func verify(t *testing.T, s evidence.Store) []evidence.ChainReport {
	t.Helper()
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.Broken != nil {
			t.Fatalf("chain %s broken: %+v", r.Replica, r.Broken)
		}
	}
	return reps
}

// TestRecorderAsyncFlushesOnClose: everything handed over before Close is
// stored, chained without gaps, and a new recorder resumes the chain.
func TestRecorderAsyncFlushesOnClose(t *testing.T) {
	s, _ := openSQLite(t)
	cfg := recorder.DefaultConfig()
	cfg.FlushInterval = time.Hour // only Close and full batches flush
	r := newRecorder(t, cfg, s, "r1")
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if err := r.Record(context.Background(), record(time.Now().Format("150405.000000000")+string(rune('a'+w))+strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s); n != 4000 {
		t.Fatalf("%d records stored, want 4000", n)
	}
	if reps := verify(t, s); len(reps) != 1 || reps[0].Head.Seq != 4000 {
		t.Fatalf("reports %+v", reps)
	}
	r2 := newRecorder(t, recorder.DefaultConfig(), s, "r1")
	if r2.Head().Seq != 4000 {
		t.Fatalf("a new recorder starts at seq %d, want 4000", r2.Head().Seq)
	}
	if err := r2.Record(context.Background(), record("next")); err != nil {
		t.Fatal(err)
	}
	r2.Close(context.Background())
	if reps := verify(t, s); reps[0].Head.Seq != 4001 {
		t.Fatalf("head %+v", reps[0].Head)
	}
	if err := r2.Record(context.Background(), record("late")); !errors.Is(err, recorder.ErrClosed) {
		t.Fatalf("Record after Close: %v", err)
	}
}

// TestRecorderSyncCommitsBeforeReturning: in sync and fsync durability a
// record is committed when Record returns (to the journal, with SQLite:
// evidence/sqlite's TestJournalSurvivesACrash and the end-to-end kill -9
// test check what a crash leaves), and the process that wrote it reads it
// at once.
func TestRecorderSyncCommitsBeforeReturning(t *testing.T) {
	for _, d := range []recorder.Durability{recorder.Sync, recorder.FSync} {
		t.Run(string(d), func(t *testing.T) {
			s, _ := openSQLite(t)
			cfg := recorder.DefaultConfig()
			cfg.Durability = d
			r := newRecorder(t, cfg, s, "r1")
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 20 {
						id := "s" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
						if err := r.Record(context.Background(), record(id)); err != nil {
							t.Error(err)
							return
						}
						if _, err := s.Get(context.Background(), id); err != nil {
							t.Errorf("%s not readable right after Record: %v", id, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if reps := verify(t, s); reps[0].Head.Seq != 320 {
				t.Fatalf("head %+v", reps[0].Head)
			}
		})
	}
}

// gate is the real store behind a switch that makes writes fail, as an
// outage would.
type gate struct {
	evidence.Store
	mu   sync.Mutex
	down bool
}

func (g *gate) set(down bool) { g.mu.Lock(); g.down = down; g.mu.Unlock() }

func (g *gate) Append(ctx context.Context, b []*evidence.Record) error {
	g.mu.Lock()
	down := g.down
	g.mu.Unlock()
	if down {
		return errors.New("store unreachable")
	}
	return g.Store.Append(ctx, b)
}

// TestRecorderOverflow: with the store down and the queue full, each policy
// does what it says and counts it, and what was queued is written once the
// store is back.
func TestRecorderOverflow(t *testing.T) {
	for _, tt := range []struct {
		overflow recorder.Overflow
		reason   string // of meshproof_evidence_dropped_total
	}{{recorder.Drop, "queue_full"}, {recorder.Deny, "denied"}, {recorder.Block, "block_timeout"}} {
		t.Run(string(tt.overflow), func(t *testing.T) {
			s, _ := openSQLite(t)
			g := &gate{Store: s, down: true}
			cfg := recorder.DefaultConfig()
			cfg.Overflow, cfg.QueueSize, cfg.BatchSize, cfg.BlockTimeout = tt.overflow, 10, 5, 20*time.Millisecond
			reg := prometheus.NewRegistry()
			r, err := recorder.New(context.Background(), cfg, "r1", g, zerolog.Nop(), recorder.NewMetrics(reg))
			if err != nil {
				t.Fatal(err)
			}
			refused := 0
			for i := range 40 {
				start := time.Now()
				err := r.Record(context.Background(), record("o"+strconv.Itoa(i)))
				switch {
				case err == nil:
				case tt.overflow != recorder.Drop && errors.Is(err, recorder.ErrQueueFull):
					refused++
					if tt.overflow == recorder.Block && time.Since(start) < cfg.BlockTimeout {
						t.Fatalf("block gave up after %v", time.Since(start))
					}
				default:
					t.Fatalf("record %d: %v", i, err)
				}
			}
			dropped := int(counter(t, reg, "meshproof_evidence_dropped_total", tt.reason))
			if dropped < 40-cfg.QueueSize-cfg.BatchSize || (tt.overflow != recorder.Drop && dropped != refused) {
				t.Fatalf("dropped counter %d, refused %d, with a queue of %d", dropped, refused, cfg.QueueSize)
			}
			g.set(false)
			if err := r.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := count(t, s); n != 40-dropped {
				t.Fatalf("%d stored, want the %d accepted", n, 40-dropped)
			}
			verify(t, s)
		})
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == name && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

// TestRecorderCloseGivesUp: Close with a deadline while the store is down
// returns an error instead of hanging, and later Records are refused.
func TestRecorderCloseGivesUp(t *testing.T) {
	s, _ := openSQLite(t)
	g := &gate{Store: s, down: true}
	cfg := recorder.DefaultConfig()
	cfg.FlushInterval = time.Millisecond
	r, err := recorder.New(context.Background(), cfg, "r1", g, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := r.Record(context.Background(), record("c"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); err == nil {
		t.Fatal("Close with the store down and a deadline must report the loss")
	}
	if err := r.Record(context.Background(), record("after")); !errors.Is(err, recorder.ErrClosed) {
		t.Fatalf("Record after Close: %v", err)
	}
}

// TestRecorderSameReplicaTwice: two recorders writing as one replica do not
// corrupt the chain: in async durability the later writer chains after the
// stored head; in sync durability, where a writer journals ahead of the
// head, the second is refused.
func TestRecorderSameReplicaTwice(t *testing.T) {
	s, _ := openSQLite(t)
	cfg := recorder.DefaultConfig()
	cfg.Durability = recorder.Sync
	newRecorder(t, cfg, s, "r1")
	if _, err := recorder.New(context.Background(), cfg, "r1", s, zerolog.Nop(), nil); err == nil || !strings.Contains(err.Error(), "give every instance its own --replica") {
		t.Fatalf("a second sync writer of replica r1: %v", err)
	}
	s, _ = openSQLite(t)
	cfg.Durability = recorder.Async
	cfg.FlushInterval = time.Millisecond
	a, b := newRecorder(t, cfg, s, "r1"), newRecorder(t, cfg, s, "r1")
	stored := func(seq uint64) { // each written before the other writes
		for {
			if h, err := s.Head(context.Background(), "r1"); err != nil {
				t.Fatal(err)
			} else if h.Seq >= seq {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 10 {
		if err := a.Record(context.Background(), record("a"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		stored(uint64(2*i + 1))
		if err := b.Record(context.Background(), record("b"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		stored(uint64(2*i + 2))
	}
	if reps := verify(t, s); reps[0].Head.Seq != 20 {
		t.Fatalf("head %+v", reps[0].Head)
	}
}

func TestRecorderConfigValidate(t *testing.T) {
	bad := []func(*recorder.Config){
		func(c *recorder.Config) { c.Durability = "eventually" },
		func(c *recorder.Config) { c.Overflow = "ignore" },
		func(c *recorder.Config) { c.Durability, c.Overflow = recorder.Sync, recorder.Drop },
		func(c *recorder.Config) { c.QueueSize = 0 },
		func(c *recorder.Config) { c.BlockTimeout = 0 },
	}
	for i, change := range bad {
		c := recorder.DefaultConfig()
		change(&c)
		if c.Validate() == nil {
			t.Errorf("case %d: %+v accepted", i, c)
		}
	}
	if err := recorder.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRecorderRefusesTimesOutOfRange: a record whose time a store cannot
// hold (a clock or an upload in 2300, before 2000, the zero time) is
// refused where it enters, by Record and RecordBatch (the whole batch),
// with ErrTimeRange, and never reaches the store; the chain goes on.
func TestRecorderRefusesTimesOutOfRange(t *testing.T) {
	for _, durability := range []recorder.Durability{recorder.Async, recorder.Sync} {
		t.Run(string(durability), func(t *testing.T) {
			s, _ := openSQLite(t)
			cfg := recorder.DefaultConfig()
			cfg.Durability = durability
			reg := prometheus.NewRegistry()
			r, err := recorder.New(context.Background(), cfg, "r1", s, zerolog.Nop(), recorder.NewMetrics(reg))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for i, tm := range []time.Time{time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), {}} {
				id := strconv.Itoa(i)
				rec := record("bad-" + id)
				rec.Time = tm
				if err := r.Record(ctx, rec); !errors.Is(err, evidence.ErrTimeRange) {
					t.Errorf("Record(time %s) = %v, want ErrTimeRange", tm, err)
				}
				bad := record("bad-in-batch-" + id)
				bad.Time = tm
				batch := []*evidence.Record{record("ok-1-" + id), bad, record("ok-2-" + id)}
				if err := r.RecordBatch(ctx, batch); !errors.Is(err, evidence.ErrTimeRange) {
					t.Errorf("RecordBatch(one time %s) = %v, want ErrTimeRange", tm, err)
				}
			}
			if err := r.Record(ctx, record("good")); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(t, s); n != 1 {
				t.Errorf("%d records stored, want only the good one", n)
			}
			verify(t, s)
			if got := counter(t, reg, "meshproof_evidence_dropped_total", "time_range"); got != 6 {
				t.Errorf("dropped{time_range} = %v, want 6", got)
			}
		})
	}
}

// TestRecorderRefusesAnotherReplica: a record is stamped once, by Stamp
// (the replica and the bounds), before it is handed over. A Recorder
// refuses, with ErrReplica naming both replicas, a record stamped for
// another replica or not stamped at all (Record, and RecordBatch for the
// whole batch), and stores a stamped record exactly as it was stamped. It
// used to rename such a record silently in its writer, after the Check had
// answered.
func TestRecorderRefusesAnotherReplica(t *testing.T) {
	for _, durability := range []recorder.Durability{recorder.Async, recorder.Sync} {
		t.Run(string(durability), func(t *testing.T) {
			s, _ := openSQLite(t)
			cfg := recorder.DefaultConfig()
			cfg.Durability = durability
			r := newRecorder(t, cfg, s, "r1")
			ctx := context.Background()
			for _, other := range []string{"r2", ""} {
				rec := record("other-" + other)
				rec.Replica = other
				err := r.Record(ctx, rec)
				if !errors.Is(err, recorder.ErrReplica) || !strings.Contains(err.Error(), `"r1"`) || !strings.Contains(err.Error(), strconv.Quote(other)) {
					t.Errorf("Record(replica %q) = %v, want ErrReplica naming both replicas", other, err)
				}
				if rec.Replica != other {
					t.Errorf("Record changed a refused record's replica to %q", rec.Replica)
				}
				batch := []*evidence.Record{record("ok-1-" + other), rec, record("ok-2-" + other)}
				if err := r.RecordBatch(ctx, batch); !errors.Is(err, recorder.ErrReplica) {
					t.Errorf("RecordBatch(one of replica %q) = %v, want ErrReplica", other, err)
				}
			}
			long := record("long")
			long.Request.Path = "/" + strings.Repeat("p", evidence.MaxFieldBytes)
			recorder.Stamp(long, "r1")
			want := *long
			if err := r.Record(ctx, long); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if n := count(t, s); n != 1 {
				t.Errorf("%d records stored, want only the stamped one", n)
			}
			got, err := s.Get(ctx, "long")
			if err != nil {
				t.Fatal(err)
			}
			got.Chain, want.Chain = evidence.Chain{}, evidence.Chain{}
			got.Time, want.Time = got.Time.UTC(), want.Time.UTC().Truncate(0)
			if !reflect.DeepEqual(got, &want) || !got.Truncated || got.Replica != "r1" {
				t.Errorf("stored\n%+v\nwant what Stamp made\n%+v", got, &want)
			}
			verify(t, s)
		})
	}
}
