package postgres_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// restore loads a plain pg_dump (gzipped) into the database dsn names, as
// psql would (its meta-commands, \restrict and \unrestrict, left out).
// The fixtures in testdata were written by the previous meshproof's own
// code and dumped with pg_dump (DEVELOPERS.md says how).
func restore(t *testing.T, dsn, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var sql strings.Builder
	sc := bufio.NewScanner(z)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, `\`) {
			sql.WriteString(line)
			sql.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql.String(), pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("restoring %s: %v", path, err)
	}
}

// TestMigrateFromSchema4: a database the previous meshproof wrote
// (testdata/schema4.sql.gz: three replicas of varied records, a legacy
// chain of v1 records then v2 ones with an amendment and a quarantined
// record, realistic traffic with peer certificates, and a day removed by
// retention) migrates to the compact records, verifies intact, and gives
// back every record byte for byte: its stored bytes and the API's JSON, as
// schema 4 held them (read from it before the migration), through Get,
// Query, QueryJSON, ScanJSON and Walk. Filters agree with the oracle, and
// the chains go on.
func TestMigrateFromSchema4(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	restore(t, dsn, "testdata/schema4.sql.gz")

	// What schema 4 holds: each record's stored bytes, hash and JSON.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT id, replica, seq, hash, body FROM records")
	if err != nil {
		t.Fatal(err)
	}
	wants := map[string]*want{}
	perReplica := map[string]int64{}
	var id string
	var w want
	if _, err := pgx.ForEachRow(rows, []any{&id, &w.replica, &w.seq, &w.hash, &w.body}, func() error {
		r, err := evidence.DecodeStored(id, w.body, uint64(w.seq), w.hash)
		if err != nil {
			return err
		}
		if r.Chain.Version != evidence.CanonicalV2 {
			r.Chain.Hash = w.hash
		}
		w.json = evidence.AppendRecordJSON(nil, w.body, uint64(w.seq), w.hash)
		w.rec = r
		c := w
		wants[id] = &c
		perReplica[w.replica]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if len(wants) < 800 || len(perReplica) != 5 {
		t.Fatalf("fixture: %d records of %d replicas", len(wants), len(perReplica))
	}

	start := time.Now()
	done, err := postgres.MigrateVersions(ctx, dsn)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if done.From != 4 || done.To != postgres.SchemaVersion {
		t.Errorf("migrated from %d to %d, want 4 to %d", done.From, done.To, postgres.SchemaVersion)
	}
	t.Logf("%d records migrated in %s", len(wants), time.Since(start).Round(time.Millisecond))
	s := open(t, dsn)
	var left bool
	if err := s.Pool().QueryRow(ctx, "SELECT to_regclass('records_v4') IS NOT NULL").Scan(&left); err != nil || left {
		t.Errorf("records_v4 left after the migration (%v)", err)
	}

	checkMigrated(t, s, wants, perReplica, 1)
}

// want is a record as the previous schema held and served it.
type want struct {
	replica string
	seq     int64
	hash    string
	body    []byte // its stored (canonical) bytes
	json    []byte // the API's JSON of it
	rec     *evidence.Record
}

// checkMigrated checks a migrated store against what the previous schema
// held (wants, by id; perReplica, records per chain): the chains verify
// with quarantined records listed, every record comes back byte for byte
// through Get, ScanJSON, Walk and QueryJSON, filters agree with the
// oracle, a request id is found through its index, and the chains go on.
func checkMigrated(t *testing.T, s *postgres.Store, wants map[string]*want, perReplica map[string]int64, quarantinedWant int) {
	t.Helper()
	ctx := context.Background()
	reports, err := evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	quarantined := 0
	for _, rep := range reports {
		if rep.Replica == evidence.RollupsReplica {
			continue
		}
		if rep.Broken != nil || rep.Checked != perReplica[rep.Replica] {
			t.Errorf("chain %s after the migration: %d checked (want %d), broken: %+v", rep.Replica, rep.Checked, perReplica[rep.Replica], rep.Broken)
		}
		quarantined += len(rep.Quarantined)
	}
	if quarantined != quarantinedWant {
		t.Errorf("%d quarantined records listed, want %d", quarantined, quarantinedWant)
	}

	// Every record, byte for byte, through every read.
	for id, w := range wants {
		r, err := s.Get(ctx, id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		body, err := evidence.StoredBody(r)
		if err != nil || string(body) != string(w.body) || r.Chain.Hash != w.hash || int64(r.Chain.Seq) != w.seq {
			t.Fatalf("Get(%s): stored bytes or chain differ after the migration:\n%s (%+v)\nwant\n%s (seq %d, %s)", id, body, r.Chain, w.body, w.seq, w.hash)
		}
	}
	seen := 0
	if err := s.ScanJSON(ctx, evidence.Filter{}, func(b []byte) error {
		r := idOfJSON(t, b)
		if w := wants[r.ID]; w == nil || string(b) != string(w.json) {
			t.Fatalf("ScanJSON: record %s differs after the migration:\n%s", r.ID, b)
		}
		seen++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen != len(wants) {
		t.Errorf("ScanJSON gave %d records, want %d", seen, len(wants))
	}
	for replica := range perReplica {
		if err := s.Walk(ctx, replica, func(r *evidence.Record, st evidence.Stored) error {
			if w := wants[r.ID]; st.Err != nil || w == nil || string(st.Body) != string(w.body) {
				t.Fatalf("Walk(%s): record %s: %v", replica, r.ID, st.Err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// Filters against the oracle, paged (QueryJSON as the API serves them).
	var all []*evidence.Record
	for _, w := range wants {
		all = append(all, w.rec)
	}
	for _, f := range []evidence.Filter{
		{},
		{Since: evidencetest.Base.Add(60 * time.Hour)},
		{Source: "spiffe://cluster.local/ns/shop/sa/frontend"},
		{SourcePrefix: "spiffe://cluster.local/ns/shop"},
		{Destination: "spiffe://cluster.local/ns/payments/sa/ledger", Verdicts: []evidence.Verdict{evidence.MTLS}},
		{Namespace: "shop", Allowed: ptr(false)},
		{TrustDomain: "partner.example"},
		{NotVerdicts: []evidence.Verdict{evidence.MTLS}},
		{Host: "ledger.payments:8443", Method: "GET"},
		{PathPrefix: "/api/v1"},
		{RequestID: "req-shared"},
		{RequestID: "req-00202"},
		{Replica: "legacy"},
		{Replica: "traffic", Verdicts: []evidence.Verdict{evidence.Plaintext}},
	} {
		var got []string
		page := evidence.PageRequest{Limit: 25}
		for {
			bodies, next, err := s.QueryJSON(ctx, f, page)
			if err != nil {
				t.Fatalf("QueryJSON(%+v): %v", f, err)
			}
			for _, b := range bodies {
				r := idOfJSON(t, b)
				if string(b) != string(wants[r.ID].json) {
					t.Fatalf("QueryJSON(%+v): record %s differs", f, r.ID)
				}
				got = append(got, r.ID)
			}
			if page.Cursor = next; next == "" {
				break
			}
		}
		want := evidencetest.IDs(evidencetest.NewestFirst(all, f))
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("%+v: got %d records, want %d (and some)", f, len(got), len(want))
		}
		if n, err := s.Count(ctx, f); err != nil || n != int64(len(want)) {
			t.Errorf("Count(%+v) = %d, %v; want %d", f, n, err, len(want))
		}
	}
	// Every request id of the traffic (UUIDs), through their index.
	traffic := 0
	for _, w := range wants {
		if w.replica == "traffic" {
			res, err := s.Query(ctx, evidence.Filter{RequestID: w.rec.RequestID}, evidence.PageRequest{})
			if err != nil || len(res.Records) != 1 || res.Records[0].ID != w.rec.ID {
				t.Fatalf("Query(request id %s) = %v, %v; want %s", w.rec.RequestID, evidencetest.IDs(res.Records), err, w.rec.ID)
			}
			traffic++
		}
	}
	if traffic == 0 {
		t.Error("no traffic records to look up by request id")
	}

	// The chains go on from their heads.
	for replica := range perReplica {
		head, err := s.Head(ctx, replica)
		if err != nil {
			t.Fatal(err)
		}
		r := evidencetest.Full(replica+"-next", replica, time.Now().UTC())
		evidencetest.Link(head, r)
		if err := s.Append(ctx, []*evidence.Record{r}); err != nil {
			t.Fatalf("Append to %s after the migration: %v", replica, err)
		}
		perReplica[replica]++
	}
	reports, err = evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range reports {
		if rep.Replica != evidence.RollupsReplica && (rep.Broken != nil || rep.Checked != perReplica[rep.Replica]) {
			t.Errorf("chain %s after appending: %d checked, broken: %+v", rep.Replica, rep.Checked, rep.Broken)
		}
	}
}

// TestMigrateFromSchema5: a database the previous meshproof wrote
// (testdata/schema5.sql.gz, the same records as schema4.sql.gz written by
// schema 5's code at 9ecc27f; testdata/schema5.jsonl.gz is its ScanJSON
// then) migrates, verifies intact, and serves every record exactly as
// schema 5 served it.
func TestMigrateFromSchema5(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	restore(t, dsn, "testdata/schema5.sql.gz")
	f, err := os.Open("testdata/schema5.jsonl.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	wants := map[string]*want{}
	perReplica := map[string]int64{}
	sc := bufio.NewScanner(z)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r evidence.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		body, err := evidence.StoredBody(&r)
		if err != nil {
			t.Fatal(err)
		}
		wants[r.ID] = &want{replica: r.Replica, seq: int64(r.Chain.Seq), hash: r.Chain.Hash, body: body,
			json: slices.Clone(sc.Bytes()), rec: &r}
		perReplica[r.Replica]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(wants) != 901 || len(perReplica) != 5 {
		t.Fatalf("fixture: %d records of %d replicas, want 901 of 5", len(wants), len(perReplica))
	}
	done, err := postgres.MigrateVersions(ctx, dsn)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if done.From != 5 || done.To != postgres.SchemaVersion {
		t.Errorf("migrated from %d to %d, want 5 to %d", done.From, done.To, postgres.SchemaVersion)
	}
	checkMigrated(t, open(t, dsn), wants, perReplica, 1)
}

// idOfJSON reads the id of a record's JSON.
func idOfJSON(t *testing.T, b []byte) (r struct{ ID string }) {
	t.Helper()
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// TestMigrateRefusesAnEditedRecord: a schema-4 record whose stored bytes
// no longer hash to its hash column stops the migration, naming it, and
// leaves the database at schema 4.
func TestMigrateRefusesAnEditedRecord(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	restore(t, dsn, "testdata/schema4.sql.gz")
	var id string
	if err := connect(t, dsn).QueryRow(ctx, `UPDATE records SET body = replace(convert_from(body, 'UTF8'), '"verdict":"plaintext"', '"verdict":"mtls"')::bytea
		WHERE id = (SELECT id FROM records WHERE replica = 'replica-b' AND body LIKE '%"verdict":"plaintext"%' ORDER BY seq LIMIT 1) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	_, err := postgres.MigrateVersions(ctx, dsn)
	if err == nil || !strings.Contains(err.Error(), id) {
		t.Fatalf("Migrate of an edited record = %v, want an error naming %s", err, id)
	}
	if _, err := postgres.Open(ctx, dsn, evidence.Options{}); !errors.Is(err, evidence.ErrSchema) || !strings.Contains(err.Error(), "schema version 4") {
		t.Errorf("Open after the refused migration = %v, want schema version 4", err)
	}
}

