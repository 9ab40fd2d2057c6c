package spool_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/spool"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

const replica = "replica-1"

// backend is a real primary store that a test can make fail and recover.
type backend struct {
	dsn  string
	down func(t *testing.T)
	up   func(t *testing.T)
}

// postgresBackend is a private PostgreSQL cluster, stopped as by a crash
// (pg_ctl -m immediate) and started again.
func postgresBackend(t *testing.T) backend {
	c := postgrestest.NewCluster(t)
	if err := postgres.Migrate(context.Background(), c.DSN()); err != nil {
		t.Fatal(err)
	}
	return backend{
		dsn:  c.DSN(),
		down: func(t *testing.T) { c.Stop(t, "immediate") },
		up:   func(t *testing.T) { c.Start(t) },
	}
}

// sqliteBackend is an SQLite file made unwritable (immutable, so that even
// open descriptors cannot write, as on a failing disk) and writable again,
// as evidence/sqlite's own tests do.
func sqliteBackend(t *testing.T) backend {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes the database files immutable (chattr +i)")
	}
	path := filepath.Join(t.TempDir(), "evidence.db")
	s, err := sqlite.Open(context.Background(), path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	var locked []string
	unlock := func(t *testing.T) {
		for _, p := range locked {
			if out, err := exec.Command("chattr", "-i", p).CombinedOutput(); err != nil {
				t.Errorf("chattr -i %s: %v %s", p, err, out)
			}
		}
		locked = nil
	}
	t.Cleanup(func() { unlock(t) })
	return backend{
		dsn: "sqlite:" + path,
		down: func(t *testing.T) {
			// Not the -shm file: SQLite writes it through a shared mapping,
			// which faults (SIGBUS) on an immutable file.
			for _, p := range []string{path, path + "-wal"} {
				if _, err := os.Stat(p); err != nil {
					continue
				}
				if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
					t.Fatalf("chattr +i %s: %v %s", p, err, out)
				}
				locked = append(locked, p)
			}
		},
		up: unlock,
	}
}

var backends = []struct {
	name string
	make func(t *testing.T) backend
}{
	{"postgres", postgresBackend},
	{"sqlite", sqliteBackend},
}

// fixture is a spool over a backend, with its log and metrics.
type fixture struct {
	backend
	path string // the spool file
	reg  *prometheus.Registry
	m    *spool.Metrics
	log  *syncBuffer
}

func newFixture(t *testing.T, b backend) *fixture {
	reg := prometheus.NewRegistry()
	return &fixture{backend: b, path: filepath.Join(t.TempDir(), "spool.db"), reg: reg, m: spool.NewMetrics(reg), log: &syncBuffer{}}
}

