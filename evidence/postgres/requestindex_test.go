package postgres_test

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// TestAppendSummarizesRequestIndex: Append summarizes the request id
// index's new ranges itself (PostgreSQL's autosummarize never summarizes
// the range being filled, and may drop requests under load), so nothing is
// left for brin_summarize_new_values afterwards, and the newest records
// are found by request id.
func TestAppendSummarizesRequestIndex(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	s.SummarizeEvery(0)
	m := traffic.New(t, 1, "r1")
	var head evidence.Link
	at := time.Now().UTC().Truncate(24 * time.Hour).Add(time.Hour)
	var last []*evidence.Record
	for range 3 {
		last = m.Batch(at, time.Millisecond, 2000)
		at = at.Add(2 * time.Second)
		head = evidencetest.Link(head, last...)
		if err := s.Append(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	var left int64
	if err := s.Pool().QueryRow(ctx, `SELECT sum(brin_summarize_new_values(relid))::bigint
		FROM pg_partition_tree('records_request_uuid'::regclass) WHERE isleaf`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d ranges of the request id index left unsummarized after Append", left)
	}
	for _, r := range last[len(last)-5:] {
		res, err := s.Query(ctx, evidence.Filter{RequestID: r.RequestID}, evidence.PageRequest{})
		if err != nil || len(res.Records) != 1 || res.Records[0].ID != r.ID {
			t.Errorf("Query(request id %s) = %v, %v; want %s", r.RequestID, evidencetest.IDs(res.Records), err, r.ID)
		}
	}
}

// TestRequestLookupPlan: a request id filter is answered by
// records_by_request and the records' chain index, and the function's query
// (under its own settings) reads the BRIN bloom index of every partition,
// never a partition whole. Planned by itself, PostgreSQL scans most
// partitions sequentially (it cannot price the bloom filter), which made a
// lookup at 10,000,000 records take 343 ms instead of 15.
func TestRequestLookupPlan(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	m := traffic.New(t, 1, "r1")
	var head evidence.Link
	at := time.Now().UTC().Add(-72 * time.Hour)
	var recs []*evidence.Record
	for range 3 { // three days, three partitions
		batch := m.Batch(at, time.Millisecond, 3000)
		head = evidencetest.Link(head, batch...)
		if err := s.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, batch...)
		at = at.Add(24 * time.Hour)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE records"); err != nil {
		t.Fatal(err)
	}
	r := recs[4000]
	q, a := postgres.RequestLookupSQL(r.RequestID)
	// The partitions that hold records (the empty ones made ahead cost
	// nothing to scan).
	var parts []string
	for _, day := range []time.Time{recs[0].Time, recs[3000].Time, recs[6000].Time} {
		parts = append(parts, "Seq Scan on records_"+day.Format("20060102"))
	}
	scansWhole := func(p string) bool {
		return slices.ContainsFunc(parts, func(part string) bool { return strings.Contains(p, part) })
	}
	if p := explain(t, s.Pool(), q, a...); !strings.Contains(p, "records_by_request") || !strings.Contains(p, "chain_idx") || scansWhole(p) {
		t.Errorf("a request id page is not planned through records_by_request and records_chain:\n%s", p)
	}
	// The function's own query, with its SET clauses.
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var body string
	if err := tx.QueryRow(ctx, "SELECT prosrc FROM pg_proc WHERE proname = 'records_by_request'").Scan(&body); err != nil {
		t.Fatal(err)
	}
	var cfg []string
	if err := tx.QueryRow(ctx, "SELECT proconfig FROM pg_proc WHERE proname = 'records_by_request'").Scan(&cfg); err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg {
		name, value, _ := strings.Cut(c, "=")
		if _, err := tx.Exec(ctx, "SELECT set_config($1, $2, true)", name, value); err != nil {
			t.Fatal(err)
		}
	}
	k := postgres.RequestKey(r.RequestID)
	body = strings.NewReplacer("rid", "$1", "= k", "= $2").Replace(body)
	if p := explain(t, tx, body, k, int64(binary.BigEndian.Uint64(k[:8]))); strings.Count(p, "Bitmap Index Scan") < 3 || scansWhole(p) {
		t.Errorf("records_by_request's query does not read the bloom index of each partition:\n%s", p)
	}
	res, err := s.Query(ctx, evidence.Filter{RequestID: r.RequestID}, evidence.PageRequest{})
	if err != nil || len(res.Records) != 1 || res.Records[0].ID != r.ID {
		t.Errorf("Query(request id %s) = %v, %v; want %s", r.RequestID, evidencetest.IDs(res.Records), err, r.ID)
	}
}

// TestShapeLookupPlan: a filter names its shapes through an index, not a
// scan of them all. A shape holds its peers' certificates, which Istio
// renews daily, so a store gains shapes every day: 30,000 here, a month of
// a few hundred edges.
func TestShapeLookupPlan(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	if _, err := s.Pool().Exec(ctx, `INSERT INTO shapes (digest, allowed, replica, source_principal, destination_principal,
			source_trust_domain, destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host,
			body, source_workload, destination_workload)
		SELECT sha256(i::text::bytea), true, 'r1', 'spiffe://cluster.local/ns/ns-' || i % 300 || '/sa/svc-' || i % 3000,
			'spiffe://cluster.local/ns/ns-' || (i + 1) % 300 || '/sa/svc-' || (i + 7) % 3000, 'cluster.local', 'cluster.local',
			'ns-' || i % 300, 'ns-' || (i + 1) % 300, 'spiffe://cluster.local/ns/ns-' || i % 300 || '/sa/svc-' || i % 3000, 'mtls', 'GET',
			'svc-' || (i + 7) % 3000 || '.ns-' || (i + 1) % 300 || ':8080', '\x00', 'ns-' || i % 300 || '/svc-' || i % 3000,
			'ns-' || (i + 1) % 300 || '/svc-' || (i + 7) % 3000
		FROM generate_series(1, 30000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE shapes"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []evidence.Filter{
		{Source: "spiffe://cluster.local/ns/ns-7/sa/svc-7"},
		{SourcePrefix: "spiffe://cluster.local/ns/ns-7/"},
		{Destination: "spiffe://cluster.local/ns/ns-8/sa/svc-14", Verdicts: []evidence.Verdict{evidence.Plaintext}},
		{SourceNamespace: "ns-7"},
		{DestinationNamespace: "ns-8"},
		{Namespace: "ns-7"},
		{SourceWorkload: "ns-7/svc-7"},
		{DestinationWorkload: "ns-8/svc-14"},
		{Host: "svc-14.ns-8"},
		{Host: "svc-14.ns-8:8080"},
	} {
		q, a := postgres.ShapeLookupSQL(f)
		if p := explain(t, s.Pool(), q, a...); strings.Contains(p, "Seq Scan on shapes") || !strings.Contains(p, "shapes_") {
			t.Errorf("%+v: its shapes are not found through an index:\n%s", f, p)
		}
	}
}

// explain is PostgreSQL's plan of sql, a line per node.
func explain(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) string {
	t.Helper()
	rows, err := db.Query(context.Background(), "EXPLAIN "+sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
