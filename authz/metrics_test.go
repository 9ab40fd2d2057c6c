package authz_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
)

// addrWorkloads names the workload of an address from a map.
type addrWorkloads map[string]*evidence.Workload

func (w addrWorkloads) Resolve(addr string) (*evidence.Workload, string) {
	if wl := w[addr]; wl != nil {
		return wl, ""
	}
	return nil, "unknown address"
}

func (addrWorkloads) CheckIdentity(string, *evidence.Workload, string, string) (bool, string) {
	return true, ""
}

// TestDestinationChecks: a Check counts in meshproof_destination_checks_total
// under the namespace of the destination's principal, else of its
// workload, else unknown, with its verdict, source ext_authz and mode
// unknown; and in meshproof_client_checks_total under its client's,
// found the same way.
func TestDestinationChecks(t *testing.T) {
	payments := &evidence.Workload{Namespace: "payments", Kind: "Deployment", Name: "api"}
	tests := []struct {
		name      string
		workloads addrWorkloads
		req       *authv3.CheckRequest
		namespace string
		client    string
		verdict   evidence.Verdict
	}{
		{"principal", nil, authztest.NewRequest(authztest.MTLS(srcID, dstID)), "shop", "shop", evidence.MTLS},
		{"principal over workload", addrWorkloads{"10.0.0.2": payments, "10.0.0.1": payments}, authztest.NewRequest(authztest.MTLS(srcID, dstID)), "shop", "shop", evidence.MTLS},
		{"workload", addrWorkloads{"10.0.0.2": payments}, authztest.NewRequest(), "payments", "unknown", evidence.Plaintext},
		{"client workload", addrWorkloads{"10.0.0.1": payments}, authztest.NewRequest(), "unknown", "payments", evidence.Plaintext},
		{"not Istio-style", nil, authztest.NewRequest(authztest.MTLS("spiffe://example.org/client", "spiffe://example.org/web")), "unknown", "unknown", evidence.MTLS},
		{"neither", addrWorkloads{}, authztest.NewRequest(), "unknown", "unknown", evidence.Plaintext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var setup []func(*authz.Server)
			if tt.workloads != nil {
				setup = append(setup, func(s *authz.Server) { s.ResolveWorkloads(tt.workloads) })
			}
			f := newFixture(t, allowTrue, "", authz.DefaultConfig(), setup...)
			f.check(t, tt.req)
			want := map[string]string{"source": "ext_authz", "namespace": tt.namespace, "verdict": string(tt.verdict), "mode": "unknown"}
			if got := sumSeries(t, f.reg, "meshproof_destination_checks_total", want); got != 1 {
				t.Errorf("meshproof_destination_checks_total%v = %v, want 1", want, got)
			}
			if got := sumSeries(t, f.reg, "meshproof_destination_checks_total", nil); got != 1 {
				t.Errorf("meshproof_destination_checks_total summed = %v, want 1", got)
			}
			want = map[string]string{"source": "ext_authz", "namespace": tt.client, "verdict": string(tt.verdict)}
			if got := sumSeries(t, f.reg, "meshproof_client_checks_total", want); got != 1 {
				t.Errorf("meshproof_client_checks_total%v = %v, want 1", want, got)
			}
			if got := sumSeries(t, f.reg, "meshproof_client_checks_total", nil); got != 1 {
				t.Errorf("meshproof_client_checks_total summed = %v, want 1", got)
			}
		})
	}
}

// portModes gives a mode per destination port, and counts the questions.
type portModes struct {
	modes map[uint32]string
	asked int
}

func (m *portModes) PeerMode(_ *evidence.Workload, port uint32) string {
	m.asked++
	return m.modes[port]
}