// open opens the primary (through spool.Dial, so that it may be down) and
// the spool in front of it, closed when the test ends.
func (f *fixture) open(t *testing.T, durable bool) *spool.Store {
	t.Helper()
	ctx := context.Background()
	opts := evidence.Options{Durable: durable}
	primary, err := spool.Dial(ctx, f.dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spool.Open(ctx, primary, f.path, replica, opts, zerolog.New(f.log), f.m)
	if err != nil {
		primary.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// metric is the value of the named metric in the fixture's registry.
func (f *fixture) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// batch makes n records of replica chained onto *head.
func batch(head *evidence.Link, n int) []*evidence.Record {
	recs := make([]*evidence.Record, n)
	now := time.Now().UTC()
	for i := range recs {
		recs[i] = evidencetest.Full(fmt.Sprintf("%s-%06d", replica, head.Seq+1), replica, now.Add(time.Duration(i)*time.Microsecond))
		*head = head.Link(recs[i])
	}
	return recs
}

func appendAll(t *testing.T, s evidence.Writer, batches ...[]*evidence.Record) {
	t.Helper()
	for _, b := range batches {
		if err := s.Append(context.Background(), b); err != nil {
			t.Fatalf("Append seq %d..%d: %v", b[0].Chain.Seq, b[len(b)-1].Chain.Seq, err)
		}
	}
}

// waitDrained waits until the spool is empty.
func waitDrained(t *testing.T, s *spool.Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().Spooled > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("spool not drained within 30s: %+v", s.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spooledRows counts the records in the spool file, read through a
// connection of its own: what is committed there.
func spooledRows(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM spooled").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkPrimary opens the primary on its own and checks that replica's chain
// holds exactly want, in order, once each, and verifies.
func checkPrimary(t *testing.T, dsn string, want []*evidence.Record) {
	t.Helper()
	ctx := context.Background()
	s, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	if err := s.Walk(ctx, replica, func(r *evidence.Record, _ evidence.Stored) error {
		got = append(got, fmt.Sprintf("%d:%s", r.Chain.Seq, r.ID))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("the store holds %d records of %s, want %d", len(got), replica, len(want))
	}
	for i, r := range want {
		if w := fmt.Sprintf("%d:%s", r.Chain.Seq, r.ID); got[i] != w {
			t.Fatalf("record %d of the chain is %s, want %s", i, got[i], w)
		}
	}
	reps, err := evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.Broken != nil {
			t.Fatalf("chain %s broken: %+v", r.Replica, r.Broken)
		}
	}
}

func flat(batches ...[]*evidence.Record) []*evidence.Record {
	var out []*evidence.Record
	for _, b := range batches {
		out = append(out, b...)
	}
	return out
}

// TestSpoolThenDrain: while the primary is down every batch is committed to
// the spool before Append returns (sync durability); once it is back the
// spool drains in order, and the chain in the primary has every record
// once, with no gap, and verifies. Writes then go to the primary again.
func TestSpoolThenDrain(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			f := newFixture(t, be.make(t))
			s := f.open(t, true)
			head, err := s.Head(context.Background(), replica)
			if err != nil || head != (evidence.Link{}) {
				t.Fatalf("Head of a new chain: %+v, %v", head, err)
			}
			var batches [][]*evidence.Record
			for range 3 {
				batches = append(batches, batch(&head, 50))
			}
			appendAll(t, s, batches...)
			if st := s.Status(); st.Degraded || st.Spooled != 0 {
				t.Fatalf("status with the primary up: %+v", st)
			}

			f.down(t)
			spooled := 0
			for range 5 {
				b := batch(&head, 200)
				appendAll(t, s, b)
				batches = append(batches, b)
				spooled += len(b)
				if n := spooledRows(t, s.Path()); n != spooled {
					t.Fatalf("after Append returned, the spool file holds %d records, want %d", n, spooled)
				}
			}
			st := s.Status()
			if !st.Degraded || st.Spooled != spooled || !strings.Contains(st.Reason, "unreachable") {
				t.Errorf("status while spooling: %+v", st)
			}
			if got := f.metric(t, "meshproof_evidence_spool_depth"); got != float64(spooled) {
				t.Errorf("spool depth metric %v, want %d", got, spooled)
			}
			if h, err := s.Head(context.Background(), replica); err != nil || h != head {
				t.Errorf("Head while spooling: %+v, %v; want the last spooled %+v", h, err, head)
			}
			if n := strings.Count(f.log.String(), "spooling evidence to the local file"); n != 1 {
				t.Errorf("the start of spooling was logged %d times, want once", n)
			}

			f.up(t)
			waitDrained(t, s)
			after := batch(&head, 20)
			appendAll(t, s, after)
			batches = append(batches, after)
			if st := s.Status(); st.Degraded || st.Spooled != 0 {
				t.Errorf("status after draining: %+v", st)
			}
			if n := spooledRows(t, s.Path()); n != 0 {
				t.Errorf("a write after the drain went to the spool: it holds %d", n)
			}
			if got := f.metric(t, "meshproof_evidence_spool_drained_total"); got != float64(spooled) {
				t.Errorf("drained metric %v, want %d", got, spooled)
			}
			if got := f.metric(t, "meshproof_evidence_primary_up"); got != 1 {
				t.Errorf("primary_up %v after the drain", got)
			}
			if n := strings.Count(f.log.String(), "spool drained"); n != 1 {
				t.Errorf("the end of spooling was logged %d times, want once", n)
			}
			s.Close()
			checkPrimary(t, f.dsn, flat(batches...))
		})
	}
}

// TestRecorderThroughOutage: a sync Recorder over the spool keeps
// acknowledging records while the primary is down (none refused), and
// every acknowledged record is in the primary once afterwards.
func TestRecorderThroughOutage(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			f := newFixture(t, be.make(t))
			s := f.open(t, true)
			cfg := recorder.DefaultConfig()
			cfg.Durability, cfg.QueueSize = recorder.Sync, 200
			rec, err := recorder.New(context.Background(), cfg, replica, s, zerolog.New(f.log), nil)
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu    sync.Mutex
				acked []string
				fails []error
				stop  = make(chan struct{})
				wg    sync.WaitGroup
			)
			for w := range 4 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						id := fmt.Sprintf("w%d-%06d", w, i)
						err := rec.Record(context.Background(), evidencetest.Full(id, replica, time.Now().UTC()))
						mu.Lock()
						if err != nil {
							fails = append(fails, err)
						} else {
							acked = append(acked, id)
						}
						mu.Unlock()
					}
				})
			}
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
			waitFor(t, "records before the outage", func() bool { return count() > 200 })
			f.down(t)
			during := count()
			if be.name == "postgres" {
				waitFor(t, "records spooled", func() bool { return s.Status().Spooled > 500 })
			} else {
				// The SQLite primary's journal (its own files, which stay
				// writable) commits what its database does not take, up to
				// storekit.PendingMax records; the spool after that.
				waitFor(t, "records acknowledged during the outage", func() bool { return count() > during+500 })
			}
			f.up(t)
			waitFor(t, "the drain", func() bool {
				st := s.Status()
				return (st.Spooled == 0 || f.metric(t, "meshproof_evidence_spool_drained_total") > 0) && st.Spooled < 200
			})
			close(stop)
			wg.Wait()
			if err := rec.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitDrained(t, s)
			if len(fails) > 0 {
				t.Fatalf("%d records refused during the outage, e.g. %v", len(fails), fails[0])
			}
			s.Close()
			stored := map[string]int{}
			ps, err := evidence.Open(context.Background(), f.dsn, evidence.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer ps.Close()
			if err := ps.Scan(context.Background(), evidence.Filter{}, func(r *evidence.Record) error {
				stored[r.ID]++
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for _, id := range acked {
				if stored[id] != 1 {
					t.Fatalf("acknowledged record %s stored %d times", id, stored[id])
				}
			}
			if len(stored) != len(acked) {
				t.Fatalf("%d records stored for %d acknowledged", len(stored), len(acked))
			}
			reps, err := evidence.Verify(context.Background(), ps)
			if err != nil || len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != int64(len(acked)) {
				t.Fatalf("verify: %+v, %v", reps, err)
			}
			t.Logf("%d records acknowledged, %d of them drained from the spool", len(acked), int(f.metric(t, "meshproof_evidence_spool_drained_total")))
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 60s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStartWhilePrimaryDown: a replica started while PostgreSQL is down
// continues its chain at the head the spool saved with its last write, and
// the records it spools then drain onto the chain without a gap. Without a
// saved head it refuses to start, saying why.
func TestStartWhilePrimaryDown(t *testing.T) {
	f := newFixture(t, postgresBackend(t))
	s := f.open(t, false)
	var head evidence.Link
	first := batch(&head, 30)
	appendAll(t, s, first)
	s.Close()

	f.down(t)
	s = f.open(t, false)
	if h, err := s.Head(context.Background(), replica); err != nil || h != head {
		t.Fatalf("Head with the primary down: %+v, %v; want the saved %+v", h, err, head)
	}
	if st := s.Status(); !st.Degraded {
		t.Errorf("status with the primary down at start: %+v", st)
	}
	second := batch(&head, 30)
	appendAll(t, s, second)

	// A spool that never saw the primary cannot know where the chain is.
	primary, err := spool.Dial(context.Background(), f.dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = spool.Open(context.Background(), primary, filepath.Join(t.TempDir(), "new.db"), replica, evidence.Options{}, zerolog.Nop(), nil)
	if err == nil || !strings.Contains(err.Error(), "start once with the store reachable") {
		t.Errorf("Open of a new spool with the primary down: %v", err)
	}
	primary.Close()

	f.up(t)
	waitDrained(t, s)
	// Reads go to the primary, through the dialled store: Count too.
	if n, err := s.Count(context.Background(), evidence.Filter{Replica: replica}); err != nil || n != int64(len(flat(first, second))) {
		t.Errorf("Count through the spool = %d, %v; want %d", n, err, len(flat(first, second)))
	}
	s.Close()
	checkPrimary(t, f.dsn, flat(first, second))
}

// TestChainConflictNotSpooled: a batch that does not follow the primary's
// chain is refused with ErrChainConflict and never spooled; and spooled
// records that no longer follow it (another process wrote as this replica
// meanwhile) stop the drain, loudly, and stay in the spool.
func TestChainConflictNotSpooled(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, postgresBackend(t))
	s := f.open(t, false)
	var head evidence.Link
	appendAll(t, s, batch(&head, 10))
	other, err := evidence.Open(ctx, f.dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fork := head
	appendAll(t, other, batch(&fork, 5)) // another process, as the same replica
	stale := batch(&head, 5)
	if err := s.Append(ctx, stale); !errors.Is(err, evidence.ErrChainConflict) {
		t.Fatalf("Append after another writer: %v, want ErrChainConflict", err)
	}
	if st := s.Status(); st.Spooled != 0 || spooledRows(t, s.Path()) != 0 {
		t.Fatalf("a conflicting batch was spooled: %+v", st)
	}
	// The Recorder then chains after Head, which is the primary's.
	if h, err := s.Head(ctx, replica); err != nil || h != fork {
		t.Fatalf("Head after the conflict: %+v, %v; want the primary's %+v", h, err, fork)
	}

	// Spool while down, then another process writes before the drain.
	head = fork
	f.down(t)
	appendAll(t, s, batch(&head, 5))
	s.Close()
	f.up(t)
	other.Close()
	if other, err = evidence.Open(ctx, f.dsn, evidence.Options{}); err != nil {
		t.Fatal(err)
	}
	fork2 := fork
	appendAll(t, other, batch(&fork2, 3))
	s = f.open(t, false)
	waitFor(t, "the conflict", func() bool { return strings.Contains(s.Status().Reason, "does not continue") })
	if st := s.Status(); st.Spooled != 5 || !st.Degraded {
		t.Errorf("status after the conflict: %+v", st)
	}
	if !strings.Contains(f.log.String(), "SPOOLED EVIDENCE CONFLICTS WITH THE STORE'S CHAIN") {
		t.Errorf("the conflict was not logged:\n%s", f.log)
	}
}

// syncBuffer is a log sink read while the spool writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTimeOutOfRangeNotSpooled: a batch holding a time no store may hold
// (stamped 2300) is refused with ErrTimeRange, not taken for a failing
// primary and spooled (where it would stop the drain); the chain goes on.
func TestTimeOutOfRangeNotSpooled(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "evidence.db")
	f := newFixture(t, backend{dsn: "sqlite:" + path})
	s := f.open(t, false)
	var head evidence.Link
	first := batch(&head, 3)
	appendAll(t, s, first)
	good := head
	bad := batch(&head, 3)
	bad[1].Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Append(ctx, bad); !errors.Is(err, evidence.ErrTimeRange) {
		t.Fatalf("Append(a record stamped 2300) = %v, want ErrTimeRange", err)
	}
	if st := s.Status(); st.Spooled != 0 || spooledRows(t, s.Path()) != 0 {
		t.Fatalf("a batch out of range was spooled: %+v", st)
	}
	if h, err := s.Head(ctx, replica); err != nil || h != good {
		t.Fatalf("Head = %+v, %v; want %+v", h, err, good)
	}
	head = good
	more := batch(&head, 2)
	appendAll(t, s, more)
	s.Close()
	checkPrimary(t, f.dsn, append(first, more...))
}

// TestDialRetriesWhileDown: a store that cannot be opened is tried again
// (at most once a second) on use, each failed attempt an error, never a
// crash (a failed open once left a nil store behind, used by the next call).
func TestDialRetriesWhileDown(t *testing.T) {
	ctx := context.Background()
	s, err := spool.Dial(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=5", evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Several redial periods: the first retries fail, later calls go on.
	for start := time.Now(); time.Since(start) < 3500*time.Millisecond; time.Sleep(50 * time.Millisecond) {
		if _, err := s.Head(ctx, replica); err == nil || !strings.Contains(err.Error(), "not opened yet") {
			t.Fatalf("Head with the store down: %v", err)
		}
	}
}

// counted is a primary that counts the writes it is given, by kind.
type counted struct {
	evidence.Store
	appends, journals atomic.Int64
}

func (c *counted) Append(ctx context.Context, b []*evidence.Record) error {
	c.appends.Add(1)
	return c.Store.Append(ctx, b)
}

func (c *counted) OpenJournal(ctx context.Context, replica string, q func(int, error)) error {
	return c.Store.(evidence.Journaler).OpenJournal(ctx, replica, q)
}

func (c *counted) Journal(ctx context.Context, b []*evidence.Record, lines []byte) error {
	c.journals.Add(1)
	return c.Store.(evidence.Journaler).Journal(ctx, b, lines)
}

// TestJournalThroughSpool: a writer whose Checks wait commits to the
// primary's journal through the spool while the primary is up (not to
// Append's transaction), spools while it is down, and the drain puts the
// spooled records after the journaled ones: one chain, in order.
func TestJournalThroughSpool(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, postgresBackend(t))
	inner, err := spool.Dial(ctx, f.dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	primary := &counted{Store: inner}
	s, err := spool.Open(ctx, primary, f.path, replica, evidence.Options{}, zerolog.New(f.log), f.m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.OpenJournal(ctx, replica, nil); err != nil {
		t.Fatal(err)
	}
	var head evidence.Link
	var all []*evidence.Record
	for range 3 {
		b := batch(&head, 10)
		all = append(all, b...)
		if err := s.Journal(ctx, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	if j, a := primary.journals.Load(), primary.appends.Load(); j != 3 || a != 0 {
		t.Fatalf("with the primary up: %d journal commits and %d appends, want 3 and 0", j, a)
	}
	f.down(t)
	b := batch(&head, 10)
	all = append(all, b...)
	if err := s.Journal(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Spooled != 10 {
		t.Fatalf("with the primary down: %+v, want 10 spooled", st)
	}
	f.up(t)
	waitDrained(t, s)
	s.Close()
	checkPrimary(t, f.dsn, all)
}
