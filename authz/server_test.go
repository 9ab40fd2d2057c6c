package authz_test

import (
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/rego"
)

func TestCheck(t *testing.T) {
	mtls := authztest.NewRequest(authztest.MTLS(srcID, dstID))
	const denyObject = `package envoy.authz
allow := {"allowed": false, "http_status": 401, "body": "no token", "headers": {"www-authenticate": "Bearer"}, "dynamic_metadata": {"rule": "r9"}}`
	tests := []struct {
		name     string
		policy   string
		cfg      authz.Config
		req      *authv3.CheckRequest
		want     func(id string) *authv3.CheckResponse
		decision evidence.Decision // DecisionID and PolicyRevision are checked apart
		errorHas string            // substring of the record's Decision.Error
		evals    int64             // policy evaluations expected
	}{
		{
			name: "allow object: headers upstream with the evidence id, metadata kept",
			policy: `package envoy.authz
allow := {"allowed": true, "headers": {"x-policy": "p1"}, "dynamic_metadata": {"rule": "r1", "n": 2}, "reason": "known caller"}`,
			cfg: authz.DefaultConfig(),
			req: mtls,
			want: func(id string) *authv3.CheckResponse {
				return allowed([]*corev3.HeaderValueOption{hv("x-policy", "p1"), hv(authz.EvidenceHeader, id)},
					meta(id, evidence.MTLS, map[string]any{"rule": "r1", "n": 2}))
			},
			decision: evidence.Decision{Allowed: true, Reason: "known caller"},
			evals:    1,
		},
		{
			name:   "allow boolean",
			policy: "package envoy.authz\nallow := true",
			cfg:    authz.DefaultConfig(),
			req:    authztest.NewRequest(),
			want: func(id string) *authv3.CheckResponse {
				return allowed([]*corev3.HeaderValueOption{hv(authz.EvidenceHeader, id)}, meta(id, evidence.Plaintext, nil))
			},
			decision: evidence.Decision{Allowed: true},
			evals:    1,
		},
		{
			name:   "empty CheckRequest",
			policy: "package envoy.authz\nallow := input.parsed_path == [\"\"]",
			cfg:    authz.DefaultConfig(),
			req:    &authv3.CheckRequest{},
			want: func(id string) *authv3.CheckResponse {
				return allowed([]*corev3.HeaderValueOption{hv(authz.EvidenceHeader, id)}, meta(id, evidence.Plaintext, nil))
			},
			decision: evidence.Decision{Allowed: true},
			evals:    1,
		},
		{
			name:   "deny object: status, body and headers to the client, no evidence header",
			policy: denyObject,
			cfg:    authz.DefaultConfig(),
			req:    mtls,
			want: func(id string) *authv3.CheckResponse {
				return denied(401, "no token", []*corev3.HeaderValueOption{hv("www-authenticate", "Bearer")}, meta(id, evidence.MTLS, map[string]any{"rule": "r9"}))
			},
			decision: evidence.Decision{HTTPStatus: 401, Reason: "no token"},
			evals:    1,
		},
		{
			name:   "deny boolean",
			policy: "package envoy.authz\nallow := false",
			cfg:    authz.DefaultConfig(),
			req:    mtls,
			want: func(id string) *authv3.CheckResponse {
				return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}, DynamicMetadata: mustStruct(meta(id, evidence.MTLS, nil))}
			},
			decision: evidence.Decision{HTTPStatus: 403},
			evals:    1,
		},
		{
			name:   "dry run allows a denied request and keeps the policy's metadata",
			policy: denyObject,
			cfg:    authz.Config{DryRun: true, StatusOnError: 403},
			req:    mtls,
			want: func(id string) *authv3.CheckResponse {
				return allowed([]*corev3.HeaderValueOption{hv(authz.EvidenceHeader, id)}, meta(id, evidence.MTLS, map[string]any{"rule": "r9"}))
			},
			decision: evidence.Decision{HTTPStatus: 401, Reason: "no token", DryRun: true},
			evals:    1,
		},
		{
			name:   "dry run of an allowed request is not marked",
			policy: "package envoy.authz\nallow := true",
			cfg:    authz.Config{DryRun: true, StatusOnError: 403},
			req:    mtls,
			want: func(id string) *authv3.CheckResponse {
				return allowed([]*corev3.HeaderValueOption{hv(authz.EvidenceHeader, id)}, meta(id, evidence.MTLS, nil))
			},
			decision: evidence.Decision{Allowed: true},
			evals:    1,
		},
		{
			name:     "runtime error denies with status-on-error 403",
			policy:   "package envoy.authz\nallow := v if { some v in [true, false] }",
			cfg:      authz.Config{StatusOnError: 403},
			req:      mtls,
			want:     noDecision(403, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 403},
			errorHas: "eval_conflict_error",
			evals:    1,
		},
		{
			name:     "runtime error denies with status-on-error 503",
			policy:   "package envoy.authz\nallow := v if { some v in [true, false] }",
			cfg:      authz.Config{StatusOnError: 503},
			req:      mtls,
			want:     noDecision(503, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 503},
			errorHas: "eval_conflict_error",
			evals:    1,
		},
		{
			name:     "decision that is a string",
			policy:   `package envoy.authz` + "\n" + `allow := "yes"`,
			cfg:      authz.Config{StatusOnError: 503},
			req:      mtls,
			want:     noDecision(503, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 503},
			errorHas: "illegal value for policy evaluation result",
			evals:    1,
		},
		{
			name:     "undefined decision",
			policy:   "package envoy.authz\nallow if input.never",
			cfg:      authz.Config{StatusOnError: 403},
			req:      mtls,
			want:     noDecision(403, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 403},
			errorHas: rego.ErrUndefined.Error(),
			evals:    1,
		},
		{
			name:     "bad JSON body: OPA-Envoy's 400, no evaluation",
			policy:   "package envoy.authz\nallow := true",
			cfg:      authz.Config{StatusOnError: 503},
			req:      authztest.NewRequest(authztest.Method("POST"), authztest.Body("application/json", `{"a":`)),
			want:     parseFailure("request_parse_error: unexpected EOF"),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: "bad request: JSON body: unexpected EOF",
		},
		{
			name:     "bad path escape: OPA-Envoy's 400, the record naming the path",
			policy:   "package envoy.authz\nallow := true",
			cfg:      authz.Config{StatusOnError: 503},
			req:      authztest.NewRequest(authztest.Path("/a%zz")),
			want:     parseFailure(`request_parse_error: invalid URL escape "%zz"`),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: `bad request: path "/a%zz": invalid URL escape "%zz"`,
		},
		{
			name:     "bad query escape",
			policy:   "package envoy.authz\nallow := true",
			cfg:      authz.DefaultConfig(),
			req:      authztest.NewRequest(authztest.Path("/a?b=%zz")),
			want:     parseFailure(`request_parse_error: invalid URL escape "%zz"`),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: `bad request: query string: invalid URL escape "%zz"`,
		},
		{
			name:     "bad query separator",
			policy:   "package envoy.authz\nallow := true",
			cfg:      authz.DefaultConfig(),
			req:      authztest.NewRequest(authztest.Path("/a?b=1;c=2")),
			want:     parseFailure("request_parse_error: invalid semicolon separator in query"),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: "bad request: query string: invalid semicolon separator in query",
		},
		{
			name:     "content-length not a number",
			policy:   "package envoy.authz\nallow := true",
			cfg:      authz.DefaultConfig(),
			req:      authztest.NewRequest(authztest.Method("POST"), authztest.Body("application/json", `{}`), authztest.Header("content-length", "x1")),
			want:     parseFailure(`request_parse_error: strconv.ParseInt: parsing "x1": invalid syntax`),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: `bad request: content-length "x1" is not a number`,
		},
		{
			name:   "multipart part with bad JSON: the standard library's error alone",
			policy: "package envoy.authz\nallow := true",
			cfg:    authz.DefaultConfig(),
			req: authztest.NewRequest(authztest.Method("POST"), authztest.Body("multipart/form-data; boundary=XX",
				"--XX\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"a\":\r\n--XX--\r\n")),
			want:     parseFailure("request_parse_error: unexpected EOF"),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: `bad request: multipart body: part "j": JSON: unexpected EOF`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.policy, "", tt.cfg)
			resp, rec := f.check(t, tt.req)
			if want := tt.want(rec.ID); !proto.Equal(sortHeaders(resp), sortHeaders(want)) {
				t.Errorf("response\n got %v\nwant %v", resp, want)
			}
			got := rec.Decision
			if got.DecisionID != "" && got.DecisionID != rec.ID {
				t.Errorf("decision id %q, record id %q", got.DecisionID, rec.ID)
			}
			if tt.errorHas == "" && got.Error != "" || !strings.Contains(got.Error, tt.errorHas) {
				t.Errorf("record decision error %q, want it to contain %q", got.Error, tt.errorHas)
			}
			wantRev := ""
			if tt.evals > 0 {
				wantRev = f.engine.Revision()
			}
			if got.PolicyRevision != wantRev || !strings.HasPrefix(f.engine.Revision(), "sha256:") {
				t.Errorf("record policy revision %q, want %q (engine %q)", got.PolicyRevision, wantRev, f.engine.Revision())
			}
			got.DecisionID, got.PolicyRevision, got.Error = "", "", ""
			if got != tt.decision {
				t.Errorf("record decision %+v, want %+v", got, tt.decision)
			}
			if n := f.evals.n.Load(); n != tt.evals {
				t.Errorf("%d policy evaluations, want %d", n, tt.evals)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		wantErr bool
	}{
		{"403", http.StatusForbidden, false},
		{"503", http.StatusServiceUnavailable, false},
		{"zero", 0, true},
		{"999", 999, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := authz.Config{StatusOnError: tt.status}.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate(status %d) = %v, want error %v", tt.status, err, tt.wantErr)
			}
		})
	}
}
