package evidencetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// filterRecords is the size of the fixture the filter tests query: more
// than MaxLimit, so that the page-size cap shows.
const filterRecords = 1200

// testFilters checks every Filter field alone and in combination against
// the oracle (Matches), reading every page.
func testFilters(t *testing.T, f Factory) {
	b, fx := loadedWorkloads(t, f, filterRecords)
	mid := fx.Records[len(fx.Records)/2].Time // a time several records share
	cases := []struct {
		name   string
		filter evidence.Filter
		empty  bool // the oracle expects nothing (else it must expect something)
	}{
		{name: "none", filter: evidence.Filter{}},
		{name: "since", filter: evidence.Filter{Since: mid}},
		{name: "until exclusive", filter: evidence.Filter{Until: mid}},
		{name: "since until one instant", filter: evidence.Filter{Since: mid, Until: mid.Add(time.Nanosecond)}},
		{name: "day two", filter: evidence.Filter{Since: Base.Add(24 * time.Hour), Until: Base.Add(48 * time.Hour)}},
		{name: "before everything", filter: evidence.Filter{Until: Base}, empty: true},
		{name: "after everything", filter: evidence.Filter{Since: Base.Add(30 * 24 * time.Hour)}, empty: true},
		{name: "source", filter: evidence.Filter{Source: "spiffe://cluster.local/ns/shop/sa/frontend"}},
		{name: "source unicode", filter: evidence.Filter{Source: "spiffe://cluster.local/ns/café/sa/ünï"}},
		{name: "source not spiffe", filter: evidence.Filter{Source: "CN=legacy-client,O=Example"}},
		{name: "source is a prefix only", filter: evidence.Filter{Source: "spiffe://cluster.local/ns/shop"}, empty: true},
		{name: "source prefix unaligned", filter: evidence.Filter{SourcePrefix: "spiffe://cluster.local/ns/shop"}},
		{name: "source prefix aligned", filter: evidence.Filter{SourcePrefix: "spiffe://cluster.local/ns/shop/"}},
		{name: "source prefix of a multibyte rune", filter: evidence.Filter{SourcePrefix: "spiffe://cluster.local/ns/caf"}},
		{name: "source prefix case", filter: evidence.Filter{SourcePrefix: "SPIFFE://"}, empty: true},
		{name: "destination", filter: evidence.Filter{Destination: "spiffe://cluster.local/ns/payments/sa/ledger"}},
		{name: "destination prefix", filter: evidence.Filter{DestinationPrefix: "spiffe://partner.example/"}},
		{name: "trust domain either side", filter: evidence.Filter{TrustDomain: "partner.example"}},
		{name: "namespace either side", filter: evidence.Filter{Namespace: "shop"}},
		{name: "namespace unaligned", filter: evidence.Filter{Namespace: "sho"}, empty: true},
		{name: "source namespace", filter: evidence.Filter{SourceNamespace: "shop"}},
		{name: "destination namespace", filter: evidence.Filter{DestinationNamespace: "payments"}},
		{name: "source and destination namespace", filter: evidence.Filter{SourceNamespace: "shop", DestinationNamespace: "payments"}},
		{name: "destination namespace unaligned", filter: evidence.Filter{DestinationNamespace: "pay"}, empty: true},
		{name: "source namespace of plaintext workloads", filter: evidence.Filter{SourceNamespace: "legacy", Verdicts: []evidence.Verdict{evidence.Plaintext}}},
		{name: "destination namespace by workload only", filter: evidence.Filter{DestinationNamespace: "legacy"}},
		{name: "namespace either side by workload", filter: evidence.Filter{Namespace: "legacy"}},
		{name: "source namespace is the spiffe id's", filter: evidence.Filter{SourceNamespace: "edge"}, empty: true},
		{name: "source workload", filter: evidence.Filter{SourceWorkload: "shop/frontend"}},
		{name: "source workload of two kinds", filter: evidence.Filter{SourceWorkload: "legacy/sleep"}},
		{name: "source workload mismatched identity", filter: evidence.Filter{SourceWorkload: "payments/api", Source: "spiffe://cluster.local/ns/payments/sa/api"}},
		{name: "source workload in another namespace than its id", filter: evidence.Filter{SourceWorkload: "edge/bridge", SourceNamespace: "shop"}},
		{name: "source workload unaligned", filter: evidence.Filter{SourceWorkload: "legacy/slee"}, empty: true},
		{name: "source workload is not the kind", filter: evidence.Filter{SourceWorkload: "legacy/Deployment"}, empty: true},
		{name: "source workload is not the destination", filter: evidence.Filter{SourceWorkload: "payments/ledger"}, empty: true},
		{name: "destination workload", filter: evidence.Filter{DestinationWorkload: "payments/ledger"}},
		{name: "destination workload partly resolved", filter: evidence.Filter{DestinationWorkload: "shop/cart", Host: "cart.shop.svc.cluster.local"}},
		{name: "both workloads", filter: evidence.Filter{SourceWorkload: "legacy/sleep", DestinationWorkload: "legacy/httpbin", Allowed: ptr(true)}},
		{name: "workload unicode", filter: evidence.Filter{SourceWorkload: "café/ünï"}, empty: true},
		{name: "verdict", filter: evidence.Filter{Verdicts: []evidence.Verdict{evidence.Plaintext}}},
		{name: "verdicts", filter: evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLSMismatch, evidence.XFCCUnverified}}},
		{name: "not verdicts", filter: evidence.Filter{NotVerdicts: []evidence.Verdict{evidence.MTLS, evidence.Plaintext}}},
		{name: "verdicts and not", filter: evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLS}, NotVerdicts: []evidence.Verdict{evidence.MTLS}}, empty: true},
		{name: "allowed", filter: evidence.Filter{Allowed: ptr(true)}},
		{name: "denied", filter: evidence.Filter{Allowed: ptr(false)}},
		{name: "method", filter: evidence.Filter{Method: "DELETE"}},
		{name: "method case", filter: evidence.Filter{Method: "delete"}, empty: true},
		{name: "host", filter: evidence.Filter{Host: "ledger.payments:8443"}},
		{name: "host with wildcards", filter: evidence.Filter{Host: "100%_sure.example"}},
		{name: "host wildcard only", filter: evidence.Filter{Host: "%"}, empty: true},
		{name: "path prefix", filter: evidence.Filter{PathPrefix: "/api/v1"}},
		{name: "path prefix underscore", filter: evidence.Filter{PathPrefix: "/api/v_"}},
		{name: "path prefix percent", filter: evidence.Filter{PathPrefix: "/a%"}},
		{name: "path prefix root", filter: evidence.Filter{PathPrefix: "/"}},
		{name: "request id", filter: evidence.Filter{RequestID: "req-00042"}},
		{name: "request id shared", filter: evidence.Filter{RequestID: "req-shared"}},
		{name: "replica", filter: evidence.Filter{Replica: "replica-b"}},
		{name: "injection source", filter: evidence.Filter{Source: "'; DROP TABLE records; --"}},
		{name: "injection host", filter: evidence.Filter{Host: "'; DROP TABLE records; --"}},
		{name: "injection in prefix", filter: evidence.Filter{PathPrefix: "' OR '1'='1"}, empty: true},
		{name: "injection in request id", filter: evidence.Filter{RequestID: "x' OR 1=1 --"}, empty: true},
		{name: "longest value", filter: evidence.Filter{Host: strings.Repeat("h", 2048)}, empty: true},
		{name: "principal verdict day", filter: evidence.Filter{
			Source: "spiffe://cluster.local/ns/shop/sa/frontend", Verdicts: []evidence.Verdict{evidence.MTLS},
			Since: Base.Add(24 * time.Hour), Until: Base.Add(48 * time.Hour)}},
		{name: "prefix namespace denied", filter: evidence.Filter{
			SourcePrefix: "spiffe://cluster.local/", Namespace: "payments", Allowed: ptr(false)}},
		{name: "destination host method", filter: evidence.Filter{
			Destination: "spiffe://cluster.local/ns/shop/sa/cart", Host: "cart.shop.svc.cluster.local", Method: "GET"}},
		{name: "trust domain not verdict replica", filter: evidence.Filter{
			TrustDomain: "cluster.local", NotVerdicts: []evidence.Verdict{evidence.MTLS}, Replica: "replica-c"}},
		{name: "everything at once", filter: evidence.Filter{
			Since: Base, Until: Base.Add(5 * 24 * time.Hour), SourcePrefix: "spiffe://cluster.local/ns/shop",
			DestinationPrefix: "spiffe://cluster.local/", TrustDomain: "cluster.local", Verdicts: []evidence.Verdict{evidence.MTLS, evidence.MTLSMismatch},
			Allowed: ptr(true), PathPrefix: "/"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := NewestFirst(fx.Records, tc.filter)
			if tc.empty != (len(want) == 0) {
				t.Fatalf("fixture: the oracle finds %d records; the case says empty=%v", len(want), tc.empty)
			}
			sameRecords(t, "Query", everything(t, b.Store, tc.filter, 97), want)
			sameCount(t, b.Store, tc.filter, Count(fx.Records, tc.filter))
		})
	}
	t.Run("records intact after hostile filters", func(t *testing.T) {
		if got := everything(t, b.Store, evidence.Filter{}, evidence.MaxLimit); len(got) != len(fx.Records) {
			t.Fatalf("%d records after the hostile filters, want %d", len(got), len(fx.Records))
		}
	})
}

