package main

import (
	"encoding/json"
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
	header := []string{"HOST:PORT", "STATUS", "SERVER", "CLIENT", "PRINCIPAL", "MTLS", "REQUESTS", "LAST SEEN"}
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "HOST:PORT  ") || !slices.Equal(cellsUnder(lines[0], lines[0], header), header) {
		t.Fatalf("want a header, 4 client lines, a blank line and a summary:\n%s", stdout)
	}
	lastPlain := plain[len(plain)-1].Time.Local().Format("15:04:05")
	want := [][]string{
		{httpbin, "PLAINTEXT", "HTTP/mTLS", legacyIP, httpbinID, "0%", "3", lastPlain + " (10m ago)"},
		{"", "", "", sleepID, "", "100%", "6", ""},
		{ratings, "OK", "mTLS", sleepID, ratingsID, "100%", "2", ""},
		{reviews, "SUSPECT", "mTLS", sleepID, reviewsID, "0%", "1", ""},
	}
	for i, row := range want {
		got := cellsUnder(lines[0], lines[i+1], header)
		if row[7] == "" {
			got[7] = "" // checked below
		}
		if !slices.Equal(got, row) {
			t.Errorf("line %d:\n got %q\nwant %q\n%s", i+1, got, row, stdout)
		}
		if !strings.HasSuffix(lines[i+1], "m ago)") {
			t.Errorf("line %d: LAST SEEN is not local and relative:\n%s", i+1, lines[i+1])
		}
	}
	if !strings.HasPrefix(lines[6], "3 destinations: 1 OK, 1 PLAINTEXT, 1 SUSPECT; traffic from ") || !strings.HasSuffix(lines[6], "(just now).") {
		t.Errorf("summary: %s", lines[6])
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
	if code != 0 || !strings.HasPrefix(stdout, "No traffic seen from ") {
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
	if want := plain[len(plain)-1].Time.Local().Format("15:04:05") + " (10m ago)"; got[0] != legacyIP || got[1] != "plaintext 3" ||
		got[2] != "3" || got[3] != want || !slices.Contains(idsOf(plain), got[4]) {
		t.Errorf("blocking client %q, want %s, plaintext 3, 3, %s, one of %v", got, legacyIP, want, idsOf(plain))
	}
	if !strings.Contains(lines[1], "destination "+httpbin+", traffic from ") || !strings.Contains(lines[1], ": 9 requests (mtls 6, plaintext 3)") {
		t.Errorf("second line: %s", lines[1])
	}
	// The example the report points at is one command away.
	_, hint, _ := strings.Cut(stdout, "See an example: meshproof ")
	code, detail, _ := cli(t, append(strings.Fields(hint), a.args()...)...)
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
