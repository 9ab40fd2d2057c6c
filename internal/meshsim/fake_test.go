package meshsim

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// fakeAuthz is an ext_authz server over real gRPC on loopback that
// records the CheckRequests and answers as the test says.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	answer func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)

	mu   sync.Mutex
	reqs []*authv3.CheckRequest
}

// allowAll answers OK with nothing to change.
func allowAll(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}}, nil
}

func (f *fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, proto.Clone(req).(*authv3.CheckRequest))
	f.mu.Unlock()
	return f.answer(ctx, req)
}

// requests returns the CheckRequests so far.
func (f *fakeAuthz) requests() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.reqs...)
}

// startFakeAuthz serves answer on a loopback port until the test ends.
func startFakeAuthz(t *testing.T, answer func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)) (*fakeAuthz, string) {
	t.Helper()
	f := &fakeAuthz{answer: answer}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return f, ln.Addr().String()
}

// startMesh starts the mesh against answer, with a Check timeout generous
// enough for the race detector, and closes it when the test ends; the
// access log entries go to the returned func.
func startMesh(t *testing.T, answer func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error), change ...func(*Config)) (*Mesh, *fakeAuthz, func() []Entry) {
	t.Helper()
	f, addr := startFakeAuthz(t, answer)
	var mu sync.Mutex
	var entries []Entry
	cfg := DefaultConfig()
	cfg.AuthzAddr = addr
	cfg.Timeout = 5 * time.Second
	cfg.AccessLog = func(e Entry) {
		mu.Lock()
		entries = append(entries, e)
		mu.Unlock()
	}
	for _, c := range change {
		c(&cfg)
	}
	m, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m, f, func() []Entry {
		mu.Lock()
		defer mu.Unlock()
		return append([]Entry(nil), entries...)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
