package ui_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/api/ui"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// strictMtlsPG is a cluster where namespace mtls-pg is STRICT and every
// other one Istio's default; clients of httpbin have an ISTIO_MUTUAL rule.
type strictMtlsPG struct{}

func (strictMtlsPG) PeerAuthentication(ns string, _ *evidence.Workload, _ uint32) report.Setting {
	if ns == "mtls-pg" {
		return report.Setting{Name: "default.mtls-pg", Mode: "STRICT"}
	}
	return report.Setting{Mode: "PERMISSIVE"}
}

func (strictMtlsPG) DestinationRule(_, host string, _ uint32) report.Setting {
	if host == "httpbin.mtls-pg.svc.cluster.local" {
		return report.Setting{Name: "httpbin.mtls-pg", Mode: "ISTIO_MUTUAL"}
	}
	return report.Setting{}
}

// configuredPage serves the page over store with strictMtlsPG as the
// cluster's configuration, and opens a browser on nothing yet.
func configuredPage(t *testing.T, store *sqlite.Store) (*httptest.Server, context.Context) {
	t.Helper()
	a, err := api.New(store, api.Config{UI: ui.Handler(), Istio: strictMtlsPG{}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	ctx := browser(t)
	quiet(t, ctx)
	return srv, ctx
}

// TestEdgesShowConfiguration: with serve --kubernetes's configuration the
// edge view shows each destination's AUTHN POLICY and DESTINATION RULE as
// the API gives them, in two columns of their own, and httpbin (STRICT,
// plaintext seen) as CONFLICT; without it (every other test) neither
// column.
func TestEdgesShowConfiguration(t *testing.T) {
	store, _ := fill(t)
	srv, ctx := configuredPage(t, store)
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=edges&window=1h"))
	poll(t, ctx, `document.querySelectorAll('#matrix td[data-testid=authn-policy]').length === 3`)
	got := run(t, ctx, chromedp.Evaluate[map[string][]string](`Object.fromEntries([...document.querySelectorAll('#matrix tr[data-destination]')].map(tr =>
		[tr.dataset.destination, [tr.dataset.status, tr.querySelector('.status').textContent,
			tr.querySelector('[data-testid=authn-policy]').innerText.replace('\n', ' '), tr.querySelector('[data-testid=destination-rule]').innerText.replace('\n', ' ')]]))`))
	want := map[string][]string{
		httpbin: {"CONFLICT", "CONFLICT", "default.mtls-pg STRICT", "httpbin.mtls-pg ISTIO_MUTUAL"},
		ledger:  {"OK", "OK", "- PERMISSIVE", "- auto"},
		reviews: {"SUSPECT", "SUSPECT", "- PERMISSIVE", "- auto"},
	}
	headers := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#matrix .ns-group:first-child th[scope=col]')].map(th => th.textContent)`))
	if w := []string{"destination", "status", "authn policy", "destination rule", "clients (edges)"}; !slices.Equal(headers, w) {
		t.Errorf("columns %q, want %q", headers, w)
	}
	for host, w := range want {
		if g := got[host]; !slices.Equal(g, w) {
			t.Errorf("%s: the page shows %q, want %q", host, g, w)
		}
	}
	var rep report.TLSCheckReport
	getJSON(t, srv.URL+"/v1/reports/tls-check?since=1h", &rep)
	for _, row := range rep.Rows {
		if row.Status != want[row.Destination][0] {
			t.Errorf("%s: the API says %s, the page %s", row.Destination, row.Status, got[row.Destination][0])
		}
	}
	screenshot(t, ctx, "edges-configured.png")
}

// TestReadinessNamesBlockingWorkloads: with serve --kubernetes's records,
// the readiness view names a blocking client by its workload and says it
// runs without a sidecar (it will break under STRICT, a DestinationRule
// will not help it), as strict-readiness does; without workloads (every
// other test) there is no sidecar column.
func TestReadinessNamesBlockingWorkloads(t *testing.T) {
	legacyWL := &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "legacy", Pod: "legacy-6b7d-klmno", ServiceAccount: "default"}
	store, _ := fillEdited(t, edges, func(r *evidence.Record) {
		if r.Source.Address == legacy {
			r.Source.Workload = legacyWL
		}
	})
	srv, ctx := configuredPage(t, store)
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=strict&window=1h"))
	poll(t, ctx, `document.querySelectorAll('[data-namespace=mtls-pg] tr[data-client]').length === 1`)
	got := run(t, ctx, chromedp.Evaluate[[]string](`(() => { const tr = document.querySelector('[data-namespace=mtls-pg] tr[data-client]');
		return [tr.dataset.client, tr.querySelector('th').textContent, tr.querySelector('[data-testid=sidecar]').textContent,
			...[...tr.closest('table').querySelectorAll('th[scope=col]')].map(th => th.textContent)]; })()`))
	want := []string{"workload:legacy/Deployment/legacy", "legacy/deployment/legacy", "no: breaks under STRICT",
		"client", "sidecar", "requests STRICT refuses", "verdicts", "last seen", "example"}
	if !slices.Equal(got, want) {
		t.Errorf("mtls-pg's blocking client: the page shows %q, want %q", got, want)
	}
	screenshot(t, ctx, "readiness-workloads.png")
}
