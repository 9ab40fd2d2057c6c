package rego

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/rego/library"
)

// writeFiles writes name -> content under dir, making directories.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// startEngine builds and starts an engine; it is stopped when the test ends.
func startEngine(t *testing.T, cfg Config, reg prometheus.Registerer) (*Engine, error) {
	t.Helper()
	e, err := New(cfg, zerolog.Nop(), reg)
	if err != nil {
		return nil, err
	}
	if err := e.Start(t.Context()); err != nil {
		e.Stop(context.Background())
		return nil, err
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e, nil
}

func mustStart(t *testing.T, cfg Config, reg prometheus.Registerer) *Engine {
	t.Helper()
	e, err := startEngine(t, cfg, reg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return e
}

// eval evaluates the decision for input (Rego/JSON text).
func eval(t *testing.T, e *Engine, input string) (ast.Value, error) {
	t.Helper()
	v, p, err := e.Eval(context.Background(), ast.MustParseTerm(input))
	if p == nil && err == nil {
		t.Error("Eval returned no policy")
	}
	return v, err
}

// tarball builds a bundle .tar.gz with OPA's own writer.
func tarball(t *testing.T, revision string, modules map[string]string, data map[string]any) []byte {
	t.Helper()
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: revision}, Data: data}
	for path, src := range modules {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: path, Path: path, Raw: []byte(src)})
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var revisionRE = regexp.MustCompile(`^sha256:[0-9a-f]{12}$`)

