package meshsim

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"time"
)

// IstioALPNs are the ALPN protocols an Istio sidecar offers when it sends
// mTLS, and that a PERMISSIVE inbound listener's mTLS filter chains match
// (istio-peer-exchange and istio for TCP, the istio-http ones for HTTP).
var IstioALPNs = []string{"istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// hello is what tls_inspector learns from a ClientHello.
type hello struct {
	sni   string
	alpns []string
}

// offersIstio reports whether the client offered one of IstioALPNs: only
// then does a PERMISSIVE listener pick the mTLS chain.
func (h *hello) offersIstio() bool {
	return h != nil && slices.ContainsFunc(h.alpns, func(p string) bool { return slices.Contains(IstioALPNs, p) })
}

// errInspected stops the sniffing handshake once the ClientHello is read.
var errInspected = errors.New("meshsim: ClientHello inspected")

// inspect reads the start of a connection as Envoy's tls_inspector does: a
// TLS ClientHello gives its SNI and ALPN; anything else, or nothing within
// timeout, is raw_buffer (hello nil). The bytes read are not lost: the
// returned connection replays them.
//
// crypto/tls parses the ClientHello (over a copy of the bytes read, with
// writes dropped, so the aborted handshake sends the client nothing).
func inspect(c net.Conn, timeout time.Duration) (*hello, net.Conn) {
	var seen bytes.Buffer
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var got *hello
	probe := tls.Server(sniffConn{Conn: c, r: io.TeeReader(c, &seen)}, &tls.Config{
		GetConfigForClient: func(ch *tls.ClientHelloInfo) (*tls.Config, error) {
			got = &hello{sni: ch.ServerName, alpns: slices.Clone(ch.SupportedProtos)}
			return nil, errInspected
		},
	})
	_ = probe.Handshake()
	_ = c.SetReadDeadline(time.Time{})
	return got, &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(seen.Bytes()), c)}
}

// sniffConn reads through r and writes nowhere.
type sniffConn struct {
	net.Conn
	r io.Reader
}

func (c sniffConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c sniffConn) Write(p []byte) (int, error) { return len(p), nil }

// replayConn gives back the inspected bytes before the rest of the stream.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// reset closes c with a TCP RST, as Envoy does to a connection no filter
// chain matches.
func reset(c net.Conn) {
	if rc, ok := c.(*replayConn); ok {
		c = rc.Conn
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
