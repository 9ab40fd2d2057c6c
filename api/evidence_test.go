package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
)

// fixture is a store filled with the conformance suite's varied records
// (hostile principals and hosts included), served over loopback.
func fixture(t *testing.T) (*testServer, evidence.Store, *evidencetest.Fixture) {
	t.Helper()
	s := openStore(t)
	fx := evidencetest.Varied(600, 50, 7)
	for _, b := range fx.Batches {
		if err := s.Append(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	// "now" is the end of the fixture's five days, for relative times.
	return newTestServer(t, s, Config{}, evidencetest.Base.Add(5*24*time.Hour)), s, fx
}

func TestListFilters(t *testing.T) {
	ts, _, fx := fixture(t)
	base := evidencetest.Base
	yes, no := true, false
	tests := []struct {
		query string
		want  evidence.Filter
	}{
		{"", evidence.Filter{}},
		{"since=" + base.Add(24*time.Hour).Format(time.RFC3339), evidence.Filter{Since: base.Add(24 * time.Hour)}},
		{"until=" + base.Add(36*time.Hour).Format(time.RFC3339Nano), evidence.Filter{Until: base.Add(36 * time.Hour)}},
		{"since=2d", evidence.Filter{Since: base.Add(3 * 24 * time.Hour)}},
		{"since=1d12h&until=12h", evidence.Filter{Since: base.Add(3*24*time.Hour + 12*time.Hour), Until: base.Add(4*24*time.Hour + 12*time.Hour)}},
		{"since=90m", evidence.Filter{Since: base.Add(5*24*time.Hour - 90*time.Minute)}},
		{"source=spiffe://cluster.local/ns/shop/sa/frontend", evidence.Filter{Source: "spiffe://cluster.local/ns/shop/sa/frontend"}},
		{"source_prefix=spiffe://cluster.local/ns/shop", evidence.Filter{SourcePrefix: "spiffe://cluster.local/ns/shop"}},
		{"destination=spiffe://cluster.local/ns/payments/sa/ledger", evidence.Filter{Destination: "spiffe://cluster.local/ns/payments/sa/ledger"}},
		{"destination_prefix=spiffe://partner.example/", evidence.Filter{DestinationPrefix: "spiffe://partner.example/"}},
		{"trust_domain=partner.example", evidence.Filter{TrustDomain: "partner.example"}},
		{"namespace=shop", evidence.Filter{Namespace: "shop"}},
		{"namespace=caf%C3%A9", evidence.Filter{Namespace: "café"}},
		{"verdict=plaintext", evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext}}},
		{"verdict=plaintext&verdict=xfcc_unverified", evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext, evidence.XFCCUnverified}}},
		{"mtls=true", evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLS}}},
		{"mtls=false", evidence.Filter{NotVerdicts: []evidence.Verdict{evidence.MTLS}}},
		{"allowed=true", evidence.Filter{Allowed: &yes}},
		{"allowed=false", evidence.Filter{Allowed: &no}},
		{"method=POST", evidence.Filter{Method: "POST"}},
		{"host=api.example.com", evidence.Filter{Host: "api.example.com"}},
		{"path_prefix=/api/v1", evidence.Filter{PathPrefix: "/api/v1"}},
		{"request_id=req-shared", evidence.Filter{RequestID: "req-shared"}},
		{"replica=replica-b", evidence.Filter{Replica: "replica-b"}},
		{"source=&host=", evidence.Filter{}}, // empty values are absent (HTML forms)
		{"source_prefix=spiffe://cluster.local/&mtls=false&allowed=false&since=4d&method=GET",
			evidence.Filter{SourcePrefix: "spiffe://cluster.local/", NotVerdicts: []evidence.Verdict{evidence.MTLS},
				Allowed: &no, Since: base.Add(24 * time.Hour), Method: "GET"}},
		// Hostile values are values: they match what they spell, nothing more.
		{"host=" + url.QueryEscape("'; DROP TABLE records; --"), evidence.Filter{Host: "'; DROP TABLE records; --"}},
		{"source=" + url.QueryEscape("' OR 1=1 --"), evidence.Filter{Source: "' OR 1=1 --"}},
		{"host=" + url.QueryEscape("100%_sure.example"), evidence.Filter{Host: "100%_sure.example"}},
		{"path_prefix=" + url.QueryEscape("%"), evidence.Filter{PathPrefix: "%"}},
		{"path_prefix=" + url.QueryEscape("/a%"), evidence.Filter{PathPrefix: "/a%"}},
		{"source_prefix=_", evidence.Filter{SourcePrefix: "_"}},
		{"path_prefix=" + url.QueryEscape("/api/v_"), evidence.Filter{PathPrefix: "/api/v_"}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			want := evidencetest.IDs(evidencetest.NewestFirst(fx.Records, tc.want))
			got := ts.listAll(t, tc.query+"&limit=1000")
			if !slices.Equal(got, want) {
				t.Errorf("%d ids, want %d\n got %.5q...\nwant %.5q...", len(got), len(want), got, want)
			}
			// The count of the same parameters counts the same records.
			var c countBody
			if resp := ts.get(t, "/v1/evidence/count?"+tc.query, ""); resp.status != http.StatusOK {
				t.Errorf("count: %d %s", resp.status, resp.body)
			} else if resp.decode(t, &c); c.Count != int64(len(want)) {
				t.Errorf("count %d, want %d", c.Count, len(want))
			}
		})
	}
}

