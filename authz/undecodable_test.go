package authz_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// rawCodec sends a []byte as the message, as it is: a CheckRequest no
// protobuf library would write.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// placeholder is replaced, in the marshalled request, by bad: as long, so
// every length stays right, and not UTF-8.
const placeholder, bad = "PLACEHOLDER-1", "ab\xffcd\xc3(xyz\xfe!!"

func marshalWithBadString(t *testing.T, req *authv3.CheckRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != len(placeholder) || bytes.Count(b, []byte(placeholder)) != 1 {
		t.Fatalf("placeholder not in the request once")
	}
	return bytes.Replace(b, []byte(placeholder), []byte(bad), 1)
}

func plainCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// errorChecks is meshproof_checks_total{decision="error"}, every verdict.
func errorChecks(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "meshproof_checks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "decision" && l.GetValue() == "error" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestUndecodableRequest: a CheckRequest with a string field that is not
// UTF-8 (Envoy passes header bytes through into the headers map) was a gRPC
// Internal error from the codec, with no record and no metric. With
// --on-policy-error=deny it is denied with --status-on-error, without the
// policy, and leaves a record naming the field, with the rest of the
// request (who sent it) decoded.
func TestUndecodableRequest(t *testing.T) {
	cfg := authz.DefaultConfig()
	cfg.OnPolicyError = authz.OnPolicyErrorDeny
	f := newFixture(t, "package envoy.authz\nallow := true\n", "", cfg)
	mtls := authztest.MTLS(srcID, dstID)
	rawHeadersRequest := authztest.NewRequest(mtls, authztest.RawHeaders())
	hm := rawHeadersRequest.Attributes.Request.Http.HeaderMap
	rawBadIndex := len(hm.Headers)
	hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "x-bad", Value: placeholder})
	tests := []struct {
		name    string
		raw     []byte
		field   string // "" when nothing decodes
		decoded bool   // the rest of the request is in the record
	}{
		{"header value", marshalWithBadString(t, authztest.NewRequest(mtls, authztest.Header("x-bad", placeholder))),
			`attributes.request.http.headers["x-bad"]`, true},
		{"header name", marshalWithBadString(t, authztest.NewRequest(mtls, authztest.Header(placeholder, "v"))),
			`attributes.request.http.headers (a key)`, true},
		{"path", marshalWithBadString(t, authztest.NewRequest(mtls, func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Path = "/" + placeholder })),
			`attributes.request.http.path`, true},
		{"header_map value", marshalWithBadString(t, rawHeadersRequest), fmt.Sprintf("attributes.request.http.headerMap.headers[%d].value", rawBadIndex), true},
		{"metadata string", marshalWithBadString(t, authztest.NewRequest(mtls, func(r *authv3.CheckRequest) {
			s, _ := structpb.NewStruct(map[string]any{"k": map[string]any{"l": []any{placeholder}}})
			r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": s}}
		})), `attributes.metadataContext.filterMetadata["f"].fields["k"].structValue.fields["l"].listValue.values[0].stringValue`, true},
		{"not a CheckRequest", []byte("\x0a\xff\xff\xff"), "", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.rec.records())
			resp := &authv3.CheckResponse{}
			if err := f.conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, tt.raw, resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
				t.Fatalf("Check: %v", err)
			}
			recs := f.rec.records()
			if len(recs) != before+1 {
				t.Fatalf("Check gave %d records, want 1", len(recs)-before)
			}
			rec := recs[len(recs)-1]
			d := resp.GetDeniedResponse()
			if d == nil || d.GetStatus().GetCode() != http.StatusForbidden || d.GetBody() != "meshproof: request could not be decoded; evidence "+rec.ID {
				t.Fatalf("response %v, want a 403 naming evidence %s", resp, rec.ID)
			}
			if got := resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue(); got != rec.ID {
				t.Errorf("evidence id in metadata %q, record %q", got, rec.ID)
			}
			want := "request could not be decoded: " + tt.field + ": invalid UTF-8"
			if tt.field == "" {
				want = "request could not be decoded: "
			}
			if !strings.HasPrefix(rec.Decision.Error, want) || (tt.field != "") != (rec.Decision.Error == want) {
				t.Errorf("record error %q, want %q", rec.Decision.Error, want)
			}
			if rec.Decision.Allowed || rec.Decision.HTTPStatus != http.StatusForbidden {
				t.Errorf("record decision %+v, want a 403 deny", rec.Decision)
			}
			if got := rec.Source.Principal == srcID; got != tt.decoded {
				t.Errorf("record source principal %q: decoded %v, want %v", rec.Source.Principal, got, tt.decoded)
			}
			if n := plainCounter(t, f.reg, "meshproof_checks_undecodable_total"); n != float64(i+1) {
				t.Errorf("meshproof_checks_undecodable_total %v, want %d", n, i+1)
			}
			if n := errorChecks(t, f.reg); n != float64(i+1) {
				t.Errorf(`meshproof_checks_total{decision="error"} %v, want %d`, n, i+1)
			}
		})
	}
	if n := f.evals.n.Load(); n != 0 {
		t.Errorf("the policy was evaluated %d times for requests that did not decode", n)
	}
	// The same request, decodable, is allowed as ever.
	resp, rec := f.check(t, authztest.NewRequest(mtls, authztest.Header("x-bad", "fine")))
	if resp.GetOkResponse() == nil || !rec.Decision.Allowed {
		t.Fatalf("a valid request was not allowed: %v", resp)
	}
	if n := plainCounter(t, f.reg, "meshproof_checks_undecodable_total"); n != float64(len(tests)) {
		t.Errorf("meshproof_checks_undecodable_total %v after a valid request, want %d", n, len(tests))
	}
}

