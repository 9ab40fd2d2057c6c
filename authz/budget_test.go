package authz

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/authz/authztest"
)

// checkPath is a marshalled CheckRequest for path.
func checkPath(t testing.TB, path string) []byte {
	t.Helper()
	m, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path}}}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// callCheck runs the Check handler of budget b on raw, as gRPC would.
func callCheck(srv any, ctx context.Context, b *checkBudget, raw []byte) error {
	codec := newLenientCodec()
	desc := checkServiceDesc(b, nil)
	_, err := desc.Methods[0].Handler(srv, ctx, func(m any) error { return codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, m) }, nil)
	return err
}

// TestCheckBudget: a Check with no room left waits without decoding its
// request, until its caller gives up; the budget is whole again once the
// Check holding it has returned.
func TestCheckBudget(t *testing.T) {
	const maxMsg = 1000
	b := newCheckBudget(0, maxMsg) // room for one request of the largest size
	large := "/" + strings.Repeat("l", maxMsg)
	srv := heldChecker{hold: large, entered: make(chan struct{}), release: make(chan struct{}), calls: new(atomic.Int32)}
	first := make(chan error, 1)
	go func() { first <- callCheck(srv, context.Background(), b, checkPath(t, large)) }()
	<-srv.entered
	if b.sem.TryAcquire(1) {
		t.Fatal("a Check of the largest size left room")
	}

	waiting, cancel := context.WithCancel(context.Background())
	cancel()
	if err := callCheck(srv, waiting, b, checkPath(t, "/x")); status.Code(err) != codes.Canceled {
		t.Fatalf("a Check whose caller gave up: %v, want Canceled", err)
	}
	if n := srv.calls.Load(); n != 1 {
		t.Errorf("%d Checks ran, want 1: one ran without room", n)
	}
	close(srv.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if !b.sem.TryAcquire(b.worst) {
		t.Fatal("the budget was not given back")
	}
}

// BenchmarkCheckBudget is what the budget adds to a Check of the reference
// request: decoding it through the Check handler with the budget, and
// without.
func BenchmarkCheckBudget(b *testing.B) {
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	srv := heldChecker{calls: new(atomic.Int32)}
	for _, c := range []struct {
		name   string
		budget *checkBudget
	}{{"budget", newCheckBudget(512<<20, 4<<20)}, {"none", nil}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := callCheck(srv, ctx, c.budget, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// heldChecker is a lenientChecker whose Checks of the path hold wait for
// release, after saying so on entered.
type heldChecker struct {
	hold             string
	entered, release chan struct{}
	calls            *atomic.Int32 // Checks run
}

func (c heldChecker) checkDecoded(_ context.Context, req *authv3.CheckRequest, _ *UndecodableError) (*authv3.CheckResponse, error) {
	if c.calls != nil {
		c.calls.Add(1)
	}
	if req.GetAttributes().GetRequest().GetHttp().GetPath() == c.hold {
		c.entered <- struct{}{}
		<-c.release
	}
	return &authv3.CheckResponse{}, nil
}

// TestCheckBudgetByWireSize: the Check service reserves a request's share
// from its size on the wire, inside the codec, not the largest request's:
// with room for one largest request, a small Check goes through while a
// Check of half the largest size holds its share (it waited behind it when
// every Check reserved the largest share first). Each gives its share back
// when it returns.
func TestCheckBudgetByWireSize(t *testing.T) {
	const maxMsg = 1 << 20
	b := newCheckBudget(0, maxMsg) // room for one request of the largest size
	large := "/" + strings.Repeat("l", maxMsg/2)
	srv := heldChecker{hold: large, entered: make(chan struct{}), release: make(chan struct{})}
	largeRaw := checkPath(t, large)
	done := make(chan error, 1)
	go func() { done <- callCheck(srv, context.Background(), b, largeRaw) }()
	<-srv.entered
	if !b.sem.TryAcquire(b.worst - b.share(len(largeRaw))) {
		t.Fatal("the held Check holds more than its share")
	}
	b.sem.Release(b.worst - b.share(len(largeRaw)))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := callCheck(srv, ctx, b, checkPath(t, "/x")); err != nil {
		t.Fatalf("a small Check beside the held one: %v (it waited for the largest request's share)", err)
	}
	close(srv.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !b.sem.TryAcquire(b.worst) {
		t.Fatal("the Checks did not give their shares back")
	}
}