// sameCount fails unless the store's Count of f is want.
func sameCount(t testing.TB, s evidence.Reader, f evidence.Filter, want int64) {
	t.Helper()
	if got, err := s.Count(context.Background(), f); err != nil || got != want {
		t.Errorf("Count(%+v) = %d, %v; the oracle counts %d", f, got, err, want)
	}
}

// testFilterValidation checks that filters Validate rejects are rejected
// by Query, Scan and Count with a FilterError, before reaching the store.
func testFilterValidation(t *testing.T, f Factory) {
	b, _ := loaded(t, f, 30)
	ctx := context.Background()
	cases := []struct {
		name   string
		filter evidence.Filter
		field  string
	}{
		{"NUL in source", evidence.Filter{Source: "spiffe://a\x00b"}, "source"},
		{"NUL in path prefix", evidence.Filter{PathPrefix: "/\x00"}, "path_prefix"},
		{"10 KB host", evidence.Filter{Host: strings.Repeat("'; DROP TABLE records; --", 400)}, "host"},
		{"10 KB request id", evidence.Filter{RequestID: strings.Repeat("%_", 5000)}, "request_id"},
		{"unknown verdict", evidence.Filter{Verdicts: []evidence.Verdict{"mtls' OR '1'='1"}}, "verdict"},
		{"until before since", evidence.Filter{Since: Base.Add(time.Hour), Until: Base}, "until"},
		{"source workload without a namespace", evidence.Filter{SourceWorkload: "sleep"}, "source_workload"},
		{"source workload empty namespace", evidence.Filter{SourceWorkload: "/sleep"}, "source_workload"},
		{"destination workload with a kind", evidence.Filter{DestinationWorkload: "legacy/Deployment/httpbin"}, "destination_workload"},
		{"destination workload empty name", evidence.Filter{DestinationWorkload: "legacy/"}, "destination_workload"},
		{"NUL in source workload", evidence.Filter{SourceWorkload: "a/b\x00"}, "source_workload"},
		{"until equals since", evidence.Filter{Since: Base, Until: Base}, "until"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Store.Query(ctx, tc.filter, evidence.PageRequest{})
			var fe *evidence.FilterError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Query error = %v, want a FilterError for %s", err, tc.field)
			}
			err = b.Store.Scan(ctx, tc.filter, func(*evidence.Record) error { return nil })
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Scan error = %v, want a FilterError for %s", err, tc.field)
			}
			_, err = b.Store.Count(ctx, tc.filter)
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("Count error = %v, want a FilterError for %s", err, tc.field)
			}
		})
	}
}

