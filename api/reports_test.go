package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

// The README's story ("Run with Istio"): httpbin in namespace mtls-pg runs in
// PERMISSIVE mode; sleep calls it over mTLS; a legacy client without a
// sidecar calls it in plaintext (no principal on either side), until, a
// day ago, it was given a sidecar and calls over mTLS too.
const (
	httpbin   = "httpbin.mtls-pg:8000"
	httpbinID = "spiffe://cluster.local/ns/mtls-pg/sa/httpbin"
	sleepID   = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	legacyIP  = "10.244.0.17"
	legacyID  = "spiffe://cluster.local/ns/legacy/sa/legacy"
)

func storyRecords(now time.Time) []*evidence.Record {
	var recs []*evidence.Record
	add := func(at time.Time, src evidence.Peer, dstPrincipal string, v evidence.Verdict) {
		recs = append(recs, &evidence.Record{
			ID: fmt.Sprintf("01STORY%019d", len(recs)), Time: at, Replica: "story",
			Source:      src,
			Destination: evidence.Peer{Address: "10.244.0.5", Port: 8000, Principal: dstPrincipal},
			Request:     evidence.Request{Method: "GET", Host: httpbin, Path: "/headers", Protocol: "HTTP/1.1"},
			Verdict:     v, Reasons: []string{string(v)}, Decision: evidence.Decision{Allowed: true},
		})
	}
	sleep := evidence.Peer{Address: "10.244.0.9", Principal: sleepID}
	// Two days ago to one day ago: sleep over mTLS, the legacy client in plaintext.
	for i := range 90 {
		at := now.Add(-47*time.Hour + time.Duration(i)*10*time.Minute)
		if i%3 == 0 {
			add(at, evidence.Peer{Address: legacyIP}, "", evidence.Plaintext)
		} else {
			add(at, sleep, httpbinID, evidence.MTLS)
		}
	}
	// The last day: both over mTLS.
	for i := range 60 {
		at := now.Add(-23*time.Hour + time.Duration(i)*10*time.Minute)
		src := sleep
		if i%2 == 0 {
			src = evidence.Peer{Address: legacyIP, Principal: legacyID}
		}
		add(at, src, httpbinID, evidence.MTLS)
	}
	return recs
}

func TestReportsTellTheStory(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Minute)
	store := openStore(t)
	appendChained(t, store, storyRecords(now))
	ts := newTestServer(t, store, Config{}, now)

	var tc report.TLSCheckReport
	resp := ts.get(t, "/v1/reports/tls-check?since=2d&until=1d", "")
	resp.decode(t, &tc)
	if resp.status != http.StatusOK || len(tc.Rows) != 1 {
		t.Fatalf("tls-check: %d %s", resp.status, resp.body)
	}
	row := tc.Rows[0]
	if row.Destination != httpbin || row.DestinationPrincipal != httpbinID || row.Status != "PLAINTEXT" || row.Server != "HTTP/mTLS" ||
		row.Total != 90 || row.Counts[evidence.Plaintext] != 30 || len(row.Clients) != 2 || row.Clients[0].Client != legacyIP {
		t.Errorf("two days ago: %s", resp.body)
	}
	resp = ts.get(t, "/v1/reports/tls-check", "") // since=24h by default
	resp.decode(t, &tc)
	if len(tc.Rows) != 1 || tc.Rows[0].Status != "OK" || tc.Rows[0].Server != "mTLS" || tc.Rows[0].MTLSShare != 1 || tc.Rows[0].Total != 60 {
		t.Errorf("the last day: %s", resp.body)
	}

	for _, dest := range []string{httpbin, httpbinID} {
		d := url.QueryEscape(dest)
		var sr report.StrictReadinessReport
		resp := ts.get(t, "/v1/reports/strict-readiness?destination="+d+"&since=2d&until=1d", "")
		resp.decode(t, &sr)
		if resp.status != http.StatusOK || sr.Ready || len(sr.Blocking) != 1 || sr.Blocking[0].Client.Client != legacyIP ||
			sr.Blocking[0].Count != 30 || sr.Reason != "1 client still sends plaintext" {
			t.Errorf("%s two days ago: %d %s", dest, resp.status, resp.body)
		}
		if rec := ts.get(t, "/v1/evidence/"+sr.Blocking[0].ExampleID, ""); rec.status != http.StatusOK {
			t.Errorf("the example record: %d %s", rec.status, rec.body)
		}
		ts.get(t, "/v1/reports/strict-readiness?destination="+d+"&since=1d", "").decode(t, &sr)
		if !sr.Ready || sr.Total != 60 || len(sr.Blocking) != 0 {
			t.Errorf("%s the last day: %+v, want ready", dest, sr)
		}
		ts.get(t, "/v1/reports/strict-readiness?destination="+d, "").decode(t, &sr) // since=7d by default
		if sr.Ready || sr.Total != 150 || !sr.Since.Equal(now.Add(-7*24*time.Hour)) {
			t.Errorf("%s the last week: %+v, want not ready", dest, sr)
		}
	}
	var sr report.StrictReadinessReport
	ts.get(t, "/v1/reports/strict-readiness?destination=nothing.here:80&since=2d", "").decode(t, &sr)
	if sr.Ready || sr.Total != 0 || sr.Reason[:len("no traffic to nothing.here:80 since ")] != "no traffic to nothing.here:80 since " {
		t.Errorf("unknown destination: %+v", sr)
	}
	for _, q := range []string{"", "?since=1d", "?destination="} {
		resp := ts.get(t, "/v1/reports/strict-readiness"+q, "")
		if e := resp.errorOf(t); resp.status != http.StatusBadRequest || e.Parameter != "destination" {
			t.Errorf("strict-readiness%s: %d %s, want 400 naming destination", q, resp.status, resp.body)
		}
	}

	var st evidence.Stats
	resp = ts.get(t, "/v1/stats", "")
	resp.decode(t, &st)
	if resp.status != http.StatusOK || st.Records != 150 || st.ByVerdict[evidence.MTLS] != 60 || st.ByDecision["allowed"] != 60 ||
		st.Replicas["story"].Seq != 150 {
		t.Errorf("stats for the last day: %s", resp.body)
	}
	var raw map[string]any
	if json.Unmarshal(resp.body, &raw) != nil || raw["quarantined"] != 0.0 {
		t.Errorf("stats say nothing of quarantined records: %s", resp.body)
	}
	ts.get(t, "/v1/stats?since=3d", "").decode(t, &st)
	if st.ByVerdict[evidence.Plaintext] != 30 || st.ByVerdict[evidence.MTLS] != 120 {
		t.Errorf("stats for three days: %+v", st)
	}
	if resp := ts.get(t, "/v1/stats?until=1d", ""); resp.status != http.StatusBadRequest || resp.errorOf(t).Parameter != "until" {
		t.Errorf("stats takes no until: %d %s", resp.status, resp.body)
	}
}
