package recorder_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

func batchOf(prefix string, n int) []*evidence.Record {
	recs := make([]*evidence.Record, n)
	for i := range recs {
		recs[i] = record(prefix + strconv.Itoa(i))
	}
	return recs
}

// seqs maps each stored record id of replica to its seq.
func seqs(t *testing.T, s evidence.Store, replica string) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	err := s.Walk(context.Background(), replica, func(r *evidence.Record, _ evidence.Stored) error {
		m[r.ID] = r.Chain.Seq
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRecordBatchUnbroken: batches handed over while Checks record
// concurrently are each stored as one unbroken run of seqs, in their order,
// in both durabilities; in sync mode every record is readable on return.
func TestRecordBatchUnbroken(t *testing.T) {
	for _, d := range []recorder.Durability{recorder.Async, recorder.Sync} {
		t.Run(string(d), func(t *testing.T) {
			s, _ := openSQLite(t)
			cfg := recorder.DefaultConfig()
			cfg.Durability, cfg.BatchSize, cfg.QueueSize = d, 64, 4096 // the writer's batches cut through ours
			if d == recorder.Async {
				cfg.Overflow = recorder.Drop // the Checks outpace the store; their records may go, never a batch
			}
			r := newRecorder(t, cfg, s, "r1")
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var recorded atomic.Int64
			for w := range 8 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						if err := r.Record(context.Background(), record("check-"+strconv.Itoa(w)+"-"+strconv.Itoa(i))); err != nil {
							t.Error(err)
							return
						}
						recorded.Add(1)
						// Paced below what the store takes: a queue kept
						// full for good would starve the batches, which
						// never wait for room (by design: OPA retries).
						time.Sleep(500 * time.Microsecond)
					}
				})
			}
			// The Checks are recording before the first batch: on a busy
			// machine the async batches could otherwise all be handed over
			// before a Check goroutine ran at all.
			for deadline := time.Now().Add(10 * time.Second); recorded.Load() < 100; {
				if time.Now().After(deadline) {
					t.Fatal("the Checks recorded nothing within 10s")
				}
				time.Sleep(time.Millisecond)
			}
			var batches [][]string
			for b := range 20 {
				recs := batchOf("batch"+strconv.Itoa(b)+"-", 50)
				ids := make([]string, len(recs)) // the records are the recorder's once handed over
				for i, rec := range recs {
					ids[i] = rec.ID
				}
				err := r.RecordBatch(context.Background(), recs)
				for deadline := time.Now().Add(10 * time.Second); errors.Is(err, recorder.ErrQueueFull) && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond) // as a client told to come back would
					err = r.RecordBatch(context.Background(), recs)
				}
				if err != nil {
					t.Fatalf("batch %d: %v", b, err)
				}
				if d == recorder.Sync {
					for _, id := range ids {
						if _, err := s.Get(context.Background(), id); err != nil {
							t.Fatalf("%s not readable once RecordBatch returned: %v", id, err)
						}
					}
				}
				batches = append(batches, ids)
			}
			close(stop)
			wg.Wait()
			if err := r.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := seqs(t, s, "r1")
			for b, ids := range batches {
				first, ok := got[ids[0]]
				if !ok {
					t.Fatalf("batch %d not stored", b)
				}
				for i, id := range ids {
					if seq := got[id]; seq != first+uint64(i) {
						t.Fatalf("batch %d: record %d at seq %d, want %d: another record came between", b, i, seq, first+uint64(i))
					}
				}
			}
			if n := count(t, s); n <= 20*50 || n != len(got) {
				t.Fatalf("%d records stored, the chain walk saw %d; want the batches' and some Checks'", n, len(got))
			}
			verify(t, s)
		})
	}
}

// TestRecordBatchAllOrNothing: a batch the queue cannot take whole is not
// queued at all, whatever --evidence-overflow says (drop included: the
// caller retries, nothing is lost), and what was queued before is written.
func TestRecordBatchAllOrNothing(t *testing.T) {
	for _, overflow := range []recorder.Overflow{recorder.Block, recorder.Drop, recorder.Deny} {
		t.Run(string(overflow), func(t *testing.T) {
			s, _ := openSQLite(t)
			g := &gate{Store: s, down: true}
			cfg := recorder.DefaultConfig()
			cfg.Overflow, cfg.QueueSize, cfg.BatchSize, cfg.FlushInterval = overflow, 10, 1, time.Millisecond
			reg := prometheus.NewRegistry()
			r, err := recorder.New(context.Background(), cfg, "r1", g, zerolog.Nop(), recorder.NewMetrics(reg))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { g.set(false); r.Close(context.Background()) })
			// One record is taken by the writer, which retries it against
			// the store that is down; then 10 places are free.
			if err := r.RecordBatch(context.Background(), batchOf("a", 1)); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(5 * time.Second); queueDepth(t, reg) != 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the writer never took the first record")
				}
			}
			if err := r.RecordBatch(context.Background(), batchOf("b", 6)); err != nil {
				t.Fatal(err)
			}
			err = r.RecordBatch(context.Background(), batchOf("c", 5)) // 4 free
			if !errors.Is(err, recorder.ErrQueueFull) {
				t.Fatalf("a batch of 5 into 4 free places: %v, want ErrQueueFull", err)
			}
			if err := r.RecordBatch(context.Background(), batchOf("d", 4)); err != nil {
				t.Fatalf("a batch of 4 into 4 free places: %v", err)
			}
			if err := r.RecordBatch(context.Background(), batchOf("e", 1)); !errors.Is(err, recorder.ErrQueueFull) {
				t.Fatalf("a full queue: %v, want ErrQueueFull", err)
			}
			g.set(false)
			if err := r.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := seqs(t, s, "r1")
			if len(got) != 11 {
				t.Fatalf("%d records stored, want the 11 accepted: %v", len(got), got)
			}
			for id := range got {
				if id[0] == 'c' || id[0] == 'e' {
					t.Fatalf("%s of a refused batch was stored", id)
				}
			}
			verify(t, s)
			if err := r.RecordBatch(context.Background(), batchOf("late", 1)); !errors.Is(err, recorder.ErrClosed) {
				t.Fatalf("RecordBatch after Close: %v", err)
			}
		})
	}
}

// queueDepth reads meshproof_evidence_queue_depth.
func queueDepth(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "meshproof_evidence_queue_depth" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no meshproof_evidence_queue_depth")
	return 0
}

// TestRecordBatchSyncContext: in sync durability, a caller that stops
// waiting is told the batch is not yet committed; it is written anyway.
func TestRecordBatchSyncContext(t *testing.T) {
	s, _ := openSQLite(t)
	g := &gate{Store: s, down: true}
	cfg := recorder.DefaultConfig()
	cfg.Durability = recorder.Sync
	r := newRecorder(t, cfg, g, "r1")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.RecordBatch(ctx, batchOf("s", 3)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecordBatch with the store down and a deadline: %v", err)
	}
	g.set(false)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s); n != 3 {
		t.Fatalf("%d stored, want 3", n)
	}
}
