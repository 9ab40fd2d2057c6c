package meshsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshproof/meshproof/internal/svid"
)

// Config configures a sidecar: its inbound listener, the connection
// manager's XFCC handling and the ext_authz filter.
type Config struct {
	// Addr is where the inbound listener binds (127.0.0.1:0: a port the
	// OS picks).
	Addr string
	// AuthzAddr is meshproof's ext_authz gRPC address (host:port, or
	// unix:///path). Required.
	AuthzAddr string
	// Upstream is the application's address (host:port). Required.
	Upstream string
	// Identity is the sidecar's own SVID, presented on the mTLS chain.
	// Required.
	Identity *svid.SVID
	// Roots verify client certificates on the mTLS chain. Required.
	Roots *x509.CertPool
	// Mode is the PeerAuthentication mode at start; SetMode changes it.
	Mode Mode
	// ForwardClientCert is forward_client_cert_details at start;
	// SetForwardClientCert changes it.
	ForwardClientCert ForwardClientCert
	// IncludePeerCertificate and IncludeTLSSession are the ext_authz
	// filter's include_peer_certificate and include_tls_session.
	IncludePeerCertificate bool
	IncludeTLSSession      bool
	// Timeout bounds each Check (the filter's grpc_service timeout).
	Timeout time.Duration
	// StatusOnError is the status of a request whose Check failed.
	StatusOnError int
	// FailureModeAllow lets a request whose Check failed through,
	// unchecked.
	FailureModeAllow bool
	// InspectTimeout is how long tls_inspector waits for a ClientHello
	// before the connection counts as plaintext.
	InspectTimeout time.Duration
	// AccessLog, when set, is called once per HTTP request after its
	// response (from the request's goroutine: keep it quick).
	AccessLog func(Entry)
}

// DefaultConfig is Istio's inbound sidecar with meshproof's recommended
// filter options: PERMISSIVE, APPEND_FORWARD, the peer certificate and TLS
// session included, Envoy's 200 ms Check timeout and 403 on error.
func DefaultConfig() Config {
	return Config{
		Addr:                   "127.0.0.1:0",
		Mode:                   Permissive,
		ForwardClientCert:      AppendForward,
		IncludePeerCertificate: true,
		IncludeTLSSession:      true,
		Timeout:                200 * time.Millisecond,
		StatusOnError:          http.StatusForbidden,
		InspectTimeout:         5 * time.Second,
	}
}

// Validate says what a Config lacks.
func (c Config) Validate() error {
	var errs []error
	if c.AuthzAddr == "" {
		errs = append(errs, errors.New("meshsim: AuthzAddr: meshproof's gRPC address is required"))
	}
	if c.Upstream == "" {
		errs = append(errs, errors.New("meshsim: Upstream: the application's address is required"))
	}
	if c.Identity == nil || c.Roots == nil {
		errs = append(errs, errors.New("meshsim: Identity and Roots are required for the mTLS chain"))
	}
	if c.Timeout <= 0 || c.InspectTimeout <= 0 {
		errs = append(errs, errors.New("meshsim: Timeout and InspectTimeout must be positive"))
	}
	if http.StatusText(c.StatusOnError) == "" {
		errs = append(errs, fmt.Errorf("meshsim: StatusOnError %d is not an HTTP status", c.StatusOnError))
	}
	return errors.Join(errs...)
}

// Entry is one request as the sidecar's access log sees it.
type Entry struct {
	Time time.Time
	// Chain is the filter chain the connection took: "mtls" or "plaintext".
	Chain           string
	Source          string // client address, host:port
	SourcePrincipal string
	Method          string
	Host            string
	Path            string
	RequestID       string
	StreamID        string
	Status          int
	// Checked is true when meshproof answered the Check.
	Checked bool
	Allowed bool
	// CheckError is why no answer came.
	CheckError string
	// EvidenceID and Verdict are meshproof's dynamic metadata
	// (meshproof_evidence_id, meshproof_verdict).
	EvidenceID string
	Verdict    string
}

// Stats count the sidecar's connections and Checks.
type Stats struct {
	// MTLS and Plaintext are connections that took each chain (MTLS: with
	// the handshake done).
	MTLS, Plaintext int64
	// TLSOnPlaintext are ClientHellos without an Istio ALPN that landed on
	// the plaintext chain (their handshake fails: curl's exit 35).
	TLSOnPlaintext int64
	// HandshakeFailures are mTLS-chain handshakes that failed (no or a bad
	// client certificate).
	HandshakeFailures int64
	// Resets are plaintext connections STRICT reset.
	Resets int64
	// Checks are Check calls made; CheckErrors those that got no answer.
	Checks, CheckErrors int64
}

type counters struct {
	mtls, plaintext, tlsOnPlaintext, handshakeFailures, resets, checks, checkErrors atomic.Int64
}

