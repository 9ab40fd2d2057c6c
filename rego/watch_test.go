package rego

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// waitFor polls cond every 10ms for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// quiet waits long enough for the watcher to have reloaded, had it wanted to.
func quiet() { time.Sleep(3 * debounce) }

// reloads reads meshproof_policy_reloads_total{source, result} from reg
// (prometheus/testutil would need a go.mod change: kylelemons/godebug).
func reloads(t *testing.T, reg *prometheus.Registry, source, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meshproof_policy_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] == source && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// decides reports whether the engine's decision for {} is want (Rego text).
func decides(t *testing.T, e *Engine, want string) bool {
	t.Helper()
	v, _, err := e.Eval(t.Context(), ast.MustParseTerm(`{}`))
	return err == nil && v.Compare(ast.MustParseTerm(want).Value) == 0
}

func TestWatchReload(t *testing.T) {
	tests := []struct {
		name   string
		source func(dir string) string // the --policy given
	}{
		{"policy file", func(dir string) string { return filepath.Join(dir, "policy.rego") }},
		{"policy directory", func(dir string) string { return dir }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, content string) {
				t.Helper()
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write("policy.rego", "package envoy.authz\nallow := 1\n")
			reg := prometheus.NewRegistry()
			e := mustStart(t, Config{Decision: DefaultDecision, Policies: []string{tt.source(dir)}, Watch: true}, reg)
			rev0 := e.Revision()
			if !decides(t, e, "1") {
				t.Fatal("the first policy does not decide 1")
			}

			// A file that is not policy, next to it: no reload.
			write("evidence.db", "SQLite format 3\x00")
			quiet()
			if n := reloads(t, reg, "local", "ok") + reloads(t, reg, "local", "error"); n != 0 {
				t.Errorf("writing evidence.db caused %v reloads", n)
			}

			// An edit is picked up.
			write("policy.rego", "package envoy.authz\nallow := 2\n")
			// Reload counts a reload once the policy is active: wait for
			// both, then for any second reload the edit would wrongly
			// cause.
			waitFor(t, "the edited policy", func() bool {
				return e.Revision() != rev0 && decides(t, e, "2") && reloads(t, reg, "local", "ok") >= 1
			})
			quiet()
			rev1 := e.Revision()
			if got := reloads(t, reg, "local", "ok"); got != 1 {
				t.Errorf("reloads ok = %v after one edit, want 1", got)
			}

			// A broken policy is rejected; the previous one keeps serving.
			write("policy.rego", "package envoy.authz\nallow := \n")
			waitFor(t, "the rejected reload", func() bool { return reloads(t, reg, "local", "error") == 1 })
			if e.Revision() != rev1 || !decides(t, e, "2") {
				t.Errorf("after a broken edit: revision %q (want %q), decides 2: %v", e.Revision(), rev1, decides(t, e, "2"))
			}

			// Fixing it is picked up again.
			write("policy.rego", "package envoy.authz\nallow := 3\n")
			waitFor(t, "the fixed policy", func() bool { return decides(t, e, "3") && reloads(t, reg, "local", "ok") >= 2 })
			quiet()
			if e.Revision() == rev1 || e.Revision() == rev0 {
				t.Errorf("revision %q after the fix, not new", e.Revision())
			}
			if got := reloads(t, reg, "local", "ok"); got != 2 {
				t.Errorf("reloads ok = %v after two good edits, want 2", got)
			}
		})
	}
}

// TestWatchDirectoryData: data files, and files created later in new
// directories of a watched tree, are picked up.
func TestWatchDirectoryData(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"policy.rego": `package envoy.authz
default v := 0
v := data.cfg.v
default w := 0
w := data.more.nested.w
allow := [v, w]
`,
		"cfg/data.json": `{"v": 1}`,
	})
	e := mustStart(t, Config{Decision: DefaultDecision, Policies: []string{dir}, Watch: true}, nil)
	if !decides(t, e, "[1, 0]") {
		t.Fatal("the policy does not decide [1, 0] at start")
	}
	writeFiles(t, dir, map[string]string{"cfg/data.json": `{"v": 2}`})
	waitFor(t, "the edited data.json", func() bool { return decides(t, e, "[2, 0]") })
	writeFiles(t, dir, map[string]string{"more/nested/data.yaml": "w: 3\n"})
	waitFor(t, "the new nested data.yaml", func() bool { return decides(t, e, "[2, 3]") })
	if err := os.RemoveAll(filepath.Join(dir, "more")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed data.yaml", func() bool { return decides(t, e, "[2, 0]") })
}

