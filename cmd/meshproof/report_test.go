package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

const (
	ratings   = "ratings.bookinfo:9080"
	ratingsID = "spiffe://cluster.local/ns/bookinfo/sa/ratings"
	reviews   = "reviews.bookinfo:9080"
	reviewsID = "spiffe://cluster.local/ns/bookinfo/sa/reviews"
)

// storyAPI serves the last hour of the README's story ("Run with Istio"): httpbin reached by
// sleep over mTLS (6) and by 10.42.0.99 in plaintext (3); ratings reached
// over mTLS only; reviews reached once with an XFCC that contradicts the
// connection.
func storyAPI(t *testing.T) (*testAPI, []*evidence.Record) {
	a := newTestAPI(t, api.Config{})
	now := time.Now()
	pinClock(t, now)
	var plain []*evidence.Record
	for i := range 9 {
		at := now.Add(-time.Duration(50-5*i) * time.Minute)
		if i%3 == 2 {
			r := rec(at, legacy, httpbin, "", evidence.Plaintext)
			plain = append(plain, r)
			a.add(t, r)
		} else {
			a.add(t, rec(at, sleep, httpbin, httpbinID, evidence.MTLS))
		}
	}
	a.add(t, rec(now.Add(-30*time.Minute), sleep, ratings, ratingsID, evidence.MTLS),
		rec(now.Add(-4*time.Minute), sleep, ratings, ratingsID, evidence.MTLS),
		rec(now.Add(-20*time.Minute), sleep, reviews, reviewsID, evidence.MTLSMismatch))
	return a, plain
}

