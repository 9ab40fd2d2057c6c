package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeModule is a module whose packages pass, fail, fail to build, hang
// and have no tests.
var fakeModule = map[string]string{
	"go.mod": "module example.com/fake\n\ngo 1.22\n",
	"pass/pass_test.go": `package pass

import "testing"

func TestPass(t *testing.T) { t.Log("passing-noise") }

func TestTable(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) { t.Log("passing-noise") })
	}
}

func TestSkipped(t *testing.T) { t.Skip("not here") }
`,
	"fail/fail_test.go": `package fail

import "testing"

func TestFails(t *testing.T) { t.Error("failure-message-1") }

func TestParent(t *testing.T) {
	t.Run("ok", func(t *testing.T) {})
	t.Run("bad", func(t *testing.T) { t.Fatal("failure-message-2") })
}

func TestFine(t *testing.T) {}
`,
	"broken/broken_test.go": `package broken

import "testing"

func TestNever(t *testing.T) { undefinedThing() }
`,
	"hang/hang_test.go": `package hang

import (
	"testing"
	"time"
)

func TestHangs(t *testing.T) {
	t.Log("hang-started")
	time.Sleep(time.Hour)
}
`,
	"none/none.go": "package none\n",
}

// goTestJSON runs go test -json over pkgs of the fake module and returns
// its output, whatever its exit status.
func goTestJSON(t *testing.T, dir string, pkgs ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", append([]string{"test", "-json", "-count=1", "-timeout", "5s"}, pkgs...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("go test: %v\n%s", err, stderr.Bytes())
	}
	if len(out) == 0 {
		t.Fatalf("go test wrote nothing on stdout; stderr:\n%s", stderr.Bytes())
	}
	return out
}

func TestSummary(t *testing.T) {
	dir := t.TempDir()
	for name, text := range fakeModule {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("failures", func(t *testing.T) {
		in := append([]byte("== go test\n"), goTestJSON(t, dir, "./...")...)
		var out bytes.Buffer
		code := run(bytes.NewReader(in), &out)
		got := out.String()
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		want := "3 passed, 3 failed, 1 skipped (tests of 5 packages; subtests not counted); 1 package failed outside its tests"
		if last := lines[len(lines)-1]; last != want {
			t.Errorf("last line\n%q, want\n%q", last, want)
		}
		for _, s := range []string{
			"== go test\n",                           // a line that is not JSON, as it was
			"failure-message-1", "failure-message-2", // the failures' output
			"--- FAIL: TestParent/bad",
			"hang-started", "panic: test timed out", // a test that never ended
			"undefinedThing",                // the build error
			"ok  \texample.com/fake/pass\t", // a package's result line
			"FAIL\texample.com/fake/fail\t",
			"\nSkipped:\n  example.com/fake/pass TestSkipped\n",
			"\nFailed:\n",
			"  example.com/fake/fail TestFails\n",
			"  example.com/fake/fail TestParent\n",
			"  example.com/fake/broken (failed to build)\n",
			"  example.com/fake/hang TestHangs\n",
		} {
			if !strings.Contains(got, s) {
				t.Errorf("no %q in the output", s)
			}
		}
		if strings.Contains(got, "passing-noise") || strings.Contains(got, "=== RUN   TestPass") {
			t.Error("the output of passing tests is shown")
		}
		if strings.Index(got, "=== RUN   TestParent\n") > strings.Index(got, "failure-message-2") {
			t.Error("a failed subtest's output comes before its parent's first line")
		}
		if strings.Index(got, "FAIL\texample.com/fake/hang\t") < strings.Index(got, "panic: test timed out") {
			t.Error("a package's result line comes before its tests' output")
		}
		if t.Failed() {
			t.Logf("output:\n%s", got)
		}
	})

	t.Run("all pass", func(t *testing.T) {
		var out bytes.Buffer
		code := run(bytes.NewReader(goTestJSON(t, dir, "./pass", "./none")), &out)
		want := "2 passed, 0 failed, 1 skipped (tests of 2 packages; subtests not counted)\n"
		if code != 0 || !strings.HasSuffix(out.String(), want) || strings.Contains(out.String(), "Failed:") {
			t.Errorf("exit status %d, output:\n%s\nwant status 0 and the last line %q", code, out.String(), want)
		}
	})
}