// TestDestinationChecksMode: with ResolvePeerModes (serve --kubernetes's
// Istio watch), a Check whose destination has a workload counts under the
// mode its PeerAuthentication gives on the destination's port, what the
// alert on plaintext to STRICT destinations reads; one without a workload,
// or a mode not known, counts as unknown.
func TestDestinationChecksMode(t *testing.T) {
	payments := &evidence.Workload{Namespace: "payments", Kind: "Deployment", Name: "api"}
	for _, tt := range []struct {
		name      string
		workloads addrWorkloads
		modes     map[uint32]string
		mode      string
	}{
		{"STRICT", addrWorkloads{"10.0.0.2": payments}, map[uint32]string{8080: "STRICT"}, "STRICT"},
		{"PERMISSIVE", addrWorkloads{"10.0.0.2": payments}, map[uint32]string{8080: "PERMISSIVE"}, "PERMISSIVE"},
		{"another port's", addrWorkloads{"10.0.0.2": payments}, map[uint32]string{9090: "STRICT"}, "unknown"},
		{"no workload", addrWorkloads{}, map[uint32]string{8080: "STRICT"}, "unknown"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			modes := &portModes{modes: tt.modes}
			f := newFixture(t, allowTrue, "", authz.DefaultConfig(), func(s *authz.Server) {
				s.ResolveWorkloads(tt.workloads)
				s.ResolvePeerModes(modes)
			})
			f.check(t, authztest.NewRequest())
			want := map[string]string{"namespace": "payments", "verdict": "plaintext", "mode": tt.mode}
			if tt.workloads["10.0.0.2"] == nil {
				want["namespace"] = "unknown"
			}
			if got := sumSeries(t, f.reg, "meshproof_destination_checks_total", want); got != 1 {
				t.Errorf("meshproof_destination_checks_total%v = %v, want 1", want, got)
			}
		})
	}
}

// TestDestinationNamespaceCap: the first DefaultNamespaceCap namespaces get
// their own series, later ones count as other, and a namespace seen before
// the cap was reached keeps its own.
func TestDestinationNamespaceCap(t *testing.T) {
	f := newFixture(t, allowTrue, "", authz.DefaultConfig())
	to := func(ns string) *authv3.CheckRequest {
		return authztest.NewRequest(authztest.MTLS(srcID, "spiffe://cluster.local/ns/"+ns+"/sa/backend"))
	}
	for i := range authz.DefaultNamespaceCap + 5 {
		f.check(t, to(fmt.Sprintf("ns-%02d", i)))
	}
	f.check(t, to("ns-00"))
	namespaces := map[string]float64{}
	for _, s := range series(t, f.reg, "meshproof_destination_checks_total") {
		namespaces[s.labels["namespace"]] += s.value
	}
	if got := namespaces["other"]; got != 5 {
		t.Errorf(`namespace="other": %v, want the 5 namespaces over the cap`, got)
	}
	if got := namespaces["ns-00"]; got != 2 {
		t.Errorf(`namespace="ns-00": %v, want 2`, got)
	}
	if got := namespaces[fmt.Sprintf("ns-%02d", authz.DefaultNamespaceCap)]; got != 0 {
		t.Errorf("the namespace over the cap has a series of its own (%v)", got)
	}
	if got := len(namespaces); got != authz.DefaultNamespaceCap+1 {
		t.Errorf("%d namespace label values, want %d and other", got, authz.DefaultNamespaceCap)
	}
}