// Sidecar is the server-side proxy of one workload.
type Sidecar struct {
	cfg       Config
	mode      atomic.Int32
	fcc       atomic.Int32
	ln        net.Listener
	queue     *connQueue
	srv       *http.Server
	tlsConfig *tls.Config
	grpc      *grpc.ClientConn
	authz     authv3.AuthorizationClient
	upstream  http.RoundTripper
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stats     counters

	mu         sync.Mutex
	inspecting map[net.Conn]struct{}
	closeOnce  sync.Once
	closeErr   error
}

// StartSidecar binds the inbound listener and serves until Close or until
// ctx is done.
func StartSidecar(ctx context.Context, cfg Config) (*Sidecar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(cfg.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("meshsim: ext_authz client for %s: %w", cfg.AuthzAddr, err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("meshsim: sidecar listener: %w", err)
	}
	s := &Sidecar{
		cfg:   cfg,
		ln:    ln,
		queue: newConnQueue(ln.Addr()),
		tlsConfig: &tls.Config{
			Certificates: []tls.Certificate{cfg.Identity.TLS},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    cfg.Roots,
			MinVersion:   tls.VersionTLS12,
			// No NextProtos: the HTTP inside is HTTP/1.1 whatever the
			// client offered (an istio ALPN names the mesh, not the codec).
		},
		grpc:       conn,
		authz:      authv3.NewAuthorizationClient(conn),
		upstream:   &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second},
		inspecting: map[net.Conn]struct{}{},
	}
	s.mode.Store(int32(cfg.Mode))
	s.fcc.Store(int32(cfg.ForwardClientCert))
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		// Garbage on the plaintext chain (a ClientHello) is answered 400;
		// that is the point, not news.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(s.queue)
	}()
	go s.accept()
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	go func() {
		<-s.ctx.Done()
		stop()
	}()
	return s, nil
}

// Addr is the inbound listener's address (host:port).
func (s *Sidecar) Addr() string { return s.ln.Addr().String() }

// Mode is the current PeerAuthentication mode.
func (s *Sidecar) Mode() Mode { return Mode(s.mode.Load()) }

// SetMode switches the listener's mode for new connections, as a
// PeerAuthentication change does.
func (s *Sidecar) SetMode(m Mode) { s.mode.Store(int32(m)) }

// ForwardClientCert is the current forward_client_cert_details.
func (s *Sidecar) ForwardClientCert() ForwardClientCert { return ForwardClientCert(s.fcc.Load()) }

// SetForwardClientCert changes forward_client_cert_details for new requests.
func (s *Sidecar) SetForwardClientCert(f ForwardClientCert) { s.fcc.Store(int32(f)) }

// Identity is the sidecar's own SVID.
func (s *Sidecar) Identity() *svid.SVID { return s.cfg.Identity }

// Stats returns the counters so far.
func (s *Sidecar) Stats() Stats {
	c := &s.stats
	return Stats{
		MTLS: c.mtls.Load(), Plaintext: c.plaintext.Load(), TLSOnPlaintext: c.tlsOnPlaintext.Load(),
		HandshakeFailures: c.handshakeFailures.Load(), Resets: c.resets.Load(),
		Checks: c.checks.Load(), CheckErrors: c.checkErrors.Load(),
	}
}

// Close stops the listener, closes every connection and waits for every
// goroutine of the sidecar to end.
func (s *Sidecar) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		err := s.ln.Close()
		s.mu.Lock()
		for c := range s.inspecting {
			c.Close()
		}
		s.mu.Unlock()
		_ = s.srv.Close()
		s.queue.Close()
		s.wg.Wait()
		// Again: a connection accepted while the first Close ran was
		// tracked after it.
		_ = s.srv.Close()
		if t, ok := s.upstream.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
		s.closeErr = errors.Join(err, s.grpc.Close())
		if errors.Is(s.closeErr, net.ErrClosed) {
			s.closeErr = nil
		}
	})
	return s.closeErr
}

// accept hands each connection to route, until the listener closes.
func (s *Sidecar) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.route(c)
	}
}

// route picks the connection's filter chain, as the listener's filter
// chain match does after tls_inspector.
func (s *Sidecar) route(c net.Conn) {
	defer s.wg.Done()
	if !s.track(c) {
		c.Close()
		return
	}
	h, rc := inspect(c, s.cfg.InspectTimeout)
	s.untrack(c)
	switch mode := s.Mode(); {
	case h == nil && mode == Strict:
		s.stats.resets.Add(1)
		reset(rc)
	case h == nil || mode == Permissive && !h.offersIstio():
		s.stats.plaintext.Add(1)
		if h != nil {
			s.stats.tlsOnPlaintext.Add(1)
		}
		s.queue.push(rc)
	default:
		tc := tls.Server(rc, s.tlsConfig)
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.stats.handshakeFailures.Add(1)
			tc.Close()
			return
		}
		s.stats.mtls.Add(1)
		s.queue.push(tc)
	}
}

func (s *Sidecar) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.inspecting[c] = struct{}{}
	return true
}

func (s *Sidecar) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.inspecting, c)
	s.mu.Unlock()
}

// connQueue is the listener the HTTP server reads connections from, once
// route has chosen their chain.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

func randUint64() uint64 { return rand.Uint64() }
