package sqlite_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestMigrateFromSchema1 opens a file written by meshproof's first schema
// (testdata/schema1.db.gz: evidencetest.Varied(240, 40, 1) appended by the
// schema-1 store, then closed) and checks that the migrated store answers
// every filter as the records say, verifies intact, and takes the chains on
// where they stopped.
func TestMigrateFromSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "schema1.db")
	unzip(t, "testdata/schema1.db.gz", path)
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open (migrating): %v", err)
	}
	defer s.Close()
	fx := evidencetest.Varied(240, 40, 1)

	mid := evidencetest.Base.Add(60 * time.Hour)
	evidencetest.QueryMatchesOracle(ctx, t, s, "after the migration", fx.Records, []evidence.Filter{
		{},
		{Since: mid},
		{Source: "spiffe://cluster.local/ns/shop/sa/frontend"},
		{SourcePrefix: "spiffe://cluster.local/ns/shop"},
		{Destination: "spiffe://cluster.local/ns/payments/sa/ledger", Verdicts: []evidence.Verdict{evidence.MTLS}},
		{Namespace: "shop", Allowed: ptr(false)},
		{TrustDomain: "partner.example"},
		{NotVerdicts: []evidence.Verdict{evidence.MTLS}},
		{Host: "ledger.payments:8443", Method: "GET"},
		{PathPrefix: "/api/v1"},
		{RequestID: "req-shared"},
		{RequestID: "req-00012"},
		{Replica: evidencetest.Replicas[1]},
	})

	// The rollups of schema 1 count as closed; aggregates agree with the
	// records over every range, and go on agreeing after new writes close
	// hours of their own.
	checkAggregates := func(recs []*evidence.Record) {
		t.Helper()
		for _, q := range []evidence.AggregateQuery{
			{Until: evidencetest.Base.Add(10 * 24 * time.Hour)},
			{Since: mid.Add(-7 * time.Minute), Until: mid.Add(26*time.Hour + 11*time.Minute)},
			{Since: evidencetest.Base.Add(5*24*time.Hour + 30*time.Minute), Until: evidencetest.Base.Add(7 * 24 * time.Hour)},
		} {
			got, want := countedAndIn(t, s, q, recs)
			if got != want {
				t.Errorf("aggregate %s to %s: %d records counted, want %d", q.Since, q.Until, got, want)
			}
		}
	}
	checkAggregates(fx.Records)

	reports, err := evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reports {
		if rep.Broken != nil || rep.Checked != 80 {
			t.Errorf("chain %s after the migration: %d checked, broken: %+v", rep.Replica, rep.Checked, rep.Broken)
		}
	}

	// The chains go on from their heads, and the new records are found.
	var more []*evidence.Record
	for i, replica := range evidencetest.Replicas {
		r := evidencetest.Full(evidencetest.Replicas[i]+"-next", replica, evidencetest.Base.Add(6*24*time.Hour))
		evidencetest.Link(fx.Heads[replica], r)
		if err := s.Append(ctx, []*evidence.Record{r}); err != nil {
			t.Fatalf("Append after the migration: %v", err)
		}
		more = append(more, r)
	}
	checkAggregates(append(fx.Records, more...))
	res, err := s.Query(ctx, evidence.Filter{Source: more[0].Source.Principal, Since: evidencetest.Base.Add(5 * 24 * time.Hour)}, evidence.PageRequest{})
	if err != nil || len(res.Records) != len(more) {
		t.Fatalf("new records by source: %d, %v; want %d", len(res.Records), err, len(more))
	}
	if reports, err := evidence.Verify(ctx, s); err != nil || len(reports) != 3 || reports[0].Broken != nil || reports[0].Checked != 81 {
		t.Fatalf("Verify after appending: %+v, %v", reports, err)
	}
}