// BenchmarkMigrate migrates the database MESHPROOF_BENCH_MIGRATE_DSN names,
// one the previous meshproof wrote (schema 4), to this schema, and reports
// the time, the database's size before and after, and the most it took on
// the way (pg_database_size polled every 100 ms: the old records and the
// new ones exist together until the migration's transaction commits). The
// database is migrated for good: run it on a copy (CREATE DATABASE copy
// TEMPLATE original).
func BenchmarkMigrate(b *testing.B) {
	dsn := os.Getenv("MESHPROOF_BENCH_MIGRATE_DSN")
	if dsn == "" {
		b.Skip("set MESHPROOF_BENCH_MIGRATE_DSN to a schema-4 database to migrate (a copy: it is migrated for good)")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	size := func() int64 {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	var records int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM records").Scan(&records); err != nil {
		b.Fatal(err)
	}
	before := size()
	for range b.N {
		stop := make(chan struct{})
		peak := make(chan int64)
		go func() {
			top := before
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					peak <- top
					return
				case <-t.C:
					top = max(top, size())
				}
			}
		}()
		start := time.Now()
		done, err := postgres.MigrateVersions(ctx, dsn)
		took := time.Since(start)
		close(stop)
		top := <-peak
		if err != nil {
			b.Fatal(err)
		}
		after := size()
		b.ReportMetric(took.Seconds(), "s")
		b.ReportMetric(float64(records)/took.Seconds(), "records/s")
		b.Logf("schema %d to %d: %d records in %s; database %d MB before, %d MB after, at most %d MB on the way (%d MB more than before)",
			done.From, done.To, records, took.Round(time.Millisecond), before>>20, after>>20, top>>20, (top-before)>>20)
	}
}

