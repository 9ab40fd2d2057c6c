//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

const (
	readyTimeout = 30 * time.Second // compiling a large policy can take a while
	stopTimeout  = 15 * time.Second // graceful stop drains in-flight Checks
)

// target is one server under test: how to start it on the ports picked for it.
type target struct {
	name string
	bin  string
	args func(grpcAddr, httpAddr string) []string
}

// runEnv is what every measurement shares.
type runEnv struct {
	tmp      string // logs go here; removed at exit
	request  string // request.json, for ghz
	protoset string // descriptors, for ghz
	ghz      string
	check    *authv3.CheckRequest // request.json, for the readiness probe
	ticks    int                  // CLK_TCK
	logf     func(string, ...any)
}

// server is a running target process.
type server struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // from Wait; read only after done is closed
}

// startServer starts bin in its own process group so that a wrapper script
// and its children can be signalled together, and so that the terminal's
// Ctrl-C does not race our own shutdown. Output goes to a log file, shown
// when the server fails.
func startServer(ctx context.Context, env runEnv, name, bin string, args []string, round int) (*server, error) {
	logPath := filepath.Join(env.tmp, fmt.Sprintf("%s-%d.log", name, round))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	// Each server runs in a directory of its own, so that meshproof's
	// default store (sqlite:meshproof.db) starts empty every round instead
	// of growing across rounds and runs.
	dir := filepath.Join(env.tmp, fmt.Sprintf("%s-%d", name, round))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Pdeathsig covers the case where loadbench itself is killed with SIGKILL
	// and never gets to clean up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// waitReady probes with the reference Check until the server answers. Any
// answer counts, a deny included; it returns the decision so the caller can
// warn when the reference request, which the policy allows, is not allowed.
func (s *server) waitReady(ctx context.Context, addr string, req *authv3.CheckRequest) (codes.Code, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	deadline := time.Now().Add(readyTimeout)
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := client.Check(actx, req)
		cancel()
		if err == nil {
			return codes.Code(resp.GetStatus().GetCode()), nil
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			return 0, fmt.Errorf("%s answered the readiness Check with %w; is it an ext_authz v3 server?", s.name, err)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s did not answer Check on %s within %s: %w%s", s.name, addr, readyTimeout, err, s.tail())
		}
		select {
		case <-s.done:
			return 0, fmt.Errorf("%s exited before it was ready: %v%s", s.name, s.err, s.tail())
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop asks the process group to finish with SIGTERM, the way Kubernetes
// does, and fails if the server does not exit cleanly in time.
func (s *server) stop() error {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed%s", s.name, stopTimeout, s.tail())
	}
	var exit *exec.ExitError
	if s.err == nil {
		return nil
	}
	if errors.As(s.err, &exit) {
		// Dying of the SIGTERM we sent is a clean enough stop for a benchmark.
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return fmt.Errorf("%s stopped badly: %w%s", s.name, s.err, s.tail())
}

// kill is the unconditional cleanup; it is a no-op once the process is gone.
func (s *server) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// cpuTicks returns utime+stime of the server process. With a wrapper script
// that does not exec, this is the shell's CPU, not the server's.
func (s *server) cpuTicks() (int64, error) {
	return cpuTicks(s.cmd.Process.Pid)
}

// cpuTicks reads fields 14 (utime) and 15 (stime) of /proc/<pid>/stat.
// Fields are counted after the command name, which may itself hold spaces.
func cpuTicks(pid int) (int64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	t, err := parseStatTicks(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func parseStatTicks(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, state
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields", len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return utime + stime, nil
}

// tail returns the end of the server's log, for error messages.
func (s *server) tail() string {
	b, err := os.ReadFile(s.log)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "\n--- " + s.name + " output (last lines) ---\n" + strings.Join(lines, "\n")
}

// freeAddr picks a free loopback port. Another process could take it before
// the server binds; on a benchmark machine that is rare enough to accept.
func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

// loadRequest parses request.json the way ghz does, as protojson.
func loadRequest(path string) (*authv3.CheckRequest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &req, nil
}
