package authz_test

import (
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
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
			cfg:      authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 403},
			req:      mtls,
			want:     noDecision(403, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 403},
			errorHas: "eval_conflict_error",
			evals:    1,
		},
		{
			name:     "runtime error denies with status-on-error 503",
			policy:   "package envoy.authz\nallow := v if { some v in [true, false] }",
			cfg:      authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 503},
			req:      mtls,
			want:     noDecision(503, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 503},
			errorHas: "eval_conflict_error",
			evals:    1,
		},
		{
			name:     "decision that is a string",
			policy:   `package envoy.authz` + "\n" + `allow := "yes"`,
			cfg:      authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 503},
			req:      mtls,
			want:     noDecision(503, evidence.MTLS),
			decision: evidence.Decision{HTTPStatus: 503},
			errorHas: "illegal value for policy evaluation result",
			evals:    1,
		},
		{
			name:     "undefined decision",
			policy:   "package envoy.authz\nallow if input.never",
			cfg:      authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 403},
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
		{
			name:     "a request that cannot be parsed is denied in dry run too, as OPA-Envoy does",
			policy:   "package envoy.authz\nallow := true",
			cfg:      authz.Config{DryRun: true, OnPolicyError: authz.OnPolicyErrorError, StatusOnError: 403},
			req:      authztest.NewRequest(authztest.Path("/a%zz")),
			want:     parseFailure(`request_parse_error: invalid URL escape "%zz"`),
			decision: evidence.Decision{HTTPStatus: 400},
			errorHas: `bad request: path "/a%zz"`,
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

// TestCheckPolicyError: with --on-policy-error=error (the default), a policy
// that gives no decision is answered as OPA-Envoy answers it, a gRPC error
// Unknown with OPA-Envoy's message, so that Envoy's failure_mode_allow and
// status_on_error decide; dry run does not change that (OPA-Envoy's errors
// return before its dry run applies). The record is kept: not allowed, the
// error, no HTTP status (Envoy's failure mode decided it).
func TestCheckPolicyError(t *testing.T) {
	conflict := "package envoy.authz\nallow := v if { some v in [true, false] }"
	tests := []struct {
		name    string
		policy  string
		dryRun  bool
		message string // the gRPC error's message; "" when it is the record's error
		errHas  string // substring of the record's error
	}{
		{"evaluation error", conflict, false, "", "eval_conflict_error"},
		{"undefined decision", "package envoy.authz\nallow if input.never", false, "undefined decision", rego.ErrUndefined.Error()},
		{"decision a string", "package envoy.authz\nallow := \"yes\"", false,
			"failed to get response status: illegal value for policy evaluation result: string", "illegal value"},
		{"missing allowed", `package envoy.authz` + "\n" + `allow := {"body": "no"}`, false,
			`failed to get response status: unable to determine evaluation result due to missing "allowed" key`, "missing"},
		{"allowed not a boolean", `package envoy.authz` + "\n" + `allow := {"allowed": "false"}`, false,
			"failed to get response status: type assertion error, expected allowed to be of type 'boolean' but got 'string'", "type assertion"},
		{"http_status 299", `package envoy.authz` + "\n" + `allow := {"allowed": false, "http_status": 299}`, false,
			"failed to get response http status: invalid HTTP status code 299", "299"},
		{"http_status a string", `package envoy.authz` + "\n" + `allow := {"allowed": false, "http_status": "404"}`, false,
			"failed to get response http status: type assertion error, expected http_status to be of type 'number' but got 'string'", "http_status"},
		{"dry run: still the error", conflict, true, "", "eval_conflict_error"},
		{"dry run: undefined", "package envoy.authz\nallow if input.never", true, "undefined decision", rego.ErrUndefined.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := authz.DefaultConfig()
			cfg.DryRun = tt.dryRun
			f := newFixture(t, tt.policy, "", cfg)
			req := authztest.NewRequest(authztest.MTLS(srcID, dstID))
			for i := range 2 { // the second from the decision cache, where the policy allows it
				st, rec := f.checkFails(t, req)
				want := tt.message
				if want == "" {
					want = rec.Decision.Error
				}
				if st.Code() != codes.Unknown || st.Message() != want {
					t.Errorf("Check %d: %v %q, want Unknown %q", i, st.Code(), st.Message(), want)
				}
				if len(st.Details()) != 0 {
					t.Errorf("Check %d: details %v", i, st.Details())
				}
				got := rec.Decision
				if !strings.Contains(got.Error, tt.errHas) {
					t.Errorf("Check %d: record error %q, want it to contain %q", i, got.Error, tt.errHas)
				}
				if got.DecisionID != rec.ID || got.PolicyRevision != f.engine.Revision() {
					t.Errorf("Check %d: record decision id %q, revision %q", i, got.DecisionID, got.PolicyRevision)
				}
				got.DecisionID, got.PolicyRevision, got.Error = "", "", ""
				if got != (evidence.Decision{}) {
					t.Errorf("Check %d: record decision %+v, want not allowed, no status, no dry run", i, got)
				}
			}
			if n := checksTotal(t, f.reg, "error", evidence.MTLS); n != 2 {
				t.Errorf("meshproof_checks_total{decision=\"error\"} = %v, want 2", n)
			}
		})
	}
}

// TestCheckPolicyErrorDeny: --on-policy-error=deny keeps meshproof's own
// answer: denied with --status-on-error, and dry run lets it through.
func TestCheckPolicyErrorDeny(t *testing.T) {
	const policy = `package envoy.authz` + "\n" + `allow := {"allowed": false, "http_status": 299}`
	f := newFixture(t, policy, "", authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 503})
	resp, rec := f.check(t, authztest.NewRequest())
	if want := noDecision(503, evidence.Plaintext)(rec.ID); !proto.Equal(resp, want) {
		t.Errorf("response\n got %v\nwant %v", resp, want)
	}
	if want := "failed to get response http status: invalid HTTP status code 299"; rec.Decision.Error != want || rec.Decision.HTTPStatus != 503 {
		t.Errorf("record decision %+v, want error %q and status 503", rec.Decision, want)
	}
	dry := newFixture(t, policy, "", authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 503, DryRun: true})
	for _, req := range []*authv3.CheckRequest{authztest.NewRequest(), authztest.NewRequest(authztest.Path("/a%zz"))} {
		resp, rec := dry.check(t, req)
		if resp.GetOkResponse() == nil || !rec.Decision.DryRun || rec.Decision.Error == "" {
			t.Errorf("dry run: response %v, record decision %+v; want let through, recorded as an error in dry run", resp, rec.Decision)
		}
	}
}

func TestConfigOnPolicyError(t *testing.T) {
	if got := authz.DefaultConfig().OnPolicyError; got != authz.OnPolicyErrorError {
		t.Errorf("default on-policy-error %q, want %q (OPA-Envoy's answer)", got, authz.OnPolicyErrorError)
	}
	for _, v := range []string{"", authz.OnPolicyErrorError, authz.OnPolicyErrorDeny} {
		if err := (authz.Config{OnPolicyError: v, StatusOnError: 403}).Validate(); err != nil {
			t.Errorf("on-policy-error %q: %v", v, err)
		}
	}
	err := authz.Config{OnPolicyError: "allow", StatusOnError: 403}.Validate()
	if err == nil || !strings.Contains(err.Error(), `on-policy-error "allow"`) {
		t.Errorf("on-policy-error allow: %v, want an error naming it", err)
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
