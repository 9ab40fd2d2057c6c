package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins/logs"

	"github.com/meshproof/meshproof/evidence"
)

// opaEnvoyInput is an input document in the form OPA-Envoy logs it.
func opaEnvoyInput(t *testing.T, src, path, requestID string) *any {
	t.Helper()
	doc := `{
	  "attributes": {
	    "source": {"address": {"socketAddress": {"address": "10.2.0.7", "portValue": 43210}}, "principal": "` + src + `"},
	    "destination": {"address": {"socketAddress": {"address": "10.2.0.8", "portValue": 8000}},
	                    "principal": "spiffe://cluster.local/ns/shop/sa/orders"},
	    "request": {"time": {"seconds": 1795780800, "nanos": 5000},
	                "http": {"id": "9", "method": "GET", "path": "` + path + `", "host": "orders:8000", "protocol": "HTTP/1.1",
	                         "headers": {":authority": "orders:8000", "x-request-id": "` + requestID + `",
	                                     "x-forwarded-client-cert": "By=spiffe://cluster.local/ns/shop/sa/orders;Hash=0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9;Subject=\"\";URI=` + src + `"}}}
	  },
	  "parsed_path": ["orders"], "parsed_query": {}, "parsed_body": null, "truncated_body": false,
	  "version": {"encoding": "protojson", "ext_authz": "v3"}, "source_principal": "` + src + `"
	}`
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func postLogs(t *testing.T, url, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// httpGetToken GETs url with a bearer token.
func httpGetToken(url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestDecisionLogs: OPA's decision log upload, as OPA's plugin sends it, to
// the real binary: recorded once however often it is sent, found by
// `meshproof query`, chained; refused without the ingest token, and with a
// reader's token (which used to write evidence); not served by the query
// role.
func TestDecisionLogs(t *testing.T) {
	t.Parallel()
	token := "opa-uploads-" + strings.Repeat("7", 24)
	readerToken := "e2e-reader-" + strings.Repeat("8", 24)
	tokenFile := writeFile(t, "tokens", readerToken+"\n")
	ingestFile := writeFile(t, "ingest-tokens", token+"\n")
	dsn := sqliteStore(t)
	s := startServe(t, "--store", dsn, "--api-token-file", tokenFile, "--ingest-token-file", ingestFile,
		"--replica", "e2e-logs", "--evidence-durability", "sync")
	now := time.Now().UTC()
	src := "spiffe://cluster.local/ns/shop/sa/web"
	var events []logs.EventV1
	for i, d := range []struct {
		id     string
		result any
	}{
		{"3f1c0a52-0000-4000-8000-000000000001", true},
		{"3f1c0a52-0000-4000-8000-000000000002", map[string]any{"allowed": false, "http_status": 403, "body": "orders are internal"}},
	} {
		result := d.result
		events = append(events, logs.EventV1{
			Labels:     map[string]string{"id": "opa-e2e", "version": "1.4.2"},
			DecisionID: d.id,
			Bundles:    map[string]logs.BundleInfoV1{"authz": {Revision: "v12"}},
			Path:       "envoy/authz/allow",
			Input:      opaEnvoyInput(t, src, "/orders", "req-"+d.id[len(d.id)-1:]),
			Result:     &result,
			Timestamp:  now.Add(time.Duration(i-5) * time.Second),
		})
	}
	raw, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	url := "http://" + s.HTTPAddr + "/logs"
	if status, msg := postLogs(t, url, "", gz.Bytes()); status != http.StatusUnauthorized {
		t.Fatalf("without the token: %d %s", status, msg)
	}
	if status, msg := postLogs(t, url, readerToken, gz.Bytes()); status != http.StatusForbidden || !strings.Contains(msg, "--ingest-token-file") {
		t.Fatalf("with a reader's token: %d %s, want 403 naming --ingest-token-file", status, msg)
	}
	if code, body, err := httpGetToken("http://"+s.HTTPAddr+"/v1/stats", token); err != nil || code != http.StatusForbidden {
		t.Fatalf("GET /v1/stats with the ingest token: %d %s %v, want 403", code, body, err)
	}
	for range 2 { // OPA retries an upload whose answer it did not see
		if status, msg := postLogs(t, url, token, gz.Bytes()); status != http.StatusNoContent {
			t.Fatalf("upload: %d %s", status, msg)
		}
	}

	res := meshproof(t, nil, "query", "--server", "http://"+s.HTTPAddr, "--token-file", tokenFile,
		"--source", src, "--since", "1h", "--output", "json")
	if res.code != 0 {
		t.Fatalf("meshproof query: %s", res)
	}
	var page struct{ Records []*evidence.Record }
	if err := json.Unmarshal([]byte(res.stdout), &page); err != nil {
		t.Fatalf("%v\n%s", err, res)
	}
	if len(page.Records) != 2 {
		t.Fatalf("query found %d records, want 2\n%s", len(page.Records), res.stdout)
	}
	for _, r := range page.Records {
		want := evidence.Decision{DecisionID: r.Decision.DecisionID, PolicyRevision: "authz@v12", Allowed: true}
		if strings.HasSuffix(r.Decision.DecisionID, "2") {
			want = evidence.Decision{DecisionID: r.Decision.DecisionID, PolicyRevision: "authz@v12", HTTPStatus: 403, Reason: "orders are internal"}
		}
		if r.Decision != want || r.Verdict != evidence.MTLS || r.Replica != "e2e-logs" || r.Request.Path != "/orders" ||
			r.XFCC == nil || len(r.XFCC.Elements) != 1 || !strings.Contains(strings.Join(r.Reasons, ";"), "from OPA decision log: instance opa-e2e") {
			t.Errorf("record %s", asJSON(r))
		}
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	if n := len(storedRecords(t, dsn)); n != 2 {
		t.Fatalf("%d records stored, want 2", n)
	}
	if out := verifyChains(t, dsn); !strings.Contains(out, "e2e-logs") {
		t.Fatalf("verify: %s", out)
	}

	// The query role serves no uploads: its API is read-only.
	q, _ := startQuery(t, "--store", dsn, "--api-token-file", tokenFile)
	if status, msg := postLogs(t, "http://"+q.HTTPAddr+"/logs", readerToken, gz.Bytes()); status != http.StatusMethodNotAllowed {
		t.Fatalf("--role query: POST /logs: %d %s", status, msg)
	}
}
