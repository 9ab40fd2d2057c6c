package sqlite_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/meshproof/meshproof/evidence/storekit"
	"github.com/oklog/ulid/v2"
)

func TestDSN(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		dsn, err string
	}{
		{"sqlite:", "no file named"},
		{"sqlite::memory:", "want the path of a file"},
		{"sqlite:" + filepath.Join(dir, "missing", "e.db"), "does not exist"},
	} {
		if s, err := evidence.Open(ctx, tc.dsn, evidence.Options{}); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Open(%q) = %v, %v; want an error saying %q", tc.dsn, s, err, tc.err)
		}
	}
	// A path with characters an SQLite URI would take for syntax.
	path := filepath.Join(dir, "odd ?name#%.db")
	if err := evidence.Migrate(ctx, "sqlite:"+path); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s, err := evidence.Open(ctx, "sqlite:"+path, evidence.Options{Durable: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the store is not at the path named: %v", err)
	}
}

// TestOpenExisting: Options.Existing opens a store that exists, and refuses
// a missing file by its path without creating it (nor its -wal and -shm).
func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "MISTYPED.db")
	for _, dsn := range []string{"sqlite:" + missing, "sqlite:" + filepath.Join(dir, "no-dir", "e.db")} {
		s, err := evidence.Open(ctx, dsn, evidence.Options{Existing: true})
		if err == nil {
			s.Close()
		}
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), strings.TrimPrefix(dsn, "sqlite:")) {
			t.Errorf("Open(%s, Existing) = %v; want an error wrapping ErrNotExist that names the file", dsn, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("opening a missing store created %v", entries)
	}

	path := filepath.Join(dir, "e.db")
	w := open(t, path)
	write(t, w, 5)
	w.Close()
	s, err := evidence.Open(ctx, "sqlite:"+path, evidence.Options{Existing: true})
	if err != nil {
		t.Fatalf("Open(an existing store, Existing): %v", err)
	}
	defer s.Close()
	if res, err := s.Query(ctx, evidence.Filter{}, evidence.PageRequest{}); err != nil || len(res.Records) != 5 {
		t.Fatalf("Query: %d records, %v; want 5", len(res.Records), err)
	}
}

func TestFilePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.db")
	s := open(t, path)
	write(t, s, 10)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s: mode %o, want 600 (evidence names every client of the mesh)", filepath.Base(p), mode)
		}
	}
	s.Close()
}

