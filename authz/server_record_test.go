package authz_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/identity/spiffe"
	"github.com/meshproof/meshproof/identity/xfcc"
)

const allowTrue = "package envoy.authz\nallow := true"

// TestCheckRecord checks every field of the record the recorder receives.
func TestCheckRecord(t *testing.T) {
	ca := authztest.NewCA(t, "cluster.local")
	client, proxy, other := ca.Issue(t, srcID), ca.Issue(t, dstID), ca.Issue(t, srcID)
	xfccValue := authztest.XFCC(proxy, client)
	srcSPIFFE := &evidence.SPIFFEID{ID: srcID, TrustDomain: "cluster.local", Path: "/ns/shop/sa/frontend", Namespace: "shop", ServiceAccount: "frontend"}
	dstSPIFFE := &evidence.SPIFFEID{ID: dstID, TrustDomain: "cluster.local", Path: "/ns/shop/sa/backend", Namespace: "shop", ServiceAccount: "backend"}
	cert := func(s *authztest.SVID) *evidence.Certificate {
		return &evidence.Certificate{
			SHA256: s.SHA256(), Serial: s.Cert.SerialNumber.Text(16), Issuer: ca.Cert.Subject.String(),
			NotBefore: s.Cert.NotBefore.UTC(), NotAfter: s.Cert.NotAfter.UTC(), URISANs: []string{s.ID()},
		}
	}
	parsedXFCC := &evidence.XFCC{Raw: xfccValue, Elements: []evidence.XFCCElement{{By: []string{dstID}, Hash: client.SHA256(), URI: []string{srcID}}}}
	base := func(r evidence.Record) evidence.Record {
		r.RequestID, r.StreamID, r.Replica = "req-1", "1001", "replica-a"
		r.Source.Address, r.Source.Port = "10.0.0.1", 40000
		r.Destination.Address, r.Destination.Port = "10.0.0.2", 8080
		if r.Request.Path == "" {
			r.Request = evidence.Request{Method: "GET", Host: "app:8080", Path: "/", Protocol: "HTTP/1.1"}
		}
		r.Decision = evidence.Decision{Allowed: true}
		return r
	}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want evidence.Record // ID, Time and policy revision are checked apart
	}{
		{
			name: "plaintext",
			req:  authztest.NewRequest(),
			want: base(evidence.Record{Verdict: evidence.Plaintext, Reasons: []string{"no TLS identity on either side"}}),
		},
		{
			name: "mTLS with the peer certificate and this hop's XFCC",
			req: authztest.NewRequest(
				authztest.Principals(client.ID(), proxy.ID()),
				authztest.Header("x-forwarded-client-cert", xfccValue),
				authztest.PeerCertificate(client),
				authztest.Path("/api/items?token=secret"),
				authztest.Header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
				func(r *authv3.CheckRequest) {
					r.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "backend.shop"}
				},
			),
			want: base(evidence.Record{
				TraceID:     "4bf92f3577b34da6a3ce929d0e0e4736",
				Source:      evidence.Peer{Principal: srcID, SPIFFE: srcSPIFFE, Certificate: cert(client)},
				Destination: evidence.Peer{Principal: dstID, SPIFFE: dstSPIFFE},
				TLS:         evidence.TLS{SNI: "backend.shop"},
				XFCC:        parsedXFCC,
				Request:     evidence.Request{Method: "GET", Host: "app:8080", Path: "/api/items", Protocol: "HTTP/1.1"},
				Verdict:     evidence.MTLS,
				Reasons:     []string{"client certificate presented", "xfcc hash matches peer certificate", "xfcc agrees with connection"},
			}),
		},
		{
			name: "peer certificate other than the one XFCC names",
			req: authztest.NewRequest(
				authztest.Principals(client.ID(), proxy.ID()),
				authztest.Header("x-forwarded-client-cert", xfccValue),
				authztest.PeerCertificate(other),
			),
			want: base(evidence.Record{
				Source:      evidence.Peer{Principal: srcID, SPIFFE: srcSPIFFE, Certificate: cert(other)},
				Destination: evidence.Peer{Principal: dstID, SPIFFE: dstSPIFFE},
				XFCC:        parsedXFCC,
				Verdict:     evidence.MTLSMismatch,
				Reasons:     []string{"client certificate presented", "xfcc hash differs from peer certificate: " + client.SHA256()},
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, allowTrue, "", authz.Config{StatusOnError: 403, Replica: "replica-a"})
			before := time.Now().UTC()
			_, rec := f.check(t, tt.req)
			got := *rec
			if got.Time.Before(before.Add(-time.Second)) || got.Time.After(time.Now().Add(time.Second)) || got.Time.Location() != time.UTC {
				t.Errorf("record time %v, want UTC about %v", got.Time, before)
			}
			if got.Decision.PolicyRevision != f.engine.Revision() || got.Decision.PolicyRevision == "" {
				t.Errorf("policy revision %q, engine %q", got.Decision.PolicyRevision, f.engine.Revision())
			}
			got.ID, got.Time, got.Decision.PolicyRevision, got.Decision.DecisionID = "", time.Time{}, "", ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("record\n got %s\nwant %s", asJSON(got), asJSON(tt.want))
			}
		})
	}
}

