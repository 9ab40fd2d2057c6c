package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/meshproof/meshproof/internal/tlsfiles"
)

const testToken = "0123456789abcdef0123456789abcdef"

// The README's story ("Run with Istio"): httpbin in namespace mtls-pg, in
// PERMISSIVE mode, called by sleep over mTLS and by a client without a
// sidecar in plaintext.
const (
	httpbin   = "httpbin.mtls-pg:8000"
	httpbinID = "spiffe://cluster.local/ns/mtls-pg/sa/httpbin"
	sleepID   = "spiffe://cluster.local/ns/mtls-pg/sa/sleep"
	legacyIP  = "10.42.0.99"
)

// testAPI is the real evidence API over a real SQLite store, on loopback.
type testAPI struct {
	url       string
	store     *sqlite.Store
	tokenFile string
	head      evidence.Link
	mu        sync.Mutex
}

// newTestAPI serves the API with a bearer token; cfg adds to it.
func newTestAPI(t *testing.T, cfg api.Config) *testAPI {
	t.Helper()
	a := openTestStore(t)
	cfg.Tokens = append(cfg.Tokens, testToken)
	srv, err := api.New(a.store, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	a.url = ts.URL
	return a
}

func openTestStore(t *testing.T) *testAPI {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testAPI{store: s, tokenFile: writeFile(t, "token", "# for the tests\n"+testToken+"\n")}
}

// add chains recs onto the store's one chain and appends them.
func (a *testAPI) add(t *testing.T, recs ...*evidence.Record) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.head = evidencetest.Link(a.head, recs...)
	if err := a.store.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

// args are the flags that reach a, then more.
func (a *testAPI) args(more ...string) []string {
	return append([]string{"--server", a.url, "--token-file", a.tokenFile}, more...)
}

var idSeq struct {
	sync.Mutex
	n int
}

// newID is a ULID-shaped id, unique in the test binary.
func newID() string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("01TEST%020d", idSeq.n)
}

// rec is a record of a request from src to host at t, built on
// evidencetest.Full (every field set) with the story's values.
func rec(t time.Time, src evidence.Peer, host, dstPrincipal string, v evidence.Verdict) *evidence.Record {
	r := evidencetest.Full(newID(), "cli-test", t.UTC())
	r.Source = src
	r.Destination = evidence.Peer{Address: "10.42.0.5", Port: 8000}
	if ns, sa, ok := strings.Cut(strings.TrimPrefix(dstPrincipal, "spiffe://cluster.local/ns/"), "/sa/"); ok {
		r.Destination = spiffePeer("10.42.0.5", 8000, ns, sa)
	}
	r.Request = evidence.Request{Method: "GET", Host: host, Path: "/headers", Protocol: "HTTP/1.1"}
	r.Verdict, r.Reasons = v, []string{string(v)}
	r.Decision = evidence.Decision{Allowed: true, DecisionID: "dec-" + r.ID, PolicyRevision: "rev-1"}
	r.XFCC = nil
	if v == evidence.Plaintext {
		r.TLS = evidence.TLS{}
	}
	return r
}

var (
	sleep  = spiffePeer("10.42.0.7", 40000, "mtls-pg", "sleep")
	legacy = evidence.Peer{Address: legacyIP, Port: 51000}
)

// spiffePeer is a peer with an Istio SPIFFE ID in cluster.local.
func spiffePeer(addr string, port uint32, ns, sa string) evidence.Peer {
	path := "/ns/" + ns + "/sa/" + sa
	id := "spiffe://cluster.local" + path
	return evidence.Peer{Address: addr, Port: port, Principal: id,
		SPIFFE: &evidence.SPIFFEID{ID: id, TrustDomain: "cluster.local", Path: path, Namespace: ns, ServiceAccount: sa}}
}

// cli runs the binary's entry point with args.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// syncBuffer is an output a test reads while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConnectionErrors(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	a.add(t, rec(time.Now().Add(-time.Minute), sleep, httpbin, httpbinID, evidence.MTLS))
	down := httptest.NewServer(nil)
	down.Close()
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no token", []string{"query", "--server", a.url}, 1,
			[]string{"refused the credentials", "authentication required", "pass --token-file", "--api-token-file"}},
		{"wrong token", []string{"query", "--server", a.url, "--token-file", writeFile(t, "wrong", "not-the-token-at-all-0000\n")}, 1,
			[]string{"the bearer token is not accepted", "the token in ", "must be one of those in meshproof serve's --api-token-file"}},
		{"report with wrong token", []string{"report", "tls-check", "--server", a.url, "--token-file", writeFile(t, "wrong", "not-the-token-at-all-0000\n")}, 1,
			[]string{"the bearer token is not accepted"}},
		{"unreachable", append([]string{"query"}, "--server", down.URL), 1,
			[]string{"cannot reach " + down.URL, "connection refused", "--server must match its --http-addr"}},
		{"unreachable report", []string{"report", "strict-readiness", "--destination", httpbin, "--server", down.URL}, 1,
			[]string{"cannot reach " + down.URL, "--http-addr"}},
		{"https to an http server", []string{"query", "--server", strings.Replace(a.url, "http:", "https:", 1)}, 1,
			[]string{"speaks plain HTTP: use an http:// URL"}},
		{"server refuses a parameter", append([]string{"query"}, a.args("--cursor", "bogus")...), 2,
			[]string{"--cursor: not a cursor this server gave out: start again without it (the server refused parameter cursor)"}},
		// The filter is checked here first, by the API's own table.
		{"filter checked before asking", append([]string{"query"}, a.args("--since", "1h", "--until", "2h")...), 2,
			[]string{"--until: must be after since"}},
		{"report parameter", append([]string{"report", "tls-check"}, a.args("--since", "yesterday")...), 2,
			[]string{"--since: ", "neither an RFC 3339 time", "(the server refused parameter since)"}},
		{"missing token file", []string{"query", "--token-file", filepath.Join(t.TempDir(), "none")}, 2,
			[]string{"token file: open "}},
		{"bad server URL", []string{"query", "--server", "127.0.0.1:8181"}, 2,
			[]string{`server URL "127.0.0.1:8181": want http://host:port`}},
		{"key without cert", []string{"query", "--server", "https://127.0.0.1:1", "--key", "k.pem"}, 2,
			[]string{"a client certificate and its key go together"}},
		{"CA file on http", []string{"query", "--ca-file", "ca.pem"}, 2,
			[]string{"needs an https:// URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, testToken) {
				t.Errorf("stderr shows the token: %s", stderr)
			}
		})
	}
}

