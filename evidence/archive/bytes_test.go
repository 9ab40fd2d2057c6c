package archive_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/archive"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// benchRecords is how many records BenchmarkBytesPerRecord archives:
// MESHPROOF_BENCH_RECORDS, 100,000 by default.
func benchRecords(b *testing.B) int {
	n := 100_000
	if v := os.Getenv("MESHPROOF_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 86_400_000 {
			b.Fatalf("MESHPROOF_BENCH_RECORDS=%q: want a number of records from 1 to 86,400,000 (one day at 1 ms)", v)
		}
	}
	return n
}

// BenchmarkBytesPerRecord writes realistic traffic (package traffic, at
// 1,000 records a second, all in one UTC day, and one record the next day
// that closes it) into a SQLite store through a Recorder, seals the day
// with Seal, and reports the archive's bytes per record (the day's
// Parquet file; with its manifest and checkpoint as dir-bytes/record)
// beside the same records' JSON, and how fast Seal went (records/s, the
// store's reads included). With -v it logs each column's bytes per record.
func BenchmarkBytesPerRecord(b *testing.B) {
	n := benchRecords(b)
	ctx := context.Background()
	day := time.Date(2026, 11, 19, 0, 0, 0, 0, time.UTC)
	skey, _, err := evidence.GenerateSigningKey("bench")
	if err != nil {
		b.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bytes.db"), evidence.Options{})
		if err != nil {
			b.Fatal(err)
		}
		m := traffic.New(b, 1, "bench")
		w, err := traffic.Write(ctx, s, m, n, day.AddDate(0, 0, 1), time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := traffic.Write(ctx, s, m, 1, day.AddDate(0, 0, 1).Add(time.Hour), time.Millisecond); err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(b.TempDir(), "archive")
		start := time.Now()
		res, err := archive.Seal(ctx, s, archive.Options{Dir: dir, Before: day.AddDate(0, 0, 2), Signer: signer})
		took := time.Since(start)
		if err != nil || len(res.Errors) > 0 {
			b.Fatalf("seal: %v %v", err, res.Errors)
		}
		if len(res.Days) != 1 || res.Days[0].Records != int64(n) {
			b.Fatalf("sealed %+v, want one day of %d records", res.Days, n)
		}
		s.Close()
		dayDir := archive.DayDir(dir, "bench", day.Format(time.DateOnly))
		var all int64
		entries, _ := os.ReadDir(dayDir)
		for _, e := range entries {
			info, _ := e.Info()
			all += info.Size()
		}
		file := res.Days[0].Bytes
		b.ReportMetric(float64(file)/float64(n), "bytes/record")
		b.ReportMetric(float64(all)/float64(n), "dir-bytes/record")
		b.ReportMetric(float64(w.JSONBytes)/float64(n), "json-bytes/record")
		b.ReportMetric(float64(n)/took.Seconds(), "records/s")
		b.Logf("%d records: Parquet file %d bytes (%.1f bytes/record), with manifest and checkpoint %d (%.1f); their JSON %.1f bytes/record; sealed in %s (%.0f records/s)",
			n, file, float64(file)/float64(n), all, float64(all)/float64(n), float64(w.JSONBytes)/float64(n), took.Round(time.Millisecond), float64(n)/took.Seconds())
		logColumns(b, filepath.Join(dayDir, archive.RecordsFile), n)
	}
}

// logColumns logs each column's compressed bytes per record.
func logColumns(b *testing.B, path string, n int) {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		b.Fatal(err)
	}
	sizes := map[string]int64{}
	var order []string
	for _, rg := range f.Metadata().RowGroups {
		for _, c := range rg.Columns {
			name := c.MetaData.PathInSchema[0]
			if _, ok := sizes[name]; !ok {
				order = append(order, name)
			}
			sizes[name] += c.MetaData.TotalCompressedSize
		}
	}
	for _, name := range order {
		b.Logf("  %-24s %12d bytes %6.2f bytes/record", name, sizes[name], float64(sizes[name])/float64(n))
	}
}
