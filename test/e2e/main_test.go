// Package e2e starts the real meshproof binary and talks to it over loopback
// only: grpcurl as a third-party client, a Go gRPC client, plain HTTP for
// /metrics and the probes, and signals for the process's life cycle.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Set by TestMain.
var (
	repoRoot     string // the meshproof module's root
	meshproofBin string // built from ./cmd/meshproof
	grpcurlBin   string // built from the tools module's pinned grpcurl
	ghzBin       string // built from the tools module's pinned ghz
)

const (
	readyTimeout = 15 * time.Second // start to /readyz 200
	stopTimeout  = 15 * time.Second // SIGTERM to exit, before SIGKILL
	runTimeout   = 30 * time.Second // one short-lived command (eval, grpcurl, a failing serve)
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "meshproof-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	meshproofBin = filepath.Join(dir, "meshproof")
	grpcurlBin = filepath.Join(dir, "grpcurl")
	ghzBin = filepath.Join(dir, "ghz")
	builds := []struct{ what, dir, out, pkg string }{
		{"meshproof", repoRoot, meshproofBin, "./cmd/meshproof"},
		{"grpcurl (pinned in tools/go.mod)", filepath.Join(repoRoot, "tools"), grpcurlBin, "github.com/fullstorydev/grpcurl/cmd/grpcurl"},
		{"ghz (pinned in tools/go.mod)", filepath.Join(repoRoot, "tools"), ghzBin, "github.com/bojand/ghz/cmd/ghz"},
	}
	// Linking dominates; the builds run side by side.
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Go(func() {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Dir = b.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("building %s failed (go build -o %s %s in %s): %v\n%s", b.what, b.out, b.pkg, b.dir, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// findRepoRoot walks up from the test's directory to the meshproof module.
func findRepoRoot() (string, error) {
	dir, err := filepath.Abs(".")
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		mod, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(mod), []byte("module github.com/meshproof/meshproof\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of github.com/meshproof/meshproof above %s", dir)
		}
	}
}

// benchFile is a file of the reference workload in test/testdata/bench.
func benchFile(name string) string {
	return filepath.Join(repoRoot, "test", "testdata", "bench", name)
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is a running `meshproof serve`.
type server struct {
	t        testing.TB
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	done     chan struct{} // closed when the process has exited
	GRPCAddr string        // as the serving log line reports it: host:port or a socket path
	HTTPAddr string
}

// serveArgs are the arguments every test server gets before its own; the
// flag package keeps the last value, so a test's own flags win.
var serveArgs = []string{"serve",
	"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
	"--log-format", "json", "--log-level", "debug",
}

// startServe starts `meshproof serve` on free loopback ports with JSON debug
// logs, extra appended, and waits until it is ready.
// Each server gets its own evidence store in the test's temp dir unless extra
// names one.
func startServe(t testing.TB, extra ...string) *server {
	t.Helper()
	args := append(append([]string{}, serveArgs...), "--store", sqliteStore(t))
	return startRaw(t, append(args, extra...)...)
}

// startRaw starts meshproof with exactly args, waits for the "meshproof
// serving" log line and for /readyz to answer 200, and stops it (SIGTERM,
// then SIGKILL) when the test ends. The output is dumped if the test failed.
func startRaw(t testing.TB, args ...string) *server {
	t.Helper()
	s := &server{t: t, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(meshproofBin, args...)
	// A test that does not name a store gets the default, meshproof.db in
	// the working directory: the test's, not the repository's.
	s.cmd.Dir = t.TempDir()
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start meshproof: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("meshproof %s\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), s.stdout, s.stderr)
		}
	})
	deadline := time.Now().Add(readyTimeout)
	for s.HTTPAddr == "" {
		if l := s.findLog("meshproof serving"); l != nil {
			s.GRPCAddr, _ = l["grpc_addr"].(string)
			s.HTTPAddr, _ = l["http_addr"].(string)
			if s.GRPCAddr == "" || s.HTTPAddr == "" {
				t.Fatalf("the serving log line lacks grpc_addr or http_addr: %v", l)
			}
			break
		}
		s.failIfExitedOrLate(t, deadline, "the \"meshproof serving\" log line")
		time.Sleep(20 * time.Millisecond)
	}
	for {
		if code, _, err := httpGet("http://" + s.HTTPAddr + "/readyz"); err == nil && code == http.StatusOK {
			return s
		}
		s.failIfExitedOrLate(t, deadline, "/readyz to answer 200")
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) failIfExitedOrLate(t testing.TB, deadline time.Time, what string) {
	t.Helper()
	select {
	case <-s.done:
		t.Fatalf("meshproof exited (code %d) before %s", s.cmd.ProcessState.ExitCode(), what)
	default:
	}
	if time.Now().After(deadline) {
		t.Fatalf("no %s within %v", what, readyTimeout)
	}
}

// signal sends sig to the process.
func (s *server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Errorf("signal %v: %v", sig, err)
	}
}

// wait waits up to d for the process to exit and returns its exit code, or
// -1 if it is still running.
func (s *server) wait(d time.Duration) int {
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// stop sends SIGTERM, waits, then SIGKILLs; it returns the exit code (-1 when
// killed). Calling it again returns the first exit's code.
func (s *server) stop() int {
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(stopTimeout); code != -1 {
		return code
	}
	s.t.Errorf("meshproof did not exit within %v of SIGTERM; killing it", stopTimeout)
	s.kill()
	return -1
}

// kill ends the process with SIGKILL, as the OOM killer would.
func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// logs parses stderr's JSON log lines; other lines are skipped.
func (s *server) logs() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// findLog returns the first log line whose message contains msg, or nil.
func (s *server) findLog(msg string) map[string]any {
	lines := s.findLogs(msg)
	if len(lines) == 0 {
		return nil
	}
	return lines[0]
}

// findLogs returns the log lines whose message contains msg.
func (s *server) findLogs(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range s.logs() {
		if m, _ := l["message"].(string); strings.Contains(m, msg) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits up to d for a log line whose message contains msg.
func (s *server) waitLog(t testing.TB, msg string, d time.Duration) map[string]any {
	t.Helper()
	return s.waitLogN(t, msg, 1, d)
}

// waitLogN waits up to d for the n-th log line whose message contains msg,
// and returns it.
func (s *server) waitLogN(t testing.TB, msg string, n int, d time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if lines := s.findLogs(msg); len(lines) >= n {
			return lines[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line #%d %q within %v", n, msg, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// result is what a finished command printed and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs bin with args and stdin (may be nil) to completion, bounded by
// runTimeout.
func run(t testing.TB, stdin io.Reader, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	cmd.Dir = t.TempDir() // whatever it writes by default stays out of the repository
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %v", filepath.Base(bin), strings.Join(args, " "), runTimeout)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("%s: %v", bin, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// meshproof runs the binary to completion.
func meshproof(t testing.TB, stdin io.Reader, args ...string) result {
	t.Helper()
	return run(t, stdin, meshproofBin, args...)
}

// grpcurl runs grpcurl with bounded connect and call times.
func grpcurl(t testing.TB, stdin io.Reader, args ...string) result {
	t.Helper()
	return run(t, stdin, grpcurlBin, append([]string{"-connect-timeout", "5", "-max-time", "10"}, args...)...)
}