func TestReportTLSCheck(t *testing.T) {
	a, plain := storyAPI(t)
	code, stdout, stderr := cli(t, append([]string{"report", "tls-check"}, a.args()...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	// What was seen first: the first and the last request, in RFC 3339.
	last := plain[len(plain)-1].Time
	firstLine := regexp.MustCompile(`^12 requests to 3 destinations seen, the first at (\S+Z), the last at \S+Z \(4m ago\) \(asked between \S+Z and \S+Z\)\.$`).FindStringSubmatch(lines[0])
	if first := plain[0].Time.Add(-10 * time.Minute).UTC().Format(time.RFC3339); firstLine == nil || firstLine[1] != first {
		t.Errorf("first line: %s\nwant the first request at %s and the last 4m ago", lines[0], first)
	}
	lines = lines[2:]
	header := []string{"DESTINATION / CLIENT", "PRINCIPAL", "STATUS", "SERVER", "MTLS", "REQUESTS", "LAST SEEN"}
	if len(lines) != 13 || !strings.HasPrefix(lines[0], "DESTINATION / CLIENT  ") || !slices.Equal(cellsUnder(lines[0], lines[0], header), header) {
		t.Fatalf("want a header, 3 destination lines, 4 client lines, a blank line, the suspect client's note, a blank line and a summary:\n%s", stdout)
	}
	lastPlain := last.UTC().Format(time.RFC3339) + " (10m ago)"
	// The destination's identity is on its own line; a client's is its name.
	want := [][]string{
		{httpbin, httpbinID, "PLAINTEXT", "HTTP/mTLS", "66%", "9", lastPlain},
		{legacyIP, "", "", "", "0%", "3", lastPlain},
		{sleepID, "", "", "", "100%", "6", ""},
		{ratings, ratingsID, "OK", "mTLS", "100%", "2", ""},
		{sleepID, "", "", "", "100%", "2", ""},
		{reviews, reviewsID, "SUSPECT", "mTLS", "0%", "1", ""},
		{sleepID, "", "mtls_mismatch", "", "0%", "1", ""}, // why it is suspect
	}
	for i, row := range want {
		got := cellsUnder(lines[0], lines[i+1], header)
		if row[6] == "" {
			got[6] = "" // checked below
		}
		if !slices.Equal(got, row) || strings.HasPrefix(lines[i+1], "  ") != (row[1] == "") {
			t.Errorf("line %d (a client's indented):\n got %q\nwant %q\n%s", i+1, got, row, stdout)
		}
		if !regexp.MustCompile(`Z \(\d+m ago\)$`).MatchString(lines[i+1]) {
			t.Errorf("line %d: LAST SEEN is not RFC 3339 and relative:\n%s", i+1, lines[i+1])
		}
	}
	// The suspect client's example record's reasons (the fixture's: its verdict).
	if got, want := lines[8:11], []string{"", "Suspect clients (from an example record's reasons):",
		"  " + sleepID + " to " + reviews + ": mtls_mismatch: mtls_mismatch"}; !slices.Equal(got, want) {
		t.Errorf("below the table:\n got %q\nwant %q", got, want)
	}
	if lines[12] != "3 destinations: 1 OK, 1 PLAINTEXT, 1 SUSPECT." {
		t.Errorf("summary: %s", lines[12])
	}

	code, stdout, _ = cli(t, append([]string{"report", "tls-check", "--output", "json", "--destination", httpbinID}, a.args()...)...)
	var rep report.TLSCheckReport
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil || len(rep.Rows) != 1 {
		t.Fatalf("json: exit %d, %v:\n%s", code, err, stdout)
	}
	row := rep.Rows[0]
	if row.Destination != httpbin || row.Status != report.StatusPlaintext || row.Server != report.ServerMixed || row.Total != 9 ||
		row.Counts[evidence.Plaintext] != 3 || len(row.Clients) != 2 || row.Clients[0].Client != legacyIP || !strings.Contains(stdout, `"until": "`) {
		t.Errorf("json for the principal's hosts:\n%s", stdout)
	}

	code, stdout, _ = cli(t, append([]string{"report", "tls-check", "--since", "30d", "--until", "29d"}, a.args()...)...)
	if code != 0 || !regexp.MustCompile(`^No traffic seen between \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ and \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\.\n$`).MatchString(stdout) {
		t.Errorf("no traffic: exit %d:\n%s", code, stdout)
	}
}

func TestReportStrictReadiness(t *testing.T) {
	a, plain := storyAPI(t)
	tests := []struct {
		name  string
		args  []string
		code  int
		first string // stdout's first line
	}{
		{"host with plaintext clients", []string{"--destination", httpbin}, 3, "NOT READY: 1 client still sends plaintext"},
		{"principal takes in its hosts", []string{"--destination", httpbinID, "--since", "2h"}, 3, "NOT READY: 1 client still sends plaintext"},
		{"before the plaintext", []string{"--destination", httpbin, "--until", "43m"}, 0, "READY: every request was mTLS: 2 requests from 1 client since "},
		{"all mTLS", []string{"--destination", ratings}, 0, "READY: every request was mTLS: 2 requests from 1 client since "},
		{"suspect", []string{"--destination", reviews}, 3, "NOT READY: 1 client sent suspect requests (mtls_mismatch or xfcc_unverified)"},
		{"no traffic", []string{"--destination", "nothing.here:80"}, 3, "NOT READY: no traffic to nothing.here:80 since "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, append(append([]string{"report", "strict-readiness"}, a.args()...), tt.args...)...)
			if code != tt.code || !strings.HasPrefix(stdout, tt.first) || stderr != "" {
				t.Errorf("exit %d, want %d and %q:\n%s%s", code, tt.code, tt.first, stdout, stderr)
			}
		})
	}

	_, stdout, _ := cli(t, append([]string{"report", "strict-readiness", "--destination", httpbin}, a.args()...)...)
	lines := strings.Split(stdout, "\n")
	header := []string{"CLIENT", "VERDICTS", "REQUESTS", "LAST SEEN", "EXAMPLE ID"}
	if len(lines) < 5 || !slices.Equal(cellsUnder(lines[3], lines[3], header), header) {
		t.Fatalf("want the blocking clients' table:\n%s", stdout)
	}
	got := cellsUnder(lines[3], lines[4], header)
	if want := plain[len(plain)-1].Time.UTC().Format(time.RFC3339) + " (10m ago)"; got[0] != legacyIP || got[1] != "plaintext 3" ||
		got[2] != "3" || got[3] != want || !slices.Contains(idsOf(plain), got[4]) {
		t.Errorf("blocking client %q, want %s, plaintext 3, 3, %s, one of %v", got, legacyIP, want, idsOf(plain))
	}
	if !regexp.MustCompile(`^destination ` + regexp.QuoteMeta(httpbin) + `, between \S+Z and \S+Z: 9 requests \(mtls 6, plaintext 3\)$`).MatchString(lines[1]) {
		t.Errorf("second line: %s", lines[1])
	}
	// The example the report points at is one command away, pasted as
	// printed: it names the server and the token file.
	_, hint, _ := strings.Cut(stdout, "See an example: meshproof ")
	code, detail, _ := cli(t, strings.Fields(hint)...)
	if code != 0 || !strings.Contains(detail, legacyIP) || !strings.Contains(detail, "plaintext") {
		t.Errorf("the example: exit %d:\n%s", code, detail)
	}

	code, stdout, _ = cli(t, append([]string{"report", "strict-readiness", "--output", "json", "--destination", httpbin}, a.args()...)...)
	var sr report.StrictReadinessReport
	if err := json.Unmarshal([]byte(stdout), &sr); code != 3 || err != nil || sr.Ready || len(sr.Blocking) != 1 ||
		sr.Blocking[0].Client.Client != legacyIP || sr.Blocking[0].Count != 3 {
		t.Errorf("json, not ready: exit %d, %v:\n%s", code, err, stdout)
	}
	code, stdout, _ = cli(t, append([]string{"report", "strict-readiness", "--output", "json", "--destination", ratings}, a.args()...)...)
	if err := json.Unmarshal([]byte(stdout), &sr); code != 0 || err != nil || !sr.Ready || sr.Total != 2 {
		t.Errorf("json, ready: exit %d, %v:\n%s", code, err, stdout)
	}
}

func TestReportUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"report"}, 2},
		{[]string{"report", "tls"}, 2},
		{[]string{"report", "strict-readiness"}, 2}, // no --destination
		{[]string{"report", "strict-readiness", "--destination", "x", "--output", "ndjson"}, 2},
		{[]string{"report", "tls-check", "extra"}, 2},
		{[]string{"report", "help"}, 0},
	}
	for _, tt := range tests {
		code, stdout, stderr := cli(t, tt.args...)
		if code != tt.code {
			t.Errorf("%q: exit %d, want %d\n%s%s", tt.args, code, tt.code, stdout, stderr)
		}
		if code == 2 && !strings.HasPrefix(stderr, "meshproof report: ") {
			t.Errorf("%q: %s", tt.args, stderr)
		}
	}
}

// TestReportNamespaceReadiness: strict-readiness -n NS and -A answer per
// namespace, from a real API: a verdict, what it rests on, a line per
// workload, the blocking clients and an example command that works when
// pasted; exit 3 when a namespace shown is not ready.
func TestReportNamespaceReadiness(t *testing.T) {
	a, plain := storyAPI(t)
	code, stdout, stderr := cli(t, append([]string{"report", "strict-readiness", "-n", "mtls-pg"}, a.args()...)...)
	lines := strings.Split(stdout, "\n")
	if code != 3 || stderr != "" || len(lines) < 12 {
		t.Fatalf("-n mtls-pg: exit %d, want 3\n%s%s", code, stdout, stderr)
	}
	for i, want := range []string{
		`^0 of 1 destination ready in 1 namespace, between \S+Z and \S+Z \(destinations known since \S+Z\)\.$`,
		`^$`,
		`^namespace mtls-pg: NOT READY: 1 client still sends plaintext to 1 of 1 destination$`,
		`^  based on 9 requests from 2 clients to 1 destination, \S+Z to \S+Z$`,
		`^$`,
		`^  WORKLOAD +STATUS +REQUESTS +CLIENTS +MTLS +LAST SEEN +DESTINATION$`,
		`^  httpbin +NOT READY +9 +2 +66% +\S+Z \(10m ago\) +` + regexp.QuoteMeta(httpbinID) + `$`,
		`^$`,
		`^  BLOCKING CLIENT +VERDICTS +REQUESTS +LAST SEEN +EXAMPLE ID$`,
		`^  ` + regexp.QuoteMeta(legacyIP) + ` +plaintext 3 +3 +\S+Z \(10m ago\) +01TEST\d+$`,
		`^  See an example: meshproof query --server=\S+ --token-file=\S+ --id 01TEST\d+$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[i]) {
			t.Errorf("line %d: %q, want %s\n%s", i, lines[i], want, stdout)
		}
	}
	// The example, pasted as printed.
	_, hint, _ := strings.Cut(stdout, "See an example: meshproof ")
	code, detail, errOut := cli(t, strings.Fields(hint)...)
	if code != 0 || !strings.Contains(detail, legacyIP) || !slices.ContainsFunc(idsOf(plain), func(id string) bool { return strings.Contains(detail, id) }) {
		t.Errorf("the example: exit %d:\n%s%s", code, detail, errOut)
	}

	// Every namespace, not ready first, then by name; the same as JSON.
	code, stdout, _ = cli(t, append([]string{"report", "strict-readiness", "-A"}, a.args()...)...)
	if code != 3 || !strings.HasPrefix(stdout, "1 of 3 destinations ready in 2 namespaces, ") ||
		strings.Index(stdout, "namespace bookinfo: NOT READY") > strings.Index(stdout, "namespace mtls-pg: NOT READY") ||
		!regexp.MustCompile(`(?m)^  ratings +READY +2 +1 +100% `).MatchString(stdout) {
		t.Errorf("-A: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = cli(t, append([]string{"report", "strict-readiness", "-A", "-o", "json"}, a.args()...)...)
	var rep report.NamespaceReadinessReport
	if err := json.Unmarshal([]byte(stdout), &rep); code != 3 || err != nil || len(rep.Namespaces) != 2 || rep.Namespaces[0].Namespace != "bookinfo" {
		t.Errorf("-A -o json: exit %d, %v\n%s", code, err, stdout)
	}

	// Ready before the plaintext client came; unknown is not ready.
	if code, stdout, _ := cli(t, append([]string{"report", "strict-readiness", "-n", "mtls-pg", "--until", "43m"}, a.args()...)...); code != 0 ||
		!strings.Contains(stdout, "namespace mtls-pg: READY: ") {
		t.Errorf("-n mtls-pg --until 43m: exit %d, want 0\n%s", code, stdout)
	}
	if code, stdout, _ := cli(t, append([]string{"report", "strict-readiness", "-n", "nosuch"}, a.args()...)...); code != 3 ||
		!strings.Contains(stdout, "namespace nosuch: NOT READY: no traffic seen") {
		t.Errorf("-n nosuch: exit %d, want 3\n%s", code, stdout)
	}

	// tls-check -n: the namespace's destinations only.
	code, stdout, _ = cli(t, append([]string{"report", "tls-check", "-n", "bookinfo"}, a.args()...)...)
	if code != 0 || strings.Contains(stdout, httpbin) || !strings.Contains(stdout, ratings) || !strings.Contains(stdout, reviews) {
		t.Errorf("tls-check -n bookinfo: exit %d\n%s", code, stdout)
	}

	for _, args := range [][]string{{"--destination", httpbin, "-n", "x"}, {"-n", "x", "-A"}, {"--destination", httpbin, "-A"}} {
		if code, _, stderr := cli(t, append(append([]string{"report", "strict-readiness"}, a.args()...), args...)...); code != 2 ||
			!strings.Contains(stderr, "give one of --destination, -n/--namespace and -A/--all-namespaces") {
			t.Errorf("%q: exit %d, want 2: %s", args, code, stderr)
		}
	}
}

// TestWriteTLSCheckConfigured: with the cluster's configuration in the
// report (serve --kubernetes), tls-check prints istioctl authn
// tls-check's columns first, CONFLICT among the statuses, and each
// client by its workload with what it sent.
func TestWriteTLSCheckConfigured(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	counts := func(mtls, plain int64) report.Counts {
		return report.Counts{evidence.MTLS: mtls, evidence.Plaintext: plain}
	}
	strict := &report.Setting{Name: "default.mtls-pg", Mode: "STRICT"}
	mutual := &report.Setting{Name: "httpbin.mtls-pg", Mode: "ISTIO_MUTUAL"}
	legacyW := &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "legacy"}
	rep := report.TLSCheckReport{Since: now.Add(-time.Hour), Until: now, Rows: []report.TLSCheckRow{
		{Destination: httpbin, DestinationPrincipal: httpbinID, Status: report.StatusConflict, Server: report.ServerMixed, Total: 9, Counts: counts(6, 3),
			AuthnPolicy: strict, DestinationRule: mutual, Clients: []report.Client{
				{Client: legacyIP, Counts: counts(0, 3), Total: 3, LastSeen: now.Add(-time.Minute), Workload: legacyW, DestinationRule: &report.Setting{}},
				// Keyed by its workload (no principal): no principal or address to show.
				{Client: "workload:legacy/Pod/forger", Counts: counts(0, 1), Total: 1, LastSeen: now.Add(-time.Minute),
					Workload: &evidence.Workload{Namespace: "legacy", Kind: "Pod", Name: "forger", Pod: "forger"}, DestinationRule: &report.Setting{}},
				{Client: sleepID, Counts: counts(6, 0), Total: 6, LastSeen: now.Add(-time.Minute), DestinationRule: mutual},
			}},
		{Destination: ratings, DestinationPrincipal: ratingsID, Status: report.StatusOK, Server: report.ServerMTLS, Total: 2, Counts: counts(2, 0),
			AuthnPolicy: &report.Setting{Mode: "PERMISSIVE"}, DestinationRule: &report.Setting{}, Clients: []report.Client{
				{Client: sleepID, Counts: counts(2, 0), Total: 2, LastSeen: now.Add(-time.Minute), DestinationRule: &report.Setting{}},
			}},
	}}
	var out strings.Builder
	if err := writeTLSCheck(&out, rep, false, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")[2:]
	header := regexp.MustCompile(`\S+( \S+)*`)
	cols := header.FindAllStringIndex(lines[0], -1)
	var names []string
	for _, c := range cols {
		names = append(names, lines[0][c[0]:c[1]])
	}
	if want := []string{"HOST:PORT / CLIENT", "STATUS", "SERVER", "CLIENT", "AUTHN POLICY", "DESTINATION RULE", "PRINCIPAL", "MTLS", "REQUESTS", "LAST SEEN"}; !slices.Equal(names, want) {
		t.Fatalf("header %q, want %q:\n%s", names, want, out.String())
	}
	under := func(line string) []string {
		cells := make([]string, len(cols))
		for i, c := range cols {
			end := len(line)
			if i+1 < len(cols) {
				end = min(cols[i+1][0], len(line))
			}
			if c[0] < len(line) {
				cells[i] = strings.TrimSpace(line[c[0]:end])
			}
		}
		return cells[:9] // LAST SEEN aside
	}
	for i, want := range [][]string{
		{httpbin, "CONFLICT", "HTTP/mTLS", "mTLS", "default.mtls-pg/STRICT", "httpbin.mtls-pg/ISTIO_MUTUAL", httpbinID, "66%", "9"},
		{"legacy/deployment/legacy", "", "", "HTTP", "", "-/auto", legacyIP, "0%", "3"},
		{"legacy/pod/forger", "", "", "HTTP", "", "-/auto", "-", "0%", "1"},
		{sleepID, "", "", "mTLS", "", "", "-", "100%", "6"},
		{ratings, "OK", "mTLS", "auto", "-/PERMISSIVE", "-/auto", ratingsID, "100%", "2"},
		{sleepID, "", "", "mTLS", "", "", "-", "100%", "2"},
	} {
		if got := under(lines[i+1]); !slices.Equal(got, want) {
			t.Errorf("line %d:\n got %q\nwant %q\n%s", i+1, got, want, out.String())
		}
	}
	if last := lines[len(lines)-1]; last != "2 destinations: 1 OK, 0 PLAINTEXT, 0 SUSPECT, 1 CONFLICT." {
		t.Errorf("summary: %s", last)
	}
}

// TestWriteReadinessWorkloads: blocking clients with workloads are named
// by them, and one without a sidecar is said to break under STRICT.
func TestWriteReadinessWorkloads(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	rep := report.StrictReadinessReport{Destination: httpbin, Since: now.Add(-time.Hour), Until: now, Total: 9,
		Counts: report.Counts{evidence.MTLS: 6, evidence.Plaintext: 3}, Reason: "2 clients still send plaintext",
		Blocking: []report.BlockingClient{
			{Client: report.Client{Client: legacyIP, Counts: report.Counts{evidence.Plaintext: 2}, Total: 2, ExampleID: "01A",
				Workload: &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "legacy"}}, Count: 2, NoSidecar: true},
			{Client: report.Client{Client: "10.42.0.98", Counts: report.Counts{evidence.Plaintext: 1}, Total: 1, ExampleID: "01B",
				Workload: &evidence.Workload{Namespace: "mtls-pg", Kind: "Pod", Name: "debug", Sidecar: true}}, Count: 1},
			{Client: report.Client{Client: "10.42.0.97", Counts: report.Counts{evidence.Plaintext: 1}, Total: 1, ExampleID: "01C"}, Count: 1},
		}}
	var out strings.Builder
	if err := writeReadiness(&out, rep, "", now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"CLIENT      WORKLOAD                  SIDECAR                  VERDICTS",
		"10.42.0.99  legacy/deployment/legacy  no: breaks under STRICT  plaintext 2",
		"10.42.0.98  mtls-pg/pod/debug         yes                      plaintext 1",
		"10.42.0.97  -                         -                        plaintext 1",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no line with %q:\n%s", want, out.String())
		}
	}
}

// TestReportClientsByWorkload: tls-check names a plaintext client by the
// workload serve --kubernetes recorded (both of its pods' addresses, one
// line), and a client whose SPIFFE ID is not its pod's as WORKLOAD as
// PRINCIPAL, which makes its destination SUSPECT.
func TestReportClientsByWorkload(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	now := time.Now()
	pinClock(t, now)
	legacyWL := &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "sleep", ServiceAccount: "sleep"}
	for i, addr := range []string{"10.42.0.98", legacyIP} {
		r := rec(now.Add(-time.Duration(10+i)*time.Minute), evidence.Peer{Address: addr, Port: 51000, Workload: legacyWL}, httpbin, "", evidence.Plaintext)
		a.add(t, r)
	}
	hijack := sleep
	hijack.Workload = &evidence.Workload{Namespace: "mtls-pg", Kind: "Deployment", Name: "api", ServiceAccount: "api"}
	stale := rec(now.Add(-5*time.Minute), hijack, ratings, ratingsID, evidence.MTLS)
	// The reason serve --kubernetes gives (authz, cluster/workload's
	// CheckIdentity): the case it most likely is, after the sides.
	why := `source identity is not its workload's: service account differs: workload "api", SPIFFE ID "sleep"; ` +
		"stale address data: pod mtls-pg/sleep-6f8d5c9b7-w4n2m, which runs as that identity, held 10.42.0.7 too"
	stale.Reasons = append(stale.Reasons, why)
	a.add(t, stale)
	code, stdout, stderr := cli(t, append([]string{"report", "tls-check"}, a.args()...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(stdout, "\n")
	header := []string{"DESTINATION / CLIENT", "PRINCIPAL", "STATUS", "SERVER", "MTLS", "REQUESTS", "LAST SEEN"}
	var got [][]string
	for _, l := range lines[3:7] {
		got = append(got, cellsUnder(lines[2], l, header)[:6])
	}
	want := [][]string{
		{httpbin, "-", "PLAINTEXT", "HTTP", "0%", "2"},
		{"legacy/deployment/sleep", "", "", "", "0%", "2"},
		{ratings, ratingsID, "SUSPECT", "mTLS", "100%", "1"},
		// Which case the record's reason names: stale address data.
		{"mtls-pg/deployment/api as " + sleepID, "", "stale_address", "", "100%", "1"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("tls-check:\n got %q\nwant %q\n%s", got, want, stdout)
	}
	if note := "\n  mtls-pg/deployment/api as " + sleepID + " to " + ratings + ": stale_address: " + why + "\n"; !strings.Contains(stdout, note) {
		t.Errorf("no note %q:\n%s", note, stdout)
	}
	code, stdout, _ = cli(t, append([]string{"report", "tls-check", "-o", "json", "--destination", ratings}, a.args()...)...)
	var rep report.TLSCheckReport
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil || len(rep.Rows) != 1 || len(rep.Rows[0].Clients) != 1 ||
		rep.Rows[0].Clients[0].Suspect != evidence.CaseStaleAddress || rep.Rows[0].Clients[0].SuspectReason != why {
		t.Errorf("-o json: exit %d, %v, want the client's suspect %q and reason %q:\n%s", code, err, evidence.CaseStaleAddress, why, stdout)
	}
}
