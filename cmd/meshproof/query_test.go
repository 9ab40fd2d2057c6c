package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

// queryFixture is the story's traffic of the last minutes, and one old
// request.
type queryFixture struct {
	api                          *testAPI
	mtls, plain, dryRun, hostile *evidence.Record
	old                          *evidence.Record
	inWindow                     []*evidence.Record // newest first
}

// pinClock makes the CLI's clock stand at now for the test.
func pinClock(t *testing.T, now time.Time) {
	clock = func() time.Time { return now }
	t.Cleanup(func() { clock = time.Now })
}

func newQueryFixture(t *testing.T) *queryFixture {
	now := time.Now()
	pinClock(t, now)
	f := &queryFixture{api: newTestAPI(t, api.Config{})}
	f.hostile = rec(now.Add(-20*time.Minute), sleep, "evil\x1b[2J.example:80", httpbinID, evidence.MTLSMismatch)
	f.hostile.Request.Path = "/\u202e" + strings.Repeat("x", 100)
	f.hostile.Decision = evidence.Decision{Error: "policy: undefined ref", HTTPStatus: 403}
	f.dryRun = rec(now.Add(-10*time.Minute-30*time.Second), sleep, httpbin, httpbinID, evidence.MTLS)
	f.dryRun.Decision = evidence.Decision{DryRun: true, Reason: "would deny"}
	f.mtls = rec(now.Add(-3*time.Minute-20*time.Second), sleep, httpbin, httpbinID, evidence.MTLS)
	f.plain = rec(now.Add(-50*time.Second), legacy, httpbin, "", evidence.Plaintext)
	f.plain.Decision = evidence.Decision{HTTPStatus: 403}
	// serve --kubernetes named the plaintext client's and the
	// destination's workloads.
	f.plain.Source.Workload = &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "sleep", Pod: "sleep-5d8f-abcde", ServiceAccount: "sleep"}
	f.plain.Destination.Workload = &evidence.Workload{Namespace: "mtls-pg", Kind: "Deployment", Name: "httpbin", ServiceAccount: "httpbin", Sidecar: true}
	f.old = rec(now.Add(-2*time.Hour), legacy, httpbin, "", evidence.Plaintext)
	f.api.add(t, f.old, f.hostile, f.dryRun, f.mtls, f.plain)
	f.inWindow = []*evidence.Record{f.plain, f.mtls, f.dryRun, f.hostile}
	return f
}

