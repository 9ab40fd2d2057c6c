package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes content to name in a new temp dir and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServeStartupErrors: what cannot serve exits at once, with 1 for a
// problem found while starting and 2 for a mistake in the command line, and
// says what is wrong.
func TestServeStartupErrors(t *testing.T) {
	t.Parallel()
	broken := writeFile(t, "broken.rego", brokenSyntax)
	other := writeFile(t, "other.rego", "package other\n\nallow := true\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		want       []string // substrings of stderr
		wantStdout []string
	}{{
		name:     "policy with a syntax error",
		args:     []string{"--policy", broken},
		wantCode: 1,
		want:     []string{broken + ":3:", "rego_parse_error"},
	}, {
		name:     "policy not defining the default decision",
		args:     []string{"--policy", other},
		wantCode: 1,
		want:     []string{"decision data.envoy.authz.allow", "not defined", "--decision"},
	}, {
		name:     "policy not defining --decision",
		args:     []string{"--policy", benchFile("policy.rego"), "--decision", "envoy/authz/verdict"},
		wantCode: 1,
		want:     []string{"decision data.envoy.authz.verdict", "not defined"},
	}, {
		name:     "missing policy file",
		args:     []string{"--policy", filepath.Join(t.TempDir(), "nope.rego")},
		wantCode: 1,
		want:     []string{"nope.rego", "no such file"},
	}, {
		name:     "gRPC port in use",
		args:     []string{"--grpc-addr", busy.Addr().String()},
		wantCode: 1,
		want:     []string{"listen " + busy.Addr().String(), "address already in use"},
	}, {
		name:     "HTTP port in use",
		args:     []string{"--http-addr", busy.Addr().String()},
		wantCode: 1,
		want:     []string{"http-addr", "address already in use"},
	}, {
		name:     "unknown flag",
		args:     []string{"--no-such-flag"},
		wantCode: 2,
		want:     []string{"unknown flag: --no-such-flag", `Run "meshproof serve --help"`},
	}, {
		name:     "flag value of the wrong type",
		args:     []string{"--shutdown-grace", "soon"},
		wantCode: 2,
		want:     []string{"shutdown-grace"},
	}, {
		name:     "bad --log-format",
		args:     []string{"--log-format", "xml"},
		wantCode: 2,
		want:     []string{`log-format "xml": want json or console`},
	}, {
		name:     "bad --log-level",
		args:     []string{"--log-level", "loud"},
		wantCode: 2,
		want:     []string{`log-level "loud"`},
	}, {
		name:     "client CA without a certificate",
		args:     []string{"--grpc-client-ca", benchFile("policy.rego")},
		wantCode: 2,
		want:     []string{"grpc-client-ca needs grpc-tls-cert and grpc-tls-key"},
	}, {
		name:     "certificate without a key",
		args:     []string{"--grpc-tls-cert", benchFile("policy.rego")},
		wantCode: 2,
		want:     []string{"grpc-tls-cert and grpc-tls-key go together"},
	}, {
		name:     "argument after the flags",
		args:     []string{"extra"},
		wantCode: 2,
		want:     []string{`serve takes no arguments, got ["extra"]`},
	}, {
		name:       "--help, on stdout",
		args:       []string{"--help"},
		wantCode:   0,
		wantStdout: []string{"Usage:\n  meshproof serve [flags]", "--grpc-addr", "--policy", "--decision"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := meshproof(t, nil, append(append([]string{}, serveArgs...), tt.args...)...)
			if res.code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", res.code, tt.wantCode, res)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q\n%s", w, res)
				}
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(res.stdout, w) {
					t.Errorf("stdout lacks %q\n%s", w, res)
				}
			}
		})
	}
}

