package e2e

import (
	"net/http"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
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

// TestEnforcementFlags: --dry-run lets everything through and counts what the
// policy would have done; --status-on-error sets the status of a request no
// decision could be made for.
func TestEnforcementFlags(t *testing.T) {
	t.Parallel()
	type outcome struct {
		allowed bool
		status  int // HTTP status when denied
	}
	tests := []struct {
		name    string
		flags   []string
		want    map[string]outcome // by benchOutcomes key
		metrics map[string]float64
	}{{
		name:  "--status-on-error 503",
		flags: []string{"--status-on-error", "503"},
		want: map[string]outcome{
			"allowed":   {allowed: true},
			"denied":    {status: http.StatusForbidden}, // the policy's own http_status
			"undefined": {status: http.StatusServiceUnavailable},
		},
		metrics: map[string]float64{
			`meshproof_checks_total{decision="allow",verdict="mtls"}`:      1,
			`meshproof_checks_total{decision="deny",verdict="mtls"}`:       1,
			`meshproof_checks_total{decision="error",verdict="plaintext"}`: 1,
		},
	}, {
		name:  "--dry-run",
		flags: []string{"--dry-run"},
		want: map[string]outcome{
			"allowed":   {allowed: true},
			"denied":    {allowed: true},
			"undefined": {allowed: true},
		},
		metrics: map[string]float64{
			`meshproof_checks_total{decision="allow",verdict="mtls"}`:      1,
			`meshproof_checks_total{decision="dry_run",verdict="mtls"}`:    1,
			`meshproof_checks_total{decision="deny",verdict="mtls"}`:       0,
			`meshproof_checks_total{decision="error",verdict="plaintext"}`: 1,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := benchServe(t, tt.flags...)
			conn := dial(t, s.GRPCAddr, nil)
			for name, req := range benchOutcomes(t) {
				resp := inspect(t, check(t, conn, req))
				want := tt.want[name]
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
