package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshproof/meshproof/authz/authztest"
)

// waitArrived waits for a Check to be held in blockingPolicy's policy.
func waitArrived(t *testing.T, arrived <-chan struct{}) {
	t.Helper()
	select {
	case <-arrived:
	case <-time.After(time.Minute):
		t.Fatal("no Check reached the policy's http.send within a minute")
	}
}

// blockingPolicy writes a policy whose evaluation waits, in http.send to a
// loopback server, until the test releases it: a Check is in flight for as
// long as the test needs, however busy the machine (a policy that merely
// took a second idle took over 10 s while the suite ran on 2 cores beside
// other work). arrived is closed when the first evaluation is waiting.
func blockingPolicy(t *testing.T) (path string, arrived <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var once, freed sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(in) })
		select {
		case <-out:
		case <-r.Context().Done():
		}
	}))
	release = func() { freed.Do(func() { close(out) }) }
	t.Cleanup(func() { release(); srv.Close() })
	path = filepath.Join(t.TempDir(), "blocking.rego")
	policy := fmt.Sprintf(`package envoy.authz

default allow := false

allow if http.send({"method": "GET", "url": %q, "timeout": "60s"}).status_code == 200
`, srv.URL)
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, in, release
}

// TestGracefulStop: on SIGTERM the listener closes at once, a Check already
// running finishes with its answer, and the process exits 0.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	policy, arrived, release := blockingPolicy(t)
	s := startServe(t, "--policy", policy)
	conn := dial(t, s.GRPCAddr, nil)

	type answer struct {
		resp *authv3.CheckResponse
		err  error
		at   time.Time
	}
	done := make(chan answer, 1)
	req := benchRequest(t)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
		done <- answer{resp, err, time.Now()}
	}()
	waitArrived(t, arrived) // the Check is in flight, held in the policy
	termAt := time.Now()
	s.signal(syscall.SIGTERM)

	// While the Check drains, the listener no longer accepts connections.
	refused := false
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		c, err := net.DialTimeout("tcp", s.GRPCAddr, time.Second)
		if err != nil {
			refused = true
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if len(done) > 0 {
		t.Fatal("the Check returned while the policy still held it")
	}
	release()

	var a answer
	select {
	case a = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the in-flight Check did not return within 15 s of SIGTERM")
	}
	if a.err != nil {
		t.Fatalf("in-flight Check failed after SIGTERM: %v", a.err)
	}
	if !allowed(a.resp) {
		t.Errorf("in-flight Check was denied: %v", a.resp)
	}
	inspect(t, a.resp)
	if !a.at.After(termAt) {
		t.Fatalf("the Check returned before SIGTERM was sent (%v early): the policy is too fast to test draining", termAt.Sub(a.at))
	}
	if !refused {
		t.Errorf("new connections were still accepted while the in-flight Check drained")
	}
	if code := s.wait(stopTimeout); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	for _, msg := range []string{"stopping: in-flight Checks finish first", "stopped"} {
		if s.findLog(msg) == nil {
			t.Errorf("no %q log line", msg)
		}
	}
	for _, addr := range []string{s.GRPCAddr, s.HTTPAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after exit", addr)
		}
	}
}

// TestShutdownGraceExceeded: a Check still running when --shutdown-grace
// runs out is cut off, and the process still exits 0.
func TestShutdownGraceExceeded(t *testing.T) {
	t.Parallel()
	policy, arrived, _ := blockingPolicy(t)
	s := startServe(t, "--policy", policy, "--shutdown-grace", "100ms")
	conn := dial(t, s.GRPCAddr, nil)
	done := make(chan error, 1)
	req := benchRequest(t)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
		done <- err
	}()
	waitArrived(t, arrived) // held in the policy until after the grace period
	s.signal(syscall.SIGTERM)
	if code := s.wait(stopTimeout); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	select {
	case err := <-done:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("Check cut off by the end of the grace period: %v, want Unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Check did not return after the server exited")
	}
	if s.findLog("stopped") == nil {
		t.Error(`no "stopped" log line`)
	}
}

// TestNoPolicy: without --policy, serve runs the built-in observe policy,
// says so, and allows everything (recording the verdict).
func TestNoPolicy(t *testing.T) {
	t.Parallel()
	s := startServe(t)
	l := s.findLog("no --policy given")
	if l == nil || !strings.Contains(l["message"].(string), "built-in observe policy") {
		t.Errorf("no log line saying the built-in observe policy runs; got %v", l)
	}
	conn := dial(t, s.GRPCAddr, nil)
	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		verdict string
	}{
		{"bench mTLS request", benchRequest(t), "mtls"},
		{"plaintext request", authztest.NewRequest(authztest.Path("/admin")), "plaintext"},
		{"XFCC without a client certificate", authztest.NewRequest(authztest.Header("x-forwarded-client-cert", "URI=spiffe://cluster.local/ns/a/sa/b")), "xfcc_unverified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := inspect(t, check(t, conn, tt.req))
			if !allowed(resp.CheckResponse) {
				t.Errorf("observe denied: %v", resp.CheckResponse)
			}
			if resp.Verdict != tt.verdict {
				t.Errorf("verdict %q, want %q", resp.Verdict, tt.verdict)
			}
		})
	}
}

