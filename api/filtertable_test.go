package api

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
)

// filterSpy is a real store that keeps the filter of the last Query and
// Scan: what the API made of a request's parameters.
type filterSpy struct {
	evidence.Store
	mu   sync.Mutex
	last []evidence.Filter
}

// The API reads pages and exports as stored JSON.
func (s *filterSpy) QueryJSON(ctx context.Context, f evidence.Filter, p evidence.PageRequest) ([][]byte, string, error) {
	s.keep(f)
	return s.Store.QueryJSON(ctx, f, p)
}

func (s *filterSpy) ScanJSON(ctx context.Context, f evidence.Filter, fn func(body []byte) error) error {
	s.keep(f)
	return s.Store.ScanJSON(ctx, f, fn)
}

func (s *filterSpy) Count(ctx context.Context, f evidence.Filter) (int64, error) {
	s.keep(f)
	return s.Store.Count(ctx, f)
}

func (s *filterSpy) keep(f evidence.Filter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = append(s.last, f)
}

func (s *filterSpy) take() []evidence.Filter {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.last
	s.last = nil
	return out
}

// TestFilterTableRoundTrip sends each filter parameter of the table from
// the client to the API and checks the evidence.Filter the store is
// asked with, written here by hand: the table's mapping is held to what
// each parameter means. Every field of client.Filter and of
// evidence.Filter is reached by some parameter, and a parameter added to
// the table without a case here fails.
func TestFilterTableRoundTrip(t *testing.T) {
	now := time.Date(2025, 3, 3, 12, 0, 0, 0, time.UTC)
	at := now.Add(-36 * time.Hour)
	yes, no := true, false
	type sample struct {
		wire client.Filter
		want evidence.Filter
	}
	cases := map[string][]sample{
		"since": {
			{client.Filter{Since: client.Time(at)}, evidence.Filter{Since: at}},
			{client.Filter{Since: "1d12h"}, evidence.Filter{Since: at}},
		},
		"until": {
			{client.Filter{Until: client.Time(at)}, evidence.Filter{Until: at}},
			{client.Filter{Until: "36h"}, evidence.Filter{Until: at}},
		},
		"source":                {{client.Filter{Source: "spiffe://a/s"}, evidence.Filter{Source: "spiffe://a/s"}}},
		"source_prefix":         {{client.Filter{SourcePrefix: "spiffe://a/"}, evidence.Filter{SourcePrefix: "spiffe://a/"}}},
		"destination":           {{client.Filter{Destination: "spiffe://b/d"}, evidence.Filter{Destination: "spiffe://b/d"}}},
		"destination_prefix":    {{client.Filter{DestinationPrefix: "spiffe://b/"}, evidence.Filter{DestinationPrefix: "spiffe://b/"}}},
		"trust_domain":          {{client.Filter{TrustDomain: "b.example"}, evidence.Filter{TrustDomain: "b.example"}}},
		"namespace":             {{client.Filter{Namespace: "café"}, evidence.Filter{Namespace: "café"}}},
		"source_namespace":      {{client.Filter{SourceNamespace: "shop"}, evidence.Filter{SourceNamespace: "shop"}}},
		"destination_namespace": {{client.Filter{DestinationNamespace: "payments"}, evidence.Filter{DestinationNamespace: "payments"}}},
		"source_workload":       {{client.Filter{SourceWorkload: "legacy/sleep"}, evidence.Filter{SourceWorkload: "legacy/sleep"}}},
		"destination_workload":  {{client.Filter{DestinationWorkload: "café/ünï"}, evidence.Filter{DestinationWorkload: "café/ünï"}}},
		"verdict": {
			{client.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext}}, evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext}}},
			{client.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext, evidence.XFCCUnverified}},
				evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext, evidence.XFCCUnverified}}},
		},
		"mtls": {
			{client.Filter{MTLS: &yes}, evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLS}}},
			{client.Filter{MTLS: &no}, evidence.Filter{NotVerdicts: []evidence.Verdict{evidence.MTLS}}},
		},
		"allowed": {
			{client.Filter{Allowed: &yes}, evidence.Filter{Allowed: &yes}},
			{client.Filter{Allowed: &no}, evidence.Filter{Allowed: &no}},
		},
		"method":      {{client.Filter{Method: "POST"}, evidence.Filter{Method: "POST"}}},
		"host":        {{client.Filter{Host: "100%_sure.example:80"}, evidence.Filter{Host: "100%_sure.example:80"}}},
		"path_prefix": {{client.Filter{PathPrefix: "/api/v_"}, evidence.Filter{PathPrefix: "/api/v_"}}},
		"request_id":  {{client.Filter{RequestID: "' OR 1=1 --"}, evidence.Filter{RequestID: "' OR 1=1 --"}}},
		"replica":     {{client.Filter{Replica: "replica-b"}, evidence.Filter{Replica: "replica-b"}}},
	}

	spy := &filterSpy{Store: openStore(t)}
	ts := newTestServer(t, spy, Config{}, now)
	c, err := client.New(ts.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wireSet, storeSet := map[string]bool{}, map[string]bool{}
	for _, p := range params.Table {
		samples, ok := cases[p.Name]
		if !ok {
			t.Errorf("parameter %s: no case in this test", p.Name)
			continue
		}
		delete(cases, p.Name)
		for _, s := range samples {
			// One parameter, one field on each side.
			if q := s.wire.Values(); len(q) != 1 || len(q[p.Name]) == 0 {
				t.Errorf("%s: %+v encodes as %v, want only %s", p.Name, s.wire, q, p.Name)
			}
			markSet(wireSet, s.wire)
			markSet(storeSet, s.want)
			if _, err := c.List(ctx, s.wire, "", 1); err != nil {
				t.Fatalf("%s: List: %v", p.Name, err)
			}
			if err := c.Export(ctx, s.wire, func(*evidence.Record) error { return nil }); err != nil {
				t.Fatalf("%s: Export: %v", p.Name, err)
			}
			if _, err := c.Count(ctx, s.wire); err != nil {
				t.Fatalf("%s: Count: %v", p.Name, err)
			}
			got := spy.take()
			if len(got) != 3 || !reflect.DeepEqual(got[0], s.want) || !reflect.DeepEqual(got[1], s.want) || !reflect.DeepEqual(got[2], s.want) {
				t.Errorf("%s=%v: the store was asked %+v, want %+v three times (list, export, count)", p.Name, s.wire.Values()[p.Name], got, s.want)
			}
		}
	}
	for name := range cases {
		t.Errorf("case %s: no such parameter in the table", name)
	}
	for _, fields := range []struct {
		of  any
		set map[string]bool
	}{{client.Filter{}, wireSet}, {evidence.Filter{}, storeSet}} {
		typ := reflect.TypeOf(fields.of)
		for i := range typ.NumField() {
			if name := typ.Field(i).Name; !fields.set[name] {
				t.Errorf("%s.%s: no parameter of the table sets it", typ, name)
			}
		}
	}
}

