package authz_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/rego"
)

// TestDecisionCacheChangesNothing is the decision cache's differential
// test: for each policy, two servers, one caching decisions and one not,
// answer the same stream of random requests (drawn from small pools, so
// keys repeat and the cache hits), and every answer must be the same.
func TestDecisionCacheChangesNothing(t *testing.T) {
	policies := []struct {
		name     string
		sources  []string
		decision string
		cached   bool // whether the analysis must find the policy cacheable
	}{
		{"reference", []string{"../test/testdata/bench/policy.rego"}, "envoy/authz/result", true},
		{"require-spiffe", []string{"builtin:require-spiffe"}, "envoy/authz/decision", true},
		{"spiffe-allowlist", []string{"builtin:spiffe-allowlist", writePolicy(t, "data.json",
			`{"meshproof": {"allowlist": {"spiffe://cluster.local/ns/shop/sa/backend": ["spiffe://cluster.local/ns/shop/"]}}}`)}, "envoy/authz/decision", true},
		{"deny-suspect", []string{"builtin:deny-suspect"}, "envoy/authz/decision", true},
		{"headers and helpers", []string{writePolicy(t, "p.rego", `package envoy.authz
default allow := false
ok_method(m) if m in {"GET", "HEAD"}
allow if {
	ok_method(input.attributes.request.http.method)
	some name in ["x-team", "x-env"]
	input.attributes.request.http.headers[name] == "blue"
}
allow := true if input.parsed_query.debug[0] == "1"
else := false if input.parsed_path[0] == "admin"
result := {"allowed": allow, "headers": {"x-path": concat("/", input.parsed_path)}, "http_status": 401}
`)}, "envoy/authz/result", true},
		{"whole input (not cached)", []string{writePolicy(t, "p.rego", `package envoy.authz
allow if count(object.keys(input)) > 3
`)}, "envoy/authz/allow", false},
	}
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			regCached := prometheus.NewRegistry()
			cached := server(t, p.sources, p.decision, 1000, regCached)
			plain := server(t, p.sources, p.decision, 0, nil)
			rng := rand.New(rand.NewPCG(11, 12))
			ctx := context.Background()
			for i := range 600 {
				req := pooledRequest(rng)
				a, b := cached.Explain(ctx, req), plain.Explain(ctx, proto.Clone(req).(*authv3.CheckRequest))
				if a.Outcome != b.Outcome || a.Record.Decision.Reason != b.Record.Decision.Reason ||
					a.Record.Decision.HTTPStatus != b.Record.Decision.HTTPStatus || a.Record.Decision.Error != b.Record.Decision.Error ||
					!sameAnswer(a.Response, b.Response) {
					t.Fatalf("request %d differs with the cache:\ncached: %v %+v\nplain:  %v %+v\nrequest: %v", i, a.Outcome, a.Response, b.Outcome, b.Response, req)
				}
			}
			hits := counterValue(t, regCached, "meshproof_decision_cache_lookups_total", "hit")
			if p.cached && hits == 0 {
				t.Fatal("the cache never hit: the test did not exercise it")
			}
			if !p.cached && hits != 0 {
				t.Fatalf("an uncacheable policy was served from the cache %v times", hits)
			}
		})
	}
}

func server(t *testing.T, sources []string, decision string, cache int, reg *prometheus.Registry) *authz.Server {
	t.Helper()
	cfg := rego.Defaults()
	cfg.Policies, cfg.Decision, cfg.Watch, cfg.DecisionCache = sources, decision, false, cache
	var r prometheus.Registerer
	if reg != nil {
		r = reg
	}
	e, err := rego.New(cfg, zerolog.Nop(), r)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	s, err := authz.NewServer(authz.DefaultConfig(), e, nil, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writePolicy(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pooledRequest draws every part from a small pool, unique ids aside.
func pooledRequest(r *rand.Rand) *authv3.CheckRequest {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	principals := []string{"", "spiffe://cluster.local/ns/shop/sa/frontend", "spiffe://cluster.local/ns/mtls-pg/sa/sleep", "spiffe://evil.example/ns/shop/sa/x", "CN=legacy"}
	opts := []authztest.Option{
		authztest.Method(pick("GET", "HEAD", "POST")),
		authztest.Path(pick("/headers", "/get?debug=1", "/admin/x", "/status/200", "/", "/a%2Fb")),
		authztest.Header("x-request-id", "req-"+pick("1", "2", "3", "4", "5", "6", "7")),
	}
	if r.IntN(2) == 0 {
		opts = append(opts, authztest.Header(pick("x-team", "x-env", "x-other"), pick("blue", "red")))
	}
	switch r.IntN(4) {
	case 0:
		opts = append(opts, authztest.MTLS(pick(principals[1:]...), "spiffe://cluster.local/ns/shop/sa/backend"))
	case 1:
		opts = append(opts, authztest.Principals(pick(principals...), pick("", "spiffe://cluster.local/ns/shop/sa/backend")))
	case 2:
		opts = append(opts, authztest.Header("x-forwarded-client-cert", "By=spiffe://cluster.local/ns/shop/sa/backend;URI="+pick(principals...)))
	}
	return authztest.NewRequest(opts...)
}

// sameAnswer compares two responses, ignoring the evidence ids.
func sameAnswer(a, b *authv3.CheckResponse) bool {
	strip := func(r *authv3.CheckResponse) *authv3.CheckResponse {
		r = proto.Clone(r).(*authv3.CheckResponse)
		delete(r.GetDynamicMetadata().GetFields(), authz.MetadataEvidenceID)
		delete(r.GetDynamicMetadata().GetFields(), "decision_id")
		if ok := r.GetOkResponse(); ok != nil {
			ok.Headers = ok.Headers[:len(ok.Headers)-1] // x-meshproof-evidence-id, always last
		}
		if d := r.GetDeniedResponse(); d != nil && len(d.Body) > 0 {
			d.Body = stripID(d.Body)
		}
		return r
	}
	return proto.Equal(strip(a), strip(b))
}

// stripID drops the evidence id a fail-closed body ends with.
func stripID(body string) string {
	if i := len(body) - 26; i > 0 && body[i-1] == ' ' {
		return body[:i]
	}
	return body
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
