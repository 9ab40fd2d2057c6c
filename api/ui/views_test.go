package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/meshproof/meshproof/evidence"
)

// openServer is the real API over store with no token (open, as on
// loopback) and the page at /ui/.
func openServer(t *testing.T, store evidence.Store) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(handler(t, store, ""))
	t.Cleanup(srv.Close)
	return srv
}

// quiet fails the test on any exception or error the page logged.
func quiet(t *testing.T, ctx context.Context) {
	t.Helper()
	messages := console(t, ctx)
	t.Cleanup(func() {
		for _, m := range messages() {
			if m.IsException() || m.Type == "error" || m.Source == "security" {
				t.Errorf("browser console: %s", m)
			}
		}
	})
}

// manyEdges is a mesh of 50 destinations in 7 namespaces, with the long
// names real clusters have: each destination reached by a client of
// another namespace over mTLS, every third one also by a plaintext client,
// every seventh one with a suspect edge.
func manyEdges() []edge {
	namespaces := []string{"payments-eu-west-1", "checkout-frontend", "inventory-management", "observability-system",
		"identity-and-access", "recommendations-ml-serving", "legacy-batch-jobs"}
	var out []edge
	for i := range 50 {
		ns := namespaces[i%len(namespaces)]
		sa := fmt.Sprintf("workload-with-a-long-descriptive-name-%02d", i)
		host := fmt.Sprintf("%s.%s.svc.cluster.local:8080", sa, ns)
		dst := "spiffe://cluster.local/ns/" + ns + "/sa/" + sa
		client := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/caller-service-account-%02d", namespaces[(i+3)%len(namespaces)], i%9)
		out = append(out, edge{client, "10.42.3.1", host, dst, evidence.MTLS, 2, "/v1/items"})
		if i%3 == 0 {
			out = append(out, edge{"", fmt.Sprintf("10.42.9.%d", i), host, "", evidence.Plaintext, 1, "/healthz"})
		}
		if i%7 == 0 {
			out = append(out, edge{client, "10.42.3.1", host, dst, evidence.MTLSMismatch, 1, "/v1/items"})
		}
	}
	return out
}

// brokenWords lists the words (text without spaces: IDs, names, hosts) in
// a view that the browser broke across lines.
func brokenWords(view string) string {
	return fmt.Sprintf(brokenWordsIn, view)
}

const brokenWordsIn = `(() => {
	const bad = [];
	const walk = document.createTreeWalker(document.getElementById(%q), NodeFilter.SHOW_TEXT);
	for (let n; (n = walk.nextNode());) {
		const s = n.textContent.trim();
		if (!s || /\s/.test(s) || n.parentElement.closest('[hidden]')) continue;
		const r = document.createRange();
		r.selectNodeContents(n);
		const lines = new Set([...r.getClientRects()].filter((x) => x.width > 0).map((x) => Math.round(x.top)));
		if (lines.size > 1) bad.push(s);
	}
	return bad;
})()`