// testHostAnyPort checks a host filter without a port (the name with none
// and on any port) against the oracle, over names that LIKE's wildcards
// would confuse and neighbours in byte order: web.shop.svc and web.shop;x
// are not web.shop; web_shop is not webXshop.
func testHostAnyPort(t *testing.T, f Factory) {
	b := f(t)
	hosts := []string{"web.shop", "web.shop:80", "web.shop:8080", "web.shop:", "web.shop.svc:80", "web.shopping:80", "web.sho:80",
		"web.shop;x", "web_shop:80", "webXshop:80", "web%shop:80", "web%shop", "wébshop:80", "100%_sure.example:443",
		"[fd00::1]:80", "[fd00::1]", "[fd00::10]:80"}
	var recs []*evidence.Record
	for i, h := range hosts {
		for j := range 2 {
			recs = append(recs, &evidence.Record{
				ID: fmt.Sprintf("01HOST%04d%016d", i, j), Time: Base.Add(time.Duration(2*i+j) * time.Minute), Replica: Replicas[0],
				Source:      evidence.Peer{Address: "10.0.0.1"},
				Destination: evidence.Peer{Address: "10.0.0.2", Port: 80},
				Request:     evidence.Request{Method: "GET", Host: h, Path: "/", Protocol: "HTTP/1.1"},
				Decision:    evidence.Decision{Allowed: true}, Verdict: evidence.Plaintext,
			})
		}
	}
	Link(evidence.Link{}, recs...)
	write(t, b.Store, recs)
	for _, tc := range []struct {
		host string
		want []string // the hosts it matches
	}{
		{"web.shop", []string{"web.shop", "web.shop:80", "web.shop:8080", "web.shop:"}},
		{"web.shop:80", []string{"web.shop:80"}},
		{"web.shop:", []string{"web.shop:"}},
		{"web.sho", []string{"web.sho:80"}},
		{"web_shop", []string{"web_shop:80"}},
		{"web%shop", []string{"web%shop:80", "web%shop"}},
		{"wébshop", []string{"wébshop:80"}},
		{"100%_sure.example", []string{"100%_sure.example:443"}},
		{"[fd00::1]", []string{"[fd00::1]:80", "[fd00::1]"}},
		{"[fd00::1]:80", []string{"[fd00::1]:80"}},
		{"web", nil},
		{"%", nil},
		{"_", nil},
	} {
		t.Run(tc.host, func(t *testing.T) {
			filter := evidence.Filter{Host: tc.host}
			want := NewestFirst(recs, filter)
			var matched []string
			for _, r := range want {
				if !slices.Contains(matched, r.Request.Host) {
					matched = append(matched, r.Request.Host)
				}
			}
			if !sameSet(matched, tc.want) {
				t.Fatalf("the oracle matches %q, the case says %q", matched, tc.want)
			}
			sameRecords(t, "Query", everything(t, b.Store, filter, 3), want)
			sameCount(t, b.Store, filter, int64(len(want)))
		})
	}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
