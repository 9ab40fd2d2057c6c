package postgres_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// BenchmarkBytesPerRecord writes realistic traffic (package traffic: 300
// edges, peer certificates on mTLS edges, random request and trace ids, at
// 1,000 records a second) through a Recorder into a fresh database, then
// VACUUMs and CHECKPOINTs and reports the bytes each record takes on disk,
// everything included (pg_total_relation_size of every table, partitions,
// TOAST and indexes included), beside the size of the same records' JSON.
// MESHPROOF_BENCH_RECORDS records, 100,000 by default. With -v it logs the
// bytes per record of each table and index (partitions summed into their
// parent) and what the JSON consists of. Not timed: one run per b.N.
func BenchmarkBytesPerRecord(b *testing.B) {
	n := 100_000
	if v := os.Getenv("MESHPROOF_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("MESHPROOF_BENCH_RECORDS=%q: want a positive number of records", v)
		}
	}
	ctx := context.Background()
	for range b.N {
		s := open(b, postgrestest.DSN(b))
		w, err := traffic.Write(ctx, s, traffic.New(b, 1, "bench"), n, time.Now(), time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		for _, q := range []string{"VACUUM", "CHECKPOINT"} {
			if _, err := s.Pool().Exec(ctx, q); err != nil {
				b.Fatalf("%s: %v", q, err)
			}
		}
		// Every table and index of the store's schema; a partition (and
		// its indexes) counts under its parent.
		rows, err := s.Pool().Query(ctx, `
			WITH RECURSIVE rel AS (
				SELECT c.oid, c.relname, c.relkind FROM pg_class c
				JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'i', 'I')),
			top(oid, name) AS (
				SELECT oid, relname::text FROM rel WHERE NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = rel.oid)
				UNION ALL
				SELECT i.inhrelid, top.name FROM pg_inherits i JOIN top ON i.inhparent = top.oid)
			SELECT top.name, CASE WHEN rel.relkind IN ('i', 'I') THEN 'index' ELSE 'table' END, count(*),
				sum(CASE WHEN rel.relkind IN ('i', 'I') THEN pg_total_relation_size(rel.oid) ELSE pg_table_size(rel.oid) END)::bigint
			FROM top JOIN rel ON rel.oid = top.oid
			GROUP BY 1, 2 ORDER BY 4 DESC`)
		if err != nil {
			b.Fatal(err)
		}
		type line struct {
			name, kind  string
			rels, bytes int64
		}
		var lines []line
		var total int64
		for rows.Next() {
			var l line
			if err := rows.Scan(&l.name, &l.kind, &l.rels, &l.bytes); err != nil {
				b.Fatal(err)
			}
			lines, total = append(lines, l), total+l.bytes
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		// The same total another way: every table's total relation size.
		var check int64
		if err := s.Pool().QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'`).Scan(&check); err != nil {
			b.Fatal(err)
		}
		if check != total {
			b.Fatalf("tables and indexes sum to %d bytes, pg_total_relation_size of the tables to %d", total, check)
		}
		b.ReportMetric(float64(total)/float64(n), "bytes/record")
		b.ReportMetric(float64(w.JSONBytes)/float64(n), "json-bytes/record")
		b.Logf("%d records: %d bytes on disk (tables, TOAST, indexes): %.1f bytes/record; their JSON %.1f bytes/record",
			n, total, float64(total)/float64(n), float64(w.JSONBytes)/float64(n))
		for _, l := range lines {
			b.Logf("  %-5s %-40s %4d relations %12d bytes %8.1f bytes/record", l.kind, l.name, l.rels, l.bytes, float64(l.bytes)/float64(n))
		}
		logAnatomy(b, w.Sample)
	}
}

func logAnatomy(b *testing.B, sample []*evidence.Record) {
	mean, parts, err := traffic.Anatomy(sample)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("JSON of the first %d records: %.1f bytes/record; without each part, it is that much smaller:", len(sample), mean)
	for _, p := range parts {
		kind := "unique"
		if p.PerEdge {
			kind = "edge"
		}
		b.Logf("  %-6s %-40s %7.1f", kind, p.Name, p.Bytes)
	}
}
