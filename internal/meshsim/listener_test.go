package meshsim

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshproof/meshproof/authz/authztest"
)

// TestChainSelection: which filter chain each client lands on, in each
// mode, and what reaches meshproof (README, "Run with Envoy").
func TestChainSelection(t *testing.T) {
	m, authz, _ := startMesh(t, allowAll)
	ctx := testContext(t)
	tests := []struct {
		name   string
		mode   Mode
		client *Client
		// wantPrincipal is the source principal meshproof gets; wantErr
		// what the client sees instead of an answer (no Check then).
		wantPrincipal string
		wantErr       func(error) bool
		wantStats     Stats // the counters that must have risen by one
	}{
		{name: "sleep, istio ALPN, PERMISSIVE", mode: Permissive, client: m.Sleep, wantPrincipal: SleepID, wantStats: Stats{MTLS: 1, Checks: 1}},
		{name: "legacy, plaintext, PERMISSIVE", mode: Permissive, client: m.Legacy, wantStats: Stats{Plaintext: 1, Checks: 1}},
		{name: "curl, TLS without istio ALPN, PERMISSIVE", mode: Permissive, client: m.Curl, wantErr: isHandshakeError, wantStats: Stats{Plaintext: 1, TLSOnPlaintext: 1}},
		{name: "sleep, istio ALPN, STRICT", mode: Strict, client: m.Sleep, wantPrincipal: SleepID, wantStats: Stats{MTLS: 1, Checks: 1}},
		{name: "curl, TLS without istio ALPN, STRICT", mode: Strict, client: m.Curl, wantPrincipal: CurlID, wantStats: Stats{MTLS: 1, Checks: 1}},
		{name: "legacy, plaintext, STRICT", mode: Strict, client: m.Legacy, wantErr: isReset, wantStats: Stats{Resets: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.Sidecar.SetMode(tt.mode)
			before, checks := m.Sidecar.Stats(), len(authz.requests())
			resp, err := tt.client.Get(ctx, "/headers")
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("err = %v (response %+v), want a failure", err, resp)
				}
			} else if err != nil || resp.Status != http.StatusOK {
				t.Fatalf("GET /headers: %v %+v", err, resp)
			}
			if got := diff(m.Sidecar.Stats(), before); got != tt.wantStats {
				t.Errorf("counters rose by %+v, want %+v", got, tt.wantStats)
			}
			reqs := authz.requests()[checks:]
			if tt.wantErr != nil {
				if len(reqs) != 0 {
					t.Errorf("%d Checks, want none", len(reqs))
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("%d Checks, want 1", len(reqs))
			}
			a := reqs[0].GetAttributes()
			if got := a.GetSource().GetPrincipal(); got != tt.wantPrincipal {
				t.Errorf("source principal = %q, want %q", got, tt.wantPrincipal)
			}
			wantDst := ServerID
			if tt.wantPrincipal == "" {
				wantDst = ""
			}
			if got := a.GetDestination().GetPrincipal(); got != wantDst {
				t.Errorf("destination principal = %q, want %q", got, wantDst)
			}
			if ip := a.GetSource().GetAddress().GetSocketAddress().GetAddress(); ip != tt.client.LocalIP() {
				t.Errorf("source address = %s, want the client's %s", ip, tt.client.LocalIP())
			}
			if dst := a.GetDestination().GetAddress().GetSocketAddress(); net.JoinHostPort(dst.GetAddress(), itoa(dst.GetPortValue())) != m.Sidecar.Addr() {
				t.Errorf("destination address = %v, want the sidecar's %s", dst, m.Sidecar.Addr())
			}
		})
	}
}

// TestIstioALPNs: in PERMISSIVE mode, every Istio ALPN selects the mTLS
// chain and nothing else does; in STRICT, any ALPN does.
func TestIstioALPNs(t *testing.T) {
	m, _, _ := startMesh(t, allowAll)
	sleep := m.CA.Issue(t, SleepID)
	tests := []struct {
		alpn           []string
		mode           Mode
		wantMTLS       bool
		noCertificates bool
	}{
		{alpn: []string{"istio"}, wantMTLS: true},
		{alpn: []string{"istio-peer-exchange", "istio"}, wantMTLS: true},
		{alpn: []string{"istio-http/1.0"}, wantMTLS: true},
		{alpn: []string{"istio-http/1.1"}, wantMTLS: true},
		{alpn: []string{"istio-h2"}, wantMTLS: true},
		{alpn: []string{"h2", "http/1.1", "istio-h2"}, wantMTLS: true},
		{alpn: []string{"h2", "http/1.1"}},
		{alpn: []string{"istio-http/2"}},
		{alpn: nil},
		{alpn: nil, mode: Strict, wantMTLS: true},
		{alpn: []string{"h2"}, mode: Strict, wantMTLS: true},
		// The mTLS chain requires a client certificate.
		{alpn: []string{"istio"}, noCertificates: true},
		{alpn: nil, mode: Strict, noCertificates: true},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String()+" "+join(tt.alpn), func(t *testing.T) {
			m.Sidecar.SetMode(tt.mode)
			cfg := &tls.Config{RootCAs: m.CA.Pool(), InsecureSkipVerify: true, NextProtos: tt.alpn, Certificates: []tls.Certificate{sleep.TLS}}
			if tt.noCertificates {
				cfg.Certificates = nil
			}
			err := handshake(m.Sidecar.Addr(), cfg)
			if tt.wantMTLS != (err == nil) {
				t.Errorf("handshake: %v, want mTLS chain %v", err, tt.wantMTLS)
			}
		})
	}
}

// handshake dials addr, completes a TLS handshake and one read (with TLS
// 1.3 a refused client certificate shows only then), and hangs up.
func handshake(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /status/204 HTTP/1.1\r\nHost: " + Host + "\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 12)
	if _, err := c.Read(b); err != nil {
		return err
	}
	return nil
}

// TestSidecarCloseStopsEverything: cancelling the context closes the
// listener and the connections still being inspected.
func TestSidecarCloseStopsEverything(t *testing.T) {
	_, addr := startFakeAuthz(t, allowAll)
	ca := authztest.NewCA(t, TrustDomain)
	app, err := StartApp(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	cfg := DefaultConfig()
	cfg.AuthzAddr, cfg.Upstream, cfg.Identity, cfg.Roots = addr, app.Addr(), ca.Issue(t, ServerID), ca.Pool()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := StartSidecar(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A connection that never says anything sits in tls_inspector.
	idle, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond)
	cancel() // as Close
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts after the context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after cancel: %v", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the inspected connection was not closed: %v", err)
	}
}

func isHandshakeError(err error) bool {
	var he *HandshakeError
	return errors.As(err, &he)
}

// isReset: the connection was reset, or (when the RST overtook the
// request) closed before any answer.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func diff(a, b Stats) Stats {
	return Stats{
		MTLS: a.MTLS - b.MTLS, Plaintext: a.Plaintext - b.Plaintext, TLSOnPlaintext: a.TLSOnPlaintext - b.TLSOnPlaintext,
		HandshakeFailures: a.HandshakeFailures - b.HandshakeFailures, Resets: a.Resets - b.Resets,
		Checks: a.Checks - b.Checks, CheckErrors: a.CheckErrors - b.CheckErrors,
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func join(alpn []string) string {
	if len(alpn) == 0 {
		return "no ALPN"
	}
	return strings.Join(alpn, ",")
}
