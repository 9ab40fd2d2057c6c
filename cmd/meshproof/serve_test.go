package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
)

// TestServeClosesWhatItOpened: whichever step of serve fails, whatever the
// steps before it opened is closed before serve returns: no file of the
// store stays open, and no goroutine serve started (the recorder's writer,
// gRPC's stream workers, the store's connections) is left running. serve
// used to close the recorder on 3 of its 6 later error paths, and neither
// the gRPC server nor its listener on any.
func TestServeClosesWhatItOpened(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd to see open files")
	}
	// A port in use, for the listeners that must fail to bind.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	missing := filepath.Join(t.TempDir(), "missing")
	broken := writeFile(t, "broken.rego", "package envoy.authz\n\nallow if {\n")
	key := filepath.Join(t.TempDir(), "signer")
	var out strings.Builder
	if code := run([]string{"keygen", "--name", "meshproof.test", "--out", key}, &out, &out); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, out.String())
	}

	tests := []struct {
		name string
		args []string
		want string // in serve's error
	}{
		{"the policy broken", []string{"--policy", broken}, "broken.rego"},
		{"the API token file missing", []string{"--api-token-file", missing}, missing},
		{"the HTTP address taken", []string{"--http-addr", taken.Addr().String()}, "http-addr"},
		{"the gRPC TLS files missing", []string{"--grpc-tls-cert", missing, "--grpc-tls-key", missing}, missing},
		{"the gRPC address taken", []string{"--grpc-addr", taken.Addr().String()}, taken.Addr().String()},
		{"the gRPC address taken, with signed checkpoints", []string{"--grpc-addr", taken.Addr().String(), "--signing-key", key}, taken.Addr().String()},
		{"the query role's HTTP address taken", []string{"--role", "query", "--http-addr", taken.Addr().String()}, "http-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			store := "sqlite:" + filepath.Join(dir, "evidence.db")
			// The query role opens only a store that exists.
			if err := evidence.Migrate(context.Background(), store); err != nil {
				t.Fatal(err)
			}
			args := []string{"--store", store, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
			if tt.args[0] == "--role" {
				args = []string{"--store", store, "--http-addr", "127.0.0.1:0"}
			}
			o, err := parseServe(t, append(args, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			before := goroutines()
			err = serve(context.Background(), o, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("serve = %v, want an error naming %s", err, tt.want)
			}
			if files := openFiles(t, dir); len(files) > 0 {
				t.Errorf("serve failed (%v) and left the store's files open: %v", err, files)
			}
			if left := leftRunning(before); len(left) > 0 {
				t.Errorf("serve failed (%v) and left %d goroutine(s) running:\n%s", err, len(left), strings.Join(left, "\n\n"))
			}
		})
	}
}

// TestServeListenerFails: a listener failing while serve runs (here the
// HTTP listener, closed under it) stops serve with its error, and Close
// leaves nothing open or running.
func TestServeListenerFails(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd to see open files")
	}
	dir := t.TempDir()
	o, err := parseServe(t, "--store", "sqlite:"+filepath.Join(dir, "evidence.db"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	before := goroutines()
	s, err := newServer(context.Background(), o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s.hlis.Close()
	if err := s.run(context.Background()); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("run = %v, want the HTTP listener's failure", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if files := openFiles(t, dir); len(files) > 0 {
		t.Errorf("left the store's files open: %v", files)
	}
	if left := leftRunning(before); len(left) > 0 {
		t.Errorf("left %d goroutine(s) running:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// TestServeStopsInOrder: on ctx done, a Check's record still queued (a
// flush interval longer than the test) is written before the store is
// closed, the last checkpoint covers it, and nothing stays open or
// running.
func TestServeStopsInOrder(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd to see open files")
	}
	dir := t.TempDir()
	store := "sqlite:" + filepath.Join(dir, "evidence.db")
	key := filepath.Join(t.TempDir(), "signer")
	var out strings.Builder
	if code := run([]string{"keygen", "--name", "meshproof.test", "--out", key}, &out, &out); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, out.String())
	}
	o, err := parseServe(t, "--store", store, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--replica", "r1", "--evidence-flush-interval", "1h", "--checkpoint-interval", "1h", "--signing-key", key)
	if err != nil {
		t.Fatal(err)
	}
	before := goroutines()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, served := startServe(t, ctx, o)

	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), authztest.NewRequest())
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue()
	if id == "" {
		t.Fatalf("no evidence id in %v", resp)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if files := openFiles(t, dir); len(files) > 0 {
		t.Errorf("serve stopped and left the store's files open: %v", files)
	}
	if left := leftRunning(before); len(left) > 0 {
		t.Errorf("serve stopped and left %d goroutine(s) running:\n%s", len(left), strings.Join(left, "\n\n"))
	}

	s, err := evidence.Open(context.Background(), store, evidence.Options{Existing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(context.Background(), id); err != nil {
		t.Fatalf("the Check's record, queued at the stop: %v", err)
	}
	reports, err := evidence.VerifyWith(context.Background(), s, evidence.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Broken != nil || reports[0].Log == nil || reports[0].Log.Latest != 1 {
		t.Fatalf("after the stop, want one intact chain whose signed checkpoint holds the record: %+v", reports)
	}
}

// openFiles lists the files under dir this process has open.
// startServe runs serve until ctx is done and returns its gRPC address once
// both listeners serve, and where serve's result comes.
func startServe(t *testing.T, ctx context.Context, o serveOptions) (net.Addr, <-chan error) {
	t.Helper()
	bound := make(chan net.Addr, 1)
	o.onListen = func(g, _ net.Addr) { bound <- g }
	served := make(chan error, 1)
	go func() { served <- serve(ctx, o, zerolog.Nop()) }()
	select {
	case addr := <-bound:
		return addr, served
	case err := <-served:
		t.Fatalf("serve: %v", err)
		return nil, nil
	}
}

func openFiles(t *testing.T, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			open = append(open, target)
		}
	}
	return open
}

var goroutineID = regexp.MustCompile(`^goroutine (\d+) `)

// goroutines are the stacks of every goroutine, by id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if m := goroutineID.FindSubmatch(g); m != nil {
			all[string(m[1])] = string(g)
		}
	}
	return all
}

// leftRunning are the goroutines started since before and still running
// once those that are ending have ended: it waits for them, for a minute
// at most (a goroutine left behind never ends; one ending does well
// within that, however busy the machine).
func leftRunning(before map[string]string) []string {
	for wait := time.Millisecond; ; wait *= 2 {
		var left []string
		for id, stack := range goroutines() {
			if _, ok := before[id]; !ok && !strings.Contains(stack, "leftRunning") {
				left = append(left, stack)
			}
		}
		if len(left) == 0 || wait > 30*time.Second {
			return left
		}
		time.Sleep(wait)
	}
}