// TestWatchIgnoresTransientFiles: SQLite creates and deletes a journal file
// next to its database on every write transaction; with the evidence
// database in the policy directory that must not reload the policy.
func TestWatchIgnoresTransientFiles(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.rego": "package envoy.authz\nallow := 1\n"})
	reg := prometheus.NewRegistry()
	mustStart(t, Config{Decision: DefaultDecision, Policies: []string{dir}, Watch: true}, reg)
	journal := filepath.Join(dir, "evidence.db-journal")
	if err := os.WriteFile(journal, []byte("j"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(journal); err != nil {
		t.Fatal(err)
	}
	quiet()
	if n := reloads(t, reg, "local", "ok") + reloads(t, reg, "local", "error"); n != 0 {
		t.Errorf("a transient evidence.db-journal caused %v reloads", n)
	}
}

// TestWatchConfigMapSwap: a Kubernetes ConfigMap volume updates by writing
// a new timestamped directory and renaming the ..data symlink onto it; the
// visible policy.rego is a symlink through ..data.
func TestWatchConfigMapSwap(t *testing.T) {
	tests := []struct {
		name   string
		source func(dir string) string
	}{
		{"policy file", func(dir string) string { return filepath.Join(dir, "policy.rego") }},
		{"policy directory", func(dir string) string { return dir }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			publish := func(version, policy string) {
				t.Helper()
				writeFiles(t, dir, map[string]string{filepath.Join(version, "policy.rego"): policy})
				tmp := filepath.Join(dir, "..data_tmp")
				if err := os.Symlink(version, tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
			}
			publish("..2026_11_27_12_00_00.1", "package envoy.authz\nallow := 1\n")
			if err := os.Symlink(filepath.Join("..data", "policy.rego"), filepath.Join(dir, "policy.rego")); err != nil {
				t.Fatal(err)
			}
			e := mustStart(t, Config{Decision: DefaultDecision, Policies: []string{tt.source(dir)}, Watch: true}, nil)
			if !decides(t, e, "1") {
				t.Fatal("the first ConfigMap version does not decide 1")
			}
			publish("..2026_11_27_12_05_00.2", "package envoy.authz\nallow := 2\n")
			waitFor(t, "the swapped ConfigMap", func() bool { return decides(t, e, "2") })
		})
	}
}

// syncBuffer is a log sink the test reads while the watcher writes.
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

// TestWatchSettle is the policy written in place with a pause: its first
// half alone is a valid policy that denies everything, and was loaded
// (3,229 Checks denied) when the writer paused for 300 ms. Now a file
// written in place is reloaded only once it has been unchanged for
// PolicySettle, while a file renamed into place is reloaded at once.
func TestWatchSettle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(path, []byte("package envoy.authz\nallow := 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	// A settle far longer than the test: only a rename can reload.
	e, err := New(Config{Decision: DefaultDecision, Policies: []string{path}, Watch: true, PolicySettle: maxPolicySettle},
		zerolog.New(logs).Level(zerolog.DebugLevel), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(context.Background()) })

	// The first half, written in place: the watcher waits for more.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("package envoy.authz\nallow := 0\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to wait for the file to settle", func() bool {
		return strings.Contains(logs.String(), "written in place")
	})
	if !decides(t, e, "1") || reloads(t, reg, "local", "ok") != 0 {
		t.Fatalf("the half-written policy was loaded (reloads %v)", reloads(t, reg, "local", "ok"))
	}
	f.Close()

	// A complete file renamed into place is loaded at once, settle or not.
	tmp := filepath.Join(dir, ".policy.rego.tmp")
	if err := os.WriteFile(tmp, []byte("package envoy.authz\nallow := 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renamed policy", func() bool { return decides(t, e, "2") })
	if got := reloads(t, reg, "local", "ok"); got != 1 {
		t.Errorf("reloads ok = %v, want 1 (the renamed policy alone)", got)
	}
}

// TestWatchSettleReloads: a file written in place is reloaded once it has
// settled.
func TestWatchSettleReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(path, []byte("package envoy.authz\nallow := 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := mustStart(t, Config{Decision: DefaultDecision, Policies: []string{path}, Watch: true, PolicySettle: 300 * time.Millisecond}, nil)
	if err := os.WriteFile(path, []byte("package envoy.authz\nallow := 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the settled policy", func() bool { return decides(t, e, "2") })
}
