package meshsim

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func answer(resp *authv3.CheckResponse) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil }
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

var (
	okStatus     = &rpcstatus.Status{Code: int32(code.Code_OK)}
	deniedStatus = &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}
)

// TestDecisionHonoured: what the client and the app get for each kind of
// answer, as Envoy's ext_authz filter makes them.
func TestDecisionHonoured(t *testing.T) {
	metadata, _ := structpb.NewStruct(map[string]any{"meshproof_evidence_id": "01EVIDENCE", "meshproof_verdict": "mtls"})
	tests := []struct {
		name       string
		answer     func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		config     func(*Config)
		wantStatus int
		wantBody   string
		wantHeader map[string]string // on the response to the client
		wantApp    bool              // the request reached the app
		wantEntry  Entry             // Checked, Allowed, EvidenceID, Verdict
	}{{
		name: "denied with status, headers and body",
		answer: answer(&authv3.CheckResponse{Status: deniedStatus, DynamicMetadata: metadata,
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{hv("x-meshproof-policy", "deny-suspect"), hv("www-authenticate", "mTLS")},
				Body:    "xfcc header without client certificate",
			}}}),
		wantStatus: http.StatusUnauthorized,
		wantBody:   "xfcc header without client certificate",
		wantHeader: map[string]string{"X-Meshproof-Policy": "deny-suspect", "Www-Authenticate": "mTLS", "Content-Type": "text/plain"},
		wantEntry:  Entry{Checked: true, EvidenceID: "01EVIDENCE", Verdict: "mtls"},
	}, {
		name:       "denied without a denied response",
		answer:     answer(&authv3.CheckResponse{Status: deniedStatus}),
		wantStatus: http.StatusForbidden,
		wantEntry:  Entry{Checked: true},
	}, {
		name:       "allowed",
		answer:     answer(&authv3.CheckResponse{Status: okStatus, DynamicMetadata: metadata}),
		wantStatus: http.StatusOK,
		wantApp:    true,
		wantEntry:  Entry{Checked: true, Allowed: true, EvidenceID: "01EVIDENCE", Verdict: "mtls"},
	}, {
		name: "gRPC error: status_on_error",
		answer: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return nil, status.Error(codes.Unavailable, "down")
		},
		wantStatus: http.StatusForbidden,
	}, {
		name: "timeout: status_on_error",
		answer: func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			// The server's deadline, propagated by gRPC, can fire a hair
			// before the client's: answer well after it, so the answer
			// can only arrive once the sidecar has given up.
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
			time.Sleep(time.Second)
			return allowAll(ctx, nil)
		},
		config:     func(c *Config) { c.Timeout = 100 * time.Millisecond },
		wantStatus: http.StatusForbidden,
	}, {
		name: "gRPC error, another status_on_error",
		answer: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return nil, status.Error(codes.Internal, "broken")
		},
		config:     func(c *Config) { c.StatusOnError = http.StatusServiceUnavailable },
		wantStatus: http.StatusServiceUnavailable,
	}, {
		name: "gRPC error, failure_mode_allow: through, unchecked",
		answer: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return nil, status.Error(codes.Unavailable, "down")
		},
		config:     func(c *Config) { c.FailureModeAllow = true },
		wantStatus: http.StatusOK,
		wantApp:    true,
		wantEntry:  Entry{Allowed: true},
	}, {
		name: "error response: status_on_error with its body",
		answer: answer(&authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_UNAVAILABLE)},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{Body: "try later"}}}),
		wantStatus: http.StatusForbidden,
		wantBody:   "try later",
		wantEntry:  Entry{Checked: true},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var change []func(*Config)
			if tt.config != nil {
				change = append(change, tt.config)
			}
			m, _, entries := startMesh(t, tt.answer, change...)
			resp, err := m.Sleep.Get(testContext(t), "/status/200")
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.wantStatus || string(resp.Body) != tt.wantBody {
				t.Errorf("answer = %d %q, want %d %q", resp.Status, resp.Body, tt.wantStatus, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("response header %s = %q, want %q", k, got, v)
				}
			}
			if got := m.App.Requests() == 1; got != tt.wantApp {
				t.Errorf("the app got %d requests, want it reached: %v", m.App.Requests(), tt.wantApp)
			}
			es := entries()
			if len(es) != 1 {
				t.Fatalf("%d access log entries, want 1", len(es))
			}
			e := es[0]
			if e.Checked != tt.wantEntry.Checked || e.Allowed != tt.wantEntry.Allowed || e.EvidenceID != tt.wantEntry.EvidenceID ||
				e.Verdict != tt.wantEntry.Verdict || e.Status != tt.wantStatus || e.Chain != "mtls" || e.SourcePrincipal != SleepID ||
				e.RequestID != resp.RequestID || (e.CheckError != "") == tt.wantEntry.Checked {
				t.Errorf("access log entry = %+v", e)
			}
		})
	}
}

