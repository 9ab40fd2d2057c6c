package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproof/meshproof/internal/meshsim"
)

// TestFailureModeOnPolicyError: a policy written for OPA-Envoy that gives no
// decision (here a malformed one, http_status 299, and an undefined one)
// meets the ext_authz filter as OPA-Envoy's would: with --on-policy-error
// error (the default), Envoy's failure_mode_allow decides, so true lets the
// request through and false answers the filter's status_on_error; with
// deny, meshproof denies whatever the filter says. Every request leaves a
// record either way (counted as decision="error").
func TestFailureModeOnPolicyError(t *testing.T) {
	t.Parallel()
	policy := filepath.Join(t.TempDir(), "policy.rego")
	const rego = `package envoy.authz

allow := true if input.parsed_path == ["headers"]

allow := {"allowed": false, "http_status": 299} if input.parsed_path == ["get"]
`
	if err := os.WriteFile(policy, []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name             string
		flags            []string
		failureModeAllow bool
		want             int    // status of /get and /status/200
		checkError       string // the sidecar's CheckError for /get
	}{
		{"error, failure_mode_allow: through", nil, true, http.StatusOK, "invalid HTTP status code 299"},
		{"error, failure_mode_allow false: the filter's status_on_error", nil, false, http.StatusForbidden, "invalid HTTP status code 299"},
		{"deny, failure_mode_allow: denied by meshproof", []string{"--on-policy-error", "deny"}, true, http.StatusForbidden, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s := startServe(t, append([]string{"--policy", policy}, tt.flags...)...)
			var mu sync.Mutex
			var access []meshsim.Entry
			cfg := meshsim.DefaultConfig()
			cfg.AuthzAddr = s.GRPCAddr
			cfg.Timeout = 5 * time.Second // Envoy's 200 ms is tight under the race detector
			cfg.FailureModeAllow = tt.failureModeAllow
			cfg.AccessLog = func(e meshsim.Entry) {
				mu.Lock()
				access = append(access, e)
				mu.Unlock()
			}
			m, err := meshsim.Start(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := m.Close(); err != nil {
					t.Errorf("closing the mesh: %v", err)
				}
			})
			for _, path := range []string{"/headers", "/get", "/status/200"} {
				want := tt.want
				if path == "/headers" {
					want = http.StatusOK
				}
				resp, err := m.Sleep.Get(ctx, path)
				if err != nil || resp.Status != want {
					t.Fatalf("GET %s: %v %+v, want %d", path, err, resp, want)
				}
				if tt.flags != nil && path != "/headers" && !strings.HasPrefix(string(resp.Body), "meshproof: no policy decision; evidence ") {
					t.Errorf("GET %s: body %q, want meshproof's denial", path, resp.Body)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(access) != 3 {
				t.Fatalf("%d access log entries, want 3", len(access))
			}
			if e := access[1]; !strings.Contains(e.CheckError, tt.checkError) || (tt.checkError == "") != e.Checked {
				t.Errorf("GET /get: checked %v, check error %q, want %q", e.Checked, e.CheckError, tt.checkError)
			}
			if e := access[2]; tt.checkError != "" && !strings.Contains(e.CheckError, "undefined decision") {
				t.Errorf("GET /status/200: check error %q, want undefined decision", e.CheckError)
			}
			if got := s.metrics(t)[`meshproof_checks_total{decision="error",source="ext_authz",verdict="mtls"}`]; got != 2 {
				t.Errorf(`meshproof_checks_total{decision="error",source="ext_authz",verdict="mtls"} = %v, want 2`, got)
			}
		})
	}
}