func TestQueryTable(t *testing.T) {
	f := newQueryFixture(t)
	code, stdout, stderr := cli(t, append([]string{"query"}, f.api.args()...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 5 || !slices.Equal(strings.Fields(lines[0]), headerFields) {
		t.Fatalf("want a header and 4 rows (the last hour, newest first):\n%s", stdout)
	}
	clock := func(r *evidence.Record) string { return r.Time.UTC().Format(time.RFC3339) }
	want := [][]string{
		{clock(f.plain) + " (50s ago)", "plaintext", legacyIP, "10.42.0.5", "legacy/deployment/sleep", "mtls-pg/deployment/httpbin",
			"GET", httpbin, "/headers", "denied", f.plain.ID},
		{clock(f.mtls) + " (3m ago)", "mtls", sleepID, httpbinID, "-", "-", "GET", httpbin, "/headers", "allowed", f.mtls.ID},
		{clock(f.dryRun) + " (10m ago)", "mtls", sleepID, httpbinID, "-", "-", "GET", httpbin, "/headers", "dry-run", f.dryRun.ID},
		{clock(f.hostile) + " (20m ago)", "mtls_mismatch", sleepID, httpbinID, "-", "-", "GET", `"evil\x1b[2J.example:80"`,
			`"/\u202e` + strings.Repeat("x", 61) + `…"`, "error", f.hostile.ID},
	}
	for i, row := range want {
		if got := cellsUnder(lines[0], lines[i+1], recordHeader); !slices.Equal(got, row) {
			t.Errorf("row %d:\n got %q\nwant %q\n%s", i, got, row, stdout)
		}
	}
	if strings.ContainsAny(stdout, "\x1b\u202e") || strings.Contains(stdout, "Next page") {
		t.Errorf("raw escape, or a next page that does not exist:\n%q", stdout)
	}

	_, stdout, _ = cli(t, append([]string{"query", "--since", "3h"}, f.api.args()...)...)
	if !strings.Contains(stdout, clock(f.old)+" (2h ago)") || strings.Count(stdout, "\n") != 6 {
		t.Errorf("--since 3h: want the old record too:\n%s", stdout)
	}
}

func TestQueryFilters(t *testing.T) {
	f := newQueryFixture(t)
	tests := []struct {
		args []string
		want []*evidence.Record
	}{
		{[]string{"--mtls", "false"}, []*evidence.Record{f.plain, f.hostile}},
		{[]string{"--mtls", "true"}, []*evidence.Record{f.mtls, f.dryRun}},
		{[]string{"--verdict", "plaintext,mtls_mismatch"}, []*evidence.Record{f.plain, f.hostile}},
		{[]string{"--verdict", "plaintext", "--verdict", "mtls"}, []*evidence.Record{f.plain, f.mtls, f.dryRun}},
		{[]string{"--allowed", "false", "--verdict", "mtls"}, []*evidence.Record{f.dryRun}},
		{[]string{"--source-prefix", "spiffe://cluster.local/ns/mtls-pg", "--host", httpbin}, []*evidence.Record{f.mtls, f.dryRun}},
		{[]string{"--destination", httpbinID, "--until", "5m"}, []*evidence.Record{f.dryRun, f.hostile}},
		{[]string{"--since", "3h", "--until", "1h"}, []*evidence.Record{f.old}},
		{[]string{"--request-id", f.mtls.RequestID, "--replica", "cli-test"}, []*evidence.Record{f.mtls}},
		{[]string{"--source-workload", "legacy/sleep"}, []*evidence.Record{f.plain}},
		{[]string{"--destination-workload", "mtls-pg/httpbin", "--verdict", "plaintext"}, []*evidence.Record{f.plain}},
		{[]string{"--source-namespace", "legacy"}, []*evidence.Record{f.plain}},
		// The destination's side only: its SPIFFE ID's namespace, else
		// (plaintext carries none) its workload's; legacy is a source's.
		{[]string{"--destination-namespace", "mtls-pg"}, []*evidence.Record{f.plain, f.mtls, f.dryRun, f.hostile}},
		{[]string{"--destination-namespace", "mtls-pg", "--verdict", "plaintext"}, []*evidence.Record{f.plain}},
		{[]string{"--destination-namespace", "legacy"}, nil},
		{[]string{"--namespace", "mtls-pg", "--trust-domain", "cluster.local", "--method", "GET", "--path-prefix", "/head"},
			[]*evidence.Record{f.mtls, f.dryRun}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := cli(t, append(append([]string{"query", "--output", "ndjson"}, f.api.args()...), tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got, want := ndjsonIDs(t, stdout), idsOf(tt.want); !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

// TestQueryJSON: json and ndjson are the records as the API returns them.
func TestQueryJSON(t *testing.T) {
	f := newQueryFixture(t)
	code, stdout, stderr := cli(t, append([]string{"query", "--output", "json"}, f.api.args()...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var page evidence.RecordPage
	if err := json.Unmarshal([]byte(stdout), &page); err != nil || page.Next != "" || len(page.Records) != 4 {
		t.Fatalf("page: %v, next %q, %d records:\n%s", err, page.Next, len(page.Records), stdout)
	}
	for i, r := range page.Records {
		stored, err := f.api.store.Get(context.Background(), f.inWindow[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := mustJSON(t, r), mustJSON(t, stored); got != want {
			t.Errorf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
	if !strings.Contains(stdout, `"workload": {`) {
		t.Errorf("want the records' workloads:\n%s", stdout)
	}
	if !strings.Contains(stdout, `"time": "`+f.plain.Time.Format(time.RFC3339Nano)+`"`) {
		t.Errorf("want RFC 3339 times in UTC:\n%s", stdout)
	}

	code, stdout, _ = cli(t, append([]string{"query", "--output", "ndjson", "--id", f.hostile.ID}, f.api.args()...)...)
	if stored, _ := f.api.store.Get(context.Background(), f.hostile.ID); code != 0 || stdout != mustJSON(t, stored)+"\n" {
		t.Errorf("--id: exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = cli(t, append([]string{"query", "--id", f.plain.ID}, f.api.args()...)...)
	for _, w := range []string{"VERDICT", "plaintext", "DECISION", "denied", "CHAIN", "seq 5, hash " + f.plain.Chain.Hash,
		"  workload         legacy/deployment/sleep\n  pod              sleep-5d8f-abcde\n",
		"  sidecar          none (no istio-proxy)\nDESTINATION", "  workload         mtls-pg/deployment/httpbin\n"} {
		if code != 0 || !strings.Contains(stdout, w) {
			t.Errorf("--id table: exit %d, lacks %q:\n%s", code, w, stdout)
		}
	}
	code, _, stderr = cli(t, append([]string{"query", "--id", "01NOSUCHRECORD000000000000"}, f.api.args()...)...)
	if code != 1 || !strings.Contains(stderr, "no such record (HTTP 404)") {
		t.Errorf("--id unknown: exit %d: %s", code, stderr)
	}
}

func TestQueryPages(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	now := time.Now()
	var recs []*evidence.Record
	for i := range 25 {
		src := sleep
		if i%2 == 1 {
			src = legacy
		}
		recs = append(recs, rec(now.Add(-time.Duration(25-i)*time.Minute), src, httpbin, httpbinID, evidence.MTLS))
	}
	a.add(t, recs...)
	want := idsOf(recs)
	slices.Reverse(want) // newest first

	// One page at a time, following the hint.
	var got []string
	args := append([]string{"query", "--limit", "10"}, a.args()...)
	for page := 0; ; page++ {
		code, stdout, stderr := cli(t, args...)
		if code != 0 || page > 3 {
			t.Fatalf("page %d: exit %d: %s", page, code, stderr)
		}
		got = append(got, tableIDs(stdout)...)
		_, hint, more := strings.Cut(stdout, "\nNext page: meshproof ")
		if !more {
			break
		}
		args = strings.Fields(hint)
	}
	if !slices.Equal(got, want) {
		t.Errorf("paging by hand: got %v, want %v", got, want)
	}

	// --all, several pages per listing.
	code, stdout, _ := cli(t, append([]string{"query", "--all", "--limit", "4"}, a.args()...)...)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if ids := tableIDs(stdout); code != 0 || !slices.Equal(ids, want) || strings.Contains(stdout, "Next page") {
		t.Errorf("--all table: exit %d, ids %v:\n%s", code, ids, stdout)
	}
	for _, l := range lines[1:] {
		if at := strings.Index(l, " mtls "); at+1 != strings.Index(lines[0], "VERDICT") {
			t.Errorf("--all table: columns move between pages:\n%s", stdout)
			break
		}
	}
	code, stdout, _ = cli(t, append([]string{"query", "--all", "--limit", "4", "--output", "json"}, a.args()...)...)
	var all []*evidence.Record
	if err := json.Unmarshal([]byte(stdout), &all); code != 0 || err != nil || !slices.Equal(idsOf(all), want) {
		t.Errorf("--all json: exit %d, %v:\n%s", code, err, stdout)
	}
	code, stdout, _ = cli(t, append([]string{"query", "--all", "--output", "ndjson"}, a.args()...)...)
	if ids := ndjsonIDs(t, stdout); code != 0 || !slices.Equal(ids, want) {
		t.Errorf("--all ndjson: exit %d, %v", code, ids)
	}
	code, stdout, _ = cli(t, append([]string{"query", "--all", "--output", "json", "--since", "30d", "--until", "29d"}, a.args()...)...)
	if code != 0 || stdout != "[]\n" {
		t.Errorf("--all json of nothing: exit %d: %q", code, stdout)
	}
}

func TestQueryFollow(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	now := time.Now()
	var recs []*evidence.Record
	for i := range 8 {
		recs = append(recs, rec(now.Add(-time.Duration(8-i)*time.Minute), sleep, httpbin, httpbinID, evidence.MTLS))
	}
	a.add(t, recs...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- query(ctx, a.args("--follow", "--interval", "20ms", "--limit", "5", "--output", "ndjson"), out, errOut)
	}()
	waitLines(t, out, 5)
	if got := ndjsonIDs(t, out.String()); !slices.Equal(got, idsOf(recs[3:])) {
		t.Fatalf("first: got %v, want the newest 5 oldest first %v", got, idsOf(recs[3:]))
	}

	late := rec(now.Add(-time.Minute-2*time.Second), legacy, httpbin, "", evidence.Plaintext) // committed after newer ones
	fresh := rec(time.Now(), legacy, httpbin, "", evidence.Plaintext)
	tooOld := rec(now.Add(-7*time.Minute-time.Second), legacy, httpbin, "", evidence.Plaintext) // before the first page
	a.add(t, tooOld, late, fresh)
	waitLines(t, out, 7)
	a.add(t, rec(time.Now().Add(time.Millisecond), sleep, httpbin, httpbinID, evidence.MTLS))
	waitLines(t, out, 8)
	time.Sleep(100 * time.Millisecond) // several more polls: nothing printed twice
	got := ndjsonIDs(t, out.String())
	if len(got) != 8 || !slices.Equal(got[5:7], idsOf([]*evidence.Record{late, fresh})) || slices.Contains(got, tooOld.ID) {
		t.Errorf("followed: %v\nwant %v, then %s and %s, then one more", got, idsOf(recs[3:]), late.ID, fresh.ID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("follow ended with %v, want a clean stop", err)
	}
}

// TestQueryFollowRetries: --follow outlives a server it cannot reach,
// saying so once.
func TestQueryFollowRetries(t *testing.T) {
	down := httptest.NewServer(nil)
	down.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errOut := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- query(ctx, []string{"--server", down.URL, "--follow", "--interval", "10ms"}, &bytes.Buffer{}, errOut)
	}()
	waitLines(t, errOut, 2)
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil || !strings.HasPrefix(errOut.String(), "meshproof query: cannot reach "+down.URL) ||
		strings.Count(errOut.String(), "retrying every 10ms") != 1 {
		t.Errorf("ended with %v:\n%s", err, errOut.String())
	}
}

// TestQueryFollowTableStopsOnSignal: the table streams, and SIGINT stops
// it cleanly (exit 0), as for tail -f.
func TestQueryFollowTableStopsOnSignal(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	a.add(t, rec(time.Now().Add(-time.Minute), sleep, httpbin, httpbinID, evidence.MTLS))
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runQuery(a.args("--follow", "--interval", "20ms"), out, &bytes.Buffer{}) }()
	waitLines(t, out, 2)
	late := rec(time.Now(), legacy, httpbin, "", evidence.Plaintext)
	a.add(t, late)
	waitLines(t, out, 3)
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGINT did not stop --follow")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !slices.Equal(strings.Fields(lines[0]), headerFields) || !strings.Contains(lines[2], late.ID) ||
		strings.Index(lines[2], "plaintext") != strings.Index(lines[0], "VERDICT") {
		t.Errorf("followed table:\n%s", out.String())
	}
}

func TestQueryUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--output", "xml"},
		{"--follow", "--output", "json"},
		{"--follow", "--all"},
		{"--follow", "--until", "1h"},
		{"--all", "--cursor", "abc"},
		{"--id", "x", "--all"},
		{"--verdict", "mtls,bogus"},
		{"--mtls", "yes"},
		{"--mtls", "true", "--verdict", "mtls"},
		{"--limit", "1001"},
		{"--since", "yesterday"},
		{"--interval", "0s"},
		{"--timeout", "0s"},
		{"--nope"},
		{"extra"},
	} {
		code, _, stderr := cli(t, append([]string{"query"}, args...)...)
		if code != 2 || !strings.HasPrefix(stderr, "meshproof query: ") {
			t.Errorf("%q: exit %d, want 2: %s", args, code, stderr)
		}
	}
}

// cellsUnder cuts line into the cells under each of header's columns
// (columns are where their names start; widths count runes, as
// tabwriter's do).
// headerFields is recordHeader as strings.Fields splits the header line.
var headerFields = strings.Fields(strings.Join(recordHeader, " "))

func cellsUnder(header, line string, names []string) []string {
	l := []rune(line)
	var starts []int
	for _, n := range names {
		starts = append(starts, len([]rune(header[:strings.Index(header, n)])))
	}
	cells := make([]string, len(names))
	for i, at := range starts {
		end := len(l)
		if i+1 < len(starts) {
			end = min(starts[i+1], len(l))
		}
		if at < len(l) {
			cells[i] = strings.TrimSpace(string(l[at:end]))
		}
	}
	return cells
}

func idsOf(recs []*evidence.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	return ids
}

// tableIDs are the ids in the last column of a record table.
func tableIDs(table string) []string {
	var ids []string
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[len(f)-1], "01TEST") {
			ids = append(ids, f[len(f)-1])
		}
	}
	return ids
}

func ndjsonIDs(t *testing.T, s string) []string {
	t.Helper()
	var ids []string
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if l == "" {
			continue
		}
		var r evidence.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLines waits until out has at least n lines.
func waitLines(t *testing.T, out *syncBuffer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "\n") < n {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d lines, got:\n%s", n, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestQueryDestinationIsTheReports: --destination names a destination as
// the reports do: a principal, or a host (host:port as in :authority);
// query finds the records the report counted for it. --count prints how
// many match.
func TestQueryDestinationIsTheReports(t *testing.T) {
	a, plain := storyAPI(t)
	_, stdout, _ := cli(t, append([]string{"report", "strict-readiness", "-o", "json", "--destination", httpbin}, a.args()...)...)
	var sr report.StrictReadinessReport
	if err := json.Unmarshal([]byte(stdout), &sr); err != nil || sr.Total != 9 {
		t.Fatalf("report: %v, total %d\n%s", err, sr.Total, stdout)
	}
	for _, tt := range []struct {
		dest string
		want int
	}{{httpbin, 9}, {httpbinID, 6}, {ratings, 2}, {"nosuch.bookinfo:9080", 0}} {
		code, stdout, stderr := cli(t, append([]string{"query", "--since", "2h", "--destination", tt.dest, "--count"}, a.args()...)...)
		if code != 0 || strings.TrimSpace(stdout) != strconv.Itoa(tt.want) {
			t.Errorf("query --destination %s --count: exit %d, want %d\n%s%s", tt.dest, code, tt.want, stdout, stderr)
		}
	}
	code, stdout, _ := cli(t, append([]string{"query", "--since", "2h", "--destination", httpbin, "--mtls=false", "-o", "json"}, a.args()...)...)
	var page evidence.RecordPage
	if err := json.Unmarshal([]byte(stdout), &page); code != 0 || err != nil || !slices.Equal(idsOf(page.Records), reversed(idsOf(plain))) {
		t.Errorf("query --destination %s --mtls=false: exit %d, %v: %v, want %v", httpbin, code, err, idsOf(page.Records), reversed(idsOf(plain)))
	}
	code, stdout, _ = cli(t, append([]string{"query", "--since", "2h", "--count", "-o", "json"}, a.args()...)...)
	if code != 0 || strings.TrimSpace(stdout) != `{
  "count": 12
}` {
		t.Errorf("--count -o json: exit %d\n%s", code, stdout)
	}
	for _, args := range [][]string{
		{"--destination", httpbin, "--host", ratings},
		{"--count", "--all"}, {"--count", "-o", "ndjson"},
		{"-n", "shop", "-A"},
	} {
		if code, _, stderr := cli(t, append([]string{"query"}, args...)...); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, stderr)
		}
	}
}

// countOnly is a real store that refuses exports and counts its Count
// calls: a count must be the store's, never an export counted.
type countOnly struct {
	evidence.Store
	counts atomic.Int64
}

func (s *countOnly) ScanJSON(context.Context, evidence.Filter, func([]byte) error) error {
	return errors.New("an export was asked for a count")
}

func (s *countOnly) Count(ctx context.Context, f evidence.Filter) (int64, error) {
	s.counts.Add(1)
	return s.Store.Count(ctx, f)
}

// TestQueryCountIsTheServers: --count asks the API's count
// (/v1/evidence/count), one request whatever the number of records, and
// prints it as before: the number alone, or {"count": N}.
func TestQueryCountIsTheServers(t *testing.T) {
	a := openTestStore(t)
	now := time.Now()
	pinClock(t, now)
	for i := range 7 {
		v := evidence.MTLS
		if i%3 == 0 {
			v = evidence.Plaintext
		}
		a.add(t, rec(now.Add(-time.Duration(30-i)*time.Minute), sleep, httpbin, httpbinID, v))
	}
	store := &countOnly{Store: a.store}
	srv, err := api.New(store, api.Config{Tokens: []string{testToken}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	a.url = ts.URL
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--count"}, "7"},
		{[]string{"--count", "--mtls=false"}, "3"},
		{[]string{"--count", "--verdict", "mtls", "-o", "wide"}, "4"},
		{[]string{"--count", "--host", "nosuch.example"}, "0"},
		{[]string{"--count", "-o", "json"}, "{\n  \"count\": 7\n}"},
		{[]string{"--count", "-o", "yaml"}, "count: 7"},
	} {
		before := store.counts.Load()
		code, stdout, stderr := cli(t, append(append([]string{"query", "--since", "2h"}, a.args()...), tt.args...)...)
		if code != 0 || strings.TrimSpace(stdout) != tt.want || store.counts.Load() != before+1 {
			t.Errorf("%q: exit %d, %q, %d counts; want %q, one count\n%s", tt.args, code, stdout, store.counts.Load()-before, tt.want, stderr)
		}
	}
}

// TestExport: meshproof export streams every matching record, newest
// first, as NDJSON (or a JSON array), with query's filters.
func TestExport(t *testing.T) {
	a, plain := storyAPI(t)
	code, stdout, stderr := cli(t, append([]string{"export", "--since", "2h", "--destination", httpbin, "--verdict", "plaintext"}, a.args()...)...)
	if code != 0 || !slices.Equal(ndjsonIDs(t, stdout), reversed(idsOf(plain))) {
		t.Errorf("export: exit %d: %v, want %v\n%s", code, ndjsonIDs(t, stdout), reversed(idsOf(plain)), stderr)
	}
	code, stdout, _ = cli(t, append([]string{"export", "--since", "2h", "-n", "bookinfo", "-o", "json"}, a.args()...)...)
	var recs []*evidence.Record
	if err := json.Unmarshal([]byte(stdout), &recs); code != 0 || err != nil || len(recs) != 3 {
		t.Errorf("export -n bookinfo -o json: exit %d, %v, %d records\n%s", code, err, len(recs), stdout)
	}
}

func reversed(s []string) []string {
	s = slices.Clone(s)
	slices.Reverse(s)
	return s
}

// TestQueryHostAnyPort: a host without a port, in --host or --destination,
// matches it on every port; with a port, that port only. The namespace
// flags say which side: -n either, --source-namespace,
// --destination-namespace one.
func TestQueryHostAnyPort(t *testing.T) {
	a, _ := storyAPI(t)
	a.add(t, rec(time.Now().Add(-time.Minute), sleep, "httpbin.mtls-pg:9000", httpbinID, evidence.MTLS),
		rec(time.Now().Add(-time.Minute), sleep, "httpbin.mtls-pg", httpbinID, evidence.MTLS))
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"--host", "httpbin.mtls-pg"}, 11},
		{[]string{"--destination", "httpbin.mtls-pg"}, 11},
		{[]string{"--destination", httpbin}, 9},
		{[]string{"--host", "httpbin.mtls-pg:9000"}, 1},
		{[]string{"--host", "httpbin"}, 0},
		{[]string{"-n", "bookinfo"}, 3},
		{[]string{"--destination-namespace", "mtls-pg"}, 8}, // plaintext requests carry no destination principal
		{[]string{"--source-namespace", "mtls-pg"}, 11},
		{[]string{"--source-namespace", "mtls-pg", "--destination-namespace", "bookinfo"}, 3},
	} {
		code, stdout, stderr := cli(t, append(append([]string{"query", "--since", "2h", "--count"}, a.args()...), tt.args...)...)
		if code != 0 || strings.TrimSpace(stdout) != strconv.Itoa(tt.want) {
			t.Errorf("%q --count: exit %d, %q, want %d\n%s", tt.args, code, stdout, tt.want, stderr)
		}
	}
}