// TestUnixSocket: the gRPC listener on a unix socket, and a socket file left
// behind by a killed process does not stop the next one from starting.
func TestUnixSocket(t *testing.T) {
	t.Parallel()
	// Socket paths are limited to ~108 bytes: t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "mp.sock")
	request, err := os.ReadFile(benchFile("request.json"))
	if err != nil {
		t.Fatal(err)
	}
	// grpcurl v1.9.2 and v1.9.3 (pinned) dial a bare -unix path as TCP
	// ("missing port in address": fullstorydev/grpcurl#496, #546; fixed by
	// #498, unreleased); given as a unix:// URI it works.
	target := "unix://" + sock
	checkOverSocket := func(t *testing.T) {
		t.Helper()
		res := grpcurl(t, strings.NewReader(string(request)), "-unix", "-plaintext", "-d", "@", target, checkRPC)
		if res.code != 0 {
			t.Fatalf("grpcurl -unix: %s", res)
		}
		if resp := inspect(t, parseCheckResponse(t, res.stdout)); !allowed(resp.CheckResponse) {
			t.Errorf("denied over the socket: %s", res.stdout)
		}
	}

	first := benchServe(t, "--grpc-addr", target)
	if first.GRPCAddr != sock {
		t.Errorf("serving log grpc_addr = %q, want %q", first.GRPCAddr, sock)
	}
	checkOverSocket(t)
	if r := grpcurl(t, nil, "-unix", "-plaintext", target, "list"); !strings.Contains(r.stdout, "envoy.service.auth.v3.Authorization") {
		t.Errorf("grpcurl -unix list: %s", r)
	}
	// A Go client too.
	if resp := check(t, dial(t, target, nil), benchRequest(t)); !allowed(resp) {
		t.Errorf("Go client over the socket: denied")
	}

	first.kill()
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("after SIGKILL the socket file should be left behind: %v %v", fi, err)
	}
	second := benchServe(t, "--grpc-addr", target)
	checkOverSocket(t)
	if code := second.stop(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file still there after a clean stop: %v", err)
	}

	// Anything but a socket in the way is not removed.
	plain := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(plain, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := meshproof(t, nil, append(append([]string{}, serveArgs...), "--grpc-addr", "unix://"+plain)...)
	if res.code != 1 || !strings.Contains(res.stderr, plain+" exists and is not a socket") {
		t.Errorf("serve on a regular file: want exit 1 naming it, got %s", res)
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep me" {
		t.Errorf("the regular file was changed: %q", b)
	}
}

// TestUnixSocketInUse: a second instance pointed at the socket of a running
// one must not take it over. Listen removes any socket file in its way, so
// it also unlinks a live one: the first instance keeps running, healthy and
// unreachable, and when the second stops nothing serves the path at all.
func TestUnixSocketInUse(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "mp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	target := "unix://" + filepath.Join(dir, "mp.sock")
	first := benchServe(t, "--grpc-addr", target)
	conn := dial(t, target, nil)
	check(t, conn, benchRequest(t))

	// A correct second instance fails at once; give a wrong one 3 s to serve.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, meshproofBin, append(append([]string{}, serveArgs...), "--policy", benchFile("policy.rego"), "--decision", "envoy/authz/result", "--grpc-addr", target)...)
	second.Dir = t.TempDir() // its default store, meshproof.db, out of the repository
	out, err := second.CombinedOutput()
	switch {
	case ctx.Err() != nil:
		t.Errorf("BUG: a second instance started on the live socket %s and served it (a socket file in the way is removed even when a process is listening on it); want exit 1 saying the socket is in use\n%s", target, out)
	case second.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "in use"):
		t.Errorf("second instance: exit %d, want 1 saying the socket is in use\n%s", second.ProcessState.ExitCode(), out)
	}

	// The first instance still answers on the path, over a new connection.
	if r := grpcurl(t, nil, "-unix", "-plaintext", "-connect-timeout", "2", target, "list"); r.code != 0 {
		t.Errorf("the first instance is no longer reachable at %s: %s", target, r)
	}
	if code := first.stop(); code != 0 {
		t.Errorf("first instance: exit %d after SIGTERM, want 0", code)
	}
}
