package e2e

import (
	"bytes"
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// rawCodec sends a []byte as the request message, as it is.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// TestUndecodableCheck: a CheckRequest whose headers map holds a value that
// is not UTF-8 (Envoy passes header bytes through) is recorded with the
// field named, counted, and, with --on-policy-error=deny, denied; gRPC used
// to refuse it (Internal) before any Check ran, leaving nothing. (Under the
// default, error, the answer is that same Internal error: authz's
// TestUndecodableRequestError.)
func TestUndecodableCheck(t *testing.T) {
	t.Parallel()
	dsn := sqliteStore(t)
	s := benchServe(t, "--store", dsn, "--replica", "e2e-undecodable", "--on-policy-error", "deny")
	conn := dial(t, s.GRPCAddr, nil)
	req := benchRequest(t)
	const placeholder, bad = "PLACEHOLDER-1", "undecodable-\xff"
	req.Attributes.Request.Http.Headers["x-request-id"] = placeholder
	raw, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte(placeholder), []byte(bad), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := &authv3.CheckResponse{}
	if err := conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, raw, resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got := resp.GetDeniedResponse().GetStatus().GetCode(); int(got) != http.StatusForbidden {
		t.Fatalf("answer %v, want a 403 deny", resp)
	}
	if !allowed(check(t, conn, benchRequest(t))) {
		t.Fatal("the same request, decodable, was denied")
	}
	m := s.metrics(t)
	if got := m["meshproof_checks_undecodable_total"]; got != 1 {
		t.Errorf("meshproof_checks_undecodable_total = %v, want 1", got)
	}
	s.signal(syscall.SIGTERM)
	if code := s.wait(stopTimeout); code != 0 {
		t.Fatalf("exit %d", code)
	}
	recs := storedRecords(t, dsn)
	if len(recs) != 2 {
		t.Fatalf("%d records for 2 Checks", len(recs))
	}
	r := recs[1] // newest first
	want := `request could not be decoded: attributes.request.http.headers["x-request-id"]: invalid UTF-8`
	if r.RequestID != "undecodable-\uFFFD" || r.Decision.Error != want || r.Decision.Allowed ||
		r.Source.Principal != req.Attributes.Source.Principal {
		t.Errorf("record %+v\nwant request id %q, error %q, source %q", r, "undecodable-\uFFFD", want, req.Attributes.Source.Principal)
	}
	verifyChains(t, dsn)
}
