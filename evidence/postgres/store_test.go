package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// open migrates the database and opens a store on it.
func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	if err := postgres.Migrate(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(context.Background(), dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// chained makes one record of replica per time, chained onto *head.
func chained(replica string, head *evidence.Link, times ...time.Time) []*evidence.Record {
	recs := make([]*evidence.Record, len(times))
	for i, at := range times {
		r := &evidence.Record{
			ID: fmt.Sprintf("%s-%06d", replica, head.Seq+1), Time: at.UTC(), Replica: replica,
			Source:      evidence.Peer{Address: "10.0.0.7", Principal: "spiffe://cluster.local/ns/shop/sa/frontend"},
			Destination: evidence.Peer{Principal: "spiffe://cluster.local/ns/payments/sa/ledger"},
			Request:     evidence.Request{Method: "GET", Host: "ledger", Path: "/x"},
			Verdict:     evidence.MTLS, Reasons: []string{"client certificate presented"},
			Decision: evidence.Decision{Allowed: i%3 != 0},
		}
		*head = head.Link(r)
		recs[i] = r
	}
	return recs
}

// every returns n times a step apart from start.
func every(start time.Time, step time.Duration, n int) []time.Time {
	ts := make([]time.Time, n)
	for i := range ts {
		ts[i] = start.Add(time.Duration(i) * step)
	}
	return ts
}

func partitionsOf(t testing.TB, s *postgres.Store) []string {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT c.relname::text FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'records'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func verifyIntact(t testing.TB, s evidence.Verifiable) []evidence.ChainReport {
	t.Helper()
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.Broken != nil {
			t.Fatalf("chain %s broken: %+v", r.Replica, *r.Broken)
		}
	}
	return reps
}

// TestPartitionsAcrossDays writes one batch over three days long past (no
// partition exists), reads it back, and drops the oldest day.
func TestPartitionsAcrossDays(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	day := time.Date(2024, 2, 28, 0, 0, 0, 0, time.UTC)
	var head evidence.Link
	batch := chained("r1", &head, day.Add(23*time.Hour+59*time.Minute), day.Add(24*time.Hour-1),
		day.Add(24*time.Hour), day.Add(36*time.Hour), day.Add(48*time.Hour+time.Second))
	if err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	parts := partitionsOf(t, s)
	for _, want := range []string{"records_20240228", "records_20240229", "records_20240301", "records_20240302"} {
		if !slices.Contains(parts, want) {
			t.Errorf("partitions %v: no %s", parts, want)
		}
	}
	var parent, child string
	err := s.Pool().QueryRow(ctx, `SELECT p.attstorage::text, c.attstorage::text FROM pg_attribute p, pg_attribute c
		WHERE p.attrelid = 'records'::regclass AND c.attrelid = 'records_20240229'::regclass
		AND p.attname = 'rest' AND c.attname = 'rest'`).Scan(&parent, &child)
	if err != nil || parent != child || parent != "p" {
		t.Errorf("rest storage: records %q, its partition %q (%v); want both plain (p)", parent, child, err)
	}
	res, err := s.Query(ctx, evidence.Filter{}, evidence.PageRequest{})
	if err != nil || len(res.Records) != len(batch) {
		t.Fatalf("Query: %d records, %v; want %d", len(res.Records), err, len(batch))
	}
	n, err := s.DeleteBefore(ctx, day.Add(24*time.Hour), time.Time{}, 100)
	if err != nil || n != 2 {
		t.Fatalf("DeleteBefore(the second day) = %d, %v; want 2 records removed", n, err)
	}
	if slices.Contains(partitionsOf(t, s), "records_20240228") {
		t.Error("the first day's partition was not dropped")
	}
	if cp, _ := s.Checkpoint(ctx, "r1"); cp.Seq != 2 || cp.Hash != batch[1].Chain.Hash {
		t.Errorf("checkpoint %+v, want seq 2 and its hash", cp)
	}
	if reps := verifyIntact(t, s); reps[0].Checked != 3 {
		t.Errorf("Verify checked %d records, want 3", reps[0].Checked)
	}
	// A day dropped by retention is created again for a late record.
	late := chained("r1", &head, day.Add(time.Hour))
	if err := s.Append(ctx, late); err != nil {
		t.Fatalf("Append into a dropped day: %v", err)
	}
}

// TestConcurrentPartitionCreators has replicas, each with its own store,
// write into the same new days at once.
func TestConcurrentPartitionCreators(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	const replicas = 6
	stores := make([]*postgres.Store, replicas)
	for i := range stores {
		stores[i] = open(t, dsn)
	}
	day := time.Date(2031, 5, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	start := make(chan struct{})
	for i, s := range stores {
		wg.Go(func() {
			var head evidence.Link
			batch := chained(fmt.Sprintf("r%d", i), &head, every(day.Add(-time.Minute), 10*time.Minute, 300)...)
			<-start
			errs[i] = s.Append(ctx, batch)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		}
	}
	want := []string{"records_20310430", "records_20310501", "records_20310502", "records_20310503"}
	got := partitionsOf(t, stores[0])
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("partitions %v: no %s", got, w)
		}
	}
	st, err := stores[0].Stats(ctx, time.Time{})
	if err != nil || st.Records != replicas*300 {
		t.Fatalf("Stats: %d records, %v; want %d", st.Records, err, replicas*300)
	}
	verifyIntact(t, stores[0])
}

// TestScanReleasesItsConnection stops a Scan by fn's error and by ctx, and
// checks that no connection is held while fn runs or after it returns.
func TestScanReleasesItsConnection(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	var head evidence.Link
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	if err := s.Append(ctx, chained("r1", &head, every(start, time.Second, 2500)...)); err != nil {
		t.Fatal(err)
	}
	errEnough := errors.New("enough")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		stopAt  int
		stop    func() error
		wantErr error
	}{
		{"all", ctx, -1, nil, nil},
		{"fn error", ctx, 1500, func() error { return errEnough }, errEnough},
		{"ctx cancelled", cctx, 1200, func() error { cancel(); return nil }, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen int
			err := s.Scan(tc.ctx, evidence.Filter{}, func(r *evidence.Record) error {
				seen++
				if held := s.Pool().Stat().AcquiredConns(); held != 0 {
					return fmt.Errorf("%d connections held while fn runs", held)
				}
				if seen == tc.stopAt {
					return tc.stop()
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Scan: %v, want %v", err, tc.wantErr)
			}
			if tc.stopAt < 0 && seen != 2500 {
				t.Errorf("Scan saw %d records, want 2500", seen)
			}
			if tc.stopAt > 0 && seen != tc.stopAt {
				t.Errorf("Scan went on to record %d after stopping at %d", seen, tc.stopAt)
			}
			if held := s.Pool().Stat().AcquiredConns(); held != 0 {
				t.Errorf("%d connections held after Scan returned", held)
			}
		})
	}
}

// TestAppendOverlappingHead writes a batch whose first records are stored
// already (a retry cut differently): only the rest is written.
func TestAppendOverlappingHead(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	var head evidence.Link
	recs := chained("r1", &head, every(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), time.Second, 10)...)
	for _, b := range [][]*evidence.Record{recs[:4], recs[2:7], recs[:7], recs[5:], recs[3:8]} {
		if err := s.Append(ctx, b); err != nil {
			t.Fatalf("Append(seq %d..%d): %v", b[0].Chain.Seq, b[len(b)-1].Chain.Seq, err)
		}
	}
	st, err := s.Stats(ctx, time.Time{})
	if err != nil || st.Records != 10 || st.ByVerdict[evidence.MTLS] != 10 {
		t.Fatalf("Stats = %+v, %v; want 10 records counted once", st, err)
	}
	verifyIntact(t, s)
	// Other records at stored seqs, entirely or partly: a conflict.
	var other evidence.Link
	forged := chained("r1", &other, every(time.Date(2025, 6, 1, 0, 0, 0, 1, time.UTC), time.Second, 12)...)
	for _, b := range [][]*evidence.Record{forged[:3], forged[8:]} {
		if err := s.Append(ctx, b); !errors.Is(err, evidence.ErrChainConflict) {
			t.Errorf("Append(other records at seq %d..%d): %v, want ErrChainConflict", b[0].Chain.Seq, b[len(b)-1].Chain.Seq, err)
		}
	}
}

// TestAppendWhileStoreDown stops PostgreSQL under a store: Append fails
// (not as a chain conflict), and the same batch goes in once it is back.
func TestAppendWhileStoreDown(t *testing.T) {
	ctx := context.Background()
	c := postgrestest.NewCluster(t)
	s := open(t, c.DSN())
	var head evidence.Link
	start := time.Now().UTC().Truncate(time.Second)
	first := chained("r1", &head, every(start, time.Millisecond, 100)...)
	second := chained("r1", &head, every(start.Add(time.Second), time.Millisecond, 100)...)
	if err := s.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	c.Stop(t, "immediate")
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := s.Append(actx, second)
	cancel()
	if err == nil || errors.Is(err, evidence.ErrChainConflict) {
		t.Fatalf("Append with PostgreSQL down: %v, want a connection error", err)
	}
	c.Start(t)
	if err := s.Append(ctx, second); err != nil {
		t.Fatalf("Append after PostgreSQL is back: %v", err)
	}
	if h, _ := s.Head(ctx, "r1"); h != head {
		t.Errorf("head %+v, want %+v", h, head)
	}
	if reps := verifyIntact(t, s); reps[0].Checked != 200 {
		t.Errorf("Verify checked %d, want 200", reps[0].Checked)
	}
}

// TestRetentionCutsChainsWhole has the day before midnight hold a record
// whose predecessor in the chain is a little newer (times out of order
// across midnight): that predecessor stays, so the record stays with it,
// and the day is not dropped; the record before them goes. The chain left
// has no hole.
func TestRetentionCutsChainsWhole(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	midnight := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	var head evidence.Link
	batch := chained("r1", &head, midnight.Add(-2*time.Millisecond), midnight.Add(time.Millisecond),
		midnight.Add(-time.Millisecond), midnight.Add(time.Hour))
	if err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteBefore(ctx, midnight, time.Time{}, 10)
	if err != nil || n != 1 {
		t.Fatalf("DeleteBefore(midnight) = %d, %v; want 1 (seq 1; seq 3, before midnight, follows seq 2, after it)", n, err)
	}
	if cp, _ := s.Checkpoint(ctx, "r1"); cp.Seq != 1 || cp.Hash != batch[0].Chain.Hash {
		t.Errorf("checkpoint %+v, want seq 1", cp)
	}
	if reps := verifyIntact(t, s); reps[0].Checked != 3 {
		t.Errorf("Verify checked %d, want 3", reps[0].Checked)
	}
}

// TestOpenFailsWithNoStore: a store that cannot be opened is a nil Store,
// not a nil *Store inside one, which the spool's deferred store took for
// an open store and called (a nil pointer dereference in its drainer).
func TestOpenFailsWithNoStore(t *testing.T) {
	s, err := evidence.Open(context.Background(), "postgres://meshproof@127.0.0.1:1/none?connect_timeout=2", evidence.Options{})
	if err == nil || s != nil {
		t.Fatalf("Open(a closed port) = %#v, %v; want nil and an error", s, err)
	}
}

// TestAppendRefusesSeqBeyondTheChainColumn: the chain column holds a seq
// of at most 2^44 - 1 (replica << 44 | seq); a record beyond is refused
// for good, naming its seq, and nothing is written.
func TestAppendRefusesSeqBeyondTheChainColumn(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	head := evidence.Link{Seq: 1<<44 - 1}
	recs := chained("r1", &head, time.Now())
	err := s.Append(ctx, recs)
	if !evidence.IsPermanent(err) || !strings.Contains(err.Error(), "seq 17592186044416") {
		t.Fatalf("Append of seq 2^44 = %v, want a permanent error naming the seq", err)
	}
	if n, err := s.Count(ctx, evidence.Filter{}); err != nil || n != 0 {
		t.Errorf("Count = %d, %v; want nothing written", n, err)
	}
}

// TestNewShapesMidBatch: shapes the writer has not numbered yet, met in
// the middle of a batch, are stored in the batch's transaction (COPY stops
// at their row and goes on), on a pool of one connection (nothing waits
// for a second); a batch refused after numbering new shapes leaves none
// of their numbers behind in the writer's memory.
func TestNewShapesMidBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t)+"&pool_max_conns=1")
	var head evidence.Link
	start := time.Now().Add(-time.Hour).UTC()
	// host names the shape: rows of known shapes, then of new ones,
	// across the encoder's chunks.
	batchOf := func(n int, host func(i int) string) []*evidence.Record {
		recs := chained("r1", &head, every(start.Add(time.Duration(head.Seq)*time.Millisecond), time.Millisecond, n)...)
		head.Seq -= uint64(n)
		for i, r := range recs {
			r.Request.Host = host(i)
			head = head.Link(r)
		}
		return recs
	}
	first := batchOf(100, func(int) string { return "ledger" })
	if err := s.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := batchOf(1000, func(i int) string {
		switch {
		case i >= 300 && i < 600:
			return "new-a"
		case i >= 900:
			return "new-b"
		}
		return "ledger"
	})
	if err := s.Append(ctx, second); err != nil {
		t.Fatalf("Append of a batch with new shapes in its middle: %v", err)
	}

	// A batch with a new shape, refused for its last record (the id and
	// time of a stored one) once the shape is numbered.
	before := head
	refused := batchOf(400, func(i int) string { return "new-c" })
	dup := *first[5]
	prev := refused[len(refused)-2].Chain
	refused[len(refused)-1] = &dup
	head = evidence.Link{Seq: prev.Seq, Hash: prev.Hash}.Link(&dup)
	if err := s.Append(ctx, refused); !evidence.IsPermanent(err) {
		t.Fatalf("Append of a batch holding a stored id and time = %v, want a permanent refusal", err)
	}
	head = before
	third := batchOf(400, func(i int) string { return "new-c" })
	if err := s.Append(ctx, third); err != nil {
		t.Fatalf("Append of the new shape again: %v", err)
	}

	verifyIntact(t, s)
	for _, r := range [][]*evidence.Record{first, second, third} {
		for _, i := range []int{0, 299, 300, 599, 600, 899, 900, len(r) - 1} {
			if i >= len(r) {
				continue
			}
			got, err := s.Get(ctx, r[i].ID)
			if err != nil {
				t.Fatalf("Get %s: %v", r[i].ID, err)
			}
			if got.Request.Host != r[i].Request.Host || got.Chain.Hash != r[i].Chain.Hash {
				t.Errorf("Get %s: host %q hash %.12s, want %q %.12s", r[i].ID, got.Request.Host, got.Chain.Hash, r[i].Request.Host, r[i].Chain.Hash)
			}
		}
	}
}

