package authz

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/meshproof/meshproof/internal/tlsfiles"
)

// GRPCConfig configures the ext_authz listener.
type GRPCConfig struct {
	// Addr is host:port or unix:///path/to.sock.
	Addr string `json:"addr"`
	// TLSCert and TLSKey enable TLS; with ClientCA the listener also
	// requires and verifies a client certificate (mTLS), so that only the
	// mesh's proxies can call it. Files are re-read when they change.
	TLSCert  string `json:"tls_cert"`
	TLSKey   string `json:"tls_key"`
	ClientCA string `json:"client_ca"`
	// MaxRecvMsgBytes bounds one CheckRequest (bodies included).
	MaxRecvMsgBytes int `json:"max_recv_msg_bytes"`
	// CheckMemoryBudget bounds the memory of the Checks in flight, each
	// charged 64 bytes per byte of its request (checkBudget): a Check
	// waits for room before its request is decoded. 0 turns it off.
	CheckMemoryBudget int64 `json:"check_memory_budget"`
	// MaxConcurrentStreams bounds concurrent Checks per connection.
	MaxConcurrentStreams uint32 `json:"max_concurrent_streams"`
	// StreamWorkers is the number of long-lived goroutines that run Checks;
	// more concurrent Checks than that get a goroutine each.
	StreamWorkers uint32 `json:"stream_workers"`
	// KeepaliveTime: ping an idle connection after this long;
	// KeepaliveTimeout: close it when the ping is not answered.
	KeepaliveTime    time.Duration `json:"keepalive_time"`
	KeepaliveTimeout time.Duration `json:"keepalive_timeout"`
	// KeepaliveMinClientInterval is the shortest client ping interval
	// accepted (Envoy's gRPC client pings when so configured).
	KeepaliveMinClientInterval time.Duration `json:"keepalive_min_client_interval"`
}

// DefaultGRPCConfig returns the defaults: loopback, plaintext, 4 MiB.
func DefaultGRPCConfig() GRPCConfig {
	return GRPCConfig{
		Addr:                       "127.0.0.1:9191",
		MaxRecvMsgBytes:            4 << 20,
		CheckMemoryBudget:          512 << 20,
		MaxConcurrentStreams:       1000,
		StreamWorkers:              uint32(8 * runtime.GOMAXPROCS(0)),
		KeepaliveTime:              30 * time.Second,
		KeepaliveTimeout:           10 * time.Second,
		KeepaliveMinClientInterval: 5 * time.Second,
	}
}

// Validate checks the configuration without touching the file system.
func (c GRPCConfig) Validate() error {
	if _, _, err := splitAddr(c.Addr); err != nil {
		return fmt.Errorf("grpc-addr: %w", err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("grpc-tls-cert and grpc-tls-key go together")
	}
	if c.ClientCA != "" && c.TLSCert == "" {
		return errors.New("grpc-client-ca needs grpc-tls-cert and grpc-tls-key: client certificates are verified only over TLS")
	}
	if c.MaxRecvMsgBytes <= 0 {
		return errors.New("grpc-max-recv-msg-bytes must be positive")
	}
	if c.CheckMemoryBudget < 0 {
		return fmt.Errorf("check-memory-budget %d: must be 0 (off) or more", c.CheckMemoryBudget)
	}
	if c.KeepaliveTime <= 0 || c.KeepaliveTimeout <= 0 || c.KeepaliveMinClientInterval < 0 {
		return errors.New("grpc keepalive durations must be positive")
	}
	return nil
}

// splitAddr returns the network and address to listen on.
func splitAddr(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if path == "" {
			return "", "", errors.New("unix:// needs a socket path, e.g. unix:///run/meshproof.sock")
		}
		return "unix", path, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%q: want host:port or unix:///path: %w", addr, err)
	}
	return "tcp", addr, nil
}

// Listen opens the listener. A stale unix socket left by a killed process is
// removed; any other file in the way is an error.
func Listen(addr string) (net.Listener, error) {
	network, address, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if fi, err := os.Lstat(address); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return nil, fmt.Errorf("%s exists and is not a socket", address)
			}
			// Only a stale socket may go: one that a live process still
			// accepts on is in use, exactly as a TCP port would be.
			if c, err := net.DialTimeout("unix", address, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("listen %s: %s is in use by another process", addr, address)
			}
			if err := os.Remove(address); err != nil {
				return nil, err
			}
		}
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

// GRPC is the ext_authz gRPC server with health and reflection.
type GRPC struct {
	*grpc.Server
	Health *health.Server
}

// NewGRPC builds the gRPC server around the Check service. Health reports
// NOT_SERVING until SetServing is called.
// Its calls are counted in reg (nil: not registered).
func NewGRPC(c GRPCConfig, svc authv3.AuthorizationServer, reg prometheus.Registerer) (*GRPC, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m := newGRPCMetrics(reg)
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.unary),
		grpc.ChainStreamInterceptor(m.stream),
		grpc.MaxRecvMsgSize(c.MaxRecvMsgBytes),
		grpc.MaxConcurrentStreams(c.MaxConcurrentStreams),
		// Policy evaluation recurses deeply; on a fresh goroutine per Check
		// the stack grows (and is copied) several times on every request,
		// which cost more CPU than the evaluation itself. Long-lived workers
		// keep their grown stacks.
		grpc.NumStreamWorkers(c.StreamWorkers),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: c.KeepaliveTime, Timeout: c.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: c.KeepaliveMinClientInterval, PermitWithoutStream: true}),
		// gRPC's proto codec, but a CheckRequest that does not decode
		// (invalid UTF-8) still reaches Check, to be denied and recorded.
		grpc.ForceServerCodecV2(newLenientCodec()),
	}
	if c.TLSCert != "" {
		tc, err := tlsfiles.ServerConfig(c.TLSCert, c.TLSKey, c.ClientCA, "h2")
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s := grpc.NewServer(opts...)
	// meshproof's Check service (*Server) is decoded leniently, behind the
	// memory budget when there is one, reserved inside the decoding where
	// the request's size is known; any other is registered as it is.
	desc := authv3.Authorization_ServiceDesc
	if _, ok := svc.(lenientChecker); ok {
		var budget *checkBudget
		if c.CheckMemoryBudget > 0 {
			budget = newCheckBudget(c.CheckMemoryBudget, c.MaxRecvMsgBytes)
		}
		desc = checkServiceDesc(budget, m)
	}
	s.RegisterService(&desc, svc)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	reflection.Register(s)
	m.resolve(s)
	g := &GRPC{Server: s, Health: h}
	g.SetServing(false)
	return g, nil
}

// SetServing sets the health of the server and of the Authorization service.
func (g *GRPC) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	g.Health.SetServingStatus("", st)
	g.Health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
}

// Shutdown stops accepting Checks, lets in-flight ones finish for up to
// grace, then closes every connection.
func (g *GRPC) Shutdown(grace time.Duration) {
	g.Health.Shutdown() // NOT_SERVING, so health-checking proxies move away
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
		<-done
	}
}