// TestDecisionLogsCounted: events counted with CountDecisionLogs are in
// meshproof_checks_total and the destination series as source
// opa_decision_logs, under their decision (dry run included), and not in
// the Check duration.
func TestDecisionLogsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	svc, err := authz.NewServer(authz.DefaultConfig(), nil, nil, zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(allowed, dryRun bool, opts ...authztest.Option) *evidence.Record {
		rec := svc.RecordOf("id", time.Now(), authztest.NewRequest(opts...))
		rec.Decision = evidence.Decision{Allowed: allowed, DryRun: dryRun}
		return rec
	}
	recs := []*evidence.Record{
		mk(true, false, authztest.MTLS(srcID, dstID)),
		mk(false, false),
		mk(false, true),
	}
	var ts []authz.Tally
	for _, r := range recs {
		ts = append(ts, svc.TallyOf(r))
	}
	svc.CountDecisionLogs(ts)
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"source": "opa_decision_logs", "decision": "allow", "verdict": "mtls"}, 1},
		{map[string]string{"source": "opa_decision_logs", "decision": "deny", "verdict": "plaintext"}, 1},
		{map[string]string{"source": "opa_decision_logs", "decision": "dry_run", "verdict": "plaintext"}, 1},
		{map[string]string{"source": "ext_authz"}, 0},
	} {
		if got := sumSeries(t, reg, "meshproof_checks_total", c.labels); got != c.want {
			t.Errorf("meshproof_checks_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := sumSeries(t, reg, "meshproof_destination_checks_total", map[string]string{"source": "opa_decision_logs", "namespace": "shop"}); got != 1 {
		t.Errorf(`meshproof_destination_checks_total{source="opa_decision_logs",namespace="shop"} = %v, want 1`, got)
	}
	if got := sumSeries(t, reg, "meshproof_destination_checks_total", map[string]string{"source": "opa_decision_logs", "namespace": "unknown"}); got != 2 {
		t.Errorf(`meshproof_destination_checks_total{source="opa_decision_logs",namespace="unknown"} = %v, want 2`, got)
	}
	for _, s := range series(t, reg, "meshproof_check_duration_seconds") {
		if s.value != 0 {
			t.Errorf("meshproof_check_duration_seconds counted %v decision log events", s.value)
		}
	}
}

// TestGRPCMetrics: calls are counted by method and code, a Check refused
// while it is decoded (over --grpc-max-recv-msg-bytes) too, and every method of
// the server has its series before any call.
func TestGRPCMetrics(t *testing.T) {
	f := newFixture(t, allowTrue, "", authz.DefaultConfig())
	reg := prometheus.NewRegistry()
	gc := authz.DefaultGRPCConfig()
	gc.Addr = "127.0.0.1:0"
	gc.MaxRecvMsgBytes = 64 << 10
	svc, err := authz.NewServer(authz.DefaultConfig(), f.engine, nil, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	g, err := authz.NewGRPC(gc, svc, reg)
	if err != nil {
		t.Fatal(err)
	}
	const check = "/envoy.service.auth.v3.Authorization/Check"
	for _, m := range []string{check, "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"} {
		if n := len(series(t, reg, "meshproof_grpc_requests_total", map[string]string{"method": m, "code": "OK"})); n != 1 {
			t.Errorf("%s has %d series of code OK before any call, want 1", m, n)
		}
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
	defer conn.Close()
	ctx := context.Background()
	client := authv3.NewAuthorizationClient(conn)
	if _, err := client.Check(ctx, authztest.NewRequest()); err != nil {
		t.Fatal(err)
	}
	g.SetServing(true)
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// Too large: refused with ResourceExhausted while it is decoded.
	big := authztest.NewRequest(authztest.Header("x-big", strings.Repeat("a", 70<<10)))
	if _, err := client.Check(ctx, big); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a Check over the largest message: %v, want ResourceExhausted", err)
	}
	for _, c := range []struct {
		method, code string
	}{{check, "OK"}, {"/grpc.health.v1.Health/Check", "OK"}, {check, "ResourceExhausted"}} {
		if got := sumSeries(t, reg, "meshproof_grpc_requests_total", map[string]string{"method": c.method, "code": c.code}); got != 1 {
			t.Errorf("meshproof_grpc_requests_total{method=%q,code=%q} = %v, want 1", c.method, c.code, got)
		}
	}
	if got := sumSeries(t, reg, "meshproof_grpc_requests_total", nil); got != 3 {
		t.Errorf("meshproof_grpc_requests_total summed = %v, want 3", got)
	}
}

type sample struct {
	labels map[string]string
	value  float64 // a counter's or gauge's value, a histogram's count
}

// series are name's series in reg whose labels include want.
func series(t *testing.T, reg *prometheus.Registry, name string, want ...map[string]string) []sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			for _, w := range want {
				for k, v := range w {
					if s.labels[k] != v {
						continue metrics
					}
				}
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			}
			out = append(out, s)
		}
	}
	return out
}

func sumSeries(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, s := range series(t, reg, name, want) {
		sum += s.value
	}
	return sum
}
