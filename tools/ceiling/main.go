// Command ceiling is the "gRPC ceiling": an ext_authz server that allows every
// request without looking at it. It is the fastest possible Check server on this
// gRPC stack, so the load benchmark reports meshproof's throughput and CPU as a
// ratio of it, measured in the same run on the same machine.
//
// Usage:
//
//	go run ./ceiling --addr 127.0.0.1:9192
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// allowAll answers every Check with OK.
type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

// okResponse is built once: the ceiling must not pay for per-request allocation
// that meshproof could also avoid, or the baseline would flatter meshproof.
var okResponse = &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)}}

// Check allows the request without reading it.
func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9192", "gRPC listen address")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	// The same stream workers as meshproof's listener, so the ceiling differs
	// from meshproof only in what a Check does.
	srv := grpc.NewServer(grpc.NumStreamWorkers(uint32(8 * runtime.GOMAXPROCS(0))))
	authv3.RegisterAuthorizationServer(srv, allowAll{})
	// Health lets the load benchmark wait for readiness the same way it
	// waits for meshproof; reflection lets ghz and grpcurl find the method
	// without .proto files.
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		srv.GracefulStop()
	}()
	fmt.Fprintf(os.Stderr, "ceiling: listening on %s\n", lis.Addr())
	return srv.Serve(lis)
}