// TestConfigFile: --config's keys are the flag names; the command line wins.
func TestConfigFile(t *testing.T) {
	t.Parallel()
	// The bench policy defines both allow (a boolean) and result (an object
	// with x-authz-source): the header tells which decision was used.
	config := writeFile(t, "meshproof.yaml", `# meshproof serve options
grpc-addr: 127.0.0.1:0
http-addr: 127.0.0.1:0
policy: [`+benchFile("policy.rego")+`]
decision: envoy/authz/allow
log-format: json
log-level: debug
shutdown-grace: 5s
watch: false
`)
	tests := []struct {
		name         string
		args         []string
		decision     string
		wantHeader   bool // x-authz-source: the object decision was used
		adminAllowed bool // GET /admin: allowed by observe, denied by the bench policy
	}{
		{"config file alone", []string{"serve", "--config", config}, "envoy/authz/allow", false, false},
		{"flag overrides a key", []string{"serve", "--config", config, "--decision", "envoy/authz/result"}, "envoy/authz/result", true, false},
		{"--config=FILE, flag before it", []string{"serve", "--decision=envoy/authz/result", "--config=" + config}, "envoy/authz/result", true, false},
		{"--policy replaces the file's list", []string{"serve", "--config", config, "--policy", "builtin:observe"}, "envoy/authz/allow", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startRaw(t, append(tt.args, "--store", sqliteStore(t))...)
			if got := s.findLog("meshproof serving")["decision"]; got != tt.decision {
				t.Errorf("serving with decision %v, want %s", got, tt.decision)
			}
			conn := dial(t, s.GRPCAddr, nil)
			resp := check(t, conn, benchRequest(t))
			if !allowed(resp) {
				t.Fatalf("bench request denied: %v", resp)
			}
			if _, found := header(resp, "x-authz-source"); found != tt.wantHeader {
				t.Errorf("x-authz-source present = %v, want %v (decision %s)", found, tt.wantHeader, tt.decision)
			}
			admin := benchRequest(t)
			admin.Attributes.Request.Http.Path = "/admin"
			if got := allowed(check(t, conn, admin)); got != tt.adminAllowed {
				t.Errorf("GET /admin allowed = %v, want %v", got, tt.adminAllowed)
			}
		})
	}

	errs := []struct {
		name     string
		config   string
		wantCode int
		want     []string
	}{
		{"unknown key", "grpc-addr: 127.0.0.1:0\npolciy: [a.rego]\n", 2, []string{`unknown option "polciy"`}},
		{"config key inside the file", "config: other.yaml\n", 2, []string{`unknown option "config"`}},
		{"bad value", "shutdown-grace: soon\n", 2, []string{"shutdown-grace", "soon"}},
		{"a list for a single value", "decision: [a, b]\n", 2, []string{"decision", "want a single value"}},
		{"not YAML", "grpc-addr: [\n", 2, []string{"config file"}},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := meshproof(t, nil, "serve", "--config", writeFile(t, "c.yaml", tt.config))
			if res.code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", res.code, tt.wantCode, res)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q\n%s", w, res)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		res := meshproof(t, nil, "serve", "--config", filepath.Join(t.TempDir(), "none.yaml"))
		if res.code == 0 || !strings.Contains(res.stderr, "none.yaml") {
			t.Errorf("want a failure naming the file, got %s", res)
		}
	})
}

// TestVersionAndUsage: the commands that answer without serving.
func TestVersionAndUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{"version", []string{"version"}, 0, []string{"meshproof ", "github.com/open-policy-agent/opa v", "google.golang.org/grpc v", "github.com/envoyproxy/go-control-plane/envoy v", "go1."}, nil},
		{"--version", []string{"--version"}, 0, []string{"meshproof "}, nil},
		{"no arguments", nil, 2, nil, []string{"Usage:", "\n  serve ", "\n  eval ", "\n  version "}},
		{"unknown command", []string{"frobnicate"}, 2, nil, []string{`unknown command "frobnicate"`, `Run "meshproof --help"`}},
		{"help", []string{"help"}, 0, []string{"Usage:"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := meshproof(t, nil, tt.args...)
			if res.code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", res.code, tt.wantCode, res)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(res.stdout, w) {
					t.Errorf("stdout lacks %q\n%s", w, res)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q\n%s", w, res)
				}
			}
		})
	}
}