// markSet notes the fields of struct v that are not zero.
func markSet(set map[string]bool, v any) {
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		if !rv.Field(i).IsZero() {
			set[rv.Type().Field(i).Name] = true
		}
	}
}

// TestFilterTableKeepsTheWireFormat pins the query parameters, as they
// were before the table, and those added since (source_namespace and
// destination_namespace; source_workload and destination_workload): a
// client of an earlier release keeps working.
func TestFilterTableKeepsTheWireFormat(t *testing.T) {
	was := []string{"since", "until", "source", "source_prefix", "destination", "destination_prefix",
		"trust_domain", "namespace", "source_namespace", "destination_namespace", "source_workload", "destination_workload",
		"verdict", "mtls", "allowed", "method", "host", "path_prefix", "request_id", "replica"}
	if got := params.Names(); !slices.Equal(got, was) {
		t.Errorf("filter parameters %q, were %q", got, was)
	}
}

// TestFilterErrorsNameTheParameter checks that every refusal of a filter
// value names the parameter as the table spells it, whichever check
// (the table's syntax, evidence.Filter.Validate) refuses it.
func TestFilterErrorsNameTheParameter(t *testing.T) {
	ts := newTestServer(t, openStore(t), Config{}, time.Time{})
	for _, p := range params.Table {
		var bad []string
		switch p.Kind {
		case params.KindText:
			bad = []string{"a%00b", "%FF", strings.Repeat("x", 2049)}
		case params.KindWorkload:
			bad = []string{"a%00/b", "%FF/x", "sleep", "legacy/Deployment/sleep", "/sleep", strings.Repeat("x", 1025) + "/" + strings.Repeat("y", 1024)}
		case params.KindTime:
			bad = []string{"yesterday", "-1h"}
		case params.KindBool:
			bad = []string{"yes", "1"}
		case params.KindVerdicts:
			bad = []string{"bogus", "MTLS"}
		}
		for _, v := range bad {
			for _, path := range []string{"/v1/evidence", "/v1/export", "/v1/evidence/count"} {
				resp := ts.get(t, path+"?"+p.Name+"="+v, "")
				if e := resp.errorOf(t); resp.status != 400 || e.Parameter != p.Name {
					t.Errorf("%s?%s=%.20s: %d %s, want 400 naming %s", path, p.Name, v, resp.status, resp.body, p.Name)
				}
			}
		}
	}
	for _, q := range []string{"mtls=true&verdict=mtls", "since=1h&until=2h"} {
		resp := ts.get(t, "/v1/evidence?"+q, "")
		if e := resp.errorOf(t); resp.status != 400 || e.Parameter == "" {
			t.Errorf("%s: %d %s, want 400 naming a parameter", q, resp.status, resp.body)
		}
	}
}
