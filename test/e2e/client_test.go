package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/oklog/ulid/v2"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshproof/meshproof/authz/authztest"
)

// dial opens a gRPC client connection to a server address (host:port, or
// unix:///path); creds nil means plaintext.
func dial(t testing.TB, target string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", target, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// check sends one Check and fails the test on a gRPC error.
func check(t testing.TB, conn *grpc.ClientConn, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// checkFails sends one Check that must fail with a gRPC error, and returns
// its status (--on-policy-error=error: the policy gave no decision).
func checkFails(t testing.TB, conn *grpc.ClientConn, req *authv3.CheckRequest) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err == nil {
		t.Fatalf("Check answered %v, want a gRPC error", resp)
	}
	return status.Convert(err)
}

// benchRequest is test/testdata/bench/request.json: the allowed mTLS request.
func benchRequest(t testing.TB) *authv3.CheckRequest {
	t.Helper()
	return authztest.FromFile(t, benchFile("request.json"))
}

// allowed reports whether a CheckResponse lets the request through.
func allowed(resp *authv3.CheckResponse) bool {
	return resp.GetStatus().GetCode() == int32(code.Code_OK)
}

// checkedResponse is a CheckResponse with the values meshproof adds, read
// out and validated.
type checkedResponse struct {
	*authv3.CheckResponse
	EvidenceID string
	Verdict    string
}

// inspect validates what meshproof adds to every response: the evidence id
// (a ULID) under meshproof_evidence_id and OPA-Envoy's decision_id, the
// verdict, and, when allowed, the x-meshproof-evidence-id header upstream.
func inspect(t testing.TB, resp *authv3.CheckResponse) checkedResponse {
	t.Helper()
	md := resp.GetDynamicMetadata().GetFields()
	c := checkedResponse{
		CheckResponse: resp,
		EvidenceID:    md["meshproof_evidence_id"].GetStringValue(),
		Verdict:       md["meshproof_verdict"].GetStringValue(),
	}
	if len(c.EvidenceID) != 26 {
		t.Errorf("dynamicMetadata.meshproof_evidence_id = %q, want a 26-character ULID", c.EvidenceID)
	} else if _, err := ulid.ParseStrict(c.EvidenceID); err != nil {
		t.Errorf("dynamicMetadata.meshproof_evidence_id = %q: %v", c.EvidenceID, err)
	}
	if got := md["decision_id"].GetStringValue(); got != c.EvidenceID {
		t.Errorf("dynamicMetadata.decision_id = %q, want the evidence id %q", got, c.EvidenceID)
	}
	hdr, found := header(resp, "x-meshproof-evidence-id")
	switch {
	case allowed(resp) && hdr != c.EvidenceID:
		t.Errorf("allowed: x-meshproof-evidence-id header = %q (present %v), want the evidence id %q", hdr, found, c.EvidenceID)
	case !allowed(resp) && found:
		t.Errorf("denied: x-meshproof-evidence-id header %q sent to the client", hdr)
	}
	return c
}

// header returns a header of the OK response (to upstream) or of the denied
// response (to the client).
func header(resp *authv3.CheckResponse, name string) (string, bool) {
	hs := resp.GetOkResponse().GetHeaders()
	if resp.GetDeniedResponse() != nil {
		hs = resp.GetDeniedResponse().GetHeaders()
	}
	for _, h := range hs {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue(), true
		}
	}
	return "", false
}

// parseCheckResponse reads grpcurl's protojson output.
func parseCheckResponse(t testing.TB, out string) *authv3.CheckResponse {
	t.Helper()
	resp := &authv3.CheckResponse{}
	if err := protojson.Unmarshal([]byte(out), resp); err != nil {
		t.Fatalf("grpcurl output is not a CheckResponse: %v\n%s", err, out)
	}
	return resp
}

// requestJSON is a CheckRequest as protojson, for grpcurl's -d @.
func requestJSON(t testing.TB, req *authv3.CheckRequest) string {
	t.Helper()
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// httpGet GETs url with a short timeout.
func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metrics GETs /metrics and returns the samples by their series as printed,
// name{label="value",...}, labels in the exposition's (sorted) order.
func (s *server) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	status, body, err := httpGet("http://" + s.HTTPAddr + "/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", status, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics: unreadable sample %q", line)
		}
		series, value := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics: unreadable sample %q", line)
		}
		out[series] = v
	}
	return out
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
