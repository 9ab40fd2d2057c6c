package authz_test

import (
	"cmp"
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/oklog/ulid/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/rego"
)

const (
	srcID = "spiffe://cluster.local/ns/shop/sa/frontend"
	dstID = "spiffe://cluster.local/ns/shop/sa/backend"
)

// memRecorder keeps every record it is given and answers with err.
type memRecorder struct {
	mu   sync.Mutex
	recs []*evidence.Record
	err  error
}

func (r *memRecorder) Record(_ context.Context, rec *evidence.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return r.err
}

func (r *memRecorder) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func (r *memRecorder) records() []*evidence.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// countingEvaluator counts the evaluations that reach the real engine.
type countingEvaluator struct {
	authz.Evaluator
	n atomic.Int64
}

func (c *countingEvaluator) Eval(ctx context.Context, input *ast.Term) (ast.Value, *rego.Policy, error) {
	c.n.Add(1)
	return c.Evaluator.Eval(ctx, input)
}

// fixture is a real engine behind a real Check service on loopback gRPC.
type fixture struct {
	engine *rego.Engine
	evals  *countingEvaluator
	rec    *memRecorder
	reg    *prometheus.Registry
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
}

// newFixture loads policy (Rego source) with the decision at decision ("" is
// OPA-Envoy's default) and serves it with cfg, after setup.
func newFixture(t *testing.T, policy, decision string, cfg authz.Config, setup ...func(*authz.Server)) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.rego")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := rego.Defaults()
	rc.Policies, rc.Watch = []string{path}, false
	if decision != "" {
		rc.Decision = decision
	}
	e, err := rego.New(rc, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	f := &fixture{engine: e, evals: &countingEvaluator{Evaluator: e}, rec: &memRecorder{}, reg: prometheus.NewRegistry()}
	svc, err := authz.NewServer(cfg, f.evals, f.rec, zerolog.Nop(), f.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range setup {
		fn(svc)
	}
	f.conn = serveConn(t, svc)
	f.client = authv3.NewAuthorizationClient(f.conn)
	return f
}

func serve(t *testing.T, svc authv3.AuthorizationServer) authv3.AuthorizationClient {
	t.Helper()
	return authv3.NewAuthorizationClient(serveConn(t, svc))
}

// serveConn serves svc on loopback gRPC and returns a connection to it.
func serveConn(t *testing.T, svc authv3.AuthorizationServer) *grpc.ClientConn {
	t.Helper()
	gc := authz.DefaultGRPCConfig()
	gc.Addr = "127.0.0.1:0"
	g, err := authz.NewGRPC(gc, svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := authz.Listen(gc.Addr)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l) //nolint:errcheck // ends with Stop
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// check sends req and returns the response and the one record it produced.
func (f *fixture) check(t *testing.T, req *authv3.CheckRequest) (*authv3.CheckResponse, *evidence.Record) {
	t.Helper()
	before := len(f.rec.records())
	resp, err := f.client.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	recs := f.rec.records()
	if len(recs) != before+1 {
		t.Fatalf("Check gave %d records, want 1", len(recs)-before)
	}
	rec := recs[len(recs)-1]
	if _, err := ulid.ParseStrict(rec.ID); err != nil {
		t.Errorf("record id %q is not a ULID: %v", rec.ID, err)
	}
	return resp, rec
}

func allowed(headers []*corev3.HeaderValueOption, md map[string]any) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: headers}},
		DynamicMetadata: mustStruct(md),
	}
}

func denied(status int, body string, headers []*corev3.HeaderValueOption, md map[string]any) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)}, Headers: headers, Body: body,
		}},
		DynamicMetadata: mustStruct(md),
	}
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// meta is the dynamic metadata meshproof adds to every response, plus extra.
func meta(id string, v evidence.Verdict, extra map[string]any) map[string]any {
	m := map[string]any{"meshproof_evidence_id": id, "decision_id": id, "meshproof_verdict": string(v)}
	maps.Copy(m, extra)
	return m
}

// sortHeaders returns a copy of r with its header lists in key order: the
// order of an object's keys is not defined.
func sortHeaders(r *authv3.CheckResponse) *authv3.CheckResponse {
	r = proto.Clone(r).(*authv3.CheckResponse)
	byKey := func(a, b *corev3.HeaderValueOption) int {
		return cmp.Compare(a.GetHeader().GetKey(), b.GetHeader().GetKey())
	}
	if ok := r.GetOkResponse(); ok != nil {
		slices.SortStableFunc(ok.Headers, byKey)
	}
	if d := r.GetDeniedResponse(); d != nil {
		slices.SortStableFunc(d.Headers, byKey)
	}
	return r
}

func noDecision(status int, v evidence.Verdict) func(id string) *authv3.CheckResponse {
	return func(id string) *authv3.CheckResponse {
		return denied(status, "meshproof: no policy decision; evidence "+id, nil, meta(id, v, nil))
	}
}

// parseFailure is OPA-Envoy's answer to a request it cannot parse: 400, the
// status message and body "request_parse_error: <error>", no decision_id;
// meshproof adds its evidence id and verdict.
func parseFailure(msg string) func(id string) *authv3.CheckResponse {
	return func(id string) *authv3.CheckResponse {
		r := denied(http.StatusBadRequest, msg, nil, meta(id, evidence.Plaintext, nil))
		r.Status.Message = msg
		delete(r.DynamicMetadata.Fields, "decision_id")
		return r
	}
}

// checkFails sends req, which must fail with a gRPC error, and returns the
// error's status and the one record the request produced.
func (f *fixture) checkFails(t *testing.T, req *authv3.CheckRequest) (*status.Status, *evidence.Record) {
	t.Helper()
	before := len(f.rec.records())
	var trailer metadata.MD
	resp, err := f.client.Check(context.Background(), req, grpc.Trailer(&trailer))
	if err == nil {
		t.Fatalf("Check answered %v, want a gRPC error", resp)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("Check: %v is not a gRPC status", err)
	}
	recs := f.rec.records()
	if len(recs) != before+1 {
		t.Fatalf("Check gave %d records, want 1", len(recs)-before)
	}
	rec := recs[len(recs)-1]
	if got := trailer.Get(authz.EvidenceHeader); len(got) != 1 || got[0] != rec.ID {
		t.Errorf("trailer %s: %q, want the record id %s", authz.EvidenceHeader, got, rec.ID)
	}
	return st, rec
}

func syncRecorder() recorder.Config {
	rc := recorder.DefaultConfig()
	rc.Durability = recorder.Sync
	return rc
}

func verifyChain(t *testing.T, s evidence.Store, n int) {
	t.Helper()
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != int64(n) {
		t.Fatalf("chains: %+v", reps)
	}
}

// noCacheEngine is a real engine for policy without the decision cache, so
// that every Explain builds its input document.
func noCacheEngine(t *testing.T, policy string) *rego.Engine {
	t.Helper()
	rc := rego.Defaults()
	rc.Policies, rc.Watch, rc.DecisionCache = []string{writePolicy(t, "policy.rego", policy)}, false, 0
	e, err := rego.New(rc, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e
}
