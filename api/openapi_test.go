package api

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/report"
)

// spec is the part of openapi.json the tests hold the server to.
type spec struct {
	Paths map[string]map[string]struct {
		Parameters []struct {
			Ref  string `json:"$ref"`
			Name string `json:"name"`
		} `json:"parameters"`
		Responses map[string]json.RawMessage `json:"responses"`
	} `json:"paths"`
	Components struct {
		Parameters map[string]struct{ Name string } `json:"parameters"`
		Schemas    map[string]schema                `json:"schemas"`
	} `json:"components"`
}

type schema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	AllOf      []struct {
		Ref        string                     `json:"$ref"`
		Properties map[string]json.RawMessage `json:"properties"`
	} `json:"allOf"`
}

func loadSpec(t *testing.T) spec {
	t.Helper()
	var s spec
	if err := json.Unmarshal(openAPI, &s); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return s
}

// properties lists a schema's property names, following allOf.
func (s spec) properties(name string) []string {
	sc := s.Components.Schemas[name]
	names := slices.Collect(maps.Keys(sc.Properties))
	for _, part := range sc.AllOf {
		if ref, ok := strings.CutPrefix(part.Ref, "#/components/schemas/"); ok {
			names = append(names, s.properties(ref)...)
		}
		names = append(names, slices.Collect(maps.Keys(part.Properties))...)
	}
	slices.Sort(names)
	return names
}

// TestOpenAPIParameters holds each endpoint's parameters to the document.
func TestOpenAPIParameters(t *testing.T) {
	s := loadSpec(t)
	served := map[string][]string{
		"/v1/evidence": listParams, "/v1/export": filterParams, "/v1/reports/tls-check": tlsCheckParams,
		"/v1/reports/strict-readiness": readinessParams, "/v1/reports/timeseries": timeseriesParams, "/v1/stats": statsParams, "/v1/evidence/{id}": {"id"},
		"/v1/evidence/{id}/proof": {"id"}, "/v1/checkpoints": {}, "/v1/checkpoints/{replica}": {"replica"},
		"/v1/checkpoints/{replica}/consistency": append([]string{"replica"}, consistencyParams...),
	}
	for path, want := range served {
		var got []string
		for _, p := range s.Paths[path]["get"].Parameters {
			name := p.Name
			if ref, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
				name = s.Components.Parameters[ref].Name
			}
			got = append(got, name)
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("%s: openapi.json lists %q, the server takes %q", path, got, want)
		}
		if _, ok := s.Paths[path]["get"].Responses["400"]; !ok {
			t.Errorf("%s: openapi.json has no 400 answer", path)
		}
	}
}

// TestOpenAPIPaths checks that every documented path is served, and that
// the document served is the embedded one.
func TestOpenAPIPaths(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	ts := newTestServer(t, openStore(t), Config{MetricsHandler: ok, UI: ok, Logs: ok}, time.Time{})
	for path := range loadSpec(t).Paths {
		path = strings.ReplaceAll(path, "{id}", "01UNKNOWN")
		path = strings.ReplaceAll(path, "{replica}", "01UNKNOWN")
		path = strings.ReplaceAll(path, "consistency", "consistency?from=1")
		path = strings.ReplaceAll(path, "strict-readiness", "strict-readiness?destination=x")
		resp := ts.get(t, path, "")
		if resp.status == http.StatusNotFound && !strings.Contains(path, "01UNKNOWN") || resp.status >= 500 {
			t.Errorf("GET %s: %d %s", path, resp.status, resp.body)
		}
	}
	resp := ts.get(t, "/openapi.json", "")
	if resp.status != http.StatusOK || !bytes.Equal(resp.body, openAPI) || resp.header.Get("Content-Type") != "application/json" {
		t.Errorf("/openapi.json: %d %v", resp.status, resp.header)
	}
}

