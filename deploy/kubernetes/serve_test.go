package kubernetes

import (
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	corev1 "k8s.io/api/core/v1"
)

// TestBaseServes runs the real meshproof binary with the base Deployment's
// arguments and environment, as the kubelet would start it: each mount is a
// temporary directory filled from the rendered ConfigMap or Secret, $(VAR)s
// are expanded, and the listeners move from 0.0.0.0 to free loopback ports.
// It must become ready, keep the API behind the token, refuse that token
// at /logs (it is a reader's) and stop cleanly.
func TestBaseServes(t *testing.T) {
	in := build(t, "kubernetes/base")
	spec := in.Deployments["meshproof"].Spec.Template.Spec
	c := spec.Containers[0]
	bin := deploytest.Meshproof(t)

	mounts := materialize(t, in, spec, c)
	env := map[string]string{"POD_NAME": "meshproof-7d9f-abcde"}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	grpcAddr, httpAddr := deploytest.FreeAddr(t), deploytest.FreeAddr(t)
	args := []string{c.Args[0]}
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(deploytest.Expand(t, a, env), "=")
		switch name {
		case "--grpc-addr":
			value = grpcAddr
		case "--http-addr":
			value = httpAddr
		default:
			value = remap(value, mounts)
		}
		args = append(args, name+"="+value)
	}

	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+mounts["/tmp"])
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr deploytest.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{}) // closed once waitErr is set
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	base := "http://" + httpAddr
	waitReady(t, base+"/readyz", exited, &waitErr, &stderr)
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", http.StatusOK},
		{"/v1/evidence", "", http.StatusUnauthorized},
		{"/v1/evidence", "not-the-token-not-the-token", http.StatusUnauthorized},
		{"/v1/evidence", testToken, http.StatusOK},
	} {
		if got := get(t, base+c.path, c.token); got != c.want {
			t.Errorf("GET %s (token %q): %d, want %d", c.path, c.token, got, c.want)
		}
	}
	// The Deployment's token is a reader's: it may not write evidence
	// through OPA's decision log uploads (no --ingest-token-file here).
	if got := post(t, base+"/logs", testToken); got != http.StatusForbidden {
		t.Errorf("POST /logs with the API token: %d, want 403", got)
	}
	conn, err := net.DialTimeout("tcp", grpcAddr, time.Second)
	if err != nil {
		t.Errorf("the gRPC listener: %v", err)
	} else {
		conn.Close()
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("serve exited with %v after SIGTERM\n%s", waitErr, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve still running 20s after SIGTERM (terminationGracePeriodSeconds is 30)")
	}
	if _, err := os.Stat(filepath.Join(mounts["/var/lib/meshproof"], "evidence.db")); err != nil {
		t.Errorf("no SQLite store on the data volume: %v", err)
	}
}

// TestCommandLines checks every command line of both variants against the
// binary's flags, without running them.
func TestCommandLines(t *testing.T) {
	bin := deploytest.Meshproof(t)
	for _, dir := range []string{"kubernetes/base", "kubernetes/postgres"} {
		in := build(t, dir)
		deploytest.CheckCommandLines(t, bin, dir, deploytest.PodSpecs(in.Deployments, in.Jobs))
	}
}

// materialize makes a directory per volume mount, with the files the
// kubelet would project into it, and maps mount paths to them.
func materialize(t *testing.T, in *Install, spec corev1.PodSpec, c corev1.Container) map[string]string {
	t.Helper()
	root := t.TempDir()
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.Name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		switch v := deploytest.Volume(spec, m.Name); {
		case v == nil:
			t.Fatalf("volumeMount %q names no volume", m.Name)
		case v.ConfigMap != nil:
			cm := in.ConfigMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("volume %q: no ConfigMap %q", m.Name, v.ConfigMap.Name)
			}
			for k, s := range cm.Data {
				files[k] = []byte(s)
			}
		case v.Secret != nil:
			s := in.Secrets[v.Secret.SecretName]
			if s == nil {
				t.Fatalf("volume %q: no Secret %q", m.Name, v.Secret.SecretName)
			}
			files = s.Data
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o440); err != nil {
				t.Fatal(err)
			}
		}
		mounts[m.MountPath] = dir
	}
	return mounts
}

// remap rewrites the mount path a value refers to (a path, or sqlite:PATH).
func remap(value string, mounts map[string]string) string {
	paths := make([]string, 0, len(mounts))
	for p := range mounts {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(a, b string) int { return len(b) - len(a) }) // deepest first
	for _, p := range paths {
		i := strings.Index(value, p)
		if i >= 0 && (len(value) == i+len(p) || value[i+len(p)] == '/') {
			return value[:i] + mounts[p] + value[i+len(p):]
		}
	}
	return value
}

func waitReady(t *testing.T, url string, exited <-chan struct{}, waitErr *error, stderr *deploytest.LockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("serve exited (%v) before it was ready:\n%s", *waitErr, stderr.String())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("readyz: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("serve not ready after 30s:\n%s", stderr.String())
}

func post(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
