package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBinaryLinksNoTestCode holds the shipped binary free of test code:
// among the packages `go list -deps` names for it there is no "testing",
// and none of this module's packages is under a test directory or ends in
// "test" (authztest, evidencetest, postgrestest...). The mesh simulation
// `meshproof demo` runs lives in internal/meshsim for that reason.
func TestBinaryLinksNoTestCode(t *testing.T) {
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goCmd); err != nil {
		if goCmd, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command to list the binary's packages:", err)
		}
	}
	cmd := exec.Command(goCmd, "list", "-deps", ".")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	const module = "github.com/meshproof/meshproof"
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path := strings.TrimSpace(line)
		switch {
		case path == "testing" || strings.HasPrefix(path, "testing/"):
			bad = append(bad, path)
		case path == module || strings.HasPrefix(path, module+"/"):
			rel := strings.TrimPrefix(path, module)
			if strings.Contains(rel+"/", "/test/") || strings.HasSuffix(rel, "test") {
				bad = append(bad, path)
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("meshproof links test code: %s", strings.Join(bad, ", "))
	}
}
