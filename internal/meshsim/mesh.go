package meshsim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/meshproof/meshproof/internal/svid"
)

// Mesh is namespace mtls-pg: httpbin behind its sidecar, and the clients of
// the story.
type Mesh struct {
	CA      *svid.CA
	App     *App
	Sidecar *Sidecar
	// Sleep is a meshed workload: mTLS with Istio's ALPN, as SleepID.
	Sleep *Client
	// Legacy is a workload outside the mesh: plaintext, no identity.
	Legacy *Client
	// Curl is curl with a client certificate (CurlID) but no Istio ALPN.
	Curl *Client
	// Forger sends, over plaintext, an XFCC header claiming ForgedID.
	Forger *Client
}

// ForgedXFCC is the header the forger sends: an element that looks like
// one httpbin's sidecar would append for ForgedID.
var ForgedXFCC = func() string {
	sum := sha256.Sum256([]byte("not a certificate"))
	return "By=" + ServerID + ";Hash=" + hex.EncodeToString(sum[:]) + `;Subject="";URI=` + ForgedID
}()

// Start runs the mesh until Close or until ctx is done. cfg is the
// sidecar's configuration (DefaultConfig plus AuthzAddr, typically);
// Identity, Roots and Upstream are filled in when empty.
func Start(ctx context.Context, cfg Config) (m *Mesh, err error) {
	ca, err := svid.NewCertAuthority(TrustDomain)
	if err != nil {
		return nil, err
	}
	m = &Mesh{CA: ca}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	if m.App, err = StartApp(ctx, ""); err != nil {
		return nil, err
	}
	if cfg.Identity == nil {
		if cfg.Identity, err = ca.NewSVID(ServerID); err != nil {
			return nil, err
		}
	}
	if cfg.Roots == nil {
		cfg.Roots = ca.Pool()
	}
	if cfg.Upstream == "" {
		cfg.Upstream = m.App.Addr()
	}
	if m.Sidecar, err = StartSidecar(ctx, cfg); err != nil {
		return nil, err
	}
	clients := []struct {
		c   **Client
		cfg ClientConfig
	}{
		{&m.Sleep, ClientConfig{Name: "sleep", Transport: IstioMTLS, ID: SleepID, LocalIP: LoopbackIP(11)}},
		{&m.Legacy, ClientConfig{Name: "legacy", Transport: Plaintext, LocalIP: LoopbackIP(12)}},
		{&m.Curl, ClientConfig{Name: "curl", Transport: TLSWithoutIstioALPN, ID: CurlID, LocalIP: LoopbackIP(13)}},
		{&m.Forger, ClientConfig{Name: "forger", Transport: Plaintext, LocalIP: LoopbackIP(66),
			Header: http.Header{"X-Forwarded-Client-Cert": {ForgedXFCC}}}},
	}
	for _, c := range clients {
		if *c.c, err = m.NewClient(c.cfg); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// NewClient returns a client of httpbin through its sidecar: Target, Host,
// Roots, ServerID and SNI default to the mesh's, and an Identity is issued
// for cfg.ID when there is none.
func (m *Mesh) NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Target == "" {
		cfg.Target = m.Sidecar.Addr()
	}
	if cfg.Host == "" {
		cfg.Host = Host
	}
	if cfg.Roots == nil {
		cfg.Roots = m.CA.Pool()
	}
	if cfg.Transport == IstioMTLS && cfg.ServerID == "" {
		cfg.ServerID = ServerID
	}
	if cfg.SNI == "" {
		cfg.SNI = sni(cfg.Transport)
	}
	if cfg.Identity == nil && cfg.ID != "" {
		id, err := m.CA.NewSVID(cfg.ID)
		if err != nil {
			return nil, err
		}
		cfg.Identity = id
	}
	return NewClient(cfg)
}

// sni is what each kind of client sends: an Istio sidecar names the
// cluster it is calling, curl the host.
func sni(t Transport) string {
	if t == IstioMTLS {
		return "outbound_.8000_._.httpbin.mtls-pg.svc.cluster.local"
	}
	return "httpbin.mtls-pg"
}

// Close stops the sidecar and the app and waits for their goroutines.
func (m *Mesh) Close() error {
	var errs []error
	for _, c := range []*Client{m.Sleep, m.Legacy, m.Curl, m.Forger} {
		if c != nil {
			c.Close()
		}
	}
	if m.Sidecar != nil {
		errs = append(errs, m.Sidecar.Close())
	}
	if m.App != nil {
		errs = append(errs, m.App.Close())
	}
	return errors.Join(errs...)
}

// LoopbackIP is 127.0.0.n when this host can bind it (Linux routes all of
// 127.0.0.0/8 to the loopback interface), else 127.0.0.1.
func LoopbackIP(n byte) string {
	ip := fmt.Sprintf("127.0.0.%d", n)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "127.0.0.1"
	}
	ln.Close()
	return ip
}