// TestEdgesAtFiftyDestinations: the edge view of 50 destinations fits the
// screen (no horizontal scrolling), breaks no ID or name mid-word, groups
// the destinations by namespace and puts the full IDs on hover.
func TestEdgesAtFiftyDestinations(t *testing.T) {
	store, _ := fillWith(t, manyEdges())
	srv := openServer(t, store)
	ctx := browser(t)
	quiet(t, ctx)
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=edges&window=1h"))
	poll(t, ctx, `document.querySelectorAll('button.cell').length === 50 + 17`) // a suspect edge is its client's mTLS edge too
	for _, width := range []int64{1400, 1024} {
		do(t, ctx, chromedp.EmulateViewport(width, 900))
		poll(t, ctx, fmt.Sprintf(`innerWidth === %d`, width))
		sizes := run(t, ctx, chromedp.Evaluate[[]int](`[document.scrollingElement.scrollWidth, innerWidth]`))
		if sizes[0] > sizes[1] {
			over := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth).slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className.baseVal + e.className + ' ' + Math.round(e.getBoundingClientRect().right))`))
			t.Errorf("at %d px: the page is %d px wide, wider than the window's %d: it scrolls sideways (%q)", width, sizes[0], sizes[1], over)
		}
		// Nor does a box inside it: a table scrolling in its own box is
		// off the screen all the same.
		inner := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#view-edges, #view-edges *')]
			.filter(e => e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
			.map(e => e.tagName + '#' + e.id + ' ' + e.scrollWidth + ' > ' + e.clientWidth)`))
		if len(inner) > 0 {
			t.Errorf("at %d px: boxes scroll sideways: %q", width, inner)
		}
		if bad := run(t, ctx, chromedp.Evaluate[[]string](brokenWords("view-edges"))); len(bad) > 0 {
			t.Errorf("at %d px: %d words broken across lines, such as %q", width, len(bad), bad[0])
		}
		screenshot(t, ctx, fmt.Sprintf("edges-50-%d.png", width))
	}
	groups := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#matrix .ns-group')].map(g => g.dataset.namespace + ':' + g.querySelectorAll('tr[data-destination]').length)`))
	if len(groups) != 7 {
		t.Errorf("namespace groups %q, want 7", groups)
	}
	// The full IDs are on hover: every destination's name carries its
	// principal and host, every edge its client and destination.
	missing := run(t, ctx, chromedp.Evaluate[[]string](`[
		...[...document.querySelectorAll('#matrix tr[data-destination]')].filter(tr => !tr.querySelector('th .name').title.includes(tr.dataset.destination)).map(tr => tr.dataset.destination),
		...[...document.querySelectorAll('#matrix button.cell')].filter(b => !b.title.includes(b.dataset.source)).map(b => b.dataset.source)]`))
	if len(missing) > 0 {
		t.Errorf("no full ID on hover for %q", missing)
	}

	// The filters narrow the view and are in the URL.
	do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => { const s = document.querySelector('#edges-filter select[name=status]');
		s.value = 'not_ok'; s.dispatchEvent(new Event('change')); })()`))
	poll(t, ctx, `location.hash.includes('status=not_ok') && document.querySelectorAll('#matrix tr[data-destination]').length === 17 + 8 - 3`)
	statuses := run(t, ctx, chromedp.Evaluate[[]string](`[...new Set([...document.querySelectorAll('#matrix button.cell')].map(b => b.dataset.status))].sort()`))
	if !slices.Equal(statuses, []string{"PLAINTEXT", "SUSPECT"}) {
		t.Errorf("not all mTLS: edges of statuses %q", statuses)
	}
}

// TestViewsInTheURL: a search, an edge and a record put their state in the
// URL; the same URL in a fresh tab shows the same; a record links to its
// edge and to a search.
func TestViewsInTheURL(t *testing.T) {
	store, recs := fill(t)
	srv := openServer(t, store)
	ctx := browser(t)
	quiet(t, ctx)
	const rows = `[...document.querySelectorAll('#search-results tbody tr')].map(tr => tr.dataset.id)`

	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=search&window=1h"),
		chromedp.WaitVisible(chromedp.ID("search-form")),
		chromedp.SendKeys(chromedp.CSS(`#search-form input[name=host]`), httpbin),
		chromedp.Click(chromedp.CSS(`#search-form input[name=verdict][value=plaintext]`)),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)))
	poll(t, ctx, rows+`.length === 7`)
	hash := run(t, ctx, chromedp.Evaluate[string](`location.hash`))
	for _, want := range []string{"view=search", "window=1h", "host=" + strings.ReplaceAll(httpbin, ":", "%3A"), "verdict=plaintext"} {
		if !strings.Contains(hash, want) {
			t.Errorf("after a search the URL's hash is %q: no %q", hash, want)
		}
	}
	ids := run(t, ctx, chromedp.Evaluate[[]string](rows))
	do(t, ctx, chromedp.EmulateViewport(1024, 900))
	poll(t, ctx, `innerWidth === 1024`)
	if bad := run(t, ctx, chromedp.Evaluate[[]string](brokenWords("view-search"))); len(bad) > 0 {
		t.Errorf("search results at 1024 px: %d words broken across lines, such as %q", len(bad), bad[0])
	}

	fresh := func() context.Context {
		tab, cancel := chromedp.NewContext(ctx)
		t.Cleanup(cancel)
		return tab
	}
	again := fresh()
	do(t, again, chromedp.Navigate(srv.URL+"/ui/"+hash))
	poll(t, again, rows+`.length === 7`)
	if got := run(t, again, chromedp.Evaluate[[]string](rows)); !slices.Equal(got, ids) {
		t.Errorf("the search's URL in a fresh tab shows %v, the search showed %v", got, ids)
	}
	form := run(t, again, chromedp.Evaluate[[]string](`[document.querySelector('#search-form input[name=host]').value, ...[...document.querySelectorAll('#search-form input[name=verdict]:checked')].map(e => e.value)]`))
	if !slices.Equal(form, []string{httpbin, "plaintext"}) {
		t.Errorf("the form in the fresh tab shows %q", form)
	}

	// What is typed right after a reset stays: the reset's own change of
	// the address, handled later, does not empty the form again. (Typed
	// in the same task as the click, so before that change is handled.)
	typed := run(t, ctx, chromedp.Evaluate[string](`(async () => {
		const changed = new Promise((r) => window.addEventListener('hashchange', r, { once: true }));
		document.querySelector('#search-form button[type=reset]').click();
		document.querySelector('#search-form input[name=host]').value = 'typed';
		await changed;
		await new Promise((r) => setTimeout(r, 0));
		return document.querySelector('#search-form input[name=host]').value;
	})()`, chromedp.EvalAwaitPromise))
	if typed != "typed" {
		t.Errorf("a filter typed right after a reset reads %q afterwards", typed)
	}

	// A search with no filter at all (every record of the window) is in
	// the address too, and runs again from it.
	do(t, ctx, chromedp.Click(chromedp.CSS(`#search-form button[type=reset]`)),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)))
	poll(t, ctx, rows+`.length > 0`)
	all := run(t, ctx, chromedp.Evaluate[[]string](rows))
	hash = run(t, ctx, chromedp.Evaluate[string](`location.hash`))
	bare := fresh()
	do(t, bare, chromedp.Navigate(srv.URL+"/ui/"+hash))
	poll(t, bare, rows+`.length > 0`)
	if got := run(t, bare, chromedp.Evaluate[[]string](rows)); !slices.Equal(got, all) {
		t.Errorf("an unfiltered search's URL %q in a fresh tab shows %d records, the search %d", hash, len(got), len(all))
	}

	// An edge clicked, then a record opened: the URL says both.
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=edges&window=1h"))
	do(t, ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.cell[data-source=%q][data-destination=%q]`, sleepID, httpbin))))
	poll(t, ctx, `document.querySelectorAll('#edge-records tbody tr').length === 20`)
	id := run(t, ctx, chromedp.Evaluate[string](`document.querySelector('#edge-records tbody tr').dataset.id`))
	do(t, ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#edge-records tr[data-id=%q] a`, id))))
	poll(t, ctx, fmt.Sprintf(`document.querySelector('#detail [data-testid=record-id]')?.textContent === %q`, id))
	hash = run(t, ctx, chromedp.Evaluate[string](`location.hash`))
	q := run(t, ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries(new URLSearchParams(location.hash.slice(1)))`))
	if q["view"] != "edges" || q["src"] != sleepID || q["dst"] != httpbin || q["record"] != id {
		t.Errorf("after a click on an edge and a record the URL's hash says %v", q)
	}
	edgeRows := `[...document.querySelectorAll('#edge-records tbody tr')].map(tr => tr.dataset.id)`
	shown := run(t, ctx, chromedp.Evaluate[[]string](edgeRows))
	again = fresh()
	do(t, again, chromedp.Navigate(srv.URL+"/ui/"+hash))
	poll(t, again, fmt.Sprintf(`document.querySelector('#detail [data-testid=record-id]')?.textContent === %q && document.querySelectorAll('#edge-records tbody tr').length === 20`, id))
	if got := run(t, again, chromedp.Evaluate[[]string](edgeRows)); !slices.Equal(got, shown) {
		t.Errorf("the edge's URL in a fresh tab lists %v, the click listed %v", got, shown)
	}
	if pressed := run(t, again, chromedp.Evaluate[string](`document.querySelector('button.cell[aria-pressed=true]')?.dataset.source || ''`)); pressed != sleepID {
		t.Errorf("the fresh tab marks the edge of %q as selected, want %q", pressed, sleepID)
	}

	// The record leads back to a search for its kind of request...
	poll(t, again, `document.querySelector('#detail [data-testid=chain-says]').dataset.verified === 'true'`)
	do(t, again, chromedp.Click(chromedp.CSS(`#detail [data-testid=record-search]`)))
	poll(t, again, `!document.getElementById('view-search').hidden && document.querySelectorAll('#search-results tbody tr').length === 40`)
	q = run(t, again, chromedp.Evaluate[map[string]string](`Object.fromEntries(new URLSearchParams(location.hash.slice(1)))`))
	if q["source"] != sleepID || q["host"] != httpbin || q["window"] != "1h" || q["src"] != "" || q["record"] != "" {
		t.Errorf("the record's search link leads to %v", q)
	}
	// ...and, from a plaintext record found there, to its edge.
	var plain string
	for pid, r := range recs {
		if r.Verdict == evidence.Plaintext {
			plain = pid
			break
		}
	}
	do(t, again, chromedp.Navigate(srv.URL+"/ui/#view=search&window=1h&record="+plain))
	poll(t, again, fmt.Sprintf(`document.querySelector('#detail [data-testid=record-id]')?.textContent === %q`, plain))
	do(t, again, chromedp.Click(chromedp.CSS(`#detail [data-testid=record-edge]`)))
	poll(t, again, `!document.getElementById('view-edges').hidden && document.querySelectorAll('#edge-records tbody tr').length === 7`)
	q = run(t, again, chromedp.Evaluate[map[string]string](`Object.fromEntries(new URLSearchParams(location.hash.slice(1)))`))
	if q["src"] != legacy || q["dst"] != httpbin || q["record"] != "" {
		t.Errorf("the record's edge link leads to %v", q)
	}
	if os.Getenv("MESHPROOF_SCREENSHOTS") != "" {
		screenshot(t, again, "edge-from-record.png")
	}
}