// TestReadsBesideWriter checks WAL mode, and that a write transaction held
// open does not block reads.
func TestReadsBesideWriter(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "e.db")
	s := open(t, path)
	defer s.Close()
	write(t, s, 20)
	raw := rawDB(t, path)
	var mode string
	if err := raw.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "ROLLBACK")
	if _, err := conn.ExecContext(ctx, "DELETE FROM records"); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res, err := s.Query(qctx, evidence.Filter{}, evidence.PageRequest{})
	if err != nil || len(res.Records) != 20 {
		t.Fatalf("Query beside an open write transaction: %d records, %v; want the 20 committed", len(res.Records), err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "e.db")
	open(t, path).Close()
	raw := rawDB(t, path)
	if _, err := raw.ExecContext(ctx, "UPDATE schema_version SET version = ?", sqlite.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if !errors.Is(err, evidence.ErrSchema) || !strings.Contains(err.Error(), "newer meshproof") {
		t.Fatalf("Open(a newer schema) = %v, %v; want an error wrapping ErrSchema that says a newer meshproof wrote it", s, err)
	}
	if err := evidence.Migrate(ctx, "sqlite:"+path); !errors.Is(err, evidence.ErrSchema) {
		t.Errorf("Migrate(a newer schema) = %v, want ErrSchema", err)
	}
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte(strings.Repeat("not sqlite\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Open(context.Background(), path, evidence.Options{}); err == nil || !strings.Contains(err.Error(), "not an SQLite database") {
		t.Errorf("Open(a text file) = %v, want an error saying it is not an SQLite database", err)
	}
}

// TestScanReleasesReaders checks that a scan stopped early holds no read
// connection (and so no read transaction that would pin the WAL).
func TestScanReleasesReaders(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t, filepath.Join(t.TempDir(), "e.db"))
	defer s.Close()
	write(t, s, 1200)
	n := 0
	err := s.Scan(ctx, evidence.Filter{}, func(*evidence.Record) error {
		if n++; n == 600 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Scan: %v, want context.Canceled", err)
	}
	if busy := s.ReadersInUse(); busy != 0 {
		t.Errorf("%d read connections still in use after the scan stopped", busy)
	}
}

// TestQueryPlans pins the index each kind of filter is answered from: a
// plan that sorts or scans the table would pass every other test and time
// out on a real store.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "e.db"))
	defer s.Close()
	head := write(t, s, 50)
	all := evidencetest.Varied(50, 50, 1).Records // as write made them
	// 150 plaintext edges (one host each): more than a page reads edge by edge.
	broad := evidencetest.Varied(150, 150, 7).Records
	for i, r := range broad {
		r.Replica, r.Verdict = "replica-one", evidence.Plaintext
		r.Request.Host = fmt.Sprintf("h%d.example", i)
		r.Source, r.Destination = evidence.Peer{Address: "10.9.9.9"}, evidence.Peer{Address: "10.8.8.8"}
	}
	evidencetest.Link(head, broad...)
	if err := s.Append(ctx, broad); err != nil {
		t.Fatal(err)
	}
	all = append(all, broad...)
	// Records with workloads: a workload filter names its edges.
	wls := evidencetest.VariedWorkloads(60, 60, 16).Records
	for _, r := range wls {
		r.Replica = "replica-one"
	}
	evidencetest.Link(evidence.Link{Seq: broad[len(broad)-1].Chain.Seq, Hash: broad[len(broad)-1].Chain.Hash}, wls...)
	if err := s.Append(ctx, wls); err != nil {
		t.Fatal(err)
	}
	all = append(all, wls...)
	cursor := storekit.EncodeCursor(time.Now().UnixNano(), "01JQ")
	day := time.Now().Add(-24 * time.Hour)
	const (
		byTime = iota // records_time, newest first, no sort
		byEdge        // records_edge edge by edge (merged when more than one); sorts of a page at most
		byRequest
	)
	mtls := []evidence.Verdict{evidence.MTLS}
	for _, tc := range []struct {
		name   string
		filter evidence.Filter
		plan   int
	}{
		{"newest", evidence.Filter{}, byTime},
		{"since", evidence.Filter{Since: day}, byTime},
		{"method and path", evidence.Filter{Method: "GET", PathPrefix: "/api"}, byTime},
		{"principal verdict day", evidence.Filter{Source: "spiffe://cluster.local/ns/shop/sa/frontend", Verdicts: mtls, Since: day}, byEdge},
		{"source prefix", evidence.Filter{SourcePrefix: "spiffe://cluster.local/"}, byEdge},
		{"destination host", evidence.Filter{Destination: "spiffe://cluster.local/ns/shop/sa/cart", Host: "cart.shop.svc.cluster.local"}, byEdge},
		{"namespace and method", evidence.Filter{Namespace: "shop", Method: "GET"}, byEdge},
		{"one of 150 hosts, any port", evidence.Filter{Host: "h7.example"}, byEdge},
		{"a host with a port", evidence.Filter{Host: "ledger.payments:8443"}, byEdge},
		{"verdict of 150 edges", evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext}}, byTime},
		{"not mtls", evidence.Filter{NotVerdicts: mtls, Since: day}, byTime},
		{"request id", evidence.Filter{RequestID: "r", Source: "spiffe://x"}, byRequest},
		{"source workload", evidence.Filter{SourceWorkload: "legacy/sleep"}, byEdge},
		{"destination workload and verdict", evidence.Filter{DestinationWorkload: "payments/ledger", Verdicts: mtls}, byEdge},
		{"source namespace of plaintext workloads", evidence.Filter{SourceNamespace: "legacy", Verdicts: []evidence.Verdict{evidence.Plaintext}}, byEdge},
	} {
		for _, c := range []string{"", cursor} {
			plan, err := s.Plan(ctx, tc.filter, c)
			if err != nil {
				t.Fatal(err)
			}
			ok := false
			switch tc.plan {
			case byTime:
				ok = strings.Contains(plan, "records USING INDEX records_time") && !strings.Contains(plan, "TEMP B-TREE FOR ORDER BY")
			case byEdge:
				ok = strings.Contains(plan, "INDEX records_edge (edge=?") &&
					!strings.Contains(plan, "SCAN records")
			case byRequest:
				ok = strings.Contains(plan, "records USING INDEX records_request (<expr>=? AND <expr>=?)")
			}
			if !ok {
				t.Errorf("%s (cursor %v): plan %q is not the one wanted", tc.name, c != "", plan)
			}
		}
		// A host names its edges through edges_host: without a port, one
		// range (evidence.HostAnyPort).
		if tc.filter.Host != "" && tc.filter.Destination == "" {
			plan, err := s.EdgePlan(ctx, tc.filter)
			want := "INDEX edges_host (host=?)"
			if evidence.HostAnyPort(tc.filter.Host) {
				want = "INDEX edges_host (host>? AND host<?)"
			}
			if err != nil || !strings.Contains(plan, want) {
				t.Errorf("%s: edges plan %q, %v; want %q", tc.name, plan, err, want)
			}
		}
		// A workload names its edges through its index.
		for col, v := range map[string]string{"src_wl": tc.filter.SourceWorkload, "dst_wl": tc.filter.DestinationWorkload} {
			if v == "" {
				continue
			}
			plan, err := s.EdgePlan(ctx, tc.filter)
			if want := "INDEX edges_" + col + " (" + col + "=?)"; err != nil || !strings.Contains(plan, want) {
				t.Errorf("%s: edges plan %q, %v; want %q", tc.name, plan, err, want)
			}
		}
		// Every plan gives the oracle's records, page by page.
		var got []string
		page := evidence.PageRequest{Limit: 7}
		for {
			res, err := s.Query(ctx, tc.filter, page)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			got = append(got, evidencetest.IDs(res.Records)...)
			if page.Cursor = res.Next; page.Cursor == "" {
				break
			}
		}
		if want := evidencetest.IDs(evidencetest.NewestFirst(all, tc.filter)); !slices.Equal(got, want) {
			t.Errorf("%s: got %d records %.5v, want %d %.5v", tc.name, len(got), got, len(want), want)
		}
		// The count reads records through an index (the page's, for an
		// edge or a request id; a broad filter counts edge by edge through
		// the covering records_edge, or all through the smallest index) and
		// counts the oracle's records.
		plan, err := s.CountPlan(ctx, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{byTime: "records USING ", byEdge: "INDEX records_edge (edge=?", byRequest: "INDEX records_request (<expr>=? AND <expr>=?)"}[tc.plan]; !strings.Contains(plan, want) {
			t.Errorf("%s: count plan %q, want %q in it", tc.name, plan, want)
		}
		if n, err := s.Count(ctx, tc.filter); err != nil || n != evidencetest.Count(all, tc.filter) {
			t.Errorf("%s: Count = %d, %v; the oracle counts %d", tc.name, n, err, evidencetest.Count(all, tc.filter))
		}
	}
}

