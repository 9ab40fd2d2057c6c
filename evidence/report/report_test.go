package report

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// groupsReader answers Aggregate from fixed groups, filtered by
// destination (host or principal) as a store does; the logic under test is
// what the reports make of the groups. Get finds records (a SUSPECT
// client's example) in records; other methods are not used.
type groupsReader struct {
	evidence.Reader
	groups  []evidence.Group
	queries []evidence.AggregateQuery
	records map[string]*evidence.Record // what Get finds, by id
	got     []string                    // the ids Get was asked for
}

func (g *groupsReader) Get(_ context.Context, id string) (*evidence.Record, error) {
	g.got = append(g.got, id)
	if r, ok := g.records[id]; ok {
		return r, nil
	}
	return nil, fmt.Errorf("record %s: %w", id, evidence.ErrNotFound)
}

func (g *groupsReader) Aggregate(_ context.Context, q evidence.AggregateQuery) ([]evidence.Group, error) {
	g.queries = append(g.queries, q)
	var out []evidence.Group
	for _, gr := range g.groups {
		if q.Destination == "" || q.Destination == gr.DestinationHost || q.Destination == gr.DestinationPrincipal {
			out = append(out, gr)
		}
	}
	return out, nil
}

// AggregateSeries answers every group in the first point.
func (g *groupsReader) AggregateSeries(_ context.Context, q evidence.SeriesQuery) ([]evidence.PointGroup, error) {
	g.queries = append(g.queries, evidence.AggregateQuery{Since: q.Since, Until: q.Until})
	var out []evidence.PointGroup
	for _, gr := range g.groups {
		out = append(out, evidence.PointGroup{Group: gr})
	}
	return out, nil
}

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	httpbin   = "httpbin.mtls-pg:8000"
	httpbinID = "spiffe://cluster.local/ns/mtls-pg/sa/httpbin"
	sleepID   = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	legacy    = "10.244.0.17"
)

// g builds a group; minutes place its first and last seen after t0.
func g(source, host, principal string, v evidence.Verdict, allowed bool, count int64, first, last int, example string) evidence.Group {
	return evidence.Group{Source: source, DestinationHost: host, DestinationPrincipal: principal, Verdict: v, Allowed: allowed,
		Count: count, FirstSeen: t0.Add(time.Duration(first) * time.Minute), LastSeen: t0.Add(time.Duration(last) * time.Minute), ExampleID: example}
}

func counts(kv ...any) Counts {
	c := newCounts()
	for i := 0; i < len(kv); i += 2 {
		c[kv[i].(evidence.Verdict)] = int64(kv[i+1].(int))
	}
	return c
}