// chartPoint is a point of the time chart as drawn, or of the API's series.
type chartPoint struct {
	T         string  `json:"t"`
	Total     int64   `json:"total"`
	MTLS      int64   `json:"mtls"`
	Plaintext int64   `json:"plaintext"`
	Share     float64 `json:"share"` // drawn: read back from the dot's height
}

// TestTimeChart: the chart draws, per destination, exactly the points the
// API's /v1/reports/timeseries answers for the same window: a dot at the
// mTLS share of every step with traffic, a bar for every step with
// plaintext.
func TestTimeChart(t *testing.T) {
	store, _ := fill(t)
	srv := openServer(t, store)
	ctx := browser(t)
	quiet(t, ctx)
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=trend&window=1h"))
	poll(t, ctx, `document.querySelectorAll('#trend .series').length === 3`)
	window := run(t, ctx, chromedp.Evaluate[map[string]string](`({...document.getElementById('trend').dataset})`))
	type drawn struct {
		Destination string       `json:"destination"`
		Points      []chartPoint `json:"points"`
		Bars        int          `json:"bars"`
	}
	// The share from the dot's height: the plot runs from y=8 (100%) to
	// y=102 (0%) in the chart's viewBox (chart.js).
	got := run(t, ctx, chromedp.Evaluate[[]drawn](`[...document.querySelectorAll('#trend .series')].map(s => ({
		destination: s.dataset.destination, bars: s.querySelectorAll('rect.plain-bar').length,
		points: [...s.querySelectorAll('circle.share-dot')].map(c => ({t: c.dataset.t, total: +c.dataset.total, mtls: +c.dataset.mtls,
			plaintext: +c.dataset.plaintext, share: (102 - c.cy.baseVal.value) / 94}))}))`))
	screenshot(t, ctx, "trend.png")

	var api struct {
		Since       string `json:"since"`
		Until       string `json:"until"`
		StepSeconds int    `json:"step_seconds"`
		Series      []struct {
			Destination string       `json:"destination"`
			Points      []chartPoint `json:"points"`
		} `json:"series"`
	}
	getJSON(t, srv.URL+"/v1/reports/timeseries?since="+url.QueryEscape(window["since"])+"&until="+url.QueryEscape(window["until"]), &api)
	if fmt.Sprint(api.StepSeconds) != window["step"] {
		t.Errorf("the chart's step is %s s, the API's %d s", window["step"], api.StepSeconds)
	}
	if len(api.Series) != len(got) {
		t.Fatalf("the chart draws %d destinations, the API has %d", len(got), len(api.Series))
	}
	for i, s := range api.Series {
		d := got[i]
		if d.Destination != s.Destination {
			t.Errorf("series %d: the chart draws %s, the API has %s", i, d.Destination, s.Destination)
			continue
		}
		var want []chartPoint
		bars := 0
		for _, p := range s.Points {
			if p.Plaintext > 0 {
				bars++
			}
			if p.Total > 0 {
				p.Share = float64(p.MTLS) / float64(p.Total)
				want = append(want, p)
			}
		}
		if len(want) == 0 || len(d.Points) != len(want) {
			t.Errorf("%s: the chart draws %d points, the API has %d with traffic", s.Destination, len(d.Points), len(want))
			continue
		}
		for j, p := range d.Points {
			w := want[j]
			if p.T != w.T || p.Total != w.Total || p.MTLS != w.MTLS || p.Plaintext != w.Plaintext || math.Abs(p.Share-w.Share) > 0.01 {
				t.Errorf("%s point %d: drawn %+v, the API's %+v", s.Destination, j, p, w)
			}
		}
		if d.Bars != bars {
			t.Errorf("%s: %d plaintext bars, the API has %d steps with plaintext", s.Destination, d.Bars, bars)
		}
	}
	if got[0].Bars+got[1].Bars+got[2].Bars == 0 {
		t.Error("no plaintext bars at all: the fixture has plaintext to httpbin")
	}

	// A namespace picked narrows the chart, and the URL says so.
	do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('trend-ns');
		s.value = 'mtls-pg'; s.dispatchEvent(new Event('change')); })()`))
	poll(t, ctx, `location.hash.includes('ns=mtls-pg') && document.getElementById('trend').dataset.namespace === 'mtls-pg'`)
	if shown := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#trend .series')].map(s => s.dataset.destination)`)); !slices.Equal(shown, []string{httpbinID}) {
		t.Errorf("namespace mtls-pg: the chart shows %q, want [%s]", shown, httpbinID)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestEdgesPlaceLikeTheAPI: the edge view puts each destination in the
// namespace the API's namespace filter (tls-check?namespace=) puts it in,
// hosts that never served mTLS included.
func TestEdgesPlaceLikeTheAPI(t *testing.T) {
	store, _ := fillWith(t, append(slices.Clone(edges),
		edge{"", "10.42.7.1", "legacy-db.data:5432", "", evidence.Plaintext, 1, "/"},
		edge{"", "10.42.7.1", "metrics-exporter.monitoring.svc:9100", "", evidence.Plaintext, 1, "/metrics"},
		edge{"", "10.42.7.1", "Search.Data.svc.cluster.example.:9200", "", evidence.Plaintext, 1, "/_search"},
		edge{"", "10.42.7.1", "10.1.2.3:80", "", evidence.Plaintext, 1, "/"},
		edge{"", "10.42.7.1", "external-api.example.com:443", "", evidence.TLSServerOnly, 1, "/"},
		edge{"", "10.42.7.1", "cache:6379", "", evidence.Plaintext, 1, "/"},
		edge{"spiffe://example.org/workload/batch", "10.42.7.2", "batch.jobs:8080", "spiffe://example.org/custom/batch", evidence.MTLS, 1, "/"},
	))
	srv := openServer(t, store)
	ctx := browser(t)
	quiet(t, ctx)
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=edges&window=1h"))
	poll(t, ctx, `document.querySelectorAll('#matrix tr[data-destination]').length === 10`)
	got := run(t, ctx, chromedp.Evaluate[map[string][]string](`Object.fromEntries([...document.querySelectorAll('#matrix .ns-group')].map(g =>
		[g.dataset.namespace, [...g.querySelectorAll('tr[data-destination]')].map(tr => tr.dataset.destination).sort()]))`))
	placed := 0
	for ns, hosts := range got {
		placed += len(hosts)
		if ns == "" {
			continue // the API has no filter for the unknown namespace
		}
		var rep struct {
			Rows []struct {
				Destination string `json:"destination"`
			} `json:"rows"`
		}
		getJSON(t, srv.URL+"/v1/reports/tls-check?since=1h&namespace="+url.QueryEscape(ns), &rep)
		var want []string
		for _, r := range rep.Rows {
			want = append(want, r.Destination)
		}
		slices.Sort(want)
		if !slices.Equal(hosts, want) {
			t.Errorf("namespace %q: the page lists %q, tls-check?namespace= %q", ns, hosts, want)
		}
	}
	if placed != 10 {
		t.Errorf("the page placed %d destinations, want 10: %v", placed, got)
	}
	if want := []string{"10.1.2.3:80", "batch.jobs:8080", "cache:6379", "external-api.example.com:443"}; !slices.Equal(got[""], want) {
		t.Errorf("in no known namespace: %q, want %q", got[""], want)
	}
}