// TestCheckRecordDecisionID: Envoy logs decision_id from the dynamic
// metadata; the record must carry the same id in its decision.
func TestCheckRecordDecisionID(t *testing.T) {
	f := newFixture(t, allowTrue, "", authz.DefaultConfig())
	resp, rec := f.check(t, authztest.NewRequest())
	if id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); rec.Decision.DecisionID != id || id == "" {
		t.Errorf("record decision id %q, response decision_id %q", rec.Decision.DecisionID, id)
	}
}

// TestCheckInputMeshproof checks input.meshproof as a policy sees it, by
// having the policy return it in its dynamic metadata.
func TestCheckInputMeshproof(t *testing.T) {
	const policy = `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"meshproof": input.meshproof}}`
	forged := `By=` + dstID + `;URI="` + srcID
	_, forgedErr := xfcc.Parse(forged)
	_, notSPIFFE := spiffe.Parse("CN=client")
	if forgedErr == nil || notSPIFFE == nil {
		t.Fatal("the fixtures must not parse")
	}
	src := map[string]any{"principal": srcID, "id": srcID, "trust_domain": "cluster.local", "path": "/ns/shop/sa/frontend", "namespace": "shop", "service_account": "frontend"}
	dst := map[string]any{"principal": dstID, "id": dstID, "trust_domain": "cluster.local", "path": "/ns/shop/sa/backend", "namespace": "shop", "service_account": "backend"}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want map[string]any
	}{
		{
			name: "plaintext",
			req:  authztest.NewRequest(),
			want: map[string]any{"verdict": "plaintext", "reasons": []any{"no TLS identity on either side"}, "source": map[string]any{}, "destination": map[string]any{}},
		},
		{
			name: "Istio mTLS",
			req:  authztest.NewRequest(authztest.MTLS(srcID, dstID)),
			want: map[string]any{
				"verdict": "mtls", "reasons": []any{"client certificate presented", "xfcc agrees with connection"},
				"source": src, "destination": dst,
				"xfcc": []any{map[string]any{
					"by": []any{dstID}, "uri": []any{srcID},
					"hash": "0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9",
				}},
			},
		},
		{
			name: "Istio mTLS in header_map",
			req:  authztest.NewRequest(authztest.MTLS(srcID, dstID), authztest.RawHeaders()),
			want: map[string]any{
				"verdict": "mtls", "reasons": []any{"client certificate presented", "xfcc agrees with connection"},
				"source": src, "destination": dst,
				"xfcc": []any{map[string]any{
					"by": []any{dstID}, "uri": []any{srcID},
					"hash": "0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9",
				}},
			},
		},
		{
			name: "forged, unparseable XFCC on plaintext",
			req:  authztest.NewRequest(authztest.Header("x-forwarded-client-cert", forged)),
			want: map[string]any{
				"verdict": "xfcc_unverified",
				"reasons": []any{"no client certificate", "xfcc header without client certificate", "xfcc invalid: " + forgedErr.Error()},
				"source":  map[string]any{}, "destination": map[string]any{},
				"xfcc_error": forgedErr.Error(),
			},
		},
		{
			name: "principal that is not a SPIFFE ID",
			req:  authztest.NewRequest(authztest.Principals("CN=client", "")),
			want: map[string]any{
				"verdict": "mtls", "reasons": []any{"client certificate presented", "no xfcc header"},
				"source": map[string]any{"principal": "CN=client", "error": notSPIFFE.Error()}, "destination": map[string]any{},
			},
		},
	}
	// The same object three ways: meshproof.facts(), each accessor, and
	// input.meshproof with --input-meshproof.
	const accessors = `package envoy.authz
facts.verdict := meshproof.verdict()
facts.reasons := meshproof.reasons()
facts.source := meshproof.source()
facts.destination := meshproof.destination()
facts.xfcc := meshproof.xfcc()
facts.xfcc_error := meshproof.facts().xfcc_error
allow := {"allowed": true, "dynamic_metadata": {"meshproof": facts}}`
	withInput := authz.DefaultConfig()
	withInput.InputMeshproof = true
	for _, way := range []struct {
		name, policy string
		cfg          authz.Config
	}{
		{"meshproof.facts()", `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"meshproof": meshproof.facts()}}`, authz.DefaultConfig()},
		{"accessors", accessors, authz.DefaultConfig()},
		{"input.meshproof", policy, withInput},
	} {
		f := newFixture(t, way.policy, "", way.cfg)
		for _, tt := range tests {
			t.Run(way.name+"/"+tt.name, func(t *testing.T) {
				resp, _ := f.check(t, tt.req)
				want, err := structpb.NewValue(tt.want)
				if err != nil {
					t.Fatal(err)
				}
				if got := resp.GetDynamicMetadata().GetFields()["meshproof"]; !proto.Equal(got, want) {
					t.Errorf("%s\n got %v\nwant %v", way.name, got, want)
				}
			})
		}
	}
}