func TestTLSCheckRows(t *testing.T) {
	type row struct {
		dest, principal, status, server string
		share                           float64
		total                           int64
		clients                         []string
	}
	tests := []struct {
		name   string
		groups []evidence.Group
		dest   string
		want   []row
	}{
		{name: "no traffic", want: nil},
		{
			name:   "all mTLS",
			groups: []evidence.Group{g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 10, 0, 5, "a")},
			want:   []row{{httpbin, httpbinID, StatusOK, ServerMTLS, 1, 10, []string{sleepID}}},
		},
		{
			name: "PERMISSIVE: mTLS and plaintext on one host make one row",
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 30, 0, 5, "a"),
				g(legacy, httpbin, "", evidence.Plaintext, true, 10, 1, 6, "b"),
			},
			want: []row{{httpbin, httpbinID, StatusPlaintext, ServerMixed, 0.75, 40, []string{legacy, sleepID}}},
		},
		{
			name:   "plaintext only",
			groups: []evidence.Group{g(legacy, httpbin, "", evidence.Plaintext, false, 4, 0, 1, "b")},
			want:   []row{{httpbin, "", StatusPlaintext, ServerHTTP, 0, 4, []string{legacy}}},
		},
		{
			name:   "TLS without a client certificate is not mTLS",
			groups: []evidence.Group{g(legacy, httpbin, httpbinID, evidence.TLSServerOnly, true, 2, 0, 1, "c")},
			want:   []row{{httpbin, httpbinID, StatusPlaintext, ServerHTTP, 0, 2, []string{legacy}}},
		},
		{
			name: "mtls_mismatch is suspect on an mTLS connection",
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 3, 0, 1, "a"),
				g(sleepID, httpbin, httpbinID, evidence.MTLSMismatch, true, 1, 0, 1, "d"),
			},
			want: []row{{httpbin, httpbinID, StatusSuspect, ServerMTLS, 0.75, 4, []string{sleepID}}},
		},
		{
			name: "suspect wins over plaintext",
			groups: []evidence.Group{
				g(legacy, httpbin, "", evidence.Plaintext, true, 3, 0, 1, "b"),
				g("10.0.0.9", httpbin, httpbinID, evidence.XFCCUnverified, true, 1, 0, 1, "e"),
			},
			want: []row{{httpbin, httpbinID, StatusSuspect, ServerHTTP, 0, 4, []string{"10.0.0.9", legacy}}},
		},
		{
			name: "several principals behind one host are listed",
			groups: []evidence.Group{
				g(sleepID, "api:80", "spiffe://td/ns/a/sa/v2", evidence.MTLS, true, 1, 0, 1, "a"),
				g(sleepID, "api:80", "spiffe://td/ns/a/sa/v1", evidence.MTLS, true, 1, 0, 1, "b"),
			},
			want: []row{{"api:80", "spiffe://td/ns/a/sa/v1, spiffe://td/ns/a/sa/v2", StatusOK, ServerMTLS, 1, 2, []string{sleepID}}},
		},
		{
			name: "rows sorted by destination, clients by client",
			groups: []evidence.Group{
				g("spiffe://td/ns/z/sa/z", "b:80", "", evidence.Plaintext, true, 1, 0, 1, "1"),
				g("spiffe://td/ns/a/sa/a", "b:80", "", evidence.Plaintext, true, 1, 0, 1, "2"),
				g(sleepID, "a:80", "p", evidence.MTLS, true, 1, 0, 1, "3"),
			},
			want: []row{
				{"a:80", "p", StatusOK, ServerMTLS, 1, 1, []string{sleepID}},
				{"b:80", "", StatusPlaintext, ServerHTTP, 0, 2, []string{"spiffe://td/ns/a/sa/a", "spiffe://td/ns/z/sa/z"}},
			},
		},
		{
			name: "plaintext clients by workload",
			groups: []evidence.Group{
				g("workload:legacy/Deployment/sleep", httpbin, "", evidence.Plaintext, true, 3, 0, 1, "a"),
				g(legacy, httpbin, "", evidence.Plaintext, true, 1, 0, 1, "b"),
			},
			want: []row{{httpbin, "", StatusPlaintext, ServerHTTP, 0, 4, []string{legacy, "workload:legacy/Deployment/sleep"}}},
		},
		{
			name: "a client whose SPIFFE ID is not its pod's is suspect over mTLS",
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 3, 0, 1, "a"),
				g(sleepID+" workload:legacy/Deployment/sleep", httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "d"),
			},
			want: []row{{httpbin, httpbinID, StatusSuspect, ServerMTLS, 1, 4, []string{sleepID, sleepID + " workload:legacy/Deployment/sleep"}}},
		},
		{
			name: "an identity mismatch wins over plaintext",
			groups: []evidence.Group{
				g(legacy, httpbin, "", evidence.Plaintext, true, 3, 0, 1, "b"),
				g(sleepID+" workload:legacy/Deployment/sleep", httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "d"),
			},
			want: []row{{httpbin, httpbinID, StatusSuspect, ServerMixed, 0.25, 4, []string{legacy, sleepID + " workload:legacy/Deployment/sleep"}}},
		},
		{
			name: "a destination principal takes in the plaintext sent to its host",
			dest: httpbinID,
			groups: []evidence.Group{
				g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 3, 0, 1, "a"),
				g(legacy, httpbin, "", evidence.Plaintext, true, 1, 0, 1, "b"),
				g(sleepID, "other:80", "spiffe://td/other", evidence.MTLS, true, 5, 0, 1, "c"),
			},
			want: []row{{httpbin, httpbinID, StatusPlaintext, ServerMixed, 0.75, 4, []string{legacy, sleepID}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := TLSCheck(context.Background(), &groupsReader{groups: tc.groups}, Query{Since: t0, Destination: tc.dest})
			if err != nil {
				t.Fatal(err)
			}
			var got []row
			for _, r := range rep.Rows {
				var cs []string
				for _, c := range r.Clients {
					cs = append(cs, c.Client)
				}
				got = append(got, row{r.Destination, r.DestinationPrincipal, r.Status, r.Server, r.MTLSShare, r.Total, cs})
			}
			if !slices.EqualFunc(got, tc.want, func(a, b row) bool {
				return a.dest == b.dest && a.principal == b.principal && a.status == b.status && a.server == b.server &&
					a.share == b.share && a.total == b.total && slices.Equal(a.clients, b.clients)
			}) {
				t.Errorf("rows:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestTLSCheckClients(t *testing.T) {
	r := &groupsReader{groups: []evidence.Group{
		g(legacy, httpbin, "", evidence.Plaintext, true, 5, 10, 20, "plain-allowed"),
		g(legacy, httpbin, "", evidence.Plaintext, false, 2, 15, 16, "plain-denied"),
		g(legacy, httpbin, httpbinID, evidence.MTLS, true, 7, 1, 30, "mtls"),
		g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 1, 3, 3, "sleep"),
	}}
	rep, err := TLSCheck(context.Background(), r, Query{Since: t0, Until: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || len(rep.Rows[0].Clients) != 2 {
		t.Fatalf("rows = %+v, want one row with two clients", rep.Rows)
	}
	row := rep.Rows[0]
	if want := counts(evidence.MTLS, 8, evidence.Plaintext, 7); !equalCounts(row.Counts, want) {
		t.Errorf("row counts = %v, want %v", row.Counts, want)
	}
	c := row.Clients[0]
	want := Client{Client: legacy, Counts: counts(evidence.MTLS, 7, evidence.Plaintext, 7), Total: 14, Allowed: 12, Denied: 2,
		FirstSeen: t0.Add(time.Minute), LastSeen: t0.Add(30 * time.Minute), ExampleID: "plain-allowed"}
	if c.Client != want.Client || !equalCounts(c.Counts, want.Counts) || c.Total != want.Total || c.Allowed != want.Allowed ||
		c.Denied != want.Denied || !c.FirstSeen.Equal(want.FirstSeen) || !c.LastSeen.Equal(want.LastSeen) || c.ExampleID != want.ExampleID {
		t.Errorf("client =\n %+v\nwant\n %+v\n(the example must be a plaintext record, the latest one)", c, want)
	}
	if !rep.Since.Equal(t0) || !rep.Until.Equal(t0.Add(time.Hour)) {
		t.Errorf("window = %s..%s", rep.Since, rep.Until)
	}
	// The JSON carries every verdict, zero or not, under the names of the
	// API's schema.
	b, _ := json.Marshal(rep)
	for _, key := range []string{`"rows":`, `"destination":"httpbin.mtls-pg:8000"`, `"destination_principal":`, `"status":"PLAINTEXT"`,
		`"server":"HTTP/mTLS"`, `"mtls_share":0.5333`, `"clients":[`, `"client":"10.244.0.17"`, `"first_seen":`, `"last_seen":`,
		`"example_id":"plain-allowed"`, `"xfcc_unverified":0`, `"allowed":12`, `"denied":2`, `"total":14`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	for key, want := range map[string]string{
		legacy:                             legacy,
		sleepID:                            sleepID,
		"workload:legacy/Deployment/sleep": "legacy/deployment/sleep",
		sleepID + " workload:legacy/Deployment/sleep": "legacy/deployment/sleep as " + sleepID,
	} {
		cs := clients{}
		cs.add(g(key, httpbin, "", evidence.Plaintext, true, 1, 0, 1, "x"))
		if c := cs[key]; c.Name != want || c.IdentityMismatch != strings.Contains(key, " ") {
			t.Errorf("client %q: name %q, mismatch %v; want %q", key, c.Name, c.IdentityMismatch, want)
		}
	}
	if !strings.Contains(string(b), `"name":"10.244.0.17"`) {
		t.Errorf("JSON lacks the client's name: %s", b)
	}
	if strings.Contains(string(b), "example\"") {
		t.Errorf("JSON leaks the internal example group: %s", b)
	}
}

func equalCounts(a, b Counts) bool {
	for _, v := range evidence.Verdicts {
		if a[v] != b[v] {
			return false
		}
	}
	return len(a) == len(evidence.Verdicts) && len(b) == len(evidence.Verdicts)
}

// TestTLSCheckSuspects: every client that makes its row SUSPECT says why,
// from its example record (one Get each, none for the others): which case
// an identity that is not its pod's most likely is, as the record's reason
// says, or the suspect verdict it sent, with the reasons behind it.
func TestTLSCheckSuspects(t *testing.T) {
	const sides = `source identity is not its workload's: service account differs: workload "api", SPIFFE ID "sleep"; `
	stale := sides + "stale address data: pod mtls-pg/sleep-1, which runs as that identity, held 10.42.0.7 too"
	borrowed := sides + "a workload presenting another's identity: pod mtls-pg/api-1 holds 10.42.0.7"
	either := sides + "a workload presenting another's identity, or stale address data"
	r := &groupsReader{
		groups: []evidence.Group{
			g(sleepID, httpbin, httpbinID, evidence.MTLS, true, 5, 0, 1, "ok"),
			g(sleepID+" workload:mtls-pg/Deployment/api", httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "stale"),
			g(sleepID+" workload:mtls-pg/Deployment/web", httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "borrowed"),
			g(sleepID+" workload:mtls-pg/Deployment/db", httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "either"),
			g(sleepID+" workload:mtls-pg/Deployment/old", httpbin, httpbinID, evidence.MTLS, true, 1, 0, 1, "gone"),
			// A mismatch that also sent a suspect verdict: the identity's case first.
			g(sleepID+" workload:mtls-pg/Deployment/both", httpbin, httpbinID, evidence.MTLSMismatch, true, 1, 0, 1, "both"),
			g("workload:legacy/Pod/forger", httpbin, "", evidence.XFCCUnverified, false, 2, 0, 1, "forged"),
			g(legacy, httpbin, "", evidence.Plaintext, true, 3, 0, 1, "plain"),
		},
		records: map[string]*evidence.Record{
			"stale":    {Reasons: []string{"client certificate presented", stale}},
			"borrowed": {Reasons: []string{borrowed}},
			"either":   {Reasons: []string{either}},
			"both":     {Reasons: []string{"xfcc uri differs from source principal: x", stale}},
			"forged":   {Reasons: []string{"no client certificate", "xfcc header without client certificate"}},
		},
	}
	rep, err := TLSCheck(context.Background(), r, Query{Since: t0})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Status != StatusSuspect {
		t.Fatalf("rows %+v, want httpbin's, SUSPECT", rep.Rows)
	}
	type why struct{ suspect, reason string }
	want := map[string]why{
		sleepID: {},
		sleepID + " workload:mtls-pg/Deployment/api":  {evidence.CaseStaleAddress, stale},
		sleepID + " workload:mtls-pg/Deployment/web":  {evidence.CaseBorrowedIdentity, borrowed},
		sleepID + " workload:mtls-pg/Deployment/db":   {evidence.CaseIdentityMismatch, either},
		sleepID + " workload:mtls-pg/Deployment/old":  {evidence.CaseIdentityMismatch, ""}, // its record is gone
		sleepID + " workload:mtls-pg/Deployment/both": {evidence.CaseStaleAddress, stale},
		"workload:legacy/Pod/forger":                  {"xfcc_unverified", "no client certificate; xfcc header without client certificate"},
		legacy:                                        {},
	}
	for _, c := range rep.Rows[0].Clients {
		if got := (why{c.Suspect, c.SuspectReason}); got != want[c.Client] {
			t.Errorf("client %s: %+v, want %+v", c.Client, got, want[c.Client])
		}
	}
	slices.Sort(r.got)
	if want := []string{"borrowed", "both", "either", "forged", "gone", "stale"}; !slices.Equal(r.got, want) {
		t.Errorf("records read %q, want the suspect clients' examples %q", r.got, want)
	}
}