// TestMutualTLSToTheAPI reaches an API that requires a client certificate
// with an allowed SPIFFE ID, and says what is missing when it is.
func TestMutualTLSToTheAPI(t *testing.T) {
	ca := authztest.NewCA(t, "cluster.local")
	serverCert, serverKey, caFile := ca.Issue(t, "spiffe://cluster.local/ns/meshproof/sa/meshproof", "localhost").WriteFiles(t, t.TempDir(), ca)
	cert, key, _ := ca.Issue(t, "spiffe://cluster.local/ns/ops/sa/auditor").WriteFiles(t, t.TempDir(), ca)
	other, otherKey, _ := ca.Issue(t, "spiffe://cluster.local/ns/shop/sa/frontend").WriteFiles(t, t.TempDir(), ca)
	stranger := authztest.NewCA(t, "cluster.local")
	strangerCert, strangerKey, _ := stranger.Issue(t, "spiffe://cluster.local/ns/ops/sa/auditor").WriteFiles(t, t.TempDir(), stranger)

	a := openTestStore(t)
	a.add(t, rec(time.Now().Add(-time.Minute), sleep, httpbin, httpbinID, evidence.MTLS))
	srv, err := api.New(a.store, api.Config{AllowSPIFFE: []string{"spiffe://cluster.local/ns/ops"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
	if ts.TLS, err = tlsfiles.ServerConfig(serverCert, serverKey, caFile, "h2", "http/1.1"); err != nil {
		t.Fatal(err)
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	_, port, err := net.SplitHostPort(ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := "https://localhost:" + port // the name the server certificate has

	tests := []struct {
		name string
		args []string
		code int
		want string // in stdout when code is 0, else in stderr
	}{
		{"allowed client certificate", []string{"--ca-file", caFile, "--cert", cert, "--key", key}, 0, sleepID},
		{"no client certificate", []string{"--ca-file", caFile}, 1, "pass --cert and --key"},
		{"SPIFFE ID not allowed", []string{"--ca-file", caFile, "--cert", other, "--key", otherKey}, 1,
			`SPIFFE ID "spiffe://cluster.local/ns/shop/sa/frontend" is not allowed`},
		{"certificate of another CA", []string{"--ca-file", caFile, "--cert", strangerCert, "--key", strangerKey}, 1,
			"must be signed by serve's --http-client-ca"},
		{"server CA unknown", []string{"--cert", cert, "--key", key}, 1, "pass --ca-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, append([]string{"query", "--server", server}, tt.args...)...)
			out := stderr
			if tt.code == 0 {
				out = stdout
			}
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d and %q\nstdout: %s\nstderr: %s", code, tt.code, tt.want, stdout, stderr)
			}
		})
	}
}

// TestHelpDocumentsEveryFlag: every flag of every command has a
// description in its --help, which goes to standard output (exit 0).
func TestHelpDocumentsEveryFlag(t *testing.T) {
	root := newRootCommand(io.Discard, io.Discard)
	for _, c := range allCommands(root) {
		if !c.Runnable() || c.Name() == "help" {
			continue
		}
		path := strings.Fields(c.CommandPath())[1:]
		code, stdout, stderr := cli(t, append(path, "--help")...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") {
			t.Errorf("%q --help: exit %d, stderr %q:\n%s", path, code, stderr, stdout)
			continue
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if len(f.Usage) < 10 || !strings.Contains(stdout, "--"+f.Name) {
				t.Errorf("%s --help does not document --%s:\n%s", c.CommandPath(), f.Name, stdout)
			}
		})
	}
	for _, args := range [][]string{{"query", "--help"}, {"report", "--help"}} {
		if code, _, _ := cli(t, args...); code != 0 {
			t.Errorf("%q: exit %d, want 0", args, code)
		}
	}
}
