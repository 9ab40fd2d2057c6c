package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// bytesRecords is how many records BenchmarkBytesPerRecord writes:
// MESHPROOF_BENCH_RECORDS, 100,000 by default.
func bytesRecords(b *testing.B) int {
	n := 100_000
	if v := os.Getenv("MESHPROOF_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("MESHPROOF_BENCH_RECORDS=%q: want a positive number of records", v)
		}
	}
	return n
}

// BenchmarkBytesPerRecord writes realistic traffic (package traffic: 300
// edges, peer certificates on mTLS edges, random request and trace ids, at
// 1,000 records a second) through a Recorder into a fresh store, then
// checkpoints the WAL and reports the bytes each record takes on disk,
// everything included (records, indexes, edges, rollups, tree hashes,
// the -wal and -shm files), beside the size of the same records' JSON.
// With -v it logs the bytes per record of each table and index (dbstat)
// and what the JSON consists of. It is not timed: one run per b.N.
func BenchmarkBytesPerRecord(b *testing.B) {
	n := bytesRecords(b)
	ctx := context.Background()
	for range b.N {
		path := filepath.Join(b.TempDir(), "bytes.db")
		s, err := sqlite.Open(ctx, path, evidence.Options{})
		if err != nil {
			b.Fatal(err)
		}
		w, err := traffic.Write(ctx, s, traffic.New(b, 1, "bench"), n, time.Now(), time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			b.Fatal(err)
		}
		total := fileSize(path) + fileSize(path+"-wal") + fileSize(path+"-shm")
		b.ReportMetric(float64(total)/float64(n), "bytes/record")
		b.ReportMetric(float64(w.JSONBytes)/float64(n), "json-bytes/record")
		b.Logf("%d records: %d bytes on disk (main %d, -wal %d, -shm %d): %.1f bytes/record; their JSON %.1f bytes/record",
			n, total, fileSize(path), fileSize(path+"-wal"), fileSize(path+"-shm"), float64(total)/float64(n), float64(w.JSONBytes)/float64(n))
		logDBStat(b, db, n)
		db.Close()
		logAnatomy(b, w.Sample)
	}
}

// logDBStat logs each table's and index's bytes per record, from the
// dbstat virtual table (compiled into modernc's SQLite).
func logDBStat(b *testing.B, db *sql.DB, n int) {
	rows, err := db.Query(`SELECT d.name, coalesce(m.type, 'internal'), sum(d.pgsize), count(*) FROM dbstat d
		LEFT JOIN sqlite_schema m ON m.name = d.name GROUP BY d.name ORDER BY sum(d.pgsize) DESC`)
	if err != nil {
		b.Logf("dbstat: %v (no breakdown per table and index)", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var name, typ string
		var size, pages int64
		if err := rows.Scan(&name, &typ, &size, &pages); err != nil {
			b.Fatal(err)
		}
		b.Logf("  %-5s %-40s %12d bytes %8d pages %8.1f bytes/record", typ, name, size, pages, float64(size)/float64(n))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
}

func logAnatomy(b *testing.B, sample []*evidence.Record) {
	mean, parts, err := traffic.Anatomy(sample)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("JSON of the first %d records: %.1f bytes/record; without each part, it is that much smaller:", len(sample), mean)
	var edge, unique float64
	for _, p := range parts {
		kind := "unique"
		if p.PerEdge {
			kind, edge = "edge", edge+p.Bytes
		} else {
			unique += p.Bytes
		}
		b.Logf("  %-6s %-40s %7.1f", kind, p.Name, p.Bytes)
	}
	b.Logf("  per edge %.1f, unique per request %.1f, skeleton (keys of empty objects, braces) %.1f", edge, unique, mean-edge-unique)
}
