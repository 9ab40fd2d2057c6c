package duckdb_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/archive"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// end is when the test traffic ends; the days before its own are sealed.
var end = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// readmeQuery is the README's DuckDB query ("which requests to X were not
// over mTLS last quarter"), word for word, with its archive directory and
// principal.
func readmeQuery(t *testing.T) (query, dir, principal string) {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "not over mTLS last quarter, in DuckDB:\n\n```sql\n")
	query, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no DuckDB query after \"not over mTLS last quarter, in DuckDB:\"")
	}
	m := regexp.MustCompile(`read_parquet\('([^']*)/replica=\*/date=\*/records\.parquet'[^)]*\)\s+WHERE destination_principal = '([^']*)'`).FindStringSubmatch(query)
	if m == nil {
		t.Fatalf("the README's query does not read the archive's files or name a destination principal:\n%s", query)
	}
	return query, m[1], m[2]
}

// TestDuckDBReadsTheArchive writes realistic traffic over four days into a
// SQLite store, archives it with meshproof's archive, and reads the files
// with DuckDB: the rows per day, verdict and decision are the store's
// counts, a request found by its request id is the store's record, and the
// README's query gives what the store's filter gives.
func TestDuckDBReadsTheArchive(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := traffic.Write(ctx, s, traffic.New(t, 11, "mp-0"), 3000, end, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	skey, _, err := evidence.GenerateSigningKey("duckdb.test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "archive")
	res, err := archive.Seal(ctx, s, archive.Options{Dir: dir, Before: end, Signer: signer})
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("seal: %v %v", err, res.Errors)
	}
	if len(res.Days) != 4 {
		t.Fatalf("sealed %d days: %+v", len(res.Days), res.Days)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	files := fmt.Sprintf("read_parquet('%s/replica=*/date=*/records.parquet', hive_partitioning = true)", dir)

	// Counts per day, verdict and decision.
	rows, err := db.QueryContext(ctx, `SELECT replica, CAST(date AS VARCHAR), verdict, allowed, count(*) FROM `+files+` GROUP BY ALL ORDER BY ALL`)
	if err != nil {
		t.Fatal(err)
	}
	var groups, total int64
	for rows.Next() {
		var replica, date, verdict string
		var allowed bool
		var n int64
		if err := rows.Scan(&replica, &date, &verdict, &allowed, &n); err != nil {
			t.Fatal(err)
		}
		day, err := time.Parse(time.DateOnly, date)
		if err != nil {
			t.Fatal(err)
		}
		want, err := s.Count(ctx, evidence.Filter{Replica: replica, Since: day, Until: day.AddDate(0, 0, 1),
			Verdicts: []evidence.Verdict{evidence.Verdict(verdict)}, Allowed: &allowed})
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s %s %s allowed=%t: DuckDB counts %d, the store %d", replica, date, verdict, allowed, n, want)
		}
		groups++
		total += n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sealedUntil := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	all, err := s.Count(ctx, evidence.Filter{Until: sealedUntil})
	if err != nil {
		t.Fatal(err)
	}
	if total != all || groups < 10 {
		t.Fatalf("DuckDB reads %d records in %d groups, the store has %d before %s", total, groups, all, sealedUntil)
	}

	// A request by its request id: the store's record.
	var reqID, verdict, path, host string
	var at time.Time
	var status int32
	if err := db.QueryRowContext(ctx, `SELECT CAST(request_id AS VARCHAR), time, verdict, path, host, http_status FROM `+files+
		` WHERE allowed = false ORDER BY time LIMIT 1`).Scan(&reqID, &at, &verdict, &path, &host, &status); err != nil {
		t.Fatal(err)
	}
	page, err := s.Query(ctx, evidence.Filter{RequestID: reqID}, evidence.PageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 {
		t.Fatalf("request %s: %d records in the store", reqID, len(page.Records))
	}
	r := page.Records[0]
	if !r.Time.Equal(at) || string(r.Verdict) != verdict || r.Request.Path != path || r.Request.Host != host ||
		r.Decision.Allowed || r.Decision.HTTPStatus != int(status) {
		t.Fatalf("DuckDB: %s %s %s %s%s %d; the store: %+v", reqID, at, verdict, host, path, status, r)
	}

	// The README's query, "last quarter" being 2026's fourth.
	var dest string
	if err := db.QueryRowContext(ctx, `SELECT destination_principal FROM `+files+
		` WHERE verdict <> 'mtls' AND destination_principal <> '' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1`).Scan(&dest); err != nil {
		t.Fatal(err)
	}
	query, readmeDir, readmePrincipal := readmeQuery(t)
	q := strings.NewReplacer(readmeDir+"/", dir+"/", "'"+readmePrincipal+"'", "'"+dest+"'", "current_date", "DATE '2027-01-15'").Replace(query)
	rows, err = db.QueryContext(ctx, q)
	if err != nil {
		t.Fatalf("the README's query: %v\n%s", err, q)
	}
	var got int64
	for rows.Next() {
		var at time.Time
		var src, method, host, path, verdict string
		var reqID any
		if err := rows.Scan(&at, &src, &method, &host, &path, &verdict, &reqID); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want, err := s.Count(ctx, evidence.Filter{Destination: dest, NotVerdicts: []evidence.Verdict{evidence.MTLS}, Until: sealedUntil})
	if err != nil {
		t.Fatal(err)
	}
	if got != want || got == 0 {
		t.Fatalf("the README's query finds %d requests to %s that were not mTLS, the store %d", got, dest, want)
	}
	t.Logf("%d records in %d groups; %d requests to %s not over mTLS", total, groups, got, dest)
}