// TestMutationsHonoured: an allowed request reaches the app with the OK
// response's header and query mutations, and the client gets its
// response_headers_to_add.
func TestMutationsHonoured(t *testing.T) {
	appendTrue := func(o *corev3.HeaderValueOption) *corev3.HeaderValueOption {
		o.Append = wrapperspb.Bool(true)
		return o
	}
	action := func(o *corev3.HeaderValueOption, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		o.AppendAction = a
		return o
	}
	m, _, _ := startMesh(t, answer(&authv3.CheckResponse{Status: okStatus, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			hv("x-authz-source", "meshproof"), // new
			hv("x-user", "policy"),            // overwrites the client's
			hv(":path", "/admin"),             // pseudo-headers are not the policy's
			appendTrue(hv("x-tags", "b")),     // appended to the client's
			action(hv("x-keep", "policy"), corev3.HeaderValueOption_ADD_IF_ABSENT),
			action(hv("x-absent", "policy"), corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
		},
		HeadersToRemove:         []string{"x-secret", "host"},
		QueryParametersToSet:    []*corev3.QueryParameter{{Key: "page", Value: "2"}, {Key: "added", Value: "1"}},
		QueryParametersToRemove: []string{"debug"},
		ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hv("x-served-through", "meshproof")},
	}}}))
	resp, err := m.Sleep.Do(testContext(t), http.MethodGet, "/get?page=1&debug=true&keep=yes", http.Header{
		"X-User": {"client"}, "X-Tags": {"a"}, "X-Keep": {"client"}, "X-Secret": {"s3cret"},
	}, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("GET: %v %+v", err, resp)
	}
	var got struct {
		Args    map[string]string `json:"args"`
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"page": "2", "added": "1", "keep": "yes", "debug": ""} {
		if got.Args[k] != want {
			t.Errorf("query %s = %q, want %q (args %v)", k, got.Args[k], want, got.Args)
		}
	}
	for k, want := range map[string]string{
		"X-Authz-Source": "meshproof", "X-User": "policy", "X-Tags": "a,b", "X-Keep": "client", "X-Absent": "", "X-Secret": "",
		"Host": Host, ":path": "",
	} {
		if got.Headers[k] != want {
			t.Errorf("app got header %s = %q, want %q", k, got.Headers[k], want)
		}
	}
	if h := resp.Header.Get("X-Served-Through"); h != "meshproof" {
		t.Errorf("response header x-served-through = %q", h)
	}
}

// TestApplyHeader: HeaderValueOption semantics, one at a time.
func TestApplyHeader(t *testing.T) {
	tests := []struct {
		name     string
		existing []string
		opt      *corev3.HeaderValueOption
		want     []string
	}{
		{"unset append overwrites", []string{"a"}, hv("x", "b"), []string{"b"}},
		{"unset append adds", nil, hv("x", "b"), []string{"b"}},
		{"append true joins", []string{"a"}, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "b"}, Append: wrapperspb.Bool(true)}, []string{"a,b"}},
		{"append false overwrites", []string{"a", "c"}, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "b"}, Append: wrapperspb.Bool(false)}, []string{"b"}},
		{"add if absent, present", []string{"a"}, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "b"}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}, []string{"a"}},
		{"add if absent, absent", nil, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "b"}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}, []string{"b"}},
		{"overwrite if exists, absent", nil, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "b"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS}, nil},
		{"overwrite if exists or add", []string{"a"}, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "b"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.existing != nil {
				h["X"] = tt.existing
			}
			applyHeader(h, tt.opt)
			if got := h["X"]; !slices.Equal(got, tt.want) {
				t.Errorf("x = %q, want %q", got, tt.want)
			}
		})
	}
}
