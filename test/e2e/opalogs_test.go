package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	lstat "github.com/open-policy-agent/opa/v1/plugins/logs/status"
	"github.com/open-policy-agent/opa/v1/plugins/status"
	"github.com/open-policy-agent/opa/v1/sdk"

	"github.com/meshproof/meshproof/evidence"
)

// This file runs OPA itself, through its Go SDK, in the test process: its
// own decision log plugin uploads to a real `meshproof serve`, so the upload
// format (gzip, headers, chunking, event JSON) is OPA's, not the test's.

const (
	opaBundleName     = "authz"
	opaBundleRevision = "bench-7"
	opaDecisionPath   = "envoy/authz/result" // the bench policy's object decision
	opaStepTimeout    = 10 * time.Second     // one OPA step: start, a Trigger, a stop
	sleepPrincipal    = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	frontendPrincipal = "spiffe://cluster.local/ns/default/sa/frontend"
	benchDestination  = "spiffe://cluster.local/ns/mtls-pg/sa/default"
)

// opaProcess is an OPA running in this process through the SDK, with its
// decision log plugin in manual trigger mode: nothing is uploaded until
// upload is called.
type opaProcess struct {
	id     string
	opa    *sdk.OPA
	logs   *logs.Plugin
	status *status.Plugin
	log    *syncBuffer // OPA's own log, dumped if the test fails
}