// TestMigrateFromSchema6: a database schema 6 wrote with records whose
// peers have workloads (testdata/schema6.sql.gz:
// evidencetest.VariedWorkloads(240, 40, 6) appended by the store of main
// at b0de6d3; make_fixtures_test.go.txt) migrates to schema 7: the shapes
// that hold a workload get their workload columns, their namespaces (the
// workload's where there is no SPIFFE ID) and source key, so the workload
// and namespace filters find what the records say; the rollups move from
// the keys schema 6 counted those records under (addresses) to the ones
// evidence.SourceKey gives now; every record reads back as written, the
// chains and the rollups verify and go on, and a record appended after
// lands on its existing shape. Without the backfill the filters find
// nothing and verify finds the shapes' columns and the rollups stale.
func TestMigrateFromSchema6(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	restore(t, dsn, "testdata/schema6.sql.gz")
	done, err := postgres.MigrateVersions(ctx, dsn)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if done.From != 6 || done.To != postgres.SchemaVersion {
		t.Errorf("migrated from %d to %d, want 6 to %d", done.From, done.To, postgres.SchemaVersion)
	}
	s := open(t, dsn)
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
	check := func(when string, recs []*evidence.Record) {
		t.Helper()
		evidencetest.QueryMatchesOracle(ctx, t, s, when, recs, []evidence.Filter{
			{},
			{SourceWorkload: "legacy/sleep"},
			{SourceWorkload: "payments/api"},
			{DestinationWorkload: "payments/ledger", Verdicts: []evidence.Verdict{evidence.MTLS}},
			{SourceNamespace: "legacy"},
			{DestinationNamespace: "legacy"},
			{Namespace: "legacy", Allowed: ptr(true)},
			{Source: "spiffe://cluster.local/ns/shop/sa/frontend"},
		})
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
	check("after the migration", fx.Records)
	intact("after the migration", 80)
	var shapes int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM shapes").Scan(&shapes); err != nil {
		t.Fatal(err)
	}
	more := evidencetest.NextWorkloadRecords(ctx, t, s, fx)
	check("after appending", append(fx.Records, more...))
	intact("after appending", 81)
	var after int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM shapes").Scan(&after); err != nil || after != shapes {
		t.Errorf("%d shapes after appending records of stored shapes, %d before (%v)", after, shapes, err)
	}
}
