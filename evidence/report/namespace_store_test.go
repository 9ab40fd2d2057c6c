package report

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// realStores are the two stores, empty: a SQLite file and a PostgreSQL
// database (skipped without MESHPROOF_TEST_POSTGRES, unless required).
func realStores() map[string]func(t testing.TB) evidence.Store {
	return map[string]func(t testing.TB) evidence.Store{
		"sqlite": func(t testing.TB) evidence.Store {
			s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t testing.TB) evidence.Store { return postgrestest.Backend(t).Store },
	}
}

// mesh writes records as a store receives them, chained.
type mesh struct {
	head  evidence.Link
	batch []*evidence.Record
}

// send adds n requests at at from source (a principal, or an address) to
// host, served by principal ("" for plaintext, which carries none).
func (m *mesh) send(n int, at time.Time, source, host, principal string, v evidence.Verdict) {
	for range n {
		r := &evidence.Record{
			ID: fmt.Sprintf("01MESH%020d", len(m.batch)), Time: at, Replica: "r1",
			Request:  evidence.Request{Method: "GET", Host: host, Path: "/", Protocol: "HTTP/1.1"},
			Decision: evidence.Decision{Allowed: true}, Verdict: v,
		}
		if strings.HasPrefix(source, "spiffe://") {
			r.Source = evidence.Peer{Address: "10.244.0.9", Principal: source}
		} else {
			r.Source = evidence.Peer{Address: source}
		}
		r.Destination = evidence.Peer{Address: "10.244.0.5", Port: 8000, Principal: principal}
		m.head = m.head.Link(r)
		m.batch = append(m.batch, r)
		at = at.Add(time.Second)
	}
}

func (m *mesh) write(t testing.TB, s evidence.Store) {
	t.Helper()
	if err := s.Append(context.Background(), m.batch); err != nil {
		t.Fatal(err)
	}
}

const (
	frontendID = "spiffe://cluster.local/ns/shop/sa/frontend"
	cartID     = "spiffe://cluster.local/ns/shop/sa/cart"
	catalogID  = "spiffe://cluster.local/ns/shop/sa/catalog"
	reviewsID  = "spiffe://cluster.local/ns/shop/sa/reviews"
	ledgerID   = "spiffe://cluster.local/ns/payments/sa/ledger"
	cartHost   = "cart.shop.svc.cluster.local:8080"
)

// shopMesh is a window of an hour from w0 and a day before it: reviews had
// traffic the day before only; cart takes mTLS and a legacy client's
// plaintext; catalog and ledger mTLS only; legacy-db (never mTLS) is
// placed by its name, metrics and an IP in no namespace.
func shopMesh(w0 time.Time) *mesh {
	m := &mesh{}
	m.send(4, w0.Add(-20*time.Hour), frontendID, "reviews.shop:9080", reviewsID, evidence.MTLS)
	m.send(10, w0.Add(time.Minute), frontendID, cartHost, cartID, evidence.MTLS)
	m.send(3, w0.Add(10*time.Minute), "10.0.0.7", cartHost, "", evidence.Plaintext)
	m.send(5, w0.Add(20*time.Minute), frontendID, "catalog.shop:80", catalogID, evidence.MTLS)
	m.send(4, w0.Add(30*time.Minute), frontendID, "ledger.payments:8443", ledgerID, evidence.MTLS)
	m.send(2, w0.Add(40*time.Minute), "10.0.0.8", "legacy-db.data.svc:5432", "", evidence.Plaintext)
	m.send(1, w0.Add(50*time.Minute), "10.0.0.8", "metrics:9090", "", evidence.Plaintext)
	m.send(1, w0.Add(55*time.Minute), "10.0.0.8", "10.1.2.3:80", "", evidence.Plaintext)
	return m
}

