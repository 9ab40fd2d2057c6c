package decisionlog_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/oklog/ulid/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/decisionlog"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/meshproof/meshproof/rego"
)

const logsToken = "opa-decision-logs-token-0123456789"

// logsEnv is meshproof's HTTP API with the decision log endpoint, over a
// real SQLite store and a real recorder, on loopback.
type logsEnv struct {
	store *sqlite.Store
	rec   *recorder.Recorder
	url   string
	reg   *prometheus.Registry // the Check server's metrics
}

func newLogsEnv(t *testing.T, rc recorder.Config, cfg decisionlog.Config) *logsEnv {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rec, err := recorder.New(ctx, rc, "replica-a", store, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	svc, err := authz.NewServer(authz.Config{StatusOnError: 403, Replica: "replica-a"}, nil, rec, zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Exists == nil {
		cfg.Exists = func(ctx context.Context, id string) (bool, error) {
			_, err := store.Get(ctx, id)
			if errors.Is(err, evidence.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		}
	}
	logsHandler, err := decisionlog.New(cfg, svc, rec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	a, err := api.New(store, api.Config{IngestTokens: []string{logsToken}, Logs: logsHandler}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a.Handler())
	t.Cleanup(ts.Close)
	return &logsEnv{store: store, rec: rec, url: ts.URL, reg: reg}
}

// checks sums meshproof_checks_total of source (and decision, unless "").
func (e *logsEnv) checks(t *testing.T, source, decision string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "meshproof_checks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] == source && (decision == "" || labels["decision"] == decision) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// upload POSTs body to /logs as OPA does (gzip unless headers say other).
func (e *logsEnv) upload(t *testing.T, body []byte, token string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/logs", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *logsEnv) records(t *testing.T) map[string]*evidence.Record {
	t.Helper()
	m := map[string]*evidence.Record{}
	err := e.store.Scan(context.Background(), evidence.Filter{}, func(r *evidence.Record) error {
		if m[r.Decision.DecisionID] != nil {
			t.Errorf("decision %s recorded twice", r.Decision.DecisionID)
		}
		m[r.Decision.DecisionID] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// payload is the body OPA's decision log plugin uploads: the events as a
// JSON array, gzip-compressed.
func payload(t *testing.T, events ...logs.EventV1) []byte {
	t.Helper()
	b, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	return gz(t, b)
}

func anyOf(v any) *any { return &v }

// inputOf is the input document meshproof builds for req in a Check,
// converted to a map with ast.JSON as OPA converts a logged input.
func inputOf(t *testing.T, svc *authz.Server, req *authv3.CheckRequest) (*any, *evidence.Record) {
	t.Helper()
	res := svc.Explain(context.Background(), req)
	if res.Input == nil {
		t.Fatal("no input document built")
	}
	x, err := ast.JSON(res.Input.Value)
	if err != nil {
		t.Fatal(err)
	}
	return &x, res.Record
}

// event is an OPA-Envoy decision log event, as OPA's plugin fills it.
func event(id string, ts time.Time, input *any, result any) logs.EventV1 {
	ev := logs.EventV1{
		Labels:     map[string]string{"id": "opa-sidecar-7", "version": "1.4.2"},
		DecisionID: id,
		Bundles:    map[string]logs.BundleInfoV1{"envoy": {Revision: "rev-42"}},
		Path:       "envoy/authz/allow",
		Input:      input,
		Timestamp:  ts,
		Metrics:    map[string]any{"timer_rego_query_eval_ns": 12345},
		RequestID:  7,
	}
	if result != nil {
		ev.Result = anyOf(result)
	}
	return ev
}

// handWritten is an input in OPA-Envoy's exact form, written by hand:
// request.time as {seconds, nanos}, ports and sizes as numbers.
const handWritten = `{
  "attributes": {
    "source": {"address": {"socketAddress": {"address": "10.1.0.5", "portValue": 51000}},
               "principal": "spiffe://cluster.local/ns/pay/sa/checkout"},
    "destination": {"address": {"socketAddress": {"address": "10.1.0.9", "portValue": 9080}},
                    "principal": "spiffe://cluster.local/ns/pay/sa/ledger"},
    "request": {
      "time": {"seconds": 1795780800, "nanos": 250000000},
      "http": {"id": "4401", "method": "POST", "path": "/ledger/entries?debug=1", "host": "ledger:9080",
               "scheme": "http", "protocol": "HTTP/2", "size": 17,
               "headers": {":authority": "ledger:9080", ":method": "POST", ":path": "/ledger/entries?debug=1",
                           "x-request-id": "b6e1-77", "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
                           "x-forwarded-client-cert": "By=spiffe://cluster.local/ns/pay/sa/ledger;Hash=0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9;Subject=\"\";URI=spiffe://cluster.local/ns/pay/sa/checkout"}}
    }
  },
  "parsed_path": ["ledger", "entries"], "parsed_query": {"debug": ["1"]}, "parsed_body": null,
  "truncated_body": false, "version": {"encoding": "protojson", "ext_authz": "v3"},
  "source_principal": "spiffe://cluster.local/ns/pay/sa/checkout"
}`

// TestDecisionLogsUpload: OPA's upload of OPA-Envoy decisions becomes the
// records Checks of the same requests would have made, with OPA's decision,
// decision id, time and revision; the chain verifies; the same upload again
// writes nothing more.
func TestDecisionLogsUpload(t *testing.T) {
	env := newLogsEnv(t, syncRecorder(), decisionlog.Config{})
	// Inputs come from meshproof's own Check path; its records are the
	// reference for every field but the decision and the record's identity.
	check, err := authz.NewServer(authz.Config{StatusOnError: 403, Replica: "replica-a"}, observeEngine(t), nil, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca := authztest.NewCA(t, "cluster.local")
	client, proxy := ca.Issue(t, srcID), ca.Issue(t, dstID)
	base := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	type want struct {
		checkRecord *evidence.Record // nil: hand-written input
		ts          time.Time
		decision    evidence.Decision
	}
	wants := map[string]want{}
	var events []logs.EventV1
	add := func(id string, req *authv3.CheckRequest, result any, d evidence.Decision) {
		input, rec := inputOf(t, check, req)
		ts := base.Add(time.Duration(len(events)) * time.Second)
		events = append(events, event(id, ts, input, result))
		d.DecisionID, d.PolicyRevision = id, "envoy@rev-42"
		wants[id] = want{checkRecord: rec, ts: ts, decision: d}
	}
	add("7d0f7a0e-0001-4c4e-9d7b-3b8c1f0c2a01",
		authztest.NewRequest(authztest.Principals(client.ID(), proxy.ID()), authztest.PeerCertificate(client),
			authztest.Header("x-forwarded-client-cert", authztest.XFCC(proxy, client)), authztest.Path("/api/items?token=secret")),
		true, evidence.Decision{Allowed: true})
	add("7d0f7a0e-0002-4c4e-9d7b-3b8c1f0c2a02",
		authztest.NewRequest(authztest.Header("x-forwarded-client-cert", authztest.XFCC(proxy, client))),
		map[string]any{"allowed": false, "http_status": 401, "body": "mTLS required", "reason": "no client certificate"},
		evidence.Decision{HTTPStatus: 401, Reason: "no client certificate"})
	add("7d0f7a0e-0003-4c4e-9d7b-3b8c1f0c2a03",
		authztest.NewRequest(authztest.MTLS(srcID, dstID), authztest.RawHeaders(), authztest.Method("DELETE")),
		map[string]any{"allowed": true, "headers": map[string]any{"x-checked": "yes"}},
		evidence.Decision{Allowed: true})
	add("7d0f7a0e-0004-4c4e-9d7b-3b8c1f0c2a04", authztest.NewRequest(), false, evidence.Decision{HTTPStatus: 403})
	var hand any
	if err := json.Unmarshal([]byte(handWritten), &hand); err != nil {
		t.Fatal(err)
	}
	handTime := time.Date(2026, 11, 27, 12, 0, 0, 250e6, time.UTC)
	events = append(events, event("7d0f7a0e-0005-4c4e-9d7b-3b8c1f0c2a05", handTime, &hand,
		map[string]any{"allowed": false, "http_status": 403, "body": "ledger is read-only for checkout"}))
	wants["7d0f7a0e-0005-4c4e-9d7b-3b8c1f0c2a05"] = want{ts: handTime, decision: evidence.Decision{
		DecisionID: "7d0f7a0e-0005-4c4e-9d7b-3b8c1f0c2a05", PolicyRevision: "envoy@rev-42",
		HTTPStatus: 403, Reason: "ledger is read-only for checkout",
	}}
	// OPA-Envoy logs a request it could not read without an input, with
	// the error: nothing to record, and no reason to refuse the upload.
	var noInput any = map[string]any(nil)
	unreadable := event("7d0f7a0e-0006-4c4e-9d7b-3b8c1f0c2a06", base, &noInput, nil)
	unreadable.Error = errors.New("request parse error")
	events = append(events, unreadable)

	body := payload(t, events...)
	if status, msg := env.upload(t, body, logsToken); status != http.StatusNoContent {
		t.Fatalf("upload: %d %s", status, msg)
	}
	// Counted with the Checks, as their source; the event without an
	// input is not (nothing was recorded).
	for labels, want := range map[[2]string]float64{
		{"opa_decision_logs", "allow"}: 2, {"opa_decision_logs", "deny"}: 3, {"ext_authz", ""}: 0,
	} {
		if got := env.checks(t, labels[0], labels[1]); got != want {
			t.Errorf("meshproof_checks_total{source=%q,decision=%q} = %v, want %v", labels[0], labels[1], got, want)
		}
	}
	got := env.records(t)
	if len(got) != len(wants) {
		t.Fatalf("%d records, want %d", len(got), len(wants))
	}
	for id, w := range wants {
		rec := got[id]
		if rec == nil {
			t.Fatalf("decision %s not recorded", id)
		}
		uid, err := ulid.ParseStrict(rec.ID)
		if err != nil || !ulid.Time(uid.Time()).Equal(w.ts.Truncate(time.Millisecond)) {
			t.Errorf("%s: record id %s (%v) does not carry the decision's time %v", id, rec.ID, err, w.ts)
		}
		if !rec.Time.Equal(w.ts) || rec.Replica != "replica-a" || rec.Decision != w.decision {
			t.Errorf("%s: time %v replica %q decision %+v\nwant time %v replica replica-a decision %+v", id, rec.Time, rec.Replica, rec.Decision, w.ts, w.decision)
		}
		note := rec.Reasons[len(rec.Reasons)-1]
		if note != "from OPA decision log: instance opa-sidecar-7, path envoy/authz/allow" {
			t.Errorf("%s: last reason %q", id, note)
		}
		if w.checkRecord == nil {
			continue
		}
		// Everything but the decision and the record's own identity is what
		// a Check of the same request recorded.
		a, b := *rec, *w.checkRecord
		a.ID, a.Time, a.Decision, a.Chain, a.Reasons = "", time.Time{}, evidence.Decision{}, evidence.Chain{}, a.Reasons[:len(a.Reasons)-1]
		b.ID, b.Time, b.Decision = "", time.Time{}, evidence.Decision{}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: record\n got %s\nwant %s", id, asJSON(a), asJSON(b))
		}
	}
	mtls := got["7d0f7a0e-0001-4c4e-9d7b-3b8c1f0c2a01"]
	if mtls.Verdict != evidence.MTLS || mtls.Source.Certificate == nil || mtls.Source.Certificate.SHA256 != client.SHA256() ||
		mtls.XFCC == nil || len(mtls.XFCC.Elements) != 1 || mtls.XFCC.Elements[0].Hash != client.SHA256() ||
		mtls.Source.SPIFFE == nil || mtls.Source.SPIFFE.ServiceAccount != "frontend" || mtls.Request.Path != "/api/items" {
		t.Errorf("mTLS record: %s", asJSON(mtls))
	}
	if v := got["7d0f7a0e-0002-4c4e-9d7b-3b8c1f0c2a02"].Verdict; v != evidence.XFCCUnverified {
		t.Errorf("XFCC without a client certificate: verdict %s", v)
	}
	h := got["7d0f7a0e-0005-4c4e-9d7b-3b8c1f0c2a05"]
	if h.Verdict != evidence.MTLS || h.Source.Principal != "spiffe://cluster.local/ns/pay/sa/checkout" ||
		h.Destination.Address != "10.1.0.9" || h.Destination.Port != 9080 || h.RequestID != "b6e1-77" ||
		h.TraceID != "80f198ee56343ba864fe8b2a57d3eff7" || h.StreamID != "4401" ||
		h.Request != (evidence.Request{Method: "POST", Host: "ledger:9080", Path: "/ledger/entries", Protocol: "HTTP/2"}) ||
		h.XFCC == nil || len(h.XFCC.Elements) != 1 || h.XFCC.Elements[0].URI[0] != h.Source.Principal {
		t.Errorf("hand-written OPA-Envoy input: %s", asJSON(h))
	}
	verifyChain(t, env.store, len(wants))

	// OPA retries an upload whose answer it did not see: written once.
	if status, msg := env.upload(t, body, logsToken); status != http.StatusNoContent {
		t.Fatalf("the same upload again: %d %s", status, msg)
	}
	if n := len(env.records(t)); n != len(wants) {
		t.Fatalf("after the same upload twice: %d records, want %d", n, len(wants))
	}
	verifyChain(t, env.store, len(wants))
}

func mustProtoJSON(t *testing.T, req *authv3.CheckRequest) []byte {
	t.Helper()
	b, err := protojson.Marshal(req.GetAttributes())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// simpleEvent is a valid OPA-Envoy event for req.
func simpleEvent(t *testing.T, id string, req *authv3.CheckRequest) logs.EventV1 {
	t.Helper()
	b, err := json.Marshal(map[string]any{"attributes": json.RawMessage(mustProtoJSON(t, req))})
	if err != nil {
		t.Fatal(err)
	}
	var input any
	if err := json.Unmarshal(b, &input); err != nil {
		t.Fatal(err)
	}
	return event(id, time.Now().Add(-time.Second), &input, true)
}

// TestDecisionLogsRefused: whatever is wrong with an upload, it is refused
// whole with a 4xx saying what, and nothing of it is written.
func TestDecisionLogsRefused(t *testing.T) {
	env := newLogsEnv(t, syncRecorder(), decisionlog.Config{MaxBodyBytes: 64 << 10, MaxDecodedBytes: 1 << 20, MaxEvents: 20})
	good := func(n int) []logs.EventV1 {
		evs := make([]logs.EventV1, n)
		for i := range evs {
			evs[i] = simpleEvent(t, "good-"+strconv.Itoa(i), authztest.NewRequest(authztest.MTLS(srcID, dstID)))
		}
		return evs
	}
	withBad := func(bad func(*logs.EventV1)) []byte {
		evs := good(3)
		bad(&evs[2])
		return payload(t, evs...)
	}
	random := make([]byte, 100<<10)
	rand.Read(random)
	bomb := gz(t, append(append([]byte("["), bytes.Repeat([]byte(" "), 4<<20)...), ']'))
	if len(bomb) > 8<<10 {
		t.Fatalf("the zip bomb is %d bytes compressed", len(bomb))
	}
	tests := []struct {
		name    string
		body    []byte
		token   string
		headers []string
		status  int
		msg     string
	}{
		{name: "no token", body: payload(t, good(1)...), status: 401, msg: "authentication required"},
		{name: "wrong token", body: payload(t, good(1)...), token: strings.Repeat("w", 32), status: 401, msg: "not accepted"},
		{name: "malformed JSON", body: gz(t, []byte(`[{"decision_id": "x",`)), status: 400, msg: "malformed JSON"},
		{name: "not an array", body: gz(t, []byte(`{"decision_id": "x"}`)), status: 400, msg: "not a JSON array"},
		{name: "array of strings", body: gz(t, []byte(`["x"]`)), status: 400, msg: "event 0: not a decision log event"},
		{name: "not gzip", body: []byte(`[]`), status: 400, msg: "not gzip"},
		{name: "truncated gzip", body: payload(t, good(2)...)[:60], status: 400, msg: "reading the body"},
		{name: "brotli", body: []byte(`[]`), headers: []string{"Content-Encoding", "br"}, status: 415, msg: "Content-Encoding"},
		{name: "text", body: payload(t, good(1)...), headers: []string{"Content-Type", "text/plain"}, status: 415, msg: "Content-Type"},
		{name: "oversized body", body: random, headers: []string{"Content-Encoding", ""}, status: 413, msg: "body of"},
		{name: "zip bomb", body: bomb, status: 413, msg: "decompressed body larger than 1048576 bytes"},
		{name: "too many events", body: payload(t, good(21)...), status: 413, msg: "21 events in one upload, at most 20"},
		{name: "mixed: no decision_id", body: withBad(func(e *logs.EventV1) { e.DecisionID = "" }), status: 400, msg: "event 2"},
		{name: "mixed: bad timestamp", body: withBad(func(e *logs.EventV1) { e.Timestamp = time.Time{} }), status: 400, msg: "timestamp \"0001-01-01T00:00:00Z\": out of range"},
		{name: "mixed: not an OPA-Envoy input", body: withBad(func(e *logs.EventV1) { e.Input = anyOf(map[string]any{"method": "GET", "path": "/"}) }),
			status: 400, msg: "not an OPA-Envoy input"},
		{name: "mixed: input erased", body: withBad(func(e *logs.EventV1) { e.Input, e.Erased = nil, []string{"/input"} }), status: 400, msg: "erased"},
		{name: "mixed: bad time in input", body: withBad(func(e *logs.EventV1) {
			(*e.Input).(map[string]any)["attributes"].(map[string]any)["request"].(map[string]any)["time"] = map[string]any{"seconds": "soon"}
		}), status: 400, msg: "request.time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := tt.token
			if token == "" && tt.status != 401 {
				token = logsToken
			}
			status, body := env.upload(t, tt.body, token, tt.headers...)
			var answer struct{ Error string }
			if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.Error == "" {
				t.Fatalf("answer %s is not a JSON error", body)
			}
			if status != tt.status || !strings.Contains(answer.Error, tt.msg) {
				t.Fatalf("%d %s, want %d saying %q", status, answer.Error, tt.status, tt.msg)
			}
			if n := len(env.records(t)); n != 0 {
				t.Fatalf("%d records written by a refused upload", n)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodGet, env.url+"/logs", nil)
	req.Header.Set("Authorization", "Bearer "+logsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Fatalf("GET /logs: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// A body of unknown length is cut at the limit as it streams in.
	req, _ = http.NewRequest(http.MethodPost, env.url+"/logs", io.MultiReader(bytes.NewReader(random)))
	req.Header.Set("Authorization", "Bearer "+logsToken)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(msg), "body larger than 65536 bytes") {
		t.Fatalf("a streamed body past the limit: %d %s", resp.StatusCode, msg)
	}
	// Plain JSON is taken too, and the good events then go in.
	b, _ := json.Marshal(good(3))
	if status, msg := env.upload(t, b, logsToken, "Content-Encoding", ""); status != http.StatusNoContent {
		t.Fatalf("plain JSON: %d %s", status, msg)
	}
	if n := len(env.records(t)); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
}

// TestDecisionLogsUnavailable: an upload the evidence queue cannot take
// whole, or whose duplicates cannot be checked, gets a 503 (OPA retries)
// and writes nothing; once it can, the retry is written once.
func TestDecisionLogsUnavailable(t *testing.T) {
	rc := syncRecorder()
	rc.QueueSize = 2
	env := newLogsEnv(t, rc, decisionlog.Config{})
	var storeDown atomic.Bool
	storeDown.Store(true)
	var env2 *logsEnv
	env2 = newLogsEnv(t, syncRecorder(), decisionlog.Config{Exists: func(ctx context.Context, id string) (bool, error) {
		if storeDown.Load() {
			return false, errors.New("connection refused")
		}
		_, err := env2.store.Get(ctx, id)
		return err == nil, nil
	}})
	evs := []logs.EventV1{
		simpleEvent(t, "u1", authztest.NewRequest()), simpleEvent(t, "u2", authztest.NewRequest()), simpleEvent(t, "u3", authztest.NewRequest()),
	}
	if status, msg := env.upload(t, payload(t, evs...), logsToken); status != http.StatusServiceUnavailable || !strings.Contains(msg, "retry") {
		t.Fatalf("3 events into a queue of 2: %d %s", status, msg)
	}
	if n := len(env.records(t)); n != 0 {
		t.Fatalf("%d records written", n)
	}
	if status, msg := env.upload(t, payload(t, evs[:2]...), logsToken); status != http.StatusNoContent {
		t.Fatalf("2 events into a queue of 2: %d %s", status, msg)
	}
	if status, msg := env2.upload(t, payload(t, evs...), logsToken); status != http.StatusServiceUnavailable || !strings.Contains(msg, "retry") {
		t.Fatalf("store unreadable: %d %s", status, msg)
	}
	if n := len(env2.records(t)); n != 0 {
		t.Fatalf("%d records written", n)
	}
	storeDown.Store(false)
	for range 2 {
		if status, msg := env2.upload(t, payload(t, evs...), logsToken); status != http.StatusNoContent {
			t.Fatalf("store back: %d %s", status, msg)
		}
	}
	if n := len(env2.records(t)); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
}

// TestDecisionLogsQueuedNotStored: a retry that arrives while the first
// upload's records still wait in the queue (async durability, not stored
// yet) is written once, and so are two uploads of the same events at once.
func TestDecisionLogsQueuedNotStored(t *testing.T) {
	rc := recorder.DefaultConfig()
	rc.FlushInterval, rc.BatchSize = time.Hour, 100_000 // nothing is stored before Close
	env := newLogsEnv(t, rc, decisionlog.Config{})
	var evs []logs.EventV1
	for i := range 50 {
		evs = append(evs, simpleEvent(t, "q"+strconv.Itoa(i), authztest.NewRequest(authztest.MTLS(srcID, dstID))))
	}
	body := payload(t, append(evs, evs[0], evs[1])...) // duplicates within one upload too
	done := make(chan int, 4)
	for range 4 {
		go func() {
			status, _ := env.upload(t, body, logsToken)
			done <- status
		}()
	}
	for range 4 {
		if status := <-done; status != http.StatusNoContent {
			t.Fatalf("upload: %d", status)
		}
	}
	if n := len(env.records(t)); n != 0 {
		t.Fatalf("%d records stored before Close; the test needs them queued", n)
	}
	if err := env.rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(env.records(t)); n != 50 {
		t.Fatalf("%d records, want 50", n)
	}
	verifyChain(t, env.store, 50)
}

// TestDecisionLogsTooOld: an event older than MaxAge (retention) is not
// recorded, and does not hold up the rest of its upload.
func TestDecisionLogsTooOld(t *testing.T) {
	env := newLogsEnv(t, syncRecorder(), decisionlog.Config{MaxAge: time.Hour})
	old := simpleEvent(t, "old", authztest.NewRequest())
	old.Timestamp = time.Now().Add(-2 * time.Hour)
	if status, msg := env.upload(t, payload(t, old, simpleEvent(t, "new", authztest.NewRequest())), logsToken); status != http.StatusNoContent {
		t.Fatalf("upload: %d %s", status, msg)
	}
	got := env.records(t)
	if len(got) != 1 || got["new"] == nil {
		t.Fatalf("records %v, want only the new one", got)
	}
}

func syncRecorder() recorder.Config {
	rc := recorder.DefaultConfig()
	rc.Durability = recorder.Sync
	return rc
}

// verifyChain: the store holds one chain, intact, of n records.
func verifyChain(t *testing.T, s evidence.Store, n int) {
	t.Helper()
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil || len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != int64(n) {
		t.Fatalf("chains: %+v, %v; want one intact of %d records", reps, err, n)
	}
}

// observeEngine is a real engine running the built-in observe policy,
// without the decision cache, so that every Explain builds its input
// document.
func observeEngine(t *testing.T) *rego.Engine {
	t.Helper()
	rc := rego.Defaults()
	rc.Policies, rc.DecisionCache = []string{rego.BuiltinPrefix + "observe"}, 0
	e, err := rego.New(rc, zerolog.Nop(), nil)
	if err == nil {
		err = e.Start(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e
}

const (
	srcID = "spiffe://cluster.local/ns/shop/sa/frontend"
	dstID = "spiffe://cluster.local/ns/shop/sa/backend"
)

func asJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