// deadlineStore is a real store whose Count notes the deadline it was
// given and answers as a store whose query ran out of it.
type deadlineStore struct {
	evidence.Store
	deadline chan time.Time
}

func (s deadlineStore) Count(ctx context.Context, _ evidence.Filter) (int64, error) {
	d, _ := ctx.Deadline()
	s.deadline <- d
	return 0, fmt.Errorf("evidence sqlite: count: %w", context.DeadlineExceeded)
}

// TestCount checks /v1/evidence/count's answer, the parameters it
// refuses, and that it is bounded by the query timeout, as the pages are.
func TestCount(t *testing.T) {
	ts, s, fx := fixture(t)
	resp := ts.get(t, "/v1/evidence/count", "")
	if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/json" ||
		string(resp.body) != fmt.Sprintf("{\"count\":%d}\n", len(fx.Records)) {
		t.Errorf("count of everything: %d %v %q", resp.status, resp.header, resp.body)
	}
	if resp := ts.get(t, "/v1/evidence/count?since=2030-01-01T00:00:00Z", ""); string(resp.body) != "{\"count\":0}\n" {
		t.Errorf("count of nothing: %d %q", resp.status, resp.body)
	}
	for _, q := range []string{"limit=5", "cursor=abc", "pretty=1"} {
		name, _, _ := strings.Cut(q, "=")
		if resp := ts.get(t, "/v1/evidence/count?"+q, ""); resp.status != http.StatusBadRequest || resp.errorOf(t).Parameter != name {
			t.Errorf("count?%s: %d %s, want 400 naming %s", q, resp.status, resp.body, name)
		}
	}
	if resp := ts.get(t, "/v1/evidence/count?mtls=true&verdict=plaintext", ""); resp.status != http.StatusBadRequest || resp.errorOf(t).Parameter != "mtls" {
		t.Errorf("count with mtls and verdict: %d %s", resp.status, resp.body)
	}

	slow := deadlineStore{Store: s, deadline: make(chan time.Time, 1)}
	ts = newTestServer(t, slow, Config{}, time.Time{})
	before := time.Now()
	resp = ts.get(t, "/v1/evidence/count?since=1h", "")
	var d time.Time
	select {
	case d = <-slow.deadline: // Count runs before the answer is written
	default:
		t.Fatalf("the count did not reach the store: %d %s", resp.status, resp.body)
	}
	if d.IsZero() || d.After(time.Now().Add(queryTimeout)) || d.Before(before.Add(queryTimeout)) {
		t.Errorf("Count's deadline %v, want the query timeout (%v) from the request", d, queryTimeout)
	}
	if e := resp.errorOf(t); resp.status != http.StatusServiceUnavailable || !strings.Contains(e.Error, "longer than "+queryTimeout.String()) {
		t.Errorf("count past the timeout: %d %s, want 503 naming the timeout", resp.status, resp.body)
	}
}

func TestPagination(t *testing.T) {
	ts, _, fx := fixture(t)
	want := evidencetest.IDs(evidencetest.NewestFirst(fx.Records, evidence.Filter{NotVerdicts: []evidence.Verdict{evidence.MTLS}}))
	if got := ts.listAll(t, "mtls=false&limit=7"); !slices.Equal(got, want) {
		t.Errorf("paging by 7: %d ids, want %d", len(got), len(want))
	}
	var p page
	ts.get(t, "/v1/evidence", "").decode(t, &p)
	if len(p.Records) != evidence.DefaultLimit || p.Next == "" {
		t.Errorf("default page: %d records, next %q; want %d and a cursor", len(p.Records), p.Next, evidence.DefaultLimit)
	}
	ts.get(t, "/v1/evidence?since=2030-01-01T00:00:00Z", "").decode(t, &p)
	if p.Records == nil || len(p.Records) != 0 || p.Next != "" {
		t.Errorf("empty page = %+v, want records [] and no cursor", p)
	}
	resp := ts.get(t, "/v1/evidence?limit=1", "")
	if !bytes.Contains(resp.body, []byte(`"records":[`)) || !bytes.Contains(resp.body, []byte(`"next_cursor":"`)) {
		t.Errorf("page JSON: %s", resp.body)
	}
}

