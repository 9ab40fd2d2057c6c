package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestEval: `meshproof eval` runs one protojson CheckRequest through the
// serve path and prints the response, the verdict and the evidence record.
func TestEval(t *testing.T) {
	t.Parallel()
	request, err := os.ReadFile(benchFile("request.json"))
	if err != nil {
		t.Fatal(err)
	}
	bench := []string{"eval", "--policy", benchFile("policy.rego"), "--decision", "envoy/authz/result"}
	tests := []struct {
		name      string
		args      []string
		stdin     string
		want      map[string]any // dotted path in the output -> value
		wantInput bool
	}{{
		name: "input file",
		args: []string{"--input", benchFile("request.json")},
		want: map[string]any{
			"verdict":                                    "mtls",
			"response.status":                            map[string]any{},
			"record.source.spiffe.namespace":             "mtls-pg",
			"record.source.principal":                    sleepSA,
			"record.request_id":                          "bench-0001",
			"record.decision.allowed":                    true,
			"record.replica":                             "eval",
			"response.dynamicMetadata.meshproof_verdict": "mtls",
		},
	}, {
		name:  "standard input",
		args:  []string{"--input", "-"},
		stdin: string(request),
		want: map[string]any{
			"verdict":                        "mtls",
			"record.source.spiffe.namespace": "mtls-pg",
		},
	}, {
		name:  "--show-input, with --input-meshproof",
		args:  []string{"--input", "-", "--show-input", "--input-meshproof"},
		stdin: string(request),
		want: map[string]any{
			"input.parsed_path":       []any{"headers"},
			"input.meshproof.verdict": "mtls",
			"input.source_principal":  sleepSA,
			"input.version":           map[string]any{"ext_authz": "v3", "encoding": "protojson"},
			// OPA-Envoy's form: an object, not the RFC 3339 string sent.
			"input.attributes.request.time":                           map[string]any{"seconds": float64(1570831792)},
			"input.attributes.source.address.socketAddress.portValue": float64(45090),
		},
		wantInput: true,
	}, {
		name:  "path and query as OPA-Envoy parses them",
		args:  []string{"--input", "-", "--show-input"},
		stdin: strings.ReplaceAll(string(request), `"path": "/headers"`, `"path": "//get/a%20b?z&x=1&x=2"`),
		want: map[string]any{
			"input.parsed_path":   []any{"get", "a b"},
			"input.parsed_query":  map[string]any{"z": []any{""}, "x": []any{"1", "2"}},
			"record.request.path": "//get/a%20b", // the query string stays out of evidence
		},
		wantInput: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := meshproof(t, strings.NewReader(tt.stdin), append(append([]string{}, bench...), tt.args...)...)
			if res.code != 0 {
				t.Fatalf("eval failed: %s", res)
			}
			var out map[string]any
			if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
				t.Fatalf("eval output is not JSON: %v\n%s", err, res.stdout)
			}
			if _, ok := dig(out, "response", "okResponse").(map[string]any); !ok {
				t.Errorf("no response.okResponse in\n%s", res.stdout)
			}
			for path, want := range tt.want {
				if got := dig(out, strings.Split(path, ".")...); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", path, got, want)
				}
			}
			if _, has := out["input"]; has != tt.wantInput {
				t.Errorf("input printed = %v, want %v", has, tt.wantInput)
			}
			// The evidence id is the same everywhere it appears.
			id := dig(out, "record", "id")
			if dig(out, "response", "dynamicMetadata", "meshproof_evidence_id") != id || dig(out, "response", "dynamicMetadata", "decision_id") != id {
				t.Errorf("evidence id differs between record (%v) and dynamic metadata\n%s", id, res.stdout)
			}
		})
	}
}

// TestEvalPolicyError: eval follows --on-policy-error as serve does: a
// policy that gives no decision prints serve's gRPC error (and no response),
// or with deny the denial.
func TestEvalPolicyError(t *testing.T) {
	t.Parallel()
	policy := filepath.Join(t.TempDir(), "policy.rego")
	if err := os.WriteFile(policy, []byte("package envoy.authz\nallow := {\"allowed\": false, \"http_status\": 299}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const message = "failed to get response http status: invalid HTTP status code 299"
	tests := []struct {
		name string
		args []string
		want map[string]any
	}{{
		name: "default: OPA-Envoy's gRPC error",
		want: map[string]any{
			"response":                nil,
			"grpc_error":              map[string]any{"code": float64(2), "message": message},
			"record.decision.allowed": false,
			"record.decision.error":   message,
		},
	}, {
		name: "--on-policy-error deny",
		args: []string{"--on-policy-error", "deny", "--status-on-error", "503"},
		want: map[string]any{
			"grpc_error":                                 nil,
			"response.deniedResponse.status.code":        "ServiceUnavailable",
			"record.decision.http_status":                float64(503),
			"record.decision.error":                      message,
			"response.dynamicMetadata.meshproof_verdict": "mtls",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"eval", "--policy", policy, "--input", benchFile("request.json")}, tt.args...)
			res := meshproof(t, nil, args...)
			if res.code != 0 {
				t.Fatalf("eval failed: %s", res)
			}
			var out map[string]any
			if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
				t.Fatalf("eval output is not JSON: %v\n%s", err, res.stdout)
			}
			for path, want := range tt.want {
				if got := dig(out, strings.Split(path, ".")...); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v\n%s", path, got, want, res.stdout)
				}
			}
		})
	}
}

// TestEvalErrors: a request eval cannot read is an error that says where.
func TestEvalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int // 0: any non-zero
		want     []string
	}{{
		name:  "not JSON",
		args:  []string{"--input", "-"},
		stdin: "{not json",
		want:  []string{"is not a CheckRequest in protojson", "syntax error", "line 1"},
	}, {
		name:  "unknown field",
		args:  []string{"--input", "-"},
		stdin: `{"attributes": {"request": {"http": {"methd": "GET"}}}}`,
		want:  []string{`unknown field "methd"`},
	}, {
		name:  "wrong type",
		args:  []string{"--input", "-"},
		stdin: `{"attributes": {"source": {"principal": 42}}}`,
		want:  []string{"principal"},
	}, {
		name: "missing file",
		args: []string{"--input", "/nonexistent/request.json"},
		want: []string{"/nonexistent/request.json"},
	}, {
		name:     "no --input",
		wantCode: 2,
		want:     []string{"--input is required"},
	}, {
		name:     "unknown flag",
		args:     []string{"--input", "-", "--no-such-flag"},
		wantCode: 2,
		want:     []string{"unknown flag: --no-such-flag"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"eval", "--policy", benchFile("policy.rego"), "--decision", "envoy/authz/result"}, tt.args...)
			res := meshproof(t, strings.NewReader(tt.stdin), args...)
			if res.code == 0 || tt.wantCode != 0 && res.code != tt.wantCode {
				t.Errorf("exit code %d, want %v\n%s", res.code, map[bool]any{true: "non-zero", false: tt.wantCode}[tt.wantCode == 0], res)
			}
			if res.stdout != "" {
				t.Errorf("stdout on error: %q", res.stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q\n%s", w, res)
				}
			}
		})
	}
}
