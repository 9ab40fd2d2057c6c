package e2e

import (
	"net/http"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// requests of the bench workload with the policy's three outcomes.
func benchOutcomes(t testing.TB) map[string]*authv3.CheckRequest {
	t.Helper()
	denied := benchRequest(t)
	denied.Attributes.Request.Http.Path = "/admin"
	undefined := benchRequest(t) // plaintext: the bench policy's result is undefined
	undefined.Attributes.Source.Principal, undefined.Attributes.Destination.Principal = "", ""
	delete(undefined.Attributes.Request.Http.Headers, "x-forwarded-client-cert")
	return map[string]*authv3.CheckRequest{"allowed": benchRequest(t), "denied": denied, "undefined": undefined}
}

// TestEnforcementFlags: --dry-run lets through what the policy denied and
// counts what it would have done; a policy that gives no decision is a gRPC
// error (OPA-Envoy's, dry run or not), or with --on-policy-error=deny a
// denial with --status-on-error (dry run lets that through).
func TestEnforcementFlags(t *testing.T) {
	t.Parallel()
	type outcome struct {
		allowed bool
		status  int    // HTTP status when denied
		grpcErr string // the gRPC error's message, when the Check fails
	}
	tests := []struct {
		name    string
		flags   []string
		want    map[string]outcome // by benchOutcomes key
		metrics map[string]float64
	}{{
		name: "defaults: no decision is OPA-Envoy's gRPC error",
		want: map[string]outcome{
			"allowed":   {allowed: true},
			"denied":    {status: http.StatusForbidden},
			"undefined": {grpcErr: "undefined decision"},
		},
		metrics: map[string]float64{
			`meshproof_checks_total{decision="error",source="ext_authz",verdict="plaintext"}`: 1,
		},
	}, {
		name:  "--on-policy-error deny --status-on-error 503",
		flags: []string{"--on-policy-error", "deny", "--status-on-error", "503"},
		want: map[string]outcome{
			"allowed":   {allowed: true},
			"denied":    {status: http.StatusForbidden}, // the policy's own http_status
			"undefined": {status: http.StatusServiceUnavailable},
		},
		metrics: map[string]float64{
			`meshproof_checks_total{decision="allow",source="ext_authz",verdict="mtls"}`:      1,
			`meshproof_checks_total{decision="deny",source="ext_authz",verdict="mtls"}`:       1,
			`meshproof_checks_total{decision="error",source="ext_authz",verdict="plaintext"}`: 1,
		},
	}, {
		name:  "--dry-run",
		flags: []string{"--dry-run"},
		want: map[string]outcome{
			"allowed":   {allowed: true},
			"denied":    {allowed: true},
			"undefined": {grpcErr: "undefined decision"},
		},
		metrics: map[string]float64{
			`meshproof_checks_total{decision="allow",source="ext_authz",verdict="mtls"}`:      1,
			`meshproof_checks_total{decision="dry_run",source="ext_authz",verdict="mtls"}`:    1,
			`meshproof_checks_total{decision="deny",source="ext_authz",verdict="mtls"}`:       0,
			`meshproof_checks_total{decision="error",source="ext_authz",verdict="plaintext"}`: 1,
		},
	}, {
		name:  "--dry-run --on-policy-error deny",
		flags: []string{"--dry-run", "--on-policy-error", "deny"},
		want: map[string]outcome{
			"allowed":   {allowed: true},
			"denied":    {allowed: true},
			"undefined": {allowed: true},
		},
		metrics: map[string]float64{
			`meshproof_checks_total{decision="allow",source="ext_authz",verdict="mtls"}`:      1,
			`meshproof_checks_total{decision="dry_run",source="ext_authz",verdict="mtls"}`:    1,
			`meshproof_checks_total{decision="deny",source="ext_authz",verdict="mtls"}`:       0,
			`meshproof_checks_total{decision="error",source="ext_authz",verdict="plaintext"}`: 1,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := benchServe(t, tt.flags...)
			conn := dial(t, s.GRPCAddr, nil)
			for name, req := range benchOutcomes(t) {
				want := tt.want[name]
				if want.grpcErr != "" {
					if st := checkFails(t, conn, req); st.Code() != codes.Unknown || st.Message() != want.grpcErr {
						t.Errorf("%s request: gRPC error %v %q, want Unknown %q", name, st.Code(), st.Message(), want.grpcErr)
					}
					continue
				}
				resp := inspect(t, check(t, conn, req))
				if allowed(resp.CheckResponse) != want.allowed {
					t.Errorf("%s request: allowed = %v, want %v", name, allowed(resp.CheckResponse), want.allowed)
					continue
				}
				if got := int(resp.GetDeniedResponse().GetStatus().GetCode()); !want.allowed && got != want.status {
					t.Errorf("%s request: denied with %d, want %d", name, got, want.status)
				}
			}
			m := s.metrics(t)
			for series, want := range tt.metrics {
				if got := m[series]; got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
		})
	}
}
