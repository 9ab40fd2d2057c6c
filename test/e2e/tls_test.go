package e2e

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshproof/meshproof/authz/authztest"
)

const gatewaySA = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"

// svidFiles are an SVID's PEM files and the CA that signed it.
type svidFiles struct{ cert, key, ca string }

func writeSVID(t testing.TB, s *authztest.SVID, ca *authztest.CA, name string) svidFiles {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c, k, a := s.WriteFiles(t, dir, ca)
	return svidFiles{cert: c, key: k, ca: a}
}

// TestMTLSListener: with --grpc-client-ca only callers holding a certificate
// that CA signed get to ask for a decision.
func TestMTLSListener(t *testing.T) {
	t.Parallel()
	ca := authztest.NewCA(t, "meshproof.test")
	serverSVID := ca.Issue(t, "spiffe://meshproof.test/meshproof", "localhost")
	clientSVID := ca.Issue(t, gatewaySA)
	rogueCA := authztest.NewCA(t, "meshproof.test") // same name, different key
	rogueSVID := rogueCA.Issue(t, gatewaySA)

	srv := writeSVID(t, serverSVID, ca, "server")
	cli := writeSVID(t, clientSVID, ca, "client")
	rogue := writeSVID(t, rogueSVID, rogueCA, "rogue")

	s := benchServe(t, "--grpc-tls-cert", srv.cert, "--grpc-tls-key", srv.key, "--grpc-client-ca", srv.ca)
	if l := s.findLog("meshproof serving"); l["grpc_tls"] != true || l["grpc_mtls"] != true {
		t.Errorf("serving log line: grpc_tls=%v grpc_mtls=%v, want both true", l["grpc_tls"], l["grpc_mtls"])
	}
	request, err := os.ReadFile(benchFile("request.json"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("grpcurl", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name    string
			args    []string
			wantErr string // "" = the Check succeeds
		}{{
			name: "client certificate from the trusted CA",
			args: []string{"-cacert", cli.ca, "-cert", cli.cert, "-key", cli.key, "-servername", "localhost"},
		}, {
			name:    "no client certificate",
			args:    []string{"-cacert", cli.ca, "-servername", "localhost"},
			wantErr: "Failed to dial target host", // grpcurl does not show the TLS alert
		}, {
			name:    "client certificate from another CA",
			args:    []string{"-cacert", cli.ca, "-cert", rogue.cert, "-key", rogue.key, "-servername", "localhost"},
			wantErr: "Failed to dial target host",
		}, {
			name:    "server name not in the server certificate",
			args:    []string{"-cacert", cli.ca, "-cert", cli.cert, "-key", cli.key, "-servername", "meshproof.example"},
			wantErr: "meshproof.example",
		}, {
			name:    "plaintext",
			args:    []string{"-plaintext"},
			wantErr: "Failed to dial target host", // the TLS listener hangs up on HTTP/2 cleartext
		}}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				args := append([]string{}, tt.args...)
				if tt.wantErr != "" {
					// grpcurl retries the handshake until its connect timeout.
					args = append(args, "-connect-timeout", "2")
				}
				args = append(args, "-d", "@", s.GRPCAddr, checkRPC)
				res := grpcurl(t, strings.NewReader(string(request)), args...)
				if tt.wantErr == "" {
					if res.code != 0 {
						t.Fatalf("want success, got %s", res)
					}
					resp := inspect(t, parseCheckResponse(t, res.stdout))
					if !allowed(resp.CheckResponse) || resp.Verdict != "mtls" {
						t.Errorf("allowed=%v verdict=%q, want allowed mtls", allowed(resp.CheckResponse), resp.Verdict)
					}
					return
				}
				if res.code == 0 {
					t.Fatalf("want failure, got %s", res)
				}
				if !strings.Contains(res.stderr, tt.wantErr) {
					t.Errorf("stderr lacks %q: %s", tt.wantErr, res)
				}
			})
		}
	})

	t.Run("go client", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name  string
			certs []tls.Certificate
			ok    bool
		}{
			{"trusted client certificate", []tls.Certificate{clientSVID.TLS}, true},
			{"no client certificate", nil, false},
			{"client certificate from another CA", []tls.Certificate{rogueSVID.TLS}, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				creds := credentials.NewTLS(&tls.Config{
					Certificates: tt.certs,
					RootCAs:      ca.Pool(),
					ServerName:   "localhost",
					MinVersion:   tls.VersionTLS12,
				})
				conn := dial(t, s.GRPCAddr, creds)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, benchRequest(t))
				if !tt.ok {
					// Under TLS 1.3 the client learns of the server's alert
					// (certificate required, unknown certificate authority)
					// on its first read, or as a broken pipe on a write.
					if status.Code(err) != codes.Unavailable {
						t.Fatalf("Check: %v (%v), want Unavailable", err, resp)
					}
					return
				}
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if c := inspect(t, resp); !allowed(resp) || c.Verdict != "mtls" {
					t.Errorf("allowed=%v verdict=%q, want allowed mtls", allowed(resp), c.Verdict)
				}
			})
		}
	})
}

// TestTLSRotation: the certificate, key and client CA files are re-read when
// they change (SPIRE and cert-manager rotate them), without a restart.
func TestTLSRotation(t *testing.T) {
	t.Parallel()
	oldCA := authztest.NewCA(t, "meshproof.test")
	oldServer := writeSVID(t, oldCA.Issue(t, "spiffe://meshproof.test/meshproof", "localhost"), oldCA, "server")
	oldClient := oldCA.Issue(t, gatewaySA)
	s := benchServe(t, "--grpc-tls-cert", oldServer.cert, "--grpc-tls-key", oldServer.key, "--grpc-client-ca", oldServer.ca)

	creds := func(ca *authztest.CA, client *authztest.SVID) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{client.TLS}, RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	}
	checkWith := func(c credentials.TransportCredentials) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := authv3.NewAuthorizationClient(dial(t, s.GRPCAddr, c)).Check(ctx, benchRequest(t))
		return err
	}
	if err := checkWith(creds(oldCA, oldClient)); err != nil {
		t.Fatalf("Check before rotation: %v", err)
	}

	// Rotate everything to a new CA, in place, as a secret volume update.
	newCA := authztest.NewCA(t, "meshproof.test")
	newServerSVID := newCA.Issue(t, "spiffe://meshproof.test/meshproof-rotated", "localhost")
	newClient := newCA.Issue(t, gatewaySA)
	for path, pem := range map[string][]byte{oldServer.key: newServerSVID.KeyPEM, oldServer.cert: newServerSVID.CertPEM, oldServer.ca: newCA.PEM} {
		writeAtomic(t, path, string(pem))
	}

	// The files are looked at no more often than every 5 s.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := checkWith(creds(newCA, newClient))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Check with the rotated CA still fails 15 s after rotation: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := checkWith(creds(newCA, oldClient)); status.Code(err) != codes.Unavailable {
		t.Errorf("a client certificate of the replaced CA: %v, want Unavailable", err)
	}
}