// TestIDPlans: Get and Append's checks that a batch's ids are new read
// records_id (the ids' first 6 and last 4 bytes), never the table.
func TestIDPlans(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "e.db"))
	defer s.Close()
	write(t, s, 50)
	get, check, err := s.GetPlan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{get, check} {
		if !strings.Contains(p, "records USING INDEX records_id (<expr>=?)") || strings.Contains(p, "SCAN records") {
			t.Errorf("plan %q, want records_id", p)
		}
	}
	span, err := s.IDRangePlan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(span, "records USING COVERING INDEX records_id (<expr>>? AND <expr><?)") {
		t.Errorf("plan %q, want a range of records_id alone", span)
	}
}

// TestReadOnlyFile makes the file unwritable under a running store and
// across a restart: Append fails, reads go on, and writing resumes with no
// gap or duplicate once the file is writable again.
func TestReadOnlyFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "e.db")
	s := open(t, path)
	head := write(t, s, 100)
	lock, unlock := readOnly(t, path)

	if os.Geteuid() == 0 { // only root's lock (immutable) reaches files already open
		lock()
		if err := appendNext(s, &head, 10); err == nil {
			t.Fatal("Append to an immutable file worked")
		}
		if res, err := s.Query(ctx, evidence.Filter{}, evidence.PageRequest{}); err != nil || len(res.Records) != 100 {
			t.Errorf("Query while the file is read-only: %d records, %v", len(res.Records), err)
		}
		unlock()
		if err := appendNext(s, &head, 10); err != nil {
			t.Fatalf("Append once the file is writable again: %v", err)
		}
	}

	s.Close()
	lock()
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		unlock()
		t.Fatalf("Open(a read-only file): %v (it should open for reading)", err)
	}
	defer s.Close()
	want := int(head.Seq)
	if res, err := s.Query(ctx, evidence.Filter{}, evidence.PageRequest{Limit: 1000}); err != nil || len(res.Records) != want {
		t.Errorf("Query on the read-only file: %d records, %v; want %d", len(res.Records), err, want)
	}
	if err := appendNext(s, &head, 10); err == nil {
		t.Fatal("Append to a read-only file worked")
	}
	unlock()
	if err := appendNext(s, &head, 10); err != nil {
		t.Fatalf("Append once the file is writable again: %v", err)
	}
	reports, err := evidence.Verify(ctx, s)
	if err != nil || len(reports) != 1 || reports[0].Broken != nil || reports[0].Checked != int64(head.Seq) {
		t.Errorf("Verify after the outage: %+v, %v; want one intact chain of %d", reports, err, head.Seq)
	}
}

