package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
)

const (
	allowGET = `package envoy.authz

default allow := false

allow if input.attributes.request.http.method == "GET"
`
	denyAll = `package envoy.authz

allow := false
`
	// brokenSyntax has its syntax error on line 3.
	brokenSyntax = `package envoy.authz

allow := = true
`
)

// writeAtomic replaces path's content in one rename, as editors and
// ConfigMap updates do, so the watcher never sees half a file.
func writeAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitDecision sends the bench request until the answer is want.
func waitDecision(t testing.TB, conn *grpc.ClientConn, want bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if allowed(check(t, conn, benchRequest(t))) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Checks still answer allowed=%v %v after the policy changed", !want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHotReload: a changed policy file is picked up; a broken one (or none)
// is rejected and the last good policy keeps answering.
func TestHotReload(t *testing.T) {
	t.Parallel()
	policy := filepath.Join(t.TempDir(), "policy.rego")
	writeAtomic(t, policy, allowGET)
	s := startServe(t, "--policy", policy)
	conn := dial(t, s.GRPCAddr, nil)
	reloads := func(result string) float64 {
		return s.metrics(t)[`meshproof_policy_reloads_total{result="`+result+`",source="local"}`]
	}

	if !allowed(check(t, conn, benchRequest(t))) {
		t.Fatal("the first policy denies a GET")
	}
	rev0, _ := s.findLog("meshproof serving")["policy_revision"].(string)

	writeAtomic(t, policy, denyAll)
	waitDecision(t, conn, false, 10*time.Second)
	reloaded := s.waitLog(t, "policy reloaded", 5*time.Second)
	if rev, _ := reloaded["revision"].(string); rev == "" || rev == rev0 {
		t.Errorf("revision after reload = %q, want a new one (was %q)", rev, rev0)
	}
	if n := reloads("ok"); n < 1 {
		t.Errorf("reloads ok = %v, want >= 1", n)
	}
	if n := reloads("error"); n != 0 {
		t.Errorf("reloads error = %v before any broken policy", n)
	}

	// Each broken change is rejected; the last good policy (deny) answers.
	broken := []struct {
		name   string
		change func()
		want   []string // in the logged error
	}{
		{"syntax error", func() { writeAtomic(t, policy, brokenSyntax) }, []string{policy + ":3:", "rego_parse_error"}},
		{"decision no longer defined", func() { writeAtomic(t, policy, "package elsewhere\n\nallow := true\n") }, []string{"data.envoy.authz.allow", "not defined"}},
		{"unsafe variable", func() { writeAtomic(t, policy, "package envoy.authz\n\nallow if { x }\n") }, []string{policy + ":3:", "rego_unsafe_var_error"}},
		{"file removed", func() {
			if err := os.Remove(policy); err != nil {
				t.Fatal(err)
			}
		}, []string{policy, "no such file"}},
	}
	for i, b := range broken {
		b.change()
		rejected := s.waitLogN(t, "policy reload rejected", i+1, 10*time.Second)
		if rejected["level"] != "error" {
			t.Errorf("%s: rejected reload logged at %v, want error", b.name, rejected["level"])
		}
		if e, _ := rejected["error"].(string); !containsAll(e, b.want...) {
			t.Errorf("%s: rejected reload's error = %q, want it to mention %q", b.name, e, b.want)
		}
		if n := reloads("error"); n != float64(i+1) {
			t.Errorf(`%s: meshproof_policy_reloads_total{result="error",source="local"} = %v, want %d`, b.name, n, i+1)
		}
		for range 3 {
			if resp := check(t, conn, benchRequest(t)); allowed(resp) {
				t.Fatalf("%s: a Check was allowed after the broken policy was rejected; the last good policy denies", b.name)
			}
		}
	}

	// The watcher survives the errors: a fixed policy is picked up again.
	writeAtomic(t, policy, allowGET)
	waitDecision(t, conn, true, 10*time.Second)
	if code := s.stop(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// TestHotReloadConfigMap: Kubernetes updates a mounted ConfigMap by writing a
// new timestamped directory and swapping the ..data symlink to it; the
// policy files themselves are symlinks through ..data that never change.
func TestHotReloadConfigMap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		source func(dir string) string // --policy, from the mount directory
	}{
		{"file through the symlink", func(dir string) string { return filepath.Join(dir, "policy.rego") }},
		{"mount directory", func(dir string) string { return dir }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			version := func(name, policy string) {
				t.Helper()
				if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name, "policy.rego"), []byte(policy), 0o644); err != nil {
					t.Fatal(err)
				}
				// ..data_tmp -> name, renamed over ..data: one atomic swap.
				if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
			}
			version("..2026_11_27_12_00_00.1", allowGET)
			if err := os.Symlink(filepath.Join("..data", "policy.rego"), filepath.Join(dir, "policy.rego")); err != nil {
				t.Fatal(err)
			}
			s := startServe(t, "--policy", tt.source(dir))
			conn := dial(t, s.GRPCAddr, nil)
			if !allowed(check(t, conn, benchRequest(t))) {
				t.Fatal("the first policy denies a GET")
			}
			version("..2026_11_27_12_05_00.2", denyAll)
			waitDecision(t, conn, false, 10*time.Second)
		})
	}
}
