package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parseServe(t *testing.T, args ...string) (serveOptions, error) {
	t.Helper()
	o := defaultServeOptions()
	fs := newFlagSet("serve")
	o.flags(fs)
	err := parseOptions(fs, args)
	return o, err
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileAndFlags(t *testing.T) {
	cfg := writeFile(t, "meshproof.yaml", `
grpc-addr: 127.0.0.1:7000
policy: [a.rego, builtin:observe]
decision: envoy/authz/result
grpc-keepalive-time: 45s
grpc-max-recv-msg-bytes: 1048576
dry-run: true
`)
	tests := []struct {
		name     string
		args     []string
		addr     string
		policies []string
		dryRun   bool
	}{
		{"file only", []string{"--config", cfg}, "127.0.0.1:7000", []string{"a.rego", "builtin:observe"}, true},
		{"flags override", []string{"--config=" + cfg, "--grpc-addr", "127.0.0.1:7001", "--dry-run=false"}, "127.0.0.1:7001", []string{"a.rego", "builtin:observe"}, false},
		{"repeatable flag replaces the file's list", []string{"--config", cfg, "--policy", "b.rego", "--policy", "c.rego"}, "127.0.0.1:7000", []string{"b.rego", "c.rego"}, true},
		{"no file", []string{"--policy", "x.rego"}, "127.0.0.1:9191", []string{"x.rego"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseServe(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if o.GRPC.Addr != tt.addr || !slices.Equal(o.Policy.Policies, tt.policies) || o.Authz.DryRun != tt.dryRun {
				t.Fatalf("got addr %s policies %v dry-run %v", o.GRPC.Addr, o.Policy.Policies, o.Authz.DryRun)
			}
			if strings.Contains(strings.Join(tt.args, " "), cfg) && (o.GRPC.KeepaliveTime != 45*time.Second || o.GRPC.MaxRecvMsgBytes != 1<<20) {
				t.Fatalf("file values not applied: %+v", o.GRPC)
			}
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "grpc-adr: x\n", `unknown option "grpc-adr"`},
		{"bad duration", "grpc-keepalive-time: soon\n", "grpc-keepalive-time"},
		{"nested value", "decision: {a: b}\n", "decision: want a single value"},
		{"not yaml", "::: [\n", "config file"},
		{"config in config", "config: other.yaml\n", `unknown option "config"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseServe(t, "--config", writeFile(t, "c.yaml", tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := parseServe(t, "--config", "/nonexistent/meshproof.yaml"); err == nil {
		t.Fatal("a missing config file must be an error")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"defaults", nil, ""},
		{"client CA without cert", []string{"--grpc-client-ca", "ca.pem"}, "grpc-client-ca needs"},
		{"cert without key", []string{"--grpc-tls-cert", "c.pem"}, "go together"},
		{"bad grpc addr", []string{"--grpc-addr", "nowhere"}, "grpc-addr"},
		{"empty unix path", []string{"--grpc-addr", "unix://"}, "socket path"},
		{"bad http addr", []string{"--http-addr", "8181"}, "http-addr"},
		{"bad status", []string{"--status-on-error", "999"}, "status-on-error"},
		{"on-policy-error deny", []string{"--on-policy-error", "deny"}, ""},
		{"bad on-policy-error", []string{"--on-policy-error", "allow"}, `on-policy-error "allow": must be deny or error`},
		{"bad decision", []string{"--decision", "envoy/authz/[x"}, "decision"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseServe(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			err = o.validate()
			if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}

// TestReadmeDocumentsEveryFlag keeps the README's options table in step with
// the flags.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	o := defaultServeOptions()
	fs := newFlagSet("serve")
	o.flags(fs)
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if !strings.Contains(string(readme), "`--"+f.Name+"`") {
			t.Errorf("README does not document --%s", f.Name)
		}
	})
	if n < 20 {
		t.Fatalf("only %d flags seen", n)
	}
}
