package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

const (
	sleepSA    = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	intruderSA = "spiffe://cluster.local/ns/mtls-pg/sa/intruder"
	checkRPC   = "envoy.service.auth.v3.Authorization/Check"
)

// benchServe starts meshproof on the reference workload's policy.
func benchServe(t testing.TB, extra ...string) *server {
	t.Helper()
	return startServe(t, append([]string{"--policy", benchFile("policy.rego"), "--decision", "envoy/authz/result"}, extra...)...)
}

// TestGrpcurlCheck drives Check with grpcurl, a third-party client that knows
// nothing of meshproof but what server reflection tells it.
func TestGrpcurlCheck(t *testing.T) {
	t.Parallel()
	s := benchServe(t)
	raw, err := os.ReadFile(benchFile("request.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		request    func() string // protojson for -d @
		allowed    bool
		status     string // deniedResponse.status.code as grpcurl prints it
		source     string // x-authz-source; "" = absent
		verdict    string
		bodyPrefix string   // deniedResponse.body
		grpcErr    []string // grpcurl -v's output on a gRPC error holds these
	}{{
		name:    "bench request as is is allowed",
		request: func() string { return string(raw) },
		allowed: true, source: sleepSA, verdict: "mtls",
	}, {
		name: "path outside the allowlist is denied",
		request: func() string {
			r := benchRequest(t)
			r.Attributes.Request.Http.Path = "/admin/users"
			r.Attributes.Request.Http.Headers[":path"] = "/admin/users"
			return requestJSON(t, r)
		},
		status: "Forbidden", source: sleepSA, verdict: "mtls",
	}, {
		name: "principal outside the allowlist is denied",
		request: func() string {
			r := benchRequest(t)
			r.Attributes.Source.Principal = intruderSA
			return requestJSON(t, r)
		},
		// The XFCC header still names sleep: the hop cannot be confirmed.
		status: "Forbidden", source: intruderSA, verdict: "mtls_mismatch",
	}, {
		name: "POST is denied",
		request: func() string {
			r := benchRequest(t)
			r.Attributes.Request.Http.Method = "POST"
			r.Attributes.Request.Http.Headers[":method"] = "POST"
			return requestJSON(t, r)
		},
		status: "Forbidden", source: sleepSA, verdict: "mtls",
	}, {
		// The policy's result reads input.attributes.source.principal, which
		// is absent on plaintext: the decision is undefined, so meshproof
		// answers as OPA-Envoy, with a gRPC error for Envoy's failure mode.
		name: "plaintext leaves the decision undefined: a gRPC error",
		request: func() string {
			r := benchRequest(t)
			r.Attributes.Source.Principal, r.Attributes.Destination.Principal = "", ""
			delete(r.Attributes.Request.Http.Headers, "x-forwarded-client-cert")
			return requestJSON(t, r)
		},
		grpcErr: []string{"Code: Unknown", "Message: undefined decision", "x-meshproof-evidence-id: "},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.grpcErr != nil {
				res := grpcurl(t, strings.NewReader(tt.request()), "-plaintext", "-v", "-d", "@", s.GRPCAddr, checkRPC)
				if res.code != 64+2 { // grpcurl: 64 + gRPC code UNKNOWN (2)
					t.Fatalf("grpcurl Check: want exit 66, got %s", res)
				}
				for _, w := range tt.grpcErr {
					if !strings.Contains(res.stdout+res.stderr, w) {
						t.Errorf("no %q in\n%s", w, res)
					}
				}
				return
			}
			res := grpcurl(t, strings.NewReader(tt.request()), "-plaintext", "-d", "@", s.GRPCAddr, checkRPC)
			if res.code != 0 {
				t.Fatalf("grpcurl Check failed: %s", res)
			}
			var doc map[string]any
			if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil {
				t.Fatalf("grpcurl output: %v\n%s", err, res.stdout)
			}
			resp := inspect(t, parseCheckResponse(t, res.stdout))
			if allowed(resp.CheckResponse) != tt.allowed {
				t.Fatalf("allowed = %v, want %v\n%s", allowed(resp.CheckResponse), tt.allowed, res.stdout)
			}
			if tt.allowed {
				if _, ok := doc["okResponse"]; !ok {
					t.Errorf("no okResponse in\n%s", res.stdout)
				}
			} else {
				if got := dig(doc, "status", "code"); got != float64(7) {
					t.Errorf("status.code = %v, want 7 (PERMISSION_DENIED)", got)
				}
				if got := dig(doc, "deniedResponse", "status", "code"); got != tt.status {
					t.Errorf("deniedResponse.status.code = %v, want %q", got, tt.status)
				}
				if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != http.StatusForbidden {
					t.Errorf("denied HTTP status = %d, want 403", got)
				}
				if got := resp.GetDeniedResponse().GetBody(); !strings.HasPrefix(got, tt.bodyPrefix) {
					t.Errorf("denied body = %q, want prefix %q", got, tt.bodyPrefix)
				}
			}
			src, found := header(resp.CheckResponse, "x-authz-source")
			if tt.source == "" && found || tt.source != "" && src != tt.source {
				t.Errorf("x-authz-source = %q (present %v), want %q", src, found, tt.source)
			}
			if resp.Verdict != tt.verdict {
				t.Errorf("meshproof_verdict = %q, want %q", resp.Verdict, tt.verdict)
			}
		})
	}
}