// readOnly returns functions that make the store's files unwritable and
// writable again: chmod for an ordinary user; for root, whom modes do not
// stop, the immutable attribute.
func readOnly(t *testing.T, path string) (lock, unlock func()) {
	files := func() []string {
		var out []string
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
			}
		}
		return out
	}
	if os.Geteuid() != 0 {
		return func() {
				for _, p := range files() {
					os.Chmod(p, 0o400)
				}
			}, func() {
				for _, p := range files() {
					os.Chmod(p, 0o600)
				}
			}
	}
	if err := exec.Command("chattr", "+i", path).Run(); err != nil {
		t.Skipf("running as root, and chattr +i does not work here (%v): no way to make the file read-only", err)
	}
	exec.Command("chattr", "-i", path).Run()
	locked := []string{}
	unlock = func() {
		for _, p := range locked {
			if out, err := exec.Command("chattr", "-i", p).CombinedOutput(); err != nil {
				t.Errorf("chattr -i %s: %v %s", p, err, out)
			}
		}
		locked = nil
	}
	t.Cleanup(unlock)
	return func() {
		for _, p := range []string{path, path + "-wal"} {
			if _, err := os.Stat(p); err == nil {
				if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
					t.Fatalf("chattr +i %s: %v %s", p, err, out)
				}
				locked = append(locked, p)
			}
		}
	}, unlock
}

// write appends n varied records as one replica's chain; it returns the head.
func write(t *testing.T, s *sqlite.Store, n int) evidence.Link {
	t.Helper()
	var head evidence.Link
	if err := appendNext(s, &head, n); err != nil {
		t.Fatalf("Append: %v", err)
	}
	return head
}

