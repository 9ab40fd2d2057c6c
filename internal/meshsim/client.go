package meshsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/meshproof/meshproof/internal/svid"
)

// Transport is how a client reaches the sidecar.
type Transport int

const (
	// IstioMTLS is a client-side sidecar: TLS with its SVID, offering
	// Istio's ALPN, adding x-request-id and x-forwarded-proto as it goes.
	IstioMTLS Transport = iota
	// Plaintext is a workload outside the mesh, over plain HTTP.
	Plaintext
	// TLSWithoutIstioALPN is curl with a client certificate: TLS offering
	// h2 and http/1.1 only.
	TLSWithoutIstioALPN
)

func (t Transport) String() string {
	switch t {
	case IstioMTLS:
		return "mTLS (istio ALPN)"
	case Plaintext:
		return "plaintext"
	case TLSWithoutIstioALPN:
		return "TLS without istio ALPN"
	}
	return fmt.Sprintf("Transport(%d)", int(t))
}

// ClientConfig describes a client.
type ClientConfig struct {
	Name      string
	Transport Transport
	// Target is the sidecar's address (host:port); Host is what the client
	// puts in :authority (the service name).
	Target, Host string
	// Identity is the client's certificate (TLS transports). Mesh.NewClient
	// issues one for ID when it is nil.
	Identity *svid.SVID
	ID       string
	// Roots verify the sidecar's certificate; ServerID, when set, is the
	// SPIFFE ID it must carry (Istio checks the SAN, not a host name).
	Roots    *x509.CertPool
	ServerID string
	// SNI is the TLS server name sent.
	SNI string
	// LocalIP is the source address ("" lets the OS pick): clients without
	// an identity are told apart by address.
	LocalIP string
	// Header is sent with every request (the forger's XFCC, say).
	Header http.Header
}

// Client sends requests to the sidecar, a new connection each time, so
// that every request goes through the listener's chain selection.
type Client struct {
	cfg ClientConfig
	rt  *http.Transport
}

// HandshakeError is a TLS handshake that failed: curl's exit code 35.
type HandshakeError struct{ Err error }

func (e *HandshakeError) Error() string { return "TLS handshake failed: " + e.Err.Error() }

func (e *HandshakeError) Unwrap() error { return e.Err }

// NewClient returns a client; TLS transports need an Identity and Roots.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Target == "" || cfg.Host == "" {
		return nil, errors.New("meshsim: a client needs a Target and a Host")
	}
	if cfg.Transport != Plaintext && (cfg.Identity == nil || cfg.Roots == nil) {
		return nil, fmt.Errorf("meshsim: client %s: a TLS client needs an Identity and Roots", cfg.Name)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if cfg.LocalIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.LocalIP)}
	}
	c := &Client{cfg: cfg}
	c.rt = &http.Transport{
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: 10 * time.Second,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, cfg.Target)
		},
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			raw, err := d.DialContext(ctx, network, cfg.Target)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, c.tlsConfig())
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, &HandshakeError{Err: err}
			}
			return tc, nil
		},
	}
	return c, nil
}

// Name is the client's name.
func (c *Client) Name() string { return c.cfg.Name }

// Transport is how the client connects.
func (c *Client) Transport() Transport { return c.cfg.Transport }

// Identity is the client's SVID (nil for a plaintext client).
func (c *Client) Identity() *svid.SVID { return c.cfg.Identity }

// LocalIP is the client's source address ("" when the OS picks).
func (c *Client) LocalIP() string { return c.cfg.LocalIP }

func (c *Client) tlsConfig() *tls.Config {
	alpn := []string{"istio-http/1.1", "istio"}
	if c.cfg.Transport == TLSWithoutIstioALPN {
		alpn = []string{"h2", "http/1.1"}
	}
	roots, want := c.cfg.Roots, c.cfg.ServerID
	return &tls.Config{
		Certificates: []tls.Certificate{c.cfg.Identity.TLS},
		NextProtos:   alpn,
		ServerName:   c.cfg.SNI,
		MinVersion:   tls.VersionTLS12,
		// Verified below, by the chain and the SPIFFE ID rather than by a
		// host name, as Istio does.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("meshsim: the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if want != "" && !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == want }) {
				return fmt.Errorf("meshsim: the server is not %s", want)
			}
			return nil
		},
	}
}

// Response is what came back.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// RequestID is the x-request-id the client sent ("" when it sent none
	// and the sidecar made one up).
	RequestID string
}

// Headers decodes an httpbin /headers answer: the headers the app got.
func (r *Response) Headers() (map[string]string, error) {
	var v struct {
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		return nil, fmt.Errorf("meshsim: not an httpbin /headers answer (HTTP %d %q): %w", r.Status, r.Body, err)
	}
	return v.Headers, nil
}

// Get sends GET path (with its query).
func (c *Client) Get(ctx context.Context, path string) (*Response, error) {
	return c.Do(ctx, http.MethodGet, path, nil, nil)
}

// Do sends one request with the client's headers plus header.
func (c *Client) Do(ctx context.Context, method, path string, header http.Header, body io.Reader) (*Response, error) {
	scheme := "https"
	if c.cfg.Transport == Plaintext {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+c.cfg.Host+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "curl/8.5.0")
	req.Header.Set("Accept", "*/*")
	for k, vs := range c.cfg.Header {
		req.Header[k] = vs
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if c.cfg.Transport == IstioMTLS {
		// What sleep's own sidecar adds on the way out.
		if req.Header.Get(headerRequestID) == "" {
			req.Header.Set(headerRequestID, newUUID())
		}
		req.Header.Set(headerProto, "http")
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", c.cfg.Name, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: reading the answer: %w", c.cfg.Name, method, path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b, RequestID: req.Header.Get(headerRequestID)}, nil
}

// Close drops the client's idle connections (there are none: each request
// has its own).
func (c *Client) Close() { c.rt.CloseIdleConnections() }