// dig walks a decoded JSON document; nil when a key is missing.
func dig(doc any, keys ...string) any {
	for _, k := range keys {
		m, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		doc = m[k]
	}
	return doc
}

// TestGrpcurlReflectionAndHealth: what reflection lists and what gRPC health
// (as Envoy's and Kubernetes' gRPC probes ask it) answers.
func TestGrpcurlReflectionAndHealth(t *testing.T) {
	t.Parallel()
	s := benchServe(t)
	tests := []struct {
		name     string
		data     string // -d, when set
		args     []string
		wantCode int
		want     []string // substrings of stdout (or stderr on failure)
	}{{
		name: "list",
		args: []string{"list"},
		want: []string{"envoy.service.auth.v3.Authorization\n", "grpc.health.v1.Health\n", "grpc.reflection.v1.ServerReflection\n"},
	}, {
		name: "describe Check",
		args: []string{"describe", "envoy.service.auth.v3.Authorization"},
		want: []string{"rpc Check ( .envoy.service.auth.v3.CheckRequest ) returns ( .envoy.service.auth.v3.CheckResponse )"},
	}, {
		name: "health of the server",
		args: []string{"grpc.health.v1.Health/Check"},
		want: []string{`"status": "SERVING"`},
	}, {
		name: "health of the Authorization service",
		data: `{"service": "envoy.service.auth.v3.Authorization"}`,
		args: []string{"grpc.health.v1.Health/Check"},
		want: []string{`"status": "SERVING"`},
	}, {
		name:     "health of an unknown service",
		data:     `{"service": "no.such.Service"}`,
		args:     []string{"grpc.health.v1.Health/Check"},
		wantCode: 69, // grpcurl: 64 + gRPC code NOT_FOUND (5)
		want:     []string{"NotFound"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"-plaintext"}
			if tt.data != "" {
				args = append(args, "-d", tt.data)
			}
			args = append(append(args, s.GRPCAddr), tt.args...)
			res := grpcurl(t, nil, args...)
			if res.code != tt.wantCode {
				t.Fatalf("grpcurl %s: want exit %d, got %s", strings.Join(args, " "), tt.wantCode, res)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stdout+res.stderr, w) {
					t.Errorf("grpcurl %s: no %q in\n%s", strings.Join(args, " "), w, res)
				}
			}
		})
	}
}

// TestMetricsAndProbes: /metrics counts Checks by decision and verdict;
// /healthz and /readyz answer.
func TestMetricsAndProbes(t *testing.T) {
	t.Parallel()
	s := benchServe(t)
	conn := dial(t, s.GRPCAddr, nil)
	sends := []struct {
		n   int
		req func() *authv3.CheckRequest
	}{
		{3, func() *authv3.CheckRequest { return benchRequest(t) }},
		{2, func() *authv3.CheckRequest {
			r := benchRequest(t)
			r.Attributes.Request.Http.Path = "/admin"
			return r
		}},
	}
	ids := map[string]bool{}
	for _, snd := range sends {
		for range snd.n {
			ids[inspect(t, check(t, conn, snd.req())).EvidenceID] = true
		}
	}
	if len(ids) != 5 {
		t.Errorf("5 Checks gave %d distinct evidence ids", len(ids))
	}
	// Plaintext: the decision is undefined, a gRPC error, counted as one.
	undefined := benchRequest(t)
	undefined.Attributes.Source.Principal, undefined.Attributes.Destination.Principal = "", ""
	delete(undefined.Attributes.Request.Http.Headers, "x-forwarded-client-cert")
	checkFails(t, conn, undefined)
	rev, _ := s.findLog("meshproof serving")["policy_revision"].(string)
	m := s.metrics(t)
	for series, want := range map[string]float64{
		`meshproof_checks_total{decision="allow",source="ext_authz",verdict="mtls"}`:      3,
		`meshproof_checks_total{decision="deny",source="ext_authz",verdict="mtls"}`:       2,
		`meshproof_checks_total{decision="error",source="ext_authz",verdict="plaintext"}`: 1,
		`meshproof_checks_total{decision="allow",source="ext_authz",verdict="plaintext"}`: 0,
		`meshproof_check_duration_seconds_count`:                                          6,
		`meshproof_policy_revision_info{revision="` + rev + `"}`:                          1,
	} {
		got, ok := m[series]
		if !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, p := range []struct {
		path string
		code int
		body string
	}{
		{"/healthz", http.StatusOK, "{\"status\":\"ok\"}\n"},
		{"/readyz", http.StatusOK, "{\"status\":\"ready\"}\n"},
		{"/nope", http.StatusNotFound, ""},
		{"/debug/pprof/", http.StatusNotFound, ""}, // off without --debug-pprof
	} {
		code, body, err := httpGet("http://" + s.HTTPAddr + p.path)
		if err != nil || code != p.code || p.body != "" && body != p.body {
			t.Errorf("GET %s = %d %q, %v; want %d %q", p.path, code, body, err, p.code, p.body)
		}
	}
}