// TestUndecodableRequestStored: the record of a request that did not decode
// (its path repaired with U+FFFD) is stored by a real SQLite store, read
// back as recorded, and verifies in the replica's log.
func TestUndecodableRequestStored(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rec, err := recorder.New(ctx, syncRecorder(), "replica-a", store, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close(context.Background()) })
	svc, err := authz.NewServer(authz.Config{StatusOnError: http.StatusServiceUnavailable, Replica: "replica-a", OnPolicyError: authz.OnPolicyErrorDeny},
		noCacheEngine(t, allowTrue), rec, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := serveConn(t, svc)
	raw := marshalWithBadString(t, authztest.NewRequest(authztest.MTLS(srcID, dstID), func(r *authv3.CheckRequest) {
		r.Attributes.Request.Http.Path = "/items/" + placeholder
	}))
	resp := &authv3.CheckResponse{}
	if err := conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, raw, resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != http.StatusServiceUnavailable {
		t.Fatalf("status %v, want --status-on-error's 503: %v", got, resp)
	}
	id := resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue()
	got, err := store.Get(ctx, id)
	if err != nil {
		t.Fatalf("the record %q: %v", id, err)
	}
	if want := "/items/ab\uFFFDcd\uFFFD(xyz\uFFFD!!"; got.Request.Path != want || got.Source.Principal != srcID {
		t.Errorf("stored path %q, principal %q; want %q, %q", got.Request.Path, got.Source.Principal, want, srcID)
	}
	if want := "request could not be decoded: attributes.request.http.path: invalid UTF-8"; got.Decision.Error != want || got.Decision.Allowed {
		t.Errorf("stored decision %+v, want a deny with error %q", got.Decision, want)
	}
	verifyChain(t, store, 1)
}

// TestUndecodableRequestError: under --on-policy-error=error (the default)
// a request that does not decode gets what OPA-Envoy's gRPC server answers,
// Internal "grpc: error unmarshalling request: ...", so that Envoy's
// failure mode applies as configured for OPA-Envoy; it is still recorded,
// without an HTTP status, and counted.
func TestUndecodableRequestError(t *testing.T) {
	f := newFixture(t, "package envoy.authz\nallow := true\n", "", authz.DefaultConfig())
	raw := marshalWithBadString(t, authztest.NewRequest(authztest.MTLS(srcID, dstID), authztest.Header("x-bad", placeholder)))
	err := f.conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, raw, &authv3.CheckResponse{}, grpc.ForceCodecV2(rawCodec{}))
	if st, _ := status.FromError(err); st.Code() != codes.Internal || st.Message() != "grpc: error unmarshalling request: string field contains invalid UTF-8" {
		t.Fatalf("Check = %v, want gRPC's own Internal error for the request", err)
	}
	recs := f.rec.records()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if d := recs[0].Decision; d.Allowed || d.HTTPStatus != 0 || !strings.HasPrefix(d.Error, `request could not be decoded: attributes.request.http.headers["x-bad"]`) {
		t.Errorf("record decision %+v, want not allowed, no HTTP status, the field named", d)
	}
	if n := plainCounter(t, f.reg, "meshproof_checks_undecodable_total"); n != 1 {
		t.Errorf("meshproof_checks_undecodable_total %v, want 1", n)
	}
	if n := f.evals.n.Load(); n != 0 {
		t.Errorf("the policy was evaluated %d times", n)
	}
}
