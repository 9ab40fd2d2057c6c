package ui_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/meshproof/meshproof/evidence"
)

// cell is a matrix cell as the browser shows it.
type cell struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Status      string `json:"status"`
	Count       string `json:"count"`
	Label       string `json:"label"`  // the client's short name
	Icon        string `json:"icon"`   // the glyph: lock or warn
	Title       string `json:"title"`  // the full IDs, on hover
	Colour      string `json:"colour"` // computed background-color, then its name
}

func TestPageInChromium(t *testing.T) {
	store, recs := fill(t)
	const token = "token-for-the-browser-test"
	srv := httptest.NewServer(handler(t, store, token))
	t.Cleanup(srv.Close)
	ctx := browser(t)
	messages := console(t, ctx)
	requests := requestURLs(t, ctx)
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range messages() {
				t.Logf("browser console: %s", m)
			}
		}
	})

	// The API answers 401: the page asks for a token, says when it is
	// wrong, and shows the edges once it is right.
	do(t, ctx, chromedp.Navigate(srv.URL+"/ui/#view=edges&window=1h&refresh=off"),
		chromedp.WaitVisible(chromedp.ID("token-form")),
		chromedp.SendKeys(chromedp.ID("token"), "wrong"),
		chromedp.Click(chromedp.CSS("#token-form button[type=submit]")))
	poll(t, ctx, `!document.getElementById('token-form').hidden && document.getElementById('token-message').textContent.includes('did not accept')`)
	do(t, ctx, chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS("#token-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("button.cell")))
	if got := run(t, ctx, chromedp.Value(chromedp.ID("window"))); got != "1h" {
		t.Errorf("window selector shows %q, want the hash's 1h", got)
	}

	checkCells(t, ctx)
	plain := checkEdge(t, ctx, legacy, httpbin, recs)
	checkDetail(t, ctx, plain, recs, map[string]string{
		"source-principal": "—", "source-address": legacy + ":40000", "destination-principal": "—",
		"verdict": "plaintext", "reasons": "no TLS identity on either side", "xfcc-none": "No x-forwarded-client-cert header.",
		"proves":     "Plaintext: no TLS identity on either side; the client is known only by its address " + legacy + ":40000.",
		"chain-says": "Chain verified.",
	})
	mtls := checkEdge(t, ctx, sleepID, httpbin, recs)
	checkDetail(t, ctx, mtls, recs, map[string]string{
		"source-principal": sleepID, "destination-principal": httpbinID, "source-namespace": "mtls-pg",
		"source-service-account": "sleep", "source-trust-domain": "cluster.local", "verdict": "mtls",
		"proves": "mTLS: the client presented " + sleepID + " and the XFCC hash matches the peer certificate.", "chain-says": "Chain verified.",
		"source-cert-sha256": recs[mtls].Source.Certificate.SHA256, "xfcc-uri": sleepID,
	})
	screenshot(t, ctx, "edges.png")

	do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('refresh'); s.value = '30s'; s.dispatchEvent(new Event('change')); })()`))
	poll(t, ctx, `location.hash.includes('refresh=30s') && location.hash.includes('window=1h') && location.hash.includes('record=`+mtls+`')`)

	checkReadiness(t, ctx, requests)
	screenshot(t, ctx, "strict.png")
	checkSearch(t, ctx)

	do(t, ctx, chromedp.Click(chromedp.ID("forget-token")))
	if kept := run(t, ctx, chromedp.Evaluate[bool](`sessionStorage.length > 0`)); kept {
		t.Error("forget token left the token in sessionStorage")
	}

	for _, m := range messages() {
		if m.Source == "network" && (strings.Contains(m.Text, "status of 401") || strings.Contains(m.Text, "status of 400")) {
			continue // the token prompt's and the bad search's doing
		}
		if m.IsException() || m.Type == "error" || m.Source == "security" {
			t.Errorf("browser console: %s", m)
		}
	}
	for _, u := range requests() {
		if !strings.HasPrefix(u, srv.URL+"/") {
			t.Errorf("the page fetched %s, outside its own server", u)
		}
	}
}

// checkCells compares the matrix with the known evidence: status and count
// from the data attributes, symbol from the text, colour from the computed
// style.
func checkCells(t *testing.T, ctx context.Context) {
	t.Helper()
	got := run(t, ctx, chromedp.Evaluate[[]cell](`[...document.querySelectorAll('button.cell')].map(b => ({
		source: b.dataset.source, destination: b.dataset.destination, status: b.dataset.status,
		count: b.dataset.count, label: [...b.querySelectorAll('.name')].flatMap(n => [...n.childNodes]).filter(c => c.nodeType === 3).map(c => c.textContent).join(''), icon: b.querySelector('svg.icon').classList[1],
		title: b.title.split('\n')[0], colour: getComputedStyle(b).backgroundColor}))`))
	for i := range got {
		got[i].Colour = colourName(got[i].Colour)
	}
	slices.SortFunc(got, func(a, b cell) int { return strings.Compare(a.Source+a.Destination, b.Source+b.Destination) })
	want := []cell{
		{Source: legacy, Destination: httpbin, Status: "PLAINTEXT", Count: "7", Label: legacy, Icon: "warn", Colour: "red"},
		{Source: productpgID, Destination: reviews, Status: "SUSPECT", Count: "7", Label: "bookinfo/productpage", Icon: "warn", Colour: "purple"},
		{Source: sleepID, Destination: httpbin, Status: "OK", Count: "40", Label: "mtls-pg/sleep", Icon: "lock", Colour: "green"},
		{Source: frontendID, Destination: ledger, Status: "OK", Count: "12", Label: "shop/frontend", Icon: "lock", Colour: "green"},
	}
	for i := range want {
		want[i].Title = want[i].Source + " → " + want[i].Destination
	}
	slices.SortFunc(want, func(a, b cell) int { return strings.Compare(a.Source+a.Destination, b.Source+b.Destination) })
	if !slices.Equal(got, want) {
		t.Errorf("matrix cells:\n got %+v\nwant %+v", got, want)
	}
}

// colourName names the dominant hue of a CSS rgb() colour, so that the test
// checks meaning (green for mTLS) and not the exact shade.
func colourName(rgb string) string {
	var r, g, b int
	if _, err := fmt.Sscanf(rgb, "rgb(%d, %d, %d)", &r, &g, &b); err != nil {
		return rgb
	}
	switch {
	case g > r && g > b:
		return "green"
	case b > g && r > g:
		return "purple"
	case r > b && g-b > 30:
		return "amber"
	case r > g && r > b:
		return "red"
	}
	return rgb
}

// checkEdge clicks a cell, checks that the records listed are exactly that
// edge's, newest first, and returns the newest one's id.
func checkEdge(t *testing.T, ctx context.Context, client, host string, recs map[string]*evidence.Record) string {
	t.Helper()
	do(t, ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`button.cell[data-source=%q][data-destination=%q]`, client, host))))
	poll(t, ctx, fmt.Sprintf(`document.getElementById('edge-title').textContent.includes(%q) && document.querySelectorAll('#edge-records tbody tr').length > 0`, client))
	ids := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#edge-records tbody tr')].map(tr => tr.dataset.id)`))
	var want []string
	for id, r := range recs {
		src := r.Source.Principal
		if src == "" {
			src = r.Source.Address
		}
		if src == client && r.Request.Host == host {
			want = append(want, id)
		}
	}
	slices.Sort(want)
	slices.Reverse(want) // ULIDs of increasing times: newest first
	if len(want) > 20 {
		want = want[:20]
	}
	if len(ids) == 0 || !slices.Equal(ids, want) { // the steps that follow open ids[0]
		t.Fatalf("records of %s -> %s:\n got %v\nwant %v", client, host, ids, want)
	}
	return ids[0]
}