// TestNamespaceReadinessStores runs the namespace report over both real
// stores: a destination known from the day before and silent in the
// window makes its namespace not ready; plaintext to a host that served
// mTLS counts for its principal; names place the rest.
func TestNamespaceReadinessStores(t *testing.T) {
	ctx := context.Background()
	w0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	w1 := w0.Add(time.Hour)
	for name, open := range realStores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			shopMesh(w0).write(t, s)

			rep, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{All: true, Since: w0, Until: w1, KnownSince: w0.Add(-24 * time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			type nsLine struct {
				name              string
				ready             bool
				dests, ok, silent int
				total             int64
				clients           int
			}
			var got []nsLine
			for _, ns := range rep.Namespaces {
				got = append(got, nsLine{ns.Namespace, ns.Ready, ns.Destinations, ns.ReadyCount, ns.NoTraffic, ns.Total, ns.Clients})
			}
			want := []nsLine{
				{"", false, 2, 0, 0, 2, 1},
				{"data", false, 1, 0, 0, 2, 1},
				{"shop", false, 3, 1, 1, 18, 2},
				{"payments", true, 1, 1, 0, 4, 1},
			}
			if !slices.Equal(got, want) {
				t.Errorf("namespaces:\n got %+v\nwant %+v", got, want)
			}
			if rep.Summary != "2 of 7 destinations ready in 4 namespaces" || !rep.Since.Equal(w0) || !rep.Until.Equal(w1) ||
				!rep.KnownSince.Equal(w0.Add(-24*time.Hour)) {
				t.Errorf("header: %q %s %s %s", rep.Summary, rep.Since, rep.Until, rep.KnownSince)
			}

			shop := rep.Namespaces[2]
			if want := "not ready: 1 client still sends plaintext to 1 of 3 destinations; 1 of 3 destinations has no traffic in the window (unknown is not ready)"; shop.Verdict != want {
				t.Errorf("shop verdict %q\nwant %q", shop.Verdict, want)
			}
			if want := "18 requests from 2 clients to 2 destinations, 2026-12-06T10:00:00Z to 2026-12-06T11:00:00Z; 1 destination had no traffic"; shop.BasedOn != want {
				t.Errorf("shop based on %q\nwant %q", shop.BasedOn, want)
			}
			type wl struct{ workload, status, dest, hosts string }
			var wls []wl
			for _, d := range shop.Workloads {
				wls = append(wls, wl{d.Workload, d.Status, d.Destination, strings.Join(d.Hosts, " ")})
			}
			if want := []wl{
				{"cart", DestinationNotReady, cartID, cartHost},
				{"reviews", DestinationNoTraffic, reviewsID, "reviews.shop:9080"},
				{"catalog", DestinationReady, catalogID, "catalog.shop:80"},
			}; !slices.Equal(wls, want) {
				t.Errorf("shop workloads %+v\nwant %+v", wls, want)
			}
			cart, reviews := shop.Workloads[0], shop.Workloads[1]
			if cart.Total != 13 || cart.Clients != 2 || len(cart.Blocking) != 1 || cart.Blocking[0].Client.Client != "10.0.0.7" ||
				cart.Blocking[0].Count != 3 || cart.Reason != "1 client still sends plaintext" {
				t.Errorf("cart: %+v", cart)
			}
			if reviews.Total != 0 || !reviews.LastSeen.IsZero() ||
				reviews.Reason != "no traffic since 2026-12-06T10:00:00Z (last request 2026-12-05T14:00:03Z): nothing shows that STRICT would break no client" {
				t.Errorf("reviews: %+v", reviews)
			}
			if len(shop.Blocking) != 1 || shop.Blocking[0].Client.Client != "10.0.0.7" || shop.Blocking[0].Count != 3 {
				t.Errorf("shop blocking: %+v", shop.Blocking)
			}
			if got, err := s.Get(ctx, shop.Blocking[0].ExampleID); err != nil || got.Verdict != evidence.Plaintext {
				t.Errorf("shop's blocking example: %v, %v", got, err)
			}
			if p := rep.Namespaces[3]; p.Verdict != "ready: every request to its destination was mTLS" ||
				p.BasedOn != "4 requests from 1 client to 1 destination, 2026-12-06T10:00:00Z to 2026-12-06T11:00:00Z" {
				t.Errorf("payments: %q; %q", p.Verdict, p.BasedOn)
			}
			var unknown []string
			for _, d := range rep.Namespaces[0].Workloads {
				unknown = append(unknown, d.Workload)
			}
			if !slices.Equal(unknown, []string{"10.1.2.3", "metrics"}) {
				t.Errorf("unknown namespace's workloads %q", unknown)
			}

			// One namespace: that one only; a namespace without traffic is
			// there, not ready.
			one, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{Namespace: "shop", Since: w0, Until: w1, KnownSince: w0.Add(-24 * time.Hour)})
			if err != nil || len(one.Namespaces) != 1 || one.Namespaces[0].Verdict != shop.Verdict || one.Namespaces[0].Total != 18 {
				t.Errorf("shop alone: %+v, %v", one, err)
			}
			none, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{Namespace: "nothing", Since: w0, Until: w1})
			if err != nil || len(none.Namespaces) != 1 || none.Namespaces[0].Ready || none.Namespaces[0].Destinations != 0 ||
				!strings.HasPrefix(none.Namespaces[0].Verdict, "not ready: no traffic seen") || none.Summary != "0 of 0 destinations ready in 1 namespace" {
				t.Errorf("nothing: %+v, %v", none, err)
			}
			// known_since defaults to 30 days before until; the window's
			// own destinations are known whatever it is.
			def, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{Namespace: "shop", Since: w0, Until: w1})
			if err != nil || def.Namespaces[0].NoTraffic != 1 || !def.KnownSince.Equal(w1.Add(-DefaultKnown)) {
				t.Errorf("default known_since: %+v, %v", def, err)
			}
			late, err := StrictReadinessByNamespace(ctx, s, NamespaceQuery{Namespace: "shop", Since: w0, Until: w1, KnownSince: w0})
			if err != nil || late.Namespaces[0].NoTraffic != 0 || late.Namespaces[0].Destinations != 2 || late.Namespaces[0].Ready {
				t.Errorf("known since the window: %+v, %v", late, err)
			}

			// tls-check of a namespace: its destinations' rows only.
			for ns, want := range map[string][]string{
				"shop": {cartHost, "catalog.shop:80"}, "data": {"legacy-db.data.svc:5432"}, "payments": {"ledger.payments:8443"}, "nothing": nil,
			} {
				tc, err := TLSCheck(ctx, s, Query{Since: w0, Until: w1, Namespace: ns})
				var rows []string
				for _, r := range tc.Rows {
					rows = append(rows, r.Destination)
					// Each row says where it is placed, so a reader of
					// the whole report needs no copy of the rule.
					if r.Namespace != ns || r.Workload == "" {
						t.Errorf("tls-check namespace %s: row %s placed in %q as %q", ns, r.Destination, r.Namespace, r.Workload)
					}
				}
				if err != nil || !slices.Equal(rows, want) {
					t.Errorf("tls-check namespace %s: %q, %v; want %q", ns, rows, err, want)
				}
			}
		})
	}
}