// TestInputIsOPAEnvoys: without --input-meshproof the input has exactly
// OPA-Envoy's keys, so a policy that counts, lists or forwards the whole
// input sees what it sees under OPA-Envoy; with it, input.meshproof too.
func TestInputIsOPAEnvoys(t *testing.T) {
	const policy = `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"keys": sort(object.keys(input))}}`
	opaEnvoy := []any{"attributes", "parsed_body", "parsed_path", "parsed_query", "source_principal", "truncated_body", "version"}
	withInput := authz.DefaultConfig()
	withInput.InputMeshproof = true
	for _, tt := range []struct {
		cfg  authz.Config
		want []any
	}{
		{authz.DefaultConfig(), opaEnvoy},
		{withInput, append([]any{"attributes", "meshproof"}, opaEnvoy[1:]...)},
	} {
		f := newFixture(t, policy, "", tt.cfg)
		resp, _ := f.check(t, authztest.NewRequest(authztest.MTLS(srcID, dstID)))
		want, _ := structpb.NewValue(tt.want)
		if got := resp.GetDynamicMetadata().GetFields()["keys"]; !proto.Equal(got, want) {
			t.Errorf("input-meshproof %v: input keys %v, want %v", tt.cfg.InputMeshproof, got, want)
		}
	}
}

// TestFactsBuiltinsKeyTheDecisionCache: a policy that reads only
// meshproof.verdict() is cached by the verdict: the same request over
// mTLS and over plaintext gets each its own decision, however many times
// it comes.
func TestFactsBuiltinsKeyTheDecisionCache(t *testing.T) {
	const policy = `package envoy.authz
allow := meshproof.verdict() == "mtls"`
	f := newFixture(t, policy, "", authz.DefaultConfig())
	for i := range 6 {
		req, want := authztest.NewRequest(authztest.MTLS(srcID, dstID)), int32(0)
		if i%2 == 1 {
			req, want = authztest.NewRequest(), int32(7) // PERMISSION_DENIED
		}
		resp, _ := f.check(t, req)
		if got := resp.GetStatus().GetCode(); got != want {
			t.Fatalf("request %d (mtls %v): status %d, want %d", i, i%2 == 0, got, want)
		}
	}
}

// TestCheckRecorderFails: no allowed request without its evidence.
func TestCheckRecorderFails(t *testing.T) {
	const deny = "package envoy.authz\nallow := {\"allowed\": false, \"http_status\": 401, \"body\": \"no\"}"
	tests := []struct {
		name   string
		policy string
		cfg    authz.Config
		want   func(id string) *authv3.CheckResponse
	}{
		{
			name:   "an allow becomes a 503",
			policy: allowTrue,
			cfg:    authz.DefaultConfig(),
			want:   unrecorded,
		},
		{
			name:   "a dry-run allow becomes a 503",
			policy: deny,
			cfg:    authz.Config{DryRun: true, StatusOnError: 403},
			want:   unrecorded,
		},
		{
			name:   "a deny stays the policy's deny",
			policy: deny,
			cfg:    authz.DefaultConfig(),
			want: func(id string) *authv3.CheckResponse {
				return denied(401, "no", nil, meta(id, evidence.Plaintext, nil))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.policy, "", tt.cfg)
			f.rec.setErr(errors.New("disk full"))
			resp, rec := f.check(t, authztest.NewRequest())
			if want := tt.want(rec.ID); !proto.Equal(resp, want) {
				t.Errorf("response\n got %v\nwant %v", resp, want)
			}
		})
	}
}

func unrecorded(id string) *authv3.CheckResponse {
	return denied(503, "meshproof: evidence could not be recorded (disk full); evidence "+id, nil, meta(id, evidence.Plaintext, nil))
}