func TestGet(t *testing.T) {
	ts, _, fx := fixture(t)
	want := fx.Records[42]
	resp := ts.get(t, "/v1/evidence/"+want.ID, "")
	var got evidence.Record
	resp.decode(t, &got)
	if resp.status != http.StatusOK || got.ID != want.ID || got.Chain != want.Chain || got.Verdict != want.Verdict ||
		resp.header.Get("Content-Type") != "application/json" || resp.header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET %s: %d %v %+v", want.ID, resp.status, resp.header, got)
	}
	for _, id := range []string{"01UNKNOWN0000000000000000", url.PathEscape("' OR 1=1 --"), "%00", "%FF%FE", strings.Repeat("x", 5000)} {
		resp := ts.get(t, "/v1/evidence/"+id, "")
		if e := resp.errorOf(t); resp.status != http.StatusNotFound || e.Error != "no such record" {
			t.Errorf("GET /v1/evidence/%.20s: %d %s, want 404 no such record", id, resp.status, resp.body)
		}
	}
	if resp := ts.get(t, "/v1/evidence/"+want.ID+"?pretty=1", ""); resp.status != http.StatusBadRequest || resp.errorOf(t).Parameter != "pretty" {
		t.Errorf("unknown parameter on a record: %d %s", resp.status, resp.body)
	}
}

func TestExport(t *testing.T) {
	ts, _, fx := fixture(t)
	for _, query := range []string{"", "mtls=false&allowed=true", "source=nobody"} {
		f, err := parseQuery(query, time.Now(), filterParams)
		if err != nil {
			t.Fatal(err)
		}
		filter, err := f.filter()
		if err != nil {
			t.Fatal(err)
		}
		want := evidencetest.IDs(evidencetest.NewestFirst(fx.Records, filter))
		resp := ts.get(t, "/v1/export?"+query, "")
		if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/x-ndjson" || resp.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("export %q: %d %v", query, resp.status, resp.header)
		}
		var got []string
		sc := bufio.NewScanner(bytes.NewReader(resp.body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r evidence.Record
			response{body: sc.Bytes()}.decode(t, &r)
			got = append(got, r.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("export %q: %d records, want %d", query, len(got), len(want))
		}
	}
	if resp := ts.get(t, "/v1/export?limit=5", ""); resp.status != http.StatusBadRequest || resp.errorOf(t).Parameter != "limit" {
		t.Errorf("export takes no limit: %d %s", resp.status, resp.body)
	}
}

// storedJSON is a store that answers pages as JSON made here from Query's
// records (the store's own QueryJSON reads it from the stored bytes), with
// bad added when set.
type storedJSON struct {
	evidence.Store
	bad []byte
}

func (s storedJSON) QueryJSON(ctx context.Context, f evidence.Filter, p evidence.PageRequest) ([][]byte, string, error) {
	res, err := s.Query(ctx, f, p)
	if err != nil {
		return nil, "", err
	}
	var out [][]byte
	for _, r := range res.Records {
		b, err := evidence.RecordJSON(r)
		if err != nil {
			return nil, "", err
		}
		out = append(out, b)
	}
	if s.bad != nil {
		out = append(out, s.bad)
	}
	return out, res.Next, nil
}

// TestListStoredJSON: a page made of stored JSON is the page made of
// records, byte for byte; a stored record that is not JSON is a 500, not a
// broken answer.
func TestListStoredJSON(t *testing.T) {
	ts, store, _ := fixture(t)
	raw := newTestServer(t, storedJSON{Store: store}, Config{}, evidencetest.Base.Add(5*24*time.Hour))
	for _, q := range []string{"", "limit=3", "mtls=false&since=2d&limit=1000", "source=nobody", "cursor=AAAAAAAAAAA", "limit=0", "namespace=%00"} {
		want, got := ts.get(t, "/v1/evidence?"+q, ""), raw.get(t, "/v1/evidence?"+q, "")
		if got.status != want.status || !bytes.Equal(got.body, want.body) || got.header.Get("Content-Type") != "application/json" {
			t.Errorf("%q: stored JSON %d %.100s\nrecords %d %.100s", q, got.status, got.body, want.status, want.body)
		}
	}
	bad := newTestServer(t, storedJSON{Store: store, bad: []byte(`{"id": "edited"`)}, Config{}, time.Time{})
	resp := bad.get(t, "/v1/evidence?limit=2", "")
	if e := resp.errorOf(t); resp.status != http.StatusInternalServerError || strings.Contains(e.Error, "edited") {
		t.Errorf("a stored record that is not JSON: %d %s", resp.status, resp.body)
	}
	if !strings.Contains(bad.log.String(), "a stored record is not JSON") {
		t.Errorf("the log does not say why: %s", bad.log.String())
	}
}