// countedAndIn is how many records s's aggregate over q counts, and how
// many of recs fall in the minutes q overlaps.
func countedAndIn(t *testing.T, s *sqlite.Store, q evidence.AggregateQuery, recs []*evidence.Record) (counted, in int64) {
	t.Helper()
	groups, err := s.Aggregate(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		counted += g.Count
	}
	for _, r := range recs {
		if m := r.Time.Truncate(time.Minute); m.Add(time.Minute).After(q.Since) && m.Before(q.Until) {
			in++
		}
	}
	return counted, in
}

func unzip(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	z, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, z); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestMigrateFromSchema4 opens a file written by schema 4, before rollup
// seals (testdata/schema4.db.gz: evidencetest.Varied(240, 40, 4) appended,
// then retention of the records before Base+24h20m and of the rollup
// buckets that ended before Base+6h20m, then closed). The migrated store
// verifies intact; its first retention seals every hour it still holds
// whole, up to its cut, and Verify then finds an edit to those hours.
func TestMigrateFromSchema4(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "schema4.db")
	unzip(t, "testdata/schema4.db.gz", path)
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open (migrating): %v", err)
	}
	defer func() { s.Close() }()
	intact := func(when string) {
		t.Helper()
		reports, err := evidence.Verify(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, rep := range reports {
			if rep.Broken != nil {
				t.Errorf("%s: %s broken: %+v", when, rep.Replica, *rep.Broken)
			}
		}
	}
	intact("after the migration")
	cut := evidencetest.Base.Add(3*24*time.Hour + 10*time.Minute)
	if _, err := s.DeleteBefore(ctx, cut, time.Time{}, 100); err != nil {
		t.Fatal(err)
	}
	for _, replica := range evidencetest.Replicas {
		var seals []evidence.RollupSeal
		head, err := s.RollupSeals(ctx, replica, func(seal evidence.RollupSeal) error {
			seals = append(seals, seal)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The minutes the old retention left start at Base+6h20m: the hours
		// from Base+7h are whole, the one before only in part.
		first := evidence.SealsUntil(evidencetest.Base.Add(6 * time.Hour))
		if head.First < first || head.First > first+1 || head.Through != evidence.SealsUntil(cut) || int64(len(seals)) != head.Through-head.First {
			t.Errorf("the seals of %s: %d from hour %d to %d; want them from hour %d or %d to %d", replica, len(seals), head.First, head.Through,
				first, first+1, evidence.SealsUntil(cut))
		}
	}
	intact("after the first seals")
	s.Close()
	db := rawDB(t, path)
	if _, err := db.ExecContext(ctx, `UPDATE rollups SET count = count + 1 WHERE (span, minute, key) =
		(SELECT span, minute, key FROM rollups WHERE span = 1 AND minute >= ? ORDER BY minute LIMIT 1)`,
		evidencetest.Base.Add(30*time.Hour).Unix()/60); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err = sqlite.Open(ctx, path, evidence.Options{}); err != nil {
		t.Fatal(err)
	}
	reports, err := evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reports {
		if rep.Replica == evidence.RollupsReplica && rep.Broken != nil {
			return
		}
	}
	t.Fatalf("a sealed minute edited after the upgrade went unnoticed: %+v", reports)
}

// TestMigrateFromSchema5 opens a file written by schema 5, the last with
// JSON bodies (testdata/schema5.db.gz, made on main at 5fc8929 by a test
// behind an environment variable: evidencetest.Varied(240, 40, 5)
// appended; 700 traffic records (traffic.New(t, 5, "replica-traffic"))
// from Base+25h-300ms, 1 ms apart, in batches of 100; an amendment of the
// 401st; one quarantined traffic record; 60 more; then DeleteBefore
// (Base+25h10m), which cut every chain, the traffic one inside its second
// tile of 256 leaves; testdata/schema5.jsonl.gz is its ScanJSON then). The
// migration copies every record into the compact table: each reads back
// byte for byte as schema 5 served it (ScanJSON, QueryJSON, Get), the
// chains verify intact, the log's proofs hold against its root with the
// tiles of level 0 gone, and the chains go on.
func TestMigrateFromSchema5(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "schema5.db")
	unzip(t, "testdata/schema5.db.gz", path)
	jsonl := filepath.Join(t.TempDir(), "schema5.jsonl")
	unzip(t, "testdata/schema5.jsonl.gz", jsonl)
	raw, err := os.ReadFile(jsonl)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open (migrating): %v", err)
	}
	defer func() { s.Close() }()

	var got []string
	if err := s.ScanJSON(ctx, evidence.Filter{}, func(b []byte) error {
		got = append(got, string(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) != 650 {
		t.Fatalf("ScanJSON after the migration: %d records, schema 5 served %d (650)", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d reads otherwise after the migration:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	page, _, err := s.QueryJSON(ctx, evidence.Filter{Replica: "replica-traffic"}, evidence.PageRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	for _, line := range want {
		var r evidence.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		byID[r.ID] = line
		if r.Replica == "replica-traffic" && r.Chain.Seq%7 == 0 {
			rec, err := s.Get(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := evidence.RecordJSON(rec); err != nil || string(b) != line {
				t.Fatalf("Get(%s) after the migration:\n got %s\nwant %s", r.ID, b, line)
			}
		}
	}
	if len(page) != 461 {
		t.Errorf("QueryJSON of the traffic replica: %d records, want 461", len(page))
	}
	for _, b := range page {
		var r evidence.Record
		if err := json.Unmarshal(b, &r); err != nil || byID[r.ID] != string(b) {
			t.Fatalf("QueryJSON gives %s, schema 5 served %s", b, byID[r.ID])
		}
	}

	intact := func(when string, checked map[string]int64) {
		t.Helper()
		reports, err := evidence.Verify(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, rep := range reports {
			if rep.Broken != nil || (checked[rep.Replica] != 0 && rep.Checked != checked[rep.Replica]) {
				t.Errorf("%s: %s checked %d, broken: %+v", when, rep.Replica, rep.Checked, rep.Broken)
			}
		}
	}
	intact("after the migration", map[string]int64{"replica-a": 63, "replica-traffic": 461})

	// The file is schema 6: no JSON body, no hash column, no free page, no tile of level
	// 0 but those retention cut into: the first 17 leaves of replicas a, b
	// and c (stored so), the traffic's second tile (stored whole).
	s.Close()
	db := rawDB(t, path)
	var version, bodies, level0, free int
	var tile string
	if err := db.QueryRowContext(ctx, `SELECT (SELECT freelist_count FROM pragma_freelist_count), (SELECT version FROM schema_version),
		(SELECT count(*) FROM pragma_table_info('records') WHERE name IN ('body', 'hash')),
		(SELECT count(*) FROM tlog_tiles WHERE level = 0),
		(SELECT group_concat(replica || '/' || n || '/' || length(hashes), ' ') FROM (SELECT * FROM tlog_tiles WHERE level = 0 ORDER BY replica))`).Scan(&free, &version, &bodies, &level0, &tile); err != nil {
		t.Fatal(err)
	}
	// The old table's pages went back to the file system (VACUUM).
	if free != 0 {
		t.Errorf("%d free pages in the file after the migration, want 0", free)
	}
	if want := "replica-a/0/544 replica-b/0/544 replica-c/0/544 replica-traffic/1/8192"; version != sqlite.SchemaVersion || bodies != 0 || level0 != 4 || tile != want {
		t.Errorf("after the migration: schema %d, %d of body/hash columns, %d tiles of level 0 (%s); want %d, 0, 4 (%s)",
			version, bodies, level0, tile, sqlite.SchemaVersion, want)
	}
	db.Close()
	if s, err = sqlite.Open(ctx, path, evidence.Options{}); err != nil {
		t.Fatal(err)
	}

	// Proofs of the traffic log, level 0 from the records, against its
	// root as the last write of schema 5 left it.
	th, ok, err := s.TreeHead(ctx, "replica-traffic")
	if err != nil || !ok || th.Size != 762 {
		t.Fatalf("TreeHead = %+v, %v, %v; want a log of 762 leaves", th, ok, err)
	}
	hr := evidence.StoredHashReader(ctx, s, "replica-traffic")
	if root, err := tlog.TreeHash(th.Size, hr); err != nil || root != th.Root {
		t.Fatalf("the root from the tiles and records: %v, %v; the head's %v", root, err, th.Root)
	}
	for _, seq := range []uint64{301, 400, 512, 513, 700, 702, 703, 762} {
		leaf := th.Leaf(seq)
		p, err := tlog.ProveRecord(th.Size, leaf, hr)
		if err != nil {
			t.Fatalf("ProveRecord(seq %d): %v", seq, err)
		}
		h, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, leaf)})
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, th.Size, th.Root, leaf, h[0]); err != nil {
			t.Errorf("seq %d: %v", seq, err)
		}
	}

	// The chains go on from their heads.
	m := traffic.New(t, 6, "replica-traffic")
	next := m.Batch(evidencetest.Base.Add(27*time.Hour), time.Millisecond, 300)
	head, err := s.Head(ctx, "replica-traffic")
	if err != nil {
		t.Fatal(err)
	}
	evidencetest.Link(head, next...)
	if err := s.Append(ctx, next); err != nil {
		t.Fatalf("Append after the migration: %v", err)
	}
	intact("after appending", map[string]int64{"replica-traffic": 761})
}

// TestMigrate1M measures the migration to schema 6 of a file schema 5
// wrote (MESHPROOF_BENCH_MIGRATE=PATH, e.g. 1,000,000 traffic records as
// BenchmarkBytesPerRecord writes them, made with the code before
// migration 6): it migrates a copy, sampling the sizes of the file and its
// WAL every 100 ms, and logs the time, the peaks (the free disk the
// migration needs beyond the file), the size after, and then verifies it.
func TestMigrate1M(t *testing.T) {
	from := os.Getenv("MESHPROOF_BENCH_MIGRATE")
	if from == "" {
		t.Skip("set MESHPROOF_BENCH_MIGRATE=PATH (a schema-5 file) to measure its migration")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "migrate.db")
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	in.Close()
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	before := fileSize(path)
	done := make(chan struct{})
	peaks := make(chan [3]int64)
	go func() {
		var peak [3]int64 // main, wal, sum
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			m, w := fileSize(path), fileSize(path+"-wal")
			peak = [3]int64{max(peak[0], m), max(peak[1], w), max(peak[2], m+w)}
			select {
			case <-done:
				peaks <- peak
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	took := time.Since(start)
	close(done)
	peak := <-peaks
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	after := fileSize(path) + fileSize(path+"-wal")
	t.Logf("migrated %d records in %s: file %d MB before, %d MB after; peaks during the migration: file %d MB, WAL %d MB, both %d MB (%d MB beyond the file before)",
		st.Records, took.Round(time.Second), before>>20, after>>20, peak[0]>>20, peak[1]>>20, peak[2]>>20, (peak[2]-before)>>20)
	vs := time.Now()
	reports, err := evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reports {
		if rep.Broken != nil {
			t.Errorf("%s broken after the migration: %+v", rep.Replica, *rep.Broken)
		}
		t.Logf("verify %s: %d records intact (%s)", rep.Replica, rep.Checked, time.Since(vs).Round(time.Second))
	}
}

// TestMigrateFromSchema6 opens a file written by schema 6, before edges
// held workloads (testdata/schema6.db.gz: evidencetest.VariedWorkloads(240,
// 40, 6) appended by the store of main at 9ecc27f, then closed): records
// whose peers have workloads move to edges that name them, so that the
// workload filters, and the namespace filters that fall back to a
// workload's namespace, find what the records say, through the edges;
// every record reads back as it was written; the rollups move from the
// keys schema 6 counted those records under (addresses) to the ones
// evidence.SourceKey gives now (workloads, mismatched identities), so the
// chains and the rollups verify intact, and go on.
func TestMigrateFromSchema6(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "schema6.db")
	unzip(t, "testdata/schema6.db.gz", path)
	s, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open (migrating): %v", err)
	}
	defer func() { s.Close() }()
	fx := evidencetest.VariedWorkloads(240, 40, 6)

	for _, r := range fx.Records {
		got, err := s.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		gb, _ := evidence.RecordJSON(got)
		wb, _ := evidence.RecordJSON(r)
		if string(gb) != string(wb) {
			t.Fatalf("record %s reads otherwise after the migration:\n got %s\nwant %s", r.ID, gb, wb)
		}
	}
	filters := []evidence.Filter{
		{},
		{SourceWorkload: "legacy/sleep"},
		{SourceWorkload: "payments/api"},
		{DestinationWorkload: "payments/ledger", Verdicts: []evidence.Verdict{evidence.MTLS}},
		{SourceNamespace: "legacy"},
		{DestinationNamespace: "legacy"},
		{Namespace: "legacy", Allowed: ptr(true)},
		{Source: "spiffe://cluster.local/ns/shop/sa/frontend"},
		{Host: "ledger.payments:8443", Method: "GET"},
	}
	check := func(when string, recs []*evidence.Record) {
		t.Helper()
		evidencetest.QueryMatchesOracle(ctx, t, s, when, recs, filters)
	}
	check("after the migration", fx.Records)
	// The reports' clients are keyed as the records now say.
	groups, err := s.Aggregate(ctx, evidence.AggregateQuery{Until: evidencetest.Base.Add(10 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, r := range fx.Records {
		evidence.RollupDeltas(r, func(k evidence.RollupKey, d int64) { want[k.Source] += d })
	}
	got := map[string]int64{}
	for _, g := range groups {
		got[g.Source] += g.Count
	}
	for k, n := range want {
		if n != 0 && got[k] != n {
			t.Errorf("aggregate: source %q counts %d, the records %d", k, got[k], n)
		}
	}
	if want["workload:legacy/Deployment/sleep"] == 0 || want["203.0.113.50"] != 0 {
		t.Errorf("fixture: a workload key %d times, its address %d", want["workload:legacy/Deployment/sleep"], want["203.0.113.50"])
	}
	intact := func(when string, checked int64) {
		t.Helper()
		reports, err := evidence.Verify(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 3 {
			t.Errorf("%s: %d reports, want 3 chains and no rollup report: %+v", when, len(reports), reports)
		}
		for _, rep := range reports {
			if rep.Broken != nil || rep.Checked != checked {
				t.Errorf("%s: chain %s: %d checked, broken: %+v", when, rep.Replica, rep.Checked, rep.Broken)
			}
		}
	}
	intact("after the migration", 80)

	// The chains go on: a record of an edge the migration made lands on it.
	more := evidencetest.NextWorkloadRecords(ctx, t, s, fx)
	check("after appending", append(fx.Records, more...))
	intact("after appending", 81)
	s.Close()
	db := rawDB(t, path)
	defer db.Close()
	var dup int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM edges e JOIN edges f ON e.id < f.id AND e.replica = f.replica
		AND e.src_principal = f.src_principal AND e.src_ns = f.src_ns AND e.dst_principal = f.dst_principal
		AND e.dst_ns = f.dst_ns AND e.host = f.host AND e.verdict = f.verdict AND e.allowed = f.allowed
		AND e.src_wl = f.src_wl AND e.dst_wl = f.dst_wl AND e.src_td = f.src_td AND e.dst_td = f.dst_td`).Scan(&dup); err != nil || dup != 0 {
		t.Errorf("%d pairs of edges alike after appending (%v), want 0", dup, err)
	}
}
