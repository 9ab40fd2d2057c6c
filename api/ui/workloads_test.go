package ui_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/meshproof/meshproof/evidence"
)

// TestWorkloadsInChromium: with the workloads serve --kubernetes records,
// the page names a plaintext client by its workload (one cell for the
// workload's two pod addresses), marks a client presenting another
// workload's identity SUSPECT, lists a workload's requests when its cell
// is opened, shows a record's workloads, and searches by workload, each
// result naming both peers' workloads.
func TestWorkloadsInChromium(t *testing.T) {
	const hijackID = "spiffe://cluster.local/ns/bookinfo/sa/reviews"
	sleepLegacy := &evidence.Workload{Namespace: "legacy", Kind: "Deployment", Name: "sleep", Pod: "sleep-7d9f8-x2lqp", ServiceAccount: "sleep", App: "sleep", Version: "v1"}
	httpbinWL := &evidence.Workload{Namespace: "mtls-pg", Kind: "Deployment", Name: "httpbin", Pod: "httpbin-5c4f-abcde", ServiceAccount: "default", Sidecar: true}
	hijack := &evidence.Workload{Namespace: "bookinfo", Kind: "Deployment", Name: "productpage", Pod: "productpage-1", ServiceAccount: "productpage", Sidecar: true}
	store, recs := fillEdited(t, []edge{
		{sleepID, "10.42.0.12", httpbin, httpbinID, evidence.MTLS, 6, "/headers"},
		{"", "10.42.0.99", httpbin, "", evidence.Plaintext, 5, "/get"},
		{"", "10.42.0.98", httpbin, "", evidence.Plaintext, 4, "/get"},
		{"", "10.42.0.97", httpbin, "", evidence.Plaintext, 2, "/ip"}, // no workload resolved
		{hijackID, "10.42.2.7", reviews, reviewsID, evidence.MTLS, 3, "/reviews/1"},
	}, func(r *evidence.Record) {
		switch r.Source.Address {
		case "10.42.0.99", "10.42.0.98":
			r.Source.Workload = sleepLegacy
		case "10.42.2.7":
			r.Source.Workload = hijack // its pod runs as productpage, its ID says reviews
		}
		if r.Request.Host == httpbin {
			r.Destination.Workload = httpbinWL
		}
	})
	srv := openServer(t, store)
	ctx := browser(t)
	messages := console(t, ctx)
	t.Cleanup(func() {
		for _, m := range messages() {
			if m.Source == "network" && strings.Contains(m.Text, "status of 400") {
				continue // the bad search's
			}
			if m.IsException() || m.Type == "error" || m.Source == "security" {
				t.Errorf("browser console: %s", m)
			}
		}
	})
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=edges&window=1h"))
	poll(t, ctx, `document.querySelectorAll('button.cell').length === 4`)
	type cell struct{ Source, Status, Label, Count string }
	got := run(t, ctx, chromedp.Evaluate[[]cell](`[...document.querySelectorAll('button.cell')].map(b => ({
		Source: b.dataset.source, Status: b.dataset.status, Count: b.dataset.count,
		Label: [...b.querySelectorAll('.name')].flatMap(n => [...n.childNodes]).filter(c => c.nodeType === 3).map(c => c.textContent).join('')}))`))
	slices.SortFunc(got, func(a, b cell) int { return cmpString(a.Source, b.Source) })
	want := []cell{
		{"10.42.0.97", "PLAINTEXT", "10.42.0.97", "2"},
		{hijackID + " workload:bookinfo/Deployment/productpage", "SUSPECT", "bookinfo/deployment/productpage as bookinfo/reviews", "3"},
		{sleepID, "OK", "mtls-pg/sleep", "6"},
		{"workload:legacy/Deployment/sleep", "PLAINTEXT", "legacy/deployment/sleep", "9"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("cells:\n got %+v\nwant %+v", got, want)
	}

	// The workload's cell lists its requests from both pod addresses.
	do(t, ctx, chromedp.Click(chromedp.CSS(`button.cell[data-source="workload:legacy/Deployment/sleep"]`)))
	poll(t, ctx, `document.getElementById('edge-title').textContent.includes('workload:legacy/Deployment/sleep') && document.querySelectorAll('#edge-records tbody tr').length === 9`)
	ids := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#edge-records tbody tr')].map(tr => tr.dataset.id)`))
	for _, id := range ids {
		if r := recs[id]; r == nil || r.Source.Workload != sleepLegacy {
			t.Errorf("the workload's edge lists %s, not one of its requests", id)
		}
	}
	checkDetail(t, ctx, ids[0], recs, map[string]string{
		"source-principal": "—", "source-workload": "legacy/deployment/sleep", "source-pod": "sleep-7d9f8-x2lqp",
		"source-pod-service-account": "sleep", "source-app": "sleep v1", "source-sidecar": "none: breaks under STRICT",
		"destination-workload": "mtls-pg/deployment/httpbin", "destination-sidecar": "istio-proxy",
		"verdict": "plaintext", "xfcc-none": "No x-forwarded-client-cert header.",
		"proves": fmt.Sprintf("Plaintext: no TLS identity on either side; the client is known by its address %s:40000, which was workload legacy/deployment/sleep's when recorded.",
			recs[ids[0]].Source.Address),
		"record-search": "search: source_workload=legacy/sleep host=" + httpbin + " verdict=plaintext",
		"record-edge":   "its edge: workload:legacy/Deployment/sleep → " + httpbin,
		"chain-says":    "Chain verified.",
	})

	// The mismatched client's cell lists its requests.
	do(t, ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.cell[data-source=%q]`, hijackID+" workload:bookinfo/Deployment/productpage"))))
	poll(t, ctx, `document.getElementById('edge-note').textContent.includes('suspect') && document.querySelectorAll('#edge-records tbody tr').length === 3`)

	// The search form takes both workload filters.
	const rows = `document.querySelectorAll('#search-results tbody tr').length`
	do(t, ctx, chromedp.Click(chromedp.ID("nav-search")),
		chromedp.SendKeys(chromedp.CSS(`#search-form input[name=source_workload]`), "legacy/sleep"),
		chromedp.SendKeys(chromedp.CSS(`#search-form input[name=destination_workload]`), "mtls-pg/httpbin"),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)))
	poll(t, ctx, rows+` === 9 && location.hash.includes('source_workload=legacy%2Fsleep')`)
	// Each result names both peers' workloads, in columns of their own.
	type result struct{ Source, Destination string }
	const workloadCells = `(() => {
		const heads = [...document.querySelectorAll('#search-results thead th')].map(th => th.textContent);
		const col = (name) => heads.indexOf(name);
		return [...document.querySelectorAll('#search-results tbody tr')].map(tr => ({
			Source: tr.cells[col('source workload')]?.textContent, Destination: tr.cells[col('destination workload')]?.textContent}));
	})()`
	results := run(t, ctx, chromedp.Evaluate[[]result](workloadCells))
	for _, r := range results {
		if r != (result{"legacy/deployment/sleep", "mtls-pg/deployment/httpbin"}) {
			t.Errorf("search result's workloads %+v, want legacy/deployment/sleep to mtls-pg/deployment/httpbin", r)
		}
	}
	// Every plaintext request to httpbin (a search from the address): the
	// client without a resolved workload (10.42.0.97, 2 requests) shows a
	// dash where the others show theirs.
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=search&window=1h&run=1&verdict=plaintext&host="+strings.Split(httpbin, ":")[0]))
	poll(t, ctx, rows+` === 11`)
	count := map[result]int{}
	for _, r := range run(t, ctx, chromedp.Evaluate[[]result](workloadCells)) {
		count[r]++
	}
	if want := map[result]int{{"legacy/deployment/sleep", "mtls-pg/deployment/httpbin"}: 9, {"—", "mtls-pg/deployment/httpbin"}: 2}; !maps.Equal(count, want) {
		t.Errorf("plaintext results' workloads %v, want %v", count, want)
	}
	do(t, ctx, chromedp.Click(chromedp.CSS(`#search-form button[type=reset]`)),
		chromedp.SendKeys(chromedp.CSS(`#search-form input[name=source_workload]`), "sleep"),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)))
	poll(t, ctx, `!document.getElementById('search-error').hidden`)
	if msg := run(t, ctx, chromedp.Text(chromedp.ID("search-error"))); msg != `API error 400: source_workload: "sleep" is not NAMESPACE/NAME (parameter: source_workload)` {
		t.Errorf("search error shows %q", msg)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