// TestCheckMetrics checks meshproof_checks_total by decision and verdict.
func TestCheckMetrics(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		cfg      authz.Config
		req      *authv3.CheckRequest
		decision string
		verdict  evidence.Verdict
		fails    bool // the Check is a gRPC error
	}{
		{"allow", allowTrue, authz.DefaultConfig(), authztest.NewRequest(authztest.MTLS(srcID, dstID)), "allow", evidence.MTLS, false},
		{"deny", "package envoy.authz\nallow := false", authz.DefaultConfig(), authztest.NewRequest(), "deny", evidence.Plaintext, false},
		{"error", "package envoy.authz\nallow := 7", authz.DefaultConfig(), authztest.NewRequest(), "error", evidence.Plaintext, true},
		{"error denied", "package envoy.authz\nallow := 7", authz.Config{OnPolicyError: authz.OnPolicyErrorDeny, StatusOnError: 403}, authztest.NewRequest(), "error", evidence.Plaintext, false},
		{"bad request", allowTrue, authz.DefaultConfig(), authztest.NewRequest(authztest.Path("/%zz")), "error", evidence.Plaintext, false},
		{"dry run", "package envoy.authz\nallow := false", authz.Config{DryRun: true, StatusOnError: 403}, authztest.NewRequest(), "dry_run", evidence.Plaintext, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.policy, "", tt.cfg)
			for range 2 {
				if tt.fails {
					f.checkFails(t, tt.req)
				} else {
					f.check(t, tt.req)
				}
			}
			if got := checksTotal(t, f.reg, tt.decision, tt.verdict); got != 2 {
				t.Errorf("meshproof_checks_total{decision=%q,verdict=%q} = %v, want 2", tt.decision, tt.verdict, got)
			}
			if got := checksTotal(t, f.reg, "", ""); got != 2 {
				t.Errorf("meshproof_checks_total summed = %v, want 2", got)
			}
		})
	}
}

// TestCheckMetricsUnrecorded: a request denied because its evidence could
// not be recorded must not be counted as allowed.
func TestCheckMetricsUnrecorded(t *testing.T) {
	f := newFixture(t, allowTrue, "", authz.DefaultConfig())
	f.rec.setErr(errors.New("disk full"))
	f.check(t, authztest.NewRequest())
	if got := checksTotal(t, f.reg, "allow", evidence.Plaintext); got != 0 {
		t.Errorf("meshproof_checks_total{decision=\"allow\"} = %v for a request denied with 503", got)
	}
}

// TestCheckConcurrent runs mixed requests in parallel through one server
// (shared caches) under the race detector; each answer and record must be
// its own request's.
func TestCheckConcurrent(t *testing.T) {
	f := newFixture(t, allowTrue, "", authz.DefaultConfig())
	reqs := []struct {
		req     *authv3.CheckRequest
		verdict evidence.Verdict
		allowed bool
	}{
		{authztest.NewRequest(), evidence.Plaintext, true},
		{authztest.NewRequest(authztest.MTLS(srcID, dstID)), evidence.MTLS, true},
		{authztest.NewRequest(authztest.Principals("", dstID), authztest.Header("x-forwarded-client-cert", "URI="+srcID)), evidence.XFCCUnverified, true},
		{authztest.NewRequest(authztest.Path("/%zz")), evidence.Plaintext, false},
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := reqs[(w+i)%len(reqs)]
				resp, err := f.client.Check(t.Context(), r.req)
				switch {
				case err != nil:
					errs <- err
				case (resp.GetOkResponse() != nil) != r.allowed:
					errs <- fmt.Errorf("request %d: allowed %v, want %v", (w+i)%len(reqs), resp.GetOkResponse() != nil, r.allowed)
				case resp.GetDynamicMetadata().GetFields()[authz.MetadataVerdict].GetStringValue() != string(r.verdict):
					errs <- fmt.Errorf("request %d: verdict %v, want %s", (w+i)%len(reqs), resp.GetDynamicMetadata(), r.verdict)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(f.rec.records()); n != workers*each {
		t.Errorf("%d records, want %d", n, workers*each)
	}
}

// checksTotal sums meshproof_checks_total over the series matching decision
// and verdict ("" matches any).
func checksTotal(t *testing.T, reg *prometheus.Registry, decision string, verdict evidence.Verdict) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "meshproof_checks_total" {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "decision" && decision != "" && l.GetValue() != decision ||
					l.GetName() == "verdict" && verdict != "" && l.GetValue() != string(verdict) {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func asJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
