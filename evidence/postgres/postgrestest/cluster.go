package postgrestest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Cluster is a private PostgreSQL cluster, made by test/postgres, that a
// test may stop and start again (to see what a store outage does). It is
// removed when the test ends.
type Cluster struct {
	script, dir, dsn string
}

// NewCluster starts a private cluster with the test settings of
// test/postgres, overridden by settings (name=value). Like DSN it skips t
// unless a test cluster is configured (PostgreSQL tests are opted into),
// and fails it when PostgreSQL is required but cannot start.
func NewCluster(t testing.TB, settings ...string) *Cluster {
	t.Helper()
	AdminDSN(t) // PostgreSQL tests are opted into (or required) the same way
	script, err := findScript()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: the cluster runs as user postgres, who cannot enter
	// the test's private directories.
	dir, err := os.MkdirTemp("", "mp-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{script: script, dir: dir}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("test/postgres stop %s: %v\n%s", dir, err, out)
		}
	})
	out, err := c.run(append([]string{"start", dir}, settings...)...)
	if err != nil {
		if strings.Contains(out, "not found") {
			unavailable(t, strings.TrimSpace(out))
		}
		t.Fatalf("test/postgres start: %v\n%s", err, out)
	}
	c.dsn = lastLine(out)
	return c
}

// DSN is the cluster's meshproof database.
func (c *Cluster) DSN() string { return c.dsn }

// Stop stops the cluster, mode "fast" or "immediate" (as a crash).
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := c.run("halt", c.dir, mode); err != nil {
		t.Fatalf("test/postgres halt: %v\n%s", err, out)
	}
}

// Start starts the stopped cluster again, on the same port.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if out, err := c.run("start", c.dir); err != nil {
		t.Fatalf("test/postgres start: %v\n%s", err, out)
	}
}

// run runs test/postgres, returning its standard output, or its error
// output with the error.
func (c *Cluster) run(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(c.script, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stderr.String(), err
	}
	return stdout.String(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// findScript finds test/postgres in the module holding the working
// directory (go test runs in the package's directory).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if p := filepath.Join(dir, "test", "postgres"); fileExists(p) {
				return p, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("postgrestest: test/postgres not found in the module above the working directory")
		}
		dir = parent
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
