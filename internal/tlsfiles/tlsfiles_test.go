package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproof/meshproof/authz/authztest"
)

const serverName = "meshproof.local"

// pki is a CA, a server certificate for serverName and a client
// certificate, all from that CA, with the server's files on disk.
type pki struct {
	ca                        *authztest.CA
	server, client            *authztest.SVID
	certFile, keyFile, caFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: authztest.NewCA(t, "cluster.local")}
	p.server = p.ca.Issue(t, "spiffe://cluster.local/ns/mesh/sa/meshproof", serverName)
	p.client = p.ca.Issue(t, "spiffe://cluster.local/ns/mesh/sa/envoy")
	p.certFile, p.keyFile, p.caFile = p.server.WriteFiles(t, t.TempDir(), p.ca)
	return p
}

// serve runs a TLS server with cfg on loopback; each connection that
// completes its handshake is answered "ok".
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // a failed deadline fails the client
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte("ok")) //nolint:errcheck // the client reports it
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

// dial connects with an optional client certificate and returns the
// server's answer ("ok" when the server accepted the handshake) and the
// connection state.
func dial(t *testing.T, addr string, roots *x509.CertPool, client *authztest.SVID) (string, tls.ConnectionState, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{client.TLS}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck // the read fails then
	// With TLS 1.3 the server rejects a client certificate after the
	// client's handshake is done: the rejection arrives on the first read.
	b, err := io.ReadAll(c)
	return string(b), c.ConnectionState(), err
}

func TestServerConfigClientAuth(t *testing.T) {
	p := newPKI(t)
	other := authztest.NewCA(t, "cluster.local")
	stranger := other.Issue(t, "spiffe://cluster.local/ns/mesh/sa/envoy")
	tests := []struct {
		name   string
		caFile bool
		client *authztest.SVID
		ok     bool
	}{
		{name: "mTLS: client certificate from the CA", caFile: true, client: p.client, ok: true},
		{name: "mTLS: no client certificate", caFile: true, client: nil, ok: false},
		{name: "mTLS: client certificate from another CA", caFile: true, client: stranger, ok: false},
		{name: "TLS: no client certificate needed", caFile: false, client: nil, ok: true},
		{name: "TLS: a client certificate is not checked", caFile: false, client: stranger, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caFile := ""
			if tt.caFile {
				caFile = p.caFile
			}
			cfg, err := ServerConfig(p.certFile, p.keyFile, caFile, "h2")
			if err != nil {
				t.Fatal(err)
			}
			answer, state, err := dial(t, serve(t, cfg), p.ca.Pool(), tt.client)
			if got := err == nil && answer == "ok"; got != tt.ok {
				t.Fatalf("connection accepted: %v (answer %q, err %v), want %v", got, answer, err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if state.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN %q, want h2", state.NegotiatedProtocol)
			}
			if len(state.PeerCertificates) == 0 || !state.PeerCertificates[0].Equal(p.server.Cert) {
				t.Error("the server did not present its certificate")
			}
		})
	}
}

func TestServerConfigErrors(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	otherKey := write("other-key.pem", string(p.client.KeyPEM))
	notPEM := write("not.pem", "hello")
	tests := []struct {
		name                      string
		certFile, keyFile, caFile string
		wantErr                   string
	}{
		{"missing certificate", filepath.Join(dir, "none.pem"), p.keyFile, "", "none.pem"},
		{"key of another certificate", p.certFile, otherKey, "", "private key does not match"},
		{"missing CA file", p.certFile, p.keyFile, filepath.Join(dir, "no-ca.pem"), "client CA"},
		{"CA file without a certificate", p.certFile, p.keyFile, notPEM, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ServerConfig(tt.certFile, tt.keyFile, tt.caFile, "h2")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ServerConfig error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// rotate writes new PEM to path and moves its mtime on, as a rotation that
// lands within the file system's timestamp granularity still must be seen.
func rotate(t *testing.T, path string, pem []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// TestReloader drives the reloader directly, moving its last check back
// past recheck instead of waiting.
func TestReloader(t *testing.T) {
	p := newPKI(t)
	next := p.ca.Issue(t, "spiffe://cluster.local/ns/mesh/sa/meshproof", serverName)
	third := p.ca.Issue(t, "spiffe://cluster.local/ns/mesh/sa/meshproof", serverName)
	otherCA := authztest.NewCA(t, "other.example")
	r := &reloader{certFile: p.certFile, keyFile: p.keyFile, caFile: p.caFile}
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	serving := func(want *authztest.SVID, pool *x509.CertPool, expire bool) {
		t.Helper()
		if expire {
			r.mu.Lock()
			r.checked = time.Now().Add(-recheck - time.Second)
			r.mu.Unlock()
		}
		cert, gotPool, err := r.current()
		if err != nil {
			t.Fatal(err)
		}
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err != nil || !leaf.Equal(want.Cert) {
			t.Errorf("serving serial %v, want %v", leaf.SerialNumber, want.Cert.SerialNumber)
		}
		if !gotPool.Equal(pool) {
			t.Error("client CA pool is not the expected one")
		}
	}
	serving(p.server, p.ca.Pool(), false)
	later := time.Now().Add(time.Minute)

	// Rotated files are not looked at before recheck has passed.
	rotate(t, p.certFile, next.CertPEM, later)
	rotate(t, p.keyFile, next.KeyPEM, later)
	serving(p.server, p.ca.Pool(), false)
	// Then they are.
	serving(next, p.ca.Pool(), true)

	// A broken certificate keeps the previous pair.
	rotate(t, p.certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), later.Add(time.Minute))
	serving(next, p.ca.Pool(), true)
	// Half a rotation (certificate written, key not yet) keeps it too...
	rotate(t, p.certFile, third.CertPEM, later.Add(2*time.Minute))
	serving(next, p.ca.Pool(), true)
	// ...until the key follows.
	rotate(t, p.keyFile, third.KeyPEM, later.Add(2*time.Minute))
	serving(third, p.ca.Pool(), true)

	// A new client CA is picked up; a broken one keeps the previous.
	rotate(t, p.caFile, otherCA.PEM, later.Add(3*time.Minute))
	serving(third, otherCA.Pool(), true)
	rotate(t, p.caFile, []byte("not PEM"), later.Add(4*time.Minute))
	serving(third, otherCA.Pool(), true)
}

// TestServerConfigRotation is the same over a real TLS listener, waiting
// the real recheck interval once.
func TestServerConfigRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("waits the recheck interval")
	}
	t.Parallel()
	p := newPKI(t)
	cfg, err := ServerConfig(p.certFile, p.keyFile, p.caFile, "h2")
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	loaded := time.Now()
	presented := func() *x509.Certificate {
		t.Helper()
		answer, state, err := dial(t, addr, p.ca.Pool(), p.client)
		if err != nil || answer != "ok" || len(state.PeerCertificates) == 0 {
			t.Fatalf("connection refused: %q %v", answer, err)
		}
		return state.PeerCertificates[0]
	}
	if !presented().Equal(p.server.Cert) {
		t.Fatal("not serving the first certificate")
	}
	next := p.ca.Issue(t, "spiffe://cluster.local/ns/mesh/sa/meshproof", serverName)
	later := time.Now().Add(time.Minute)
	rotate(t, p.certFile, next.CertPEM, later)
	rotate(t, p.keyFile, next.KeyPEM, later)
	time.Sleep(time.Until(loaded.Add(recheck + 100*time.Millisecond)))
	if got := presented(); !got.Equal(next.Cert) {
		t.Errorf("after rotation serving serial %v, want %v", got.SerialNumber, next.Cert.SerialNumber)
	}
}