// opaBundleDir is the bench policy as a bundle directory with a revision,
// for OPA's bundle plugin to load from a file:// resource.
func opaBundleDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	policy, err := os.ReadFile(benchFile("policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := `{"revision": "` + opaBundleRevision + `", "roots": ["envoy"]}`
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), policy, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".manifest"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startOPA starts OPA with the bench policy as bundle "authz" and decision
// logs going to serviceURL with the given bearer credentials (OPA's
// services.<name>.credentials.bearer), and waits until it is ready.
func startOPA(t *testing.T, id, serviceURL string, bearer map[string]any) *opaProcess {
	t.Helper()
	config, err := json.Marshal(map[string]any{
		"services": map[string]any{
			"meshproof": map[string]any{"url": serviceURL, "credentials": map[string]any{"bearer": bearer}},
		},
		"bundles": map[string]any{
			opaBundleName: map[string]any{"resource": "file://" + opaBundleDir(t)},
		},
		"decision_logs": map[string]any{
			"service": "meshproof",
			// Small chunks, so that one trigger makes several uploads.
			"reporting": map[string]any{"trigger": "manual", "upload_size_limit_bytes": 4096},
		},
		// Kept in memory only, for the decision log plugin's status.
		"status": map[string]any{"console": true, "trigger": "manual"},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &opaProcess{id: id, log: &syncBuffer{}}
	logger := logging.New()
	logger.SetOutput(p.log)
	logger.SetLevel(logging.Debug)
	ctx, cancel := context.WithTimeout(context.Background(), opaStepTimeout)
	defer cancel()
	p.opa, err = sdk.New(ctx, sdk.Options{
		ID:            id,
		Config:        bytes.NewReader(config),
		Logger:        logger,
		ConsoleLogger: logging.NewNoOpLogger(),
	})
	t.Cleanup(func() {
		if p.opa != nil {
			ctx, cancel := context.WithTimeout(context.Background(), opaStepTimeout)
			defer cancel()
			p.opa.Stop(ctx)
		}
		if t.Failed() {
			t.Logf("OPA %s log:\n%s", id, p.log)
		}
	})
	if err != nil {
		t.Fatalf("OPA did not start within %v (bundle from a file:// resource, decision logs to %s): %v", opaStepTimeout, serviceURL, err)
	}
	var ok bool
	if p.logs, ok = p.opa.Plugin(logs.Name).(*logs.Plugin); !ok {
		t.Fatalf("OPA has no decision log plugin")
	}
	if p.status, ok = p.opa.Plugin(status.Name).(*status.Plugin); !ok {
		t.Fatalf("OPA has no status plugin")
	}
	return p
}

// upload makes OPA's decision log plugin upload what it holds, as its
// periodic loop would, and returns the plugin's error.
func (p *opaProcess) upload(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opaStepTimeout)
	defer cancel()
	err := p.logs.Trigger(ctx)
	if ctx.Err() != nil {
		t.Fatalf("OPA's decision log upload did not finish within %v", opaStepTimeout)
	}
	return err
}

// held is how much OPA still holds to upload, in its buffer's unit (bytes
// of compressed chunks for its default size buffer).
func (p *opaProcess) held() int64 {
	_, n := p.logs.BufferSize()
	return n
}

// logsStatus is the decision log plugin's status as OPA's status plugin
// reports it.
func (p *opaProcess) logsStatus(t *testing.T) lstat.Status {
	t.Helper()
	done := make(chan *status.UpdateRequestV1, 1)
	go func() { done <- p.status.Snapshot() }()
	select {
	case s := <-done:
		if s.DecisionLogs == nil {
			return lstat.Status{}
		}
		return *s.DecisionLogs
	case <-time.After(opaStepTimeout):
		t.Fatalf("OPA's status plugin did not answer within %v", opaStepTimeout)
		return lstat.Status{}
	}
}

// opaDecision is one decision OPA made and logged.
type opaDecision struct {
	id                      string // OPA's decision id
	requestID, source, path string
	allowed                 bool
	wantDenied              bool // what the bench policy must decide
}

// opaEnvoyBenchInput returns the input document OPA-Envoy gives OPA for the
// bench request, as `meshproof eval --show-input` builds it, without the
// meshproof key that OPA-Envoy does not have.
func opaEnvoyBenchInput(t *testing.T) []byte {
	t.Helper()
	res := meshproof(t, nil, "eval", "--policy", benchFile("policy.rego"), "--decision", opaDecisionPath,
		"--input", benchFile("request.json"), "--show-input")
	if res.code != 0 {
		t.Fatalf("meshproof eval --show-input: %s", res)
	}
	var out struct{ Input map[string]any }
	dec := json.NewDecoder(strings.NewReader(res.stdout))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil || out.Input == nil {
		t.Fatalf("meshproof eval --show-input printed no input (%v)\n%s", err, res)
	}
	delete(out.Input, "meshproof")
	b, err := json.Marshal(out.Input)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decide makes n decisions on variations of the bench input: distinct
// x-request-ids, every other one from the frontend rather than sleep (with
// the XFCC to match), every fourth one to /admin, which the bench policy
// denies.
func (p *opaProcess) decide(t *testing.T, base []byte, n int) []*opaDecision {
	t.Helper()
	var out []*opaDecision
	for i := range n {
		d := &opaDecision{
			requestID:  fmt.Sprintf("%s-%02d", p.id, i),
			source:     sleepPrincipal,
			path:       "/headers",
			wantDenied: i%4 == 3,
		}
		if i%2 == 1 {
			d.source = frontendPrincipal
		}
		if d.wantDenied {
			d.path = "/admin"
		}
		// Integers stay integers, as OPA-Envoy's (protobuf integers) do;
		// float64s would reach OPA's log in exponent form.
		var input map[string]any
		dec := json.NewDecoder(bytes.NewReader(base))
		dec.UseNumber()
		if err := dec.Decode(&input); err != nil {
			t.Fatal(err)
		}
		attrs := input["attributes"].(map[string]any)
		request := attrs["request"].(map[string]any)["http"].(map[string]any)
		headers := request["headers"].(map[string]any)
		headers["x-request-id"] = d.requestID
		headers["x-forwarded-client-cert"] = strings.Replace(headers["x-forwarded-client-cert"].(string),
			"URI="+sleepPrincipal, "URI="+d.source, 1)
		headers[":path"] = d.path
		request["path"] = d.path
		input["parsed_path"] = []any{strings.TrimPrefix(d.path, "/")}
		attrs["source"].(map[string]any)["principal"] = d.source
		input["source_principal"] = d.source

		ctx, cancel := context.WithTimeout(context.Background(), opaStepTimeout)
		res, err := p.opa.Decision(ctx, sdk.DecisionOptions{Path: opaDecisionPath, Input: input})
		cancel()
		if err != nil {
			t.Fatalf("OPA decision %d: %v", i, err)
		}
		result, ok := res.Result.(map[string]any)
		if !ok {
			t.Fatalf("OPA decision %d: result %#v, want the bench policy's object", i, res.Result)
		}
		d.id = res.ID
		d.allowed, _ = result["allowed"].(bool)
		if d.allowed == d.wantDenied {
			t.Fatalf("OPA decision %d (%s %s): allowed %v, the bench policy says otherwise", i, d.source, d.path, d.allowed)
		}
		out = append(out, d)
	}
	return out
}

// checkOPARecords checks that recs are exactly one record per decision, as
// OPA-Envoy's input and OPA's result say.
func checkOPARecords(t *testing.T, what string, recs []*evidence.Record, decisions []*opaDecision, replica, opaID string) {
	t.Helper()
	byID := map[string]*evidence.Record{}
	for _, r := range recs {
		if byID[r.Decision.DecisionID] != nil {
			t.Errorf("%s: two records of decision %s", what, r.Decision.DecisionID)
		}
		byID[r.Decision.DecisionID] = r
	}
	if len(recs) != len(decisions) {
		t.Errorf("%s: %d records, want one per decision: %d", what, len(recs), len(decisions))
	}
	for _, d := range decisions {
		r := byID[d.id]
		if r == nil {
			t.Errorf("%s: no record of OPA's decision %s (%s)", what, d.id, d.requestID)
			continue
		}
		want := evidence.Decision{Allowed: d.allowed, DecisionID: d.id, PolicyRevision: opaBundleName + "@" + opaBundleRevision}
		if !d.allowed {
			want.HTTPStatus = 403
		}
		var problems []string
		if r.Decision != want {
			problems = append(problems, fmt.Sprintf("decision %+v, want %+v", r.Decision, want))
		}
		if r.RequestID != d.requestID || r.Replica != replica || r.Request.Path != d.path || r.Request.Method != "GET" {
			problems = append(problems, fmt.Sprintf("request_id %q replica %q %s %s, want %q %q GET %s",
				r.RequestID, r.Replica, r.Request.Method, r.Request.Path, d.requestID, replica, d.path))
		}
		if r.Source.Principal != d.source || r.Destination.Principal != benchDestination ||
			r.Source.SPIFFE == nil || r.Source.SPIFFE.ID != d.source {
			problems = append(problems, fmt.Sprintf("principals %q -> %q, want %q -> %q", r.Source.Principal, r.Destination.Principal, d.source, benchDestination))
		}
		if r.XFCC == nil || len(r.XFCC.Elements) != 1 || !slices.Equal(r.XFCC.Elements[0].URI, []string{d.source}) ||
			!slices.Equal(r.XFCC.Elements[0].By, []string{benchDestination}) {
			problems = append(problems, "xfcc does not name "+d.source+" by "+benchDestination)
		}
		if r.Verdict != evidence.MTLS {
			problems = append(problems, fmt.Sprintf("verdict %s, want mtls", r.Verdict))
		}
		note := "from OPA decision log: instance " + opaID + ", path " + opaDecisionPath
		if !slices.Contains(r.Reasons, note) {
			problems = append(problems, fmt.Sprintf("reasons %q lack %q", r.Reasons, note))
		}
		if len(problems) > 0 {
			t.Errorf("%s: record of decision %s (%s):\n  %s\n%s", what, d.id, d.requestID, strings.Join(problems, "\n  "), asJSON(r))
		}
	}
}

// queryAll is every record `meshproof query` finds in the last hour.
func queryAll(t *testing.T, s *server, tokenFile string) []*evidence.Record {
	t.Helper()
	res := meshproof(t, nil, "query", "--server", "http://"+s.HTTPAddr, "--token-file", tokenFile,
		"--since", "1h", "--limit", "1000", "--output", "json")
	if res.code != 0 {
		t.Fatalf("meshproof query: %s", res)
	}
	var page struct {
		Records    []*evidence.Record
		NextCursor string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &page); err != nil {
		t.Fatalf("meshproof query output: %v\n%s", err, res)
	}
	if page.NextCursor != "" {
		t.Fatalf("meshproof query: more than one page\n%s", res.stdout)
	}
	return page.Records
}

// lossyProxy forwards OPA's uploads to meshproof unchanged and, when told,
// loses meshproof's answer to the next one (502 to OPA instead), as a
// connection that breaks after the request went through would. It keeps
// what OPA sent.
type lossyProxy struct {
	target string // meshproof's base URL
	mu     sync.Mutex
	lose   bool
	sent   []proxiedUpload
}

type proxiedUpload struct {
	header        http.Header
	decisionIDs   []string
	meshproofCode int
	opaCode       int
}

func (p *lossyProxy) loseNext() {
	p.mu.Lock()
	p.lose = true
	p.mu.Unlock()
}

func (p *lossyProxy) uploads() []proxiedUpload {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent)
}

func (p *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	up := proxiedUpload{header: r.Header.Clone(), decisionIDs: uploadedDecisionIDs(body)}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := (&http.Client{Timeout: opaStepTimeout}).Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	up.meshproofCode, up.opaCode = resp.StatusCode, resp.StatusCode
	p.mu.Lock()
	if p.lose {
		p.lose, up.opaCode = false, http.StatusBadGateway
	}
	p.sent = append(p.sent, up)
	p.mu.Unlock()
	if up.opaCode != resp.StatusCode {
		http.Error(w, "answer lost", up.opaCode)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(answer)
}

// uploadedDecisionIDs reads the decision ids of a gzipped upload; nil if it
// is not one.
func uploadedDecisionIDs(body []byte) []string {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil
	}
	var events []struct {
		DecisionID string `json:"decision_id"`
	}
	if json.Unmarshal(raw, &events) != nil {
		return nil
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.DecisionID
	}
	return ids
}

func startLossyProxy(t *testing.T, target string) (*lossyProxy, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{target: target}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: opaStepTimeout}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p, "http://" + l.Addr().String()
}

// TestDecisionLogsFromOPA: OPA's own decision log plugin (OPA's Go SDK,
// bench policy from a bundle, OPA-Envoy inputs) uploads to a real
// `meshproof serve`: every decision becomes exactly one record that says
// what the input and OPA's result say, found by `meshproof query`, chained;
// an upload whose answer OPA did not see is resent and recorded once; with
// a wrong token, or a reader's (--api-token-file), OPA is refused (401,
// 403), records nothing, keeps its events and reports the failure, and
// once its token is an ingest token (--ingest-token-file) they are
// recorded.
func TestDecisionLogsFromOPA(t *testing.T) {
	t.Parallel()
	base := opaEnvoyBenchInput(t)
	token := "opa-sdk-uploads-" + strings.Repeat("5", 24) // OPA's: an ingest token
	readerToken := "opa-sdk-reader-" + strings.Repeat("4", 24)
	const uploads204 = `meshproof_decision_log_uploads_total{status="204"}`
	const recorded = `meshproof_decision_log_events_total{outcome="recorded"}`
	const duplicate = `meshproof_decision_log_events_total{outcome="duplicate"}`

	t.Run("uploads", func(t *testing.T) {
		tokenFile, ingestFile := writeFile(t, "tokens", readerToken+"\n"), writeFile(t, "ingest-tokens", token+"\n")
		dsn := sqliteStore(t)
		s := startServe(t, "--store", dsn, "--api-token-file", tokenFile, "--ingest-token-file", ingestFile, "--metrics-open",
			"--replica", "e2e-opa", "--evidence-durability", "sync")
		opa := startOPA(t, "opa-e2e-sdk", "http://"+s.HTTPAddr, map[string]any{"token": token})
		decisions := opa.decide(t, base, 20)

		if err := opa.upload(t); err != nil {
			t.Fatalf("OPA's decision log upload to meshproof failed: %v", err)
		}
		if st := opa.logsStatus(t); st.Code != "" || st.HTTPCode != "" {
			t.Errorf("OPA's decision log status after the upload: %+v, want no error", st)
		}
		if n := opa.held(); n != 0 {
			t.Errorf("OPA still holds %d bytes of decision logs after the upload", n)
		}
		m := s.metrics(t)
		if m[uploads204] < 1 || m[recorded] != float64(len(decisions)) || m[duplicate] != 0 {
			t.Errorf("after the upload: %s %v, %s %v, %s %v; want >= 1, %d, 0",
				uploads204, m[uploads204], recorded, m[recorded], duplicate, m[duplicate], len(decisions))
		}
		t.Logf("OPA's upload of %d decisions took %v POSTs", len(decisions), m[uploads204])
		// Nothing left: another trigger uploads nothing.
		if err := opa.upload(t); err != nil {
			t.Fatalf("OPA's second trigger: %v", err)
		}
		if again := s.metrics(t)[uploads204]; again != m[uploads204] {
			t.Errorf("OPA's trigger with an empty buffer: %s went from %v to %v", uploads204, m[uploads204], again)
		}

		checkOPARecords(t, "meshproof query", queryAll(t, s, tokenFile), decisions, "e2e-opa", opa.id)
		if code := s.stop(); code != 0 {
			t.Fatalf("serve exit %d", code)
		}
		checkOPARecords(t, "store", storedRecords(t, dsn), decisions, "e2e-opa", opa.id)
		if out := verifyChains(t, dsn); !strings.Contains(out, "e2e-opa") {
			t.Fatalf("meshproof verify does not report the replica's chain: %s", out)
		}
	})

	t.Run("answer lost", func(t *testing.T) {
		tokenFile, ingestFile := writeFile(t, "tokens", readerToken+"\n"), writeFile(t, "ingest-tokens", token+"\n")
		dsn := sqliteStore(t)
		s := startServe(t, "--store", dsn, "--api-token-file", tokenFile, "--ingest-token-file", ingestFile, "--metrics-open",
			"--replica", "e2e-opa-lost", "--evidence-durability", "sync")
		proxy, proxyURL := startLossyProxy(t, "http://"+s.HTTPAddr)
		opa := startOPA(t, "opa-e2e-lost", proxyURL, map[string]any{"token": token})
		decisions := opa.decide(t, base, 12)

		proxy.loseNext()
		err := opa.upload(t)
		if httpErr, ok := errors.AsType[lstat.HTTPError](err); !ok || httpErr.StatusCode != http.StatusBadGateway {
			t.Fatalf("OPA's upload whose answer was lost: error %v, want HTTP 502", err)
		}
		if opa.held() == 0 {
			t.Fatalf("OPA dropped the upload whose answer it did not see")
		}
		first := proxy.uploads()
		if len(first) != 1 || first[0].meshproofCode != http.StatusNoContent || len(first[0].decisionIDs) == 0 {
			t.Fatalf("before OPA's retry: %d uploads %+v, want one that meshproof took", len(first), first)
		}
		if err := opa.upload(t); err != nil {
			t.Fatalf("OPA's retry: %v", err)
		}
		if opa.held() != 0 {
			t.Errorf("OPA still holds decision logs after its retry")
		}

		sent := proxy.uploads()
		uploaded := map[string]int{}
		for i, up := range sent {
			h := up.header
			if h.Get("Content-Encoding") != "gzip" || h.Get("Content-Type") != "application/json" ||
				h.Get("Authorization") != "Bearer "+token || up.meshproofCode != http.StatusNoContent {
				t.Errorf("upload %d: Content-Encoding %q Content-Type %q Authorization set %v, meshproof answered %d",
					i, h.Get("Content-Encoding"), h.Get("Content-Type"), h.Get("Authorization") != "", up.meshproofCode)
			}
			for _, id := range up.decisionIDs {
				uploaded[id]++
			}
		}
		// OPA resent the lost upload's events, and meshproof recorded them
		// once.
		for _, d := range decisions {
			want := 1
			if slices.Contains(first[0].decisionIDs, d.id) {
				want = 2 // sent, resent
			}
			if uploaded[d.id] != want {
				t.Errorf("OPA uploaded decision %s %d times, want %d", d.id, uploaded[d.id], want)
			}
		}
		if len(uploaded) != len(decisions) {
			t.Errorf("OPA uploaded %d decisions, made %d", len(uploaded), len(decisions))
		}
		m := s.metrics(t)
		if m[uploads204] != float64(len(sent)) || m[recorded] != float64(len(decisions)) ||
			m[duplicate] != float64(len(first[0].decisionIDs)) {
			t.Errorf("%d uploads of which %d events resent: %s %v, %s %v, %s %v", len(sent), len(first[0].decisionIDs),
				uploads204, m[uploads204], recorded, m[recorded], duplicate, m[duplicate])
		}
		t.Logf("OPA: %d uploads through the proxy, the lost one with %d events", len(sent), len(first[0].decisionIDs))
		checkOPARecords(t, "meshproof query", queryAll(t, s, tokenFile), decisions, "e2e-opa-lost", opa.id)
		if code := s.stop(); code != 0 {
			t.Fatalf("serve exit %d", code)
		}
		checkOPARecords(t, "store", storedRecords(t, dsn), decisions, "e2e-opa-lost", opa.id)
		verifyChains(t, dsn)
	})

	t.Run("wrong token", func(t *testing.T) {
		tokenFile, ingestFile := writeFile(t, "tokens", readerToken+"\n"), writeFile(t, "ingest-tokens", token+"\n")
		dsn := sqliteStore(t)
		s := startServe(t, "--store", dsn, "--api-token-file", tokenFile, "--ingest-token-file", ingestFile, "--metrics-open",
			"--replica", "e2e-opa-token", "--evidence-durability", "sync")
		// OPA reads token_path at every request: fixing the file fixes OPA.
		opaToken := writeFile(t, "opa-token", "not-the-token-"+strings.Repeat("0", 24)+"\n")
		opa := startOPA(t, "opa-e2e-token", "http://"+s.HTTPAddr, map[string]any{"token_path": opaToken})
		decisions := opa.decide(t, base, 6)

		err := opa.upload(t)
		if httpErr, ok := errors.AsType[lstat.HTTPError](err); !ok || httpErr.StatusCode != http.StatusUnauthorized {
			t.Fatalf("OPA's upload with a wrong token: error %v, want HTTP 401", err)
		}
		if st := opa.logsStatus(t); st.Code == "" || st.HTTPCode != "401" {
			t.Errorf("OPA's decision log status after the refused upload: %+v, want an error with HTTP code 401", st)
		}
		if opa.held() == 0 {
			t.Errorf("OPA dropped the events meshproof refused")
		}
		// meshproof's side of the refusal: its API log (the 401 is answered
		// before the upload handler, so the upload metrics do not see it).
		for deadline := time.Now().Add(opaStepTimeout); ; {
			if slices.ContainsFunc(s.findLogs("api request"), func(l map[string]any) bool {
				return l["path"] == "/logs" && l["status"] == float64(http.StatusUnauthorized)
			}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("meshproof logged no 401 answer to POST /logs within %v", opaStepTimeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if recs := queryAll(t, s, tokenFile); len(recs) != 0 {
			t.Errorf("refused upload: meshproof query found %d records, want none", len(recs))
		}
		if m := s.metrics(t); m[uploads204] != 0 || m[recorded] != 0 {
			t.Errorf("refused upload: %s %v, %s %v, want 0", uploads204, m[uploads204], recorded, m[recorded])
		}

		// A reader's token does not write evidence: 403, and OPA keeps the
		// events.
		if err := os.WriteFile(opaToken, []byte(readerToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		err = opa.upload(t)
		if httpErr, ok := errors.AsType[lstat.HTTPError](err); !ok || httpErr.StatusCode != http.StatusForbidden {
			t.Fatalf("OPA's upload with a reader's token: error %v, want HTTP 403", err)
		}
		if st := opa.logsStatus(t); st.Code == "" || st.HTTPCode != "403" {
			t.Errorf("OPA's decision log status after the upload with a reader's token: %+v, want an error with HTTP code 403", st)
		}
		if opa.held() == 0 {
			t.Errorf("OPA dropped the events meshproof refused")
		}
		if recs := queryAll(t, s, tokenFile); len(recs) != 0 {
			t.Errorf("upload with a reader's token: meshproof query found %d records, want none", len(recs))
		}
		if m := s.metrics(t); m[uploads204] != 0 || m[recorded] != 0 {
			t.Errorf("upload with a reader's token: %s %v, %s %v, want 0", uploads204, m[uploads204], recorded, m[recorded])
		}

		if err := os.WriteFile(opaToken, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := opa.upload(t); err != nil {
			t.Fatalf("OPA's upload once its token is right: %v", err)
		}
		if st := opa.logsStatus(t); st.Code != "" || st.HTTPCode != "" {
			t.Errorf("OPA's decision log status after the upload: %+v, want no error", st)
		}
		if m := s.metrics(t); m[uploads204] < 1 || m[recorded] != float64(len(decisions)) {
			t.Errorf("after the token was fixed: %s %v, %s %v, want >= 1, %d", uploads204, m[uploads204], recorded, m[recorded], len(decisions))
		}
		checkOPARecords(t, "meshproof query", queryAll(t, s, tokenFile), decisions, "e2e-opa-token", opa.id)
		if code := s.stop(); code != 0 {
			t.Fatalf("serve exit %d", code)
		}
		verifyChains(t, dsn)
	})
}