func TestLoadSources(t *testing.T) {
	mtls := `{"meshproof": {"verdict": "mtls", "source": {"id": "spiffe://cluster.local/ns/a/sa/b", "trust_domain": "cluster.local"}}}`
	tests := []struct {
		name     string
		files    map[string]string // written to a temp dir
		tarball  []byte            // written as bundle.tar.gz
		sources  []string          // relative to the temp dir unless builtin:
		decision string
		input    string
		want     string // Rego value
	}{
		{
			name: "directory with nested data.json and data.yaml; tests skipped",
			files: map[string]string{
				"policy.rego": `package envoy.authz
allow if {
	data.teams.shop.owner == "alice"
	data.limits.max == 3
	data.top.v == input.v
}`,
				"teams/shop/data.json": `{"owner": "alice"}`,
				"limits/data.yaml":     "max: 3\n",
				"data.json":            `{"top": {"v": 1}}`,
				// Would not compile: proves *_test.rego is not loaded.
				"policy_test.rego": "package envoy.authz\ntest_x if no_such_function(1)\n",
			},
			sources: []string{"."},
			input:   `{"v": 1}`,
			want:    `true`,
		},
		{
			name:    "single .rego file",
			files:   map[string]string{"policy.rego": "package envoy.authz\nallow := input.x == 1\n", "other.rego": "package envoy.authz\nallow := false\n"},
			sources: []string{"policy.rego"},
			input:   `{"x": 1}`,
			want:    `true`,
		},
		{
			name: ".tar.gz bundle with a manifest revision",
			tarball: tarball(t, "rev-7", map[string]string{"/envoy/authz/policy.rego": "package envoy.authz\nallow := data.cfg.v == input.v\n"},
				map[string]any{"cfg": map[string]any{"v": "b1"}}),
			sources: []string{"bundle.tar.gz"},
			input:   `{"v": "b1"}`,
			want:    `true`,
		},
		{
			name:    "builtin:require-spiffe allows a trusted SPIFFE caller",
			sources: []string{"builtin:require-spiffe"},
			input:   mtls,
			want:    `true`,
		},
		{
			name:    "builtin:require-spiffe denies plaintext",
			sources: []string{"builtin:require-spiffe"},
			input:   `{"meshproof": {"verdict": "plaintext", "source": {}}}`,
			want:    `false`,
		},
		{
			name:     "builtin:require-spiffe object decision from lib",
			sources:  []string{"builtin:require-spiffe"},
			decision: "envoy.authz.decision",
			input:    mtls,
			want:     `{"allowed": true, "http_status": 403, "headers": {"x-meshproof-policy": "require-spiffe"}, "reason": "allowed"}`,
		},
		{
			name:    "builtin policy with data from a file",
			files:   map[string]string{"trust.json": `{"meshproof": {"trust_domains": ["prod.example.com"]}}`},
			sources: []string{"builtin:require-spiffe", "trust.json"},
			input:   mtls,
			want:    `false`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			if tt.tarball != nil {
				if err := os.WriteFile(filepath.Join(dir, "bundle.tar.gz"), tt.tarball, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{Decision: DefaultDecision}
			if tt.decision != "" {
				cfg.Decision = tt.decision
			}
			for _, s := range tt.sources {
				if !strings.HasPrefix(s, BuiltinPrefix) {
					s = filepath.Join(dir, s)
				}
				cfg.Policies = append(cfg.Policies, s)
			}
			e := mustStart(t, cfg, prometheus.NewRegistry())
			if !e.Ready() {
				t.Error("Ready() = false after Start with local sources")
			}
			if rev := e.Revision(); !revisionRE.MatchString(rev) {
				t.Errorf("Revision() = %q, want sha256:<12 hex>", rev)
			}
			got, err := eval(t, e, tt.input)
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if want := ast.MustParseTerm(tt.want).Value; got.Compare(want) != 0 {
				t.Errorf("decision %v, want %v", got, want)
			}
		})
	}
}

// TestRevisionIsContent: the revision names the content (module ids, that
// is paths, included), so the same sources give the same revision and any
// change, a bundle's manifest revision included, gives another.
func TestRevisionIsContent(t *testing.T) {
	dir := t.TempDir()
	revision := func(policy, bundleRev string) string {
		writeFiles(t, dir, map[string]string{"p.rego": policy})
		os.Remove(filepath.Join(dir, "b.tar.gz"))
		if bundleRev != "" {
			if err := os.WriteFile(filepath.Join(dir, "b.tar.gz"), tarball(t, bundleRev, nil, map[string]any{"x": 1}), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return mustStart(t, Config{Decision: DefaultDecision, Policies: []string{dir}}, nil).Revision()
	}
	allow, deny := "package envoy.authz\nallow := true\n", "package envoy.authz\nallow := false\n"
	a, b, c := revision(allow, ""), revision(allow, ""), revision(deny, "")
	d, e := revision(allow, "r1"), revision(allow, "r2")
	if a != b {
		t.Errorf("same sources, revisions %q and %q", a, b)
	}
	if a == c {
		t.Errorf("different policy, same revision %q", a)
	}
	if d == e || a == d {
		t.Errorf("bundle revisions r1 and r2 give %q and %q (no bundle: %q)", d, e, a)
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		sources []string
		cfg     Config
		is      error    // errors.Is target, if any
		wantAll []string // substrings of the error
	}{
		{
			name:    "unknown builtin",
			sources: []string{"builtin:nope"},
			is:      library.ErrUnknownPolicy,
			wantAll: []string{`"nope"`, "require-spiffe", "observe"},
		},
		{
			name:    "syntax error names the file and line",
			files:   map[string]string{"broken.rego": "package envoy.authz\n\nallow if {\n  input.x ==\n}\n"},
			sources: []string{"broken.rego"},
			wantAll: []string{"broken.rego:5:", "rego_parse_error"},
		},
		{
			name:    "compile error names the file and line",
			files:   map[string]string{"unsafe.rego": "package envoy.authz\n\nallow if {\n\tx == 1\n}\n"},
			sources: []string{"unsafe.rego"},
			wantAll: []string{"unsafe.rego:4", "rego_unsafe_var_error"},
		},
		{
			name:    "decision not defined",
			files:   map[string]string{"p.rego": "package envoy.authz\nallowed := true\n"},
			sources: []string{"p.rego"},
			is:      errNotDefined,
			wantAll: []string{"data.envoy.authz.allow", "not defined", "--decision"},
		},
		{
			name:    "missing file",
			sources: []string{"nowhere.rego"},
			is:      os.ErrNotExist,
			wantAll: []string{"nowhere.rego"},
		},
		{
			name:    "v0 syntax without V0Compatible",
			files:   map[string]string{"v0.rego": "package envoy.authz\nallow { true }\n"},
			sources: []string{"v0.rego"},
			wantAll: []string{"v0.rego:2", "rego_parse_error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			cfg := Config{Decision: DefaultDecision}
			for _, s := range tt.sources {
				if !strings.HasPrefix(s, BuiltinPrefix) {
					s = filepath.Join(dir, s)
				}
				cfg.Policies = append(cfg.Policies, s)
			}
			_, err := startEngine(t, cfg, nil)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			for _, s := range tt.wantAll {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestV0Compatible(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"v0.rego": "package envoy.authz\n\ndefault allow = false\n\nallow { input.x == 1 }\n"})
	cfg := Config{Decision: DefaultDecision, Policies: []string{filepath.Join(dir, "v0.rego")}}
	if _, err := startEngine(t, cfg, nil); err == nil {
		t.Fatal("v0 policy loaded without V0Compatible")
	}
	cfg.V0Compatible = true
	e := mustStart(t, cfg, nil)
	for input, want := range map[string]ast.Value{`{"x": 1}`: ast.Boolean(true), `{"x": 2}`: ast.Boolean(false)} {
		got, err := eval(t, e, input)
		if err != nil || got.Compare(want) != 0 {
			t.Errorf("Eval(%s) = %v, %v; want %v", input, got, err, want)
		}
	}
}

func TestDecisionRef(t *testing.T) {
	tests := []struct {
		path    string
		want    string
		wantErr bool
	}{
		{path: "envoy/authz/allow", want: "data.envoy.authz.allow"},
		{path: "/envoy/authz/allow/", want: "data.envoy.authz.allow"},
		{path: "envoy.authz.allow", want: "data.envoy.authz.allow"},
		{path: "data.envoy.authz.allow", want: "data.envoy.authz.allow"},
		{path: "  envoy/authz/decision ", want: "data.envoy.authz.decision"},
		{path: "", wantErr: true},
		{path: "   ", wantErr: true},
		{path: "envoy authz", wantErr: true},
		{path: "envoy/authz/allow[", wantErr: true},
		{path: "envoy//allow", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := DecisionRef(tt.path)
			if tt.wantErr {
				if err == nil {
					t.Errorf("DecisionRef(%q) = %v, want an error", tt.path, got)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("DecisionRef(%q) = %v, %v; want %s", tt.path, got, err, tt.want)
			}
		})
	}
	if _, err := New(Config{Decision: "envoy authz"}, zerolog.Nop(), nil); err == nil {
		t.Error("New accepted a bad decision path")
	}
}