// appendNext appends n more records to the chain at head, advancing head
// only when they are stored.
func appendNext(s *sqlite.Store, head *evidence.Link, n int) error {
	fx := evidencetest.Varied(n, n, head.Seq+1)
	batch := fx.Records
	for _, r := range batch {
		r.Replica = "replica-one"
	}
	next := evidencetest.Link(*head, batch...)
	if err := s.Append(context.Background(), batch); err != nil {
		return err
	}
	*head = next
	return nil
}

// TestRollupsAcrossTheHourMark writes records far ahead of the clock, then
// ones of the last hours, then late ones: the aggregates count each record
// once, whichever spans hold it.
func TestRollupsAcrossTheHourMark(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "e.db"))
	defer s.Close()
	now := time.Now().UTC()
	at := []time.Time{
		now.AddDate(10, 0, 0), now.AddDate(10, 0, 0).Add(time.Hour), // a skewed clock
		now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), now.Add(-time.Minute), now,
		now.Add(-50 * time.Hour), now.AddDate(0, 0, -9), // late
		now.AddDate(10, 0, 1),
	}
	var head evidence.Link
	var recs []*evidence.Record
	for i, t0 := range at {
		r := evidencetest.Full(fmt.Sprintf("rec-%02d", i), "replica-one", t0)
		head = evidencetest.Link(head, r)
		recs = append(recs, r)
		if err := s.Append(ctx, []*evidence.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []evidence.AggregateQuery{
		{Since: now.AddDate(0, 0, -30), Until: now.Add(time.Hour)},
		{Since: now.Add(-4 * time.Hour), Until: now.Add(-90 * time.Minute)},
		{Since: now.AddDate(9, 0, 0), Until: now.AddDate(11, 0, 0)},
		{Until: now.AddDate(20, 0, 0)},
	} {
		got, want := countedAndIn(t, s, q, recs)
		if got != want || want == 0 {
			t.Errorf("aggregate %s to %s: %d, want %d (and some)", q.Since, q.Until, got, want)
		}
	}
}

// TestIDsAmongStored: Append's check that a batch's ids are new looks
// them up one by one only when a stored id falls in the range of the
// batch's. Ids of one millisecond, stored and new interleaved, are
// accepted; an id already stored in the middle of such a batch is refused
// as permanent, and nothing of the batch is kept.
func TestIDsAmongStored(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "e.db"))
	defer s.Close()
	ms := ulid.Timestamp(time.Now())
	ids := make([]string, 60)
	for i := range ids {
		ids[i] = ulid.MustNew(ms, rand.Reader).String()
	}
	slices.Sort(ids)
	var head evidence.Link
	batchOf := func(ids ...string) []*evidence.Record {
		batch := evidencetest.Varied(len(ids), len(ids), head.Seq+1).Records
		for i, r := range batch {
			r.Replica, r.ID = "replica-one", ids[i]
		}
		evidencetest.Link(head, batch...)
		return batch
	}
	var even, odd []string
	for i, id := range ids[:40] {
		if i%2 == 0 {
			even = append(even, id)
		} else {
			odd = append(odd, id)
		}
	}
	for _, b := range [][]string{even, odd} {
		batch := batchOf(b...)
		if err := s.Append(ctx, batch); err != nil {
			t.Fatalf("Append of ids between stored ones: %v", err)
		}
		head = evidencetest.Link(head, batch...)
	}
	refused := append(slices.Clone(ids[40:50]), odd[7])
	refused = append(refused, ids[50:]...)
	err := s.Append(ctx, batchOf(refused...))
	if !evidence.IsPermanent(err) || !strings.Contains(err.Error(), odd[7]) {
		t.Fatalf("Append of a batch holding a stored id = %v, want a permanent error naming %s", err, odd[7])
	}
	if st, err := s.Stats(ctx, time.Time{}); err != nil || st.Records != 40 {
		t.Fatalf("after the refused batch: %d records, %v; want 40", st.Records, err)
	}
}