// TestNamespaceQueryInput: every bad query is refused before the store,
// naming what is wrong.
func TestNamespaceQueryInput(t *testing.T) {
	r := &groupsReader{}
	ctx := context.Background()
	for _, tc := range []struct {
		q     NamespaceQuery
		field string
	}{
		{NamespaceQuery{Namespace: "a", All: true, Since: t0}, "namespace"},
		{NamespaceQuery{Namespace: strings.Repeat("n", MaxNamespace+1), Since: t0}, "namespace"},
		{NamespaceQuery{Namespace: "a\x00", Since: t0}, "namespace"},
		{NamespaceQuery{Namespace: "\xff", Since: t0}, "namespace"},
		{NamespaceQuery{All: true, Since: t0, Until: t0}, "until"},
		{NamespaceQuery{All: true, Since: t0, Until: t0.Add(-time.Hour)}, "until"},
		{NamespaceQuery{All: true, Since: t0, Until: t0.Add(time.Hour), KnownSince: t0.Add(time.Minute)}, "known_since"},
	} {
		var fe *evidence.FilterError
		if _, err := StrictReadinessByNamespace(ctx, r, tc.q); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v: %v, want a FilterError on %s", tc.q, err, tc.field)
		}
	}
	if _, err := StrictReadinessByNamespace(ctx, r, NamespaceQuery{Since: t0}); !errors.Is(err, ErrNamespaceQuery) {
		t.Errorf("neither: %v", err)
	}
	for _, q := range []Query{{Destination: "x", Namespace: "y"}, {Namespace: strings.Repeat("n", MaxNamespace+1)}} {
		var fe *evidence.FilterError
		if _, err := TLSCheck(ctx, r, q); !errors.As(err, &fe) || fe.Field != "namespace" {
			t.Errorf("tls-check %+v: %v", q, err)
		}
	}
	if len(r.queries) != 0 {
		t.Errorf("bad queries reached the store: %+v", r.queries)
	}
}
