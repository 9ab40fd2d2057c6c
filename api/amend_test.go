package api

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// TestEffectiveOutcome: a record that has an amendment (its sync Check was
// not answered as it says) is answered, by id and in pages, with the
// outcome its request actually got; the others are answered as stored.
func TestEffectiveOutcome(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Minute)
	store := openStore(t)
	rec := func(id string, at time.Time) *evidence.Record {
		return &evidence.Record{ID: id, Time: at, Replica: "r1", RequestID: "req-" + id, Verdict: evidence.MTLS,
			Reasons: []string{"client certificate presented"}, Source: evidence.Peer{Principal: "spiffe://td/ns/a/sa/x"},
			Request: evidence.Request{Method: "GET", Host: "app", Path: "/"}, Decision: evidence.Decision{Allowed: true}}
	}
	amended, kept := rec("01JQ0000000000000000000AMD", now.Add(-time.Minute)), rec("01JQ0000000000000000000KPT", now.Add(-2*time.Minute))
	appendChained(t, store, []*evidence.Record{kept, amended})
	am := evidence.Amendment(amended, evidence.Decision{Error: "the Check ended before this record was committed"}, "")
	appendChained(t, store, []*evidence.Record{am})
	ts := newTestServer(t, store, Config{}, now)

	type answer struct {
		evidence.Record
		Effective *evidence.Effective `json:"effective"`
	}
	want := evidence.Effective{Allowed: false, Error: am.Decision.Error, AmendedBy: am.ID}
	check := func(what string, got answer, wantEff *evidence.Effective) {
		t.Helper()
		if !got.Decision.Allowed && got.Amends == nil {
			t.Errorf("%s: the stored decision changed: %+v", what, got.Decision)
		}
		switch {
		case wantEff == nil && got.Effective != nil:
			t.Errorf("%s: effective %+v, want none", what, *got.Effective)
		case wantEff != nil && (got.Effective == nil || *got.Effective != *wantEff):
			t.Errorf("%s: effective %+v, want %+v", what, got.Effective, *wantEff)
		}
	}
	for _, c := range []struct {
		id  string
		eff *evidence.Effective
	}{{amended.ID, &want}, {kept.ID, nil}, {am.ID, nil}} {
		r := ts.get(t, "/v1/evidence/"+url.PathEscape(c.id), "")
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", c.id, r.status, r.body)
		}
		var got answer
		r.decode(t, &got)
		check("GET "+c.id, got, c.eff)
	}
	for _, q := range []string{"", "limit=1", "allowed=true", "request_id=req-" + amended.ID} {
		r := ts.get(t, "/v1/evidence?"+q, "")
		if r.status != http.StatusOK {
			t.Fatalf("list %q: %d %s", q, r.status, r.body)
		}
		var p struct {
			Records []answer `json:"records"`
		}
		r.decode(t, &p)
		seen := false
		for _, got := range p.Records {
			if got.ID == amended.ID {
				seen = true
				check("list "+q+" "+got.ID, got, &want)
			} else {
				check("list "+q+" "+got.ID, got, nil)
			}
		}
		if !seen && !strings.HasPrefix(q, "limit") {
			t.Errorf("list %q: the amended record is missing", q)
		}
	}
}
