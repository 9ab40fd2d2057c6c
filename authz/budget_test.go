package authz

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/authz/authztest"
)

// TestCheckBudget: a Check reserves the largest request's share before its
// request is decoded, keeps only its own share after, and gives it back
// when it returns; a Check with no room waits without decoding, until its
// caller gives up.
func TestCheckBudget(t *testing.T) {
	b := newCheckBudget(0, 1000) // room for one request of the largest size
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x"}}}}
	share := b.weigh(req)
	if share >= b.worst || share < checkBaseBytes+checkBytesPerByte*int64(proto.Size(req)) {
		t.Fatalf("share %d of a %d-byte request (largest %d)", share, proto.Size(req), b.worst)
	}
	decoded, release := make(chan struct{}), make(chan struct{})
	h := b.wrap(func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(authv3.CheckRequest)
		if err := dec(in); err != nil {
			return nil, err
		}
		decoded <- struct{}{}
		<-release
		return in, nil
	})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := h(nil, ctx, func(m any) error { proto.Merge(m.(proto.Message), req); return nil }, nil)
		first <- err
	}()
	<-decoded
	if !b.sem.TryAcquire(b.worst - share) {
		t.Fatal("a decoded Check holds more than its share")
	}
	b.sem.Release(b.worst - share)

	waiting, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() {
		_, err := h(nil, waiting, func(any) error {
			t.Error("a Check decoded its request without room")
			return nil
		}, nil)
		second <- err
	}()
	cancel()
	if err := <-second; status.Code(err) != codes.Canceled {
		t.Fatalf("a Check whose caller gave up: %v, want Canceled", err)
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if !b.sem.TryAcquire(b.worst) {
		t.Fatal("the budget was not given back")
	}
}

// BenchmarkCheckBudget is what the budget adds to a Check of the reference
// request: its size, and two updates of the semaphore.
func BenchmarkCheckBudget(b *testing.B) {
	budget := newCheckBudget(512<<20, 4<<20)
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	h := budget.wrap(func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		return nil, dec(req)
	})
	ctx := context.Background()
	dec := func(any) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(nil, ctx, dec, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// heldChecker is a lenientChecker whose Checks of the path hold wait for
// release, after saying so on entered.
type heldChecker struct {
	hold             string
	entered, release chan struct{}
}

func (c heldChecker) checkDecoded(_ context.Context, req *authv3.CheckRequest, _ *UndecodableError) (*authv3.CheckResponse, error) {
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
	desc := checkServiceDesc(b)
	handler := desc.Methods[0].Handler
	raw := func(path string) []byte {
		m, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path}}}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	codec := newLenientCodec()
	call := func(srv heldChecker, ctx context.Context, b []byte) error {
		_, err := handler(srv, ctx, func(m any) error { return codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m) }, nil)
		return err
	}
	large := "/" + strings.Repeat("l", maxMsg/2)
	srv := heldChecker{hold: large, entered: make(chan struct{}), release: make(chan struct{})}
	largeRaw := raw(large)
	done := make(chan error, 1)
	go func() { done <- call(srv, context.Background(), largeRaw) }()
	<-srv.entered
	if !b.sem.TryAcquire(b.worst - b.share(len(largeRaw))) {
		t.Fatal("the held Check holds more than its share")
	}
	b.sem.Release(b.worst - b.share(len(largeRaw)))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := call(srv, ctx, raw("/x")); err != nil {
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