// checkDetail opens a record from the edge's list and checks the key fields
// and its chain link against the stored record.
func checkDetail(t *testing.T, ctx context.Context, id string, recs map[string]*evidence.Record, want map[string]string) {
	t.Helper()
	do(t, ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#edge-records tr[data-id=%q] a`, id))))
	poll(t, ctx, fmt.Sprintf(`document.querySelector('#detail [data-testid=record-id]')?.textContent === %q`, id))
	// The proof, checked by the page itself against the signed checkpoint.
	poll(t, ctx, `document.querySelector('#detail [data-testid=proof-status]')?.dataset.verified === 'true'`)
	got := run(t, ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll('#detail [data-testid]')].map(e => [e.dataset.testid, e.textContent]))`))
	r := recs[id]
	want["chain-hash"] = r.Chain.Hash
	want["chain-seq"] = fmt.Sprint(r.Chain.Seq)
	if !strings.HasPrefix(got["proof-status"], "verified in this browser: leaf ") {
		t.Errorf("record %s: proof status %q", id, got["proof-status"])
	}
	want["request"] = "GET " + r.Request.Host + " " + r.Request.Path + " HTTP/1.1"
	for k, v := range want {
		if got[k] != v {
			t.Errorf("record %s: [data-testid=%s] = %q, want %q", id, k, got[k], v)
		}
	}
}

type readiness struct {
	Namespace string   `json:"namespace"`
	Ready     string   `json:"ready"`
	Icon      string   `json:"icon"`
	Workloads []string `json:"workloads"`
	Blocking  []string `json:"blocking"`
}

// checkReadiness opens the first view, readiness by namespace: a summary,
// the namespaces not ready first with their workloads and blocking
// clients, from one request for all namespaces (requests lists the URLs
// the page fetched).
func checkReadiness(t *testing.T, ctx context.Context, requests func() []string) {
	t.Helper()
	do(t, ctx, chromedp.Click(chromedp.ID("nav-strict")))
	poll(t, ctx, `document.querySelectorAll('[data-testid=ns-readiness]').length === 3`)
	got := run(t, ctx, chromedp.Evaluate[[]readiness](`[...document.querySelectorAll('[data-testid=ns-readiness]')].map(a => ({
		namespace: a.dataset.namespace, ready: a.dataset.ready, icon: a.querySelector('[data-testid=verdict] svg.icon').classList[1],
		workloads: [...a.querySelectorAll('tr[data-destination]')].map(tr => tr.dataset.destination + ' ' + tr.dataset.status),
		blocking: [...a.querySelectorAll('tr[data-client]')].map(tr => tr.dataset.client)}))`))
	want := []readiness{
		{Namespace: "bookinfo", Ready: "false", Icon: "warn", Workloads: []string{reviewsID + " not_ready"}, Blocking: []string{productpgID}},
		{Namespace: "mtls-pg", Ready: "false", Icon: "warn", Workloads: []string{httpbinID + " not_ready"}, Blocking: []string{legacy}},
		{Namespace: "payments", Ready: "true", Icon: "lock", Workloads: []string{ledgerID + " ready"}, Blocking: []string{}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("STRICT readiness:\n got %+v\nwant %+v", got, want)
	}
	texts := run(t, ctx, chromedp.Evaluate[[]string](`[document.getElementById('readiness-summary').textContent,
		...[...document.querySelectorAll('[data-testid=ns-readiness]')].flatMap(a => [a.querySelector('[data-testid=verdict]').textContent, a.querySelector('[data-testid=based-on]').textContent])]`))
	if texts[0] != "1 of 3 destinations ready in 3 namespaces" {
		t.Errorf("readiness summary %q", texts[0])
	}
	for i := 1; i < len(texts); i += 2 {
		if !strings.HasPrefix(texts[i], "ready") && !strings.HasPrefix(texts[i], "not ready") {
			t.Errorf("verdict %q does not say ready or not ready", texts[i])
		}
		if !strings.HasPrefix(texts[i+1], "Based on ") || !strings.Contains(texts[i+1], " requests ") {
			t.Errorf("based on %q does not say what it is based on", texts[i+1])
		}
	}
	// One time format, the CLI's and the reports' sentences': RFC 3339 in
	// UTC, with how long ago; never the browser's locale.
	view := run(t, ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('[data-testid=ns-readiness]')].map(a => a.textContent).join(' ')`))
	if !regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+[smhd] ago\)`).MatchString(view) || regexp.MustCompile(`\d+/\d+/\d{4}|[AP]M\b`).MatchString(view) {
		t.Errorf("the readiness view's times are not all RFC 3339 UTC with how long ago:\n%s", view)
	}
	asked := 0
	for _, u := range requests() {
		if strings.Contains(u, "/v1/reports/strict-readiness") {
			asked++
			if !strings.Contains(u, "all_namespaces=true") {
				t.Errorf("the readiness view asked %s: one request for all namespaces, not one per destination", u)
			}
		}
	}
	if asked == 0 {
		t.Error("the readiness view asked nothing of strict-readiness")
	}
}

// checkSearch runs the search form: a verdict filter paged with "more",
// then a bad since that the API refuses, named on the form.
func checkSearch(t *testing.T, ctx context.Context) {
	t.Helper()
	const rows = `document.querySelectorAll('#search-results tbody tr').length`
	do(t, ctx, chromedp.Click(chromedp.ID("nav-search")),
		chromedp.Click(chromedp.CSS(`#search-form input[name=verdict][value=mtls]`)),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)))
	poll(t, ctx, rows+` === 50 && !document.getElementById('search-more').hidden`) // 57 mtls records, pages of 50
	do(t, ctx, chromedp.Click(chromedp.ID("search-more")))
	poll(t, ctx, rows+` === 57 && document.getElementById('search-more').hidden`)
	verdicts := run(t, ctx, chromedp.Evaluate[[]string](`[...new Set([...document.querySelectorAll('#search-results tbody tr td:nth-child(2)')].map(td => td.textContent))]`))
	if !slices.Equal(verdicts, []string{"mtls"}) {
		t.Errorf("search for verdict=mtls shows verdicts %q", verdicts)
	}

	do(t, ctx, chromedp.SendKeys(chromedp.CSS(`#search-form input[name=since]`), "last tuesday"),
		chromedp.Click(chromedp.CSS(`#search-form button[type=submit]`)))
	poll(t, ctx, `!document.getElementById('search-error').hidden`)
	msg := run(t, ctx, chromedp.Text(chromedp.ID("search-error")))
	if !strings.HasPrefix(msg, "API error 400: ") || !strings.HasSuffix(msg, "(parameter: since)") {
		t.Errorf("search error shows %q, want the API's 400 naming since", msg)
	}
	invalid := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#search-form [aria-invalid=true]')].map(e => e.name)`))
	if !slices.Equal(invalid, []string{"since"}) {
		t.Errorf("fields marked invalid: %q, want [since]", invalid)
	}
}