// TestShapesOfARetriedBatch: a batch whose first attempt numbered a new
// shape and then failed (its day's partition was dropped behind the
// store's back) is written by the second with the shape numbered again:
// the writer remembers only numbers a committed transaction made.
func TestShapesOfARetriedBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	var head evidence.Link
	at := time.Now().Add(-time.Hour).UTC()
	if err := s.Append(ctx, chained("r1", &head, every(at, time.Millisecond, 10)...)); err != nil {
		t.Fatal(err)
	}
	day := "records_" + at.Format("20060102")
	if !slices.Contains(partitionsOf(t, s), day) {
		t.Fatalf("partitions %v, want %s", partitionsOf(t, s), day)
	}
	if _, err := s.Pool().Exec(ctx, `DROP TABLE `+day); err != nil {
		t.Fatal(err)
	}
	batch := chained("r1", &head, every(at.Add(time.Second), time.Millisecond, 10)...)
	head.Seq -= uint64(len(batch))
	for _, r := range batch {
		r.Request.Host = "new-host"
		head = head.Link(r)
	}
	if err := s.Append(ctx, batch); err != nil {
		t.Fatalf("Append once the partition is gone: %v", err)
	}
	for _, r := range batch {
		got, err := s.Get(ctx, r.ID)
		if err != nil {
			t.Fatalf("Get %s: %v", r.ID, err)
		}
		if got.Request.Host != "new-host" || got.Chain.Hash != r.Chain.Hash {
			t.Fatalf("Get %s: host %q hash %.12s, want new-host %.12s", r.ID, got.Request.Host, got.Chain.Hash, r.Chain.Hash)
		}
	}
}
