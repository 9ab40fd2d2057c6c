package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/meshproof/meshproof/api/params"
)

// validator checks requests to and answers of a test server against the
// document it serves, with kin-openapi.
type validator struct {
	ts     *testServer
	router routers.Router
}

func newValidator(t *testing.T, ts *testServer) *validator {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(ts.get(t, "/openapi.json", "").body)
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = openapi3.Servers{{URL: ts.URL}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &validator{ts: ts, router: router}
}

// check sends GET target (a path and query) and answers the server's
// status, and what the document says of the request and of the answer.
func (v *validator) check(t *testing.T, target string) (status int, reqErr, respErr error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, v.ts.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	route, pathParams, err := v.router.FindRoute(req)
	if err != nil {
		t.Fatalf("GET %s: not in the document: %v", target, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	ctx := context.Background()
	reqErr = openapi3filter.ValidateRequest(ctx, in)

	resp := do(t, v.ts.Client(), http.MethodGet, v.ts.URL+target, "")
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.status, Header: resp.header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
			// NDJSON is one Record per line, which TestOpenAPISchemas checks.
			ExcludeResponseBody: resp.header.Get("Content-Type") == "application/x-ndjson"}}
	out.SetBodyBytes(resp.body)
	return resp.status, reqErr, openapi3filter.ValidateResponse(ctx, out)
}

// TestOpenAPIRoutes sends a request the server takes to every GET route
// of the document and checks both the request and the answer against it.
func TestOpenAPIRoutes(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Content-Type", "text/plain") })
	ts, _, fx := fixture(t)
	ts = newTestServer(t, ts.api.store, Config{MetricsHandler: ok, UI: ok}, ts.api.now())
	v := newValidator(t, ts)
	first := fx.Records[0]
	targets := map[string]bool{}
	for path, item := range loadSpec(t).Paths {
		if _, ok := item["get"]; !ok {
			continue
		}
		target := strings.NewReplacer("{id}", first.ID, "{replica}", url.PathEscape(first.Replica)).Replace(path)
		switch path {
		case "/v1/checkpoints/{replica}/consistency":
			target += "?from=1"
		case "/v1/reports/strict-readiness":
			target += "?destination=" + url.QueryEscape(first.Request.Host)
		case "/v1/evidence":
			target += "?limit=5&mtls=false&since=3d&source_prefix=spiffe%3A%2F%2F"
		case "/v1/export":
			target += "?verdict=plaintext&verdict=tls_server_only&allowed=false&until=1h"
		case "/v1/evidence/count":
			target += "?mtls=false&since=3d&namespace=shop"
		}
		targets[target] = true
	}
	for target := range targets {
		status, reqErr, respErr := v.check(t, target)
		if status >= 400 && status != http.StatusNotFound || reqErr != nil || respErr != nil {
			t.Errorf("GET %s: %d; request: %v; answer: %v", target, status, reqErr, respErr)
		}
	}
}

// TestOpenAPIFilterValues holds the document and the server to the same
// verdict on values of each filter parameter: a value the server takes
// is valid per the document, and a value it refuses is not. (The one
// known gaps: the document bounds text by 2048 characters, the server
// by 2048 bytes, so text of 1025 to 2048 multibyte characters passes
// the document alone; and kin-openapi reads a boolean parameter as
// strconv.ParseBool does, taking 1, t or TRUE, which are no JSON
// booleans and which the server refuses: those are in lenient.)
func TestOpenAPIFilterValues(t *testing.T) {
	ts, _, _ := fixture(t)
	v := newValidator(t, ts)
	values := map[params.Kind]struct{ good, bad, lenient []string }{
		params.KindText: {
			good: []string{"x", "caf%C3%A9", url.QueryEscape("' OR 1=1 --"), strings.Repeat("x", 2048)},
			bad:  []string{"a%00b", strings.Repeat("x", 2049)},
		},
		params.KindWorkload: {
			good: []string{"legacy/sleep", "caf%C3%A9/%C3%BCn%C3%AF", url.QueryEscape("' OR 1=1 --/x"), strings.Repeat("x", 1000) + "/" + strings.Repeat("y", 1047)},
			bad:  []string{"sleep", "legacy/Deployment/sleep", "/sleep", "legacy/", "a%00/b", strings.Repeat("x", 1000) + "/" + strings.Repeat("y", 1048)},
		},
		params.KindTime: {
			good: []string{"2025-03-03T10:00:00Z", url.QueryEscape("2025-03-03T10:00:00.123+01:00"), "90s", "1h", "7d", "1d12h", "1.5h", "0", "1h30m"},
			bad:  []string{"yesterday", "-1h", "%2B1h", "1d2d", "d", "10", "2025-03-03"},
		},
		params.KindBool: {
			good:    []string{"true", "false"},
			bad:     []string{"yes", "nope"},
			lenient: []string{"1", "t", "TRUE"},
		},
		params.KindVerdicts: {
			good: []string{"mtls", "plaintext&verdict=xfcc_unverified"},
			bad:  []string{"bogus", "MTLS", "mtls&verdict=nope"},
		},
	}
	for _, p := range params.Table {
		for _, path := range []string{"/v1/evidence", "/v1/export", "/v1/evidence/count"} {
			for _, good := range values[p.Kind].good {
				target := path + "?" + p.Name + "=" + good
				status, reqErr, respErr := v.check(t, target)
				if status != http.StatusOK || reqErr != nil || respErr != nil {
					t.Errorf("GET %.80s: %d; request: %v; answer: %v", target, status, reqErr, respErr)
				}
			}
			for _, bad := range values[p.Kind].bad {
				target := path + "?" + p.Name + "=" + bad
				status, reqErr, respErr := v.check(t, target)
				if status != http.StatusBadRequest || reqErr == nil || respErr != nil {
					t.Errorf("GET %.80s: %d; request: %v (want invalid); answer: %v", target, status, reqErr, respErr)
				}
			}
			for _, bad := range values[p.Kind].lenient {
				target := path + "?" + p.Name + "=" + bad
				if status, _, respErr := v.check(t, target); status != http.StatusBadRequest || respErr != nil {
					t.Errorf("GET %.80s: %d; answer: %v", target, status, respErr)
				}
			}
		}
	}
}