// TestOpenAPISchemas checks the JSON the server writes against the
// document's schemas: no undocumented field, no documented one missing
// (but for those left out when empty).
func TestOpenAPISchemas(t *testing.T) {
	s := loadSpec(t)
	now := time.Now().UTC().Truncate(time.Minute)
	store := openStore(t)
	appendChained(t, store, storyRecords(now))
	full := evidencetest.Amended("01FULL0000000000000000000", "full", now.Add(-time.Hour))
	appendChained(t, store, []*evidence.Record{full})
	// With a configuration, so that the reports carry its fields too.
	ts := newTestServer(t, store, Config{Istio: strictEverywhere{}}, now)
	decode := func(path string) map[string]any {
		var m map[string]any
		ts.get(t, path, "").decode(t, &m)
		return m
	}
	first := func(v any) map[string]any { return v.([]any)[0].(map[string]any) }
	tc := decode("/v1/reports/tls-check?since=2d")
	sr := decode("/v1/reports/strict-readiness?destination=" + httpbin + "&since=2d")
	nr := decode("/v1/reports/strict-readiness?all_namespaces=true&since=2d")
	series := decode("/v1/reports/timeseries?since=2d")
	page := decode("/v1/evidence?limit=1")
	rec := decode("/v1/evidence/" + full.ID)
	object := func(v any) map[string]any { return v.(map[string]any) }
	// workload and no_sidecar come from records with workloads (serve
	// --kubernetes), which the story's are not.
	optional := map[string]bool{"destination_principal": true, "parameter": true, "effective": true, "principal": true,
		"workload": true, "no_sidecar": true, "suspect": true, "suspect_reason": true}
	for _, c := range []struct {
		schema string
		json   map[string]any
	}{
		{"TLSCheck", tc},
		{"TLSCheckRow", first(tc["rows"])},
		{"Client", first(first(tc["rows"])["clients"])},
		{"StrictReadiness", sr},
		{"BlockingClient", first(sr["blocking"])},
		{"NamespaceReadinessReport", nr},
		{"NamespaceReadiness", first(nr["namespaces"])},
		{"DestinationReadiness", first(first(nr["namespaces"])["workloads"])},
		{"BlockingClient", first(first(nr["namespaces"])["blocking"])},
		{"Timeseries", series},
		{"Series", first(series["series"])},
		{"Point", first(first(series["series"])["points"])},
		{"Page", page},
		{"Stats", decode("/v1/stats")},
		{"Error", decode("/v1/evidence?bad=1")},
		{"Record", rec},
		{"Peer", object(rec["source"])},
		{"SPIFFEID", object(object(rec["source"])["spiffe"])},
		{"Certificate", object(object(rec["source"])["certificate"])},
		{"XFCCElement", first(object(rec["xfcc"])["elements"])},
		{"ConfiguredMode", object(first(tc["rows"])["authn_policy"])},
	} {
		want := s.properties(c.schema)
		got := slices.Sorted(maps.Keys(c.json))
		for _, k := range got {
			if !slices.Contains(want, k) {
				t.Errorf("%s: field %q is not in openapi.json", c.schema, k)
			}
		}
		for _, k := range want {
			if _, ok := c.json[k]; !ok && !optional[k] {
				t.Errorf("%s: openapi.json's %q is not in the answer %v", c.schema, k, got)
			}
		}
	}
}

// TestOpenAPIValid validates the document the server serves with a real
// OpenAPI validator (kin-openapi), examples and defaults included.
func TestOpenAPIValid(t *testing.T) {
	ts := newTestServer(t, openStore(t), Config{}, time.Time{})
	resp := ts.get(t, "/openapi.json", "")
	if resp.status != http.StatusOK {
		t.Fatalf("/openapi.json: %d", resp.status)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(resp.body)
	if err != nil {
		t.Fatalf("loading /openapi.json: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation(), openapi3.EnableSchemaDefaultsValidation()); err != nil {
		t.Errorf("/openapi.json (OpenAPI %s) is not valid: %v", doc.OpenAPI, err)
	}
}

// TestOpenAPIFilterFromTable: the filter parameters come from package
// params' table only; a source document that defines one itself, or that
// marks no operation as taking them, is refused.
func TestOpenAPIFilterFromTable(t *testing.T) {
	for _, src := range []string{
		`{"components": {"parameters": {"since": {}}}, "paths": {"/x": {"get": {"x-meshproof-filter": true}}}}`,
		`{"components": {}, "paths": {"/x": {"get": {}}}}`,
	} {
		if _, err := buildOpenAPI([]byte(src)); err == nil {
			t.Errorf("%s: built", src)
		}
	}
	s := loadSpec(t)
	for _, p := range params.Table {
		if got := s.Components.Parameters[p.Name].Name; got != p.Name {
			t.Errorf("components.parameters.%s: named %q", p.Name, got)
		}
	}
	if bytes.Contains(openAPI, []byte("x-meshproof-filter")) {
		t.Error("the served document keeps the filter mark")
	}
}

// strictEverywhere is a cluster configured STRICT by one mesh-wide policy,
// with one DestinationRule for every host.
type strictEverywhere struct{}

func (strictEverywhere) PeerAuthentication(string, *evidence.Workload, uint32) report.Setting {
	return report.Setting{Name: "default.istio-system", Mode: "STRICT"}
}

func (strictEverywhere) DestinationRule(string, string, uint32) report.Setting {
	return report.Setting{Name: "all.istio-system", Mode: "ISTIO_MUTUAL"}
}
