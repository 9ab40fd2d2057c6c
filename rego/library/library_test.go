package library

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRegoTests runs every *_test.rego through OPA's tester, once per
// builtin policy: the policies share package envoy.authz and cannot be
// compiled together. Test files that belong to no policy (lib_test.rego,
// fixtures_test.rego) are loaded in every run.
func TestRegoTests(t *testing.T) {
	policies := Policies()
	shared := sharedTestFiles(t, policies)
	if !slices.Contains(shared, "lib_test.rego") {
		t.Fatalf("lib_test.rego is missing; shared test files: %v", shared)
	}

	var total tally
	for _, name := range policies {
		t.Run(name, func(t *testing.T) {
			testFile := name + testSuffix
			filenames := append([]string{libFile, name + regoExt, testFile}, shared...)
			passed := runRegoTests(t, filenames)

			// Each policy's own tests and lib's tests must have run, so that
			// neither can pass by having nothing in it.
			for _, f := range []string{testFile, "lib_test.rego"} {
				if passed[f].tests == 0 {
					t.Errorf("no Rego test in %s passed", f)
				}
			}
			for _, f := range slices.Sorted(maps.Keys(passed)) {
				t.Logf("%s: %d Rego tests passed (%d cases)", f, passed[f].tests, passed[f].cases)
			}
			total.tests += passed[testFile].tests
			total.cases += passed[testFile].cases
		})
	}
	t.Logf("policy tests: %d Rego tests passed (%d cases), plus lib_test.rego in each run", total.tests, total.cases)
	if total.tests == 0 {
		t.Fatal("no Rego tests ran")
	}
}

// tally counts passing Rego tests and their cases: a parameterised test
// counts one case per leaf, any other test one.
type tally struct{ tests, cases int }

// sharedTestFiles returns the *_test.rego files that are not a policy's own.
func sharedTestFiles(t *testing.T, policies []string) []string {
	t.Helper()
	all, err := fs.Glob(files, "*"+testSuffix)
	if err != nil {
		t.Fatal(err)
	}
	var shared []string
	for _, f := range all {
		if !slices.Contains(policies, strings.TrimSuffix(f, testSuffix)) {
			shared = append(shared, f)
		}
	}
	return shared
}

// runRegoTests compiles filenames together, runs their tests and fails t for
// each Rego test that fails, errors or is skipped. It returns what passed,
// per file.
func runRegoTests(t *testing.T, filenames []string) map[string]tally {
	t.Helper()
	ctx := context.Background()
	modules := parseModules(t, filenames)

	store := inmem.New()
	txn := storage.NewTransactionOrDie(ctx, store)
	defer store.Abort(ctx, txn)

	ch, err := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithEnablePrintStatements(true)).
		SetStore(store).
		SetModules(modules).
		CapturePrintOutput(true).
		RaiseBuiltinErrors(true).
		RunTests(ctx, txn)
	if err != nil {
		t.Fatalf("compiling %v for tests: %v", filenames, err)
	}

	passed := map[string]tally{}
	for r := range ch {
		where := fmt.Sprintf("%s (%s)", r.Name, r.Location)
		switch {
		case r.Error != nil:
			t.Errorf("%s: ERROR: %v", where, r.Error)
		case r.Fail:
			t.Errorf("%s: FAIL%s", where, failedCases(r))
		case r.Skip:
			t.Errorf("%s: SKIPPED: a shipped policy must not carry skipped tests", where)
		default:
			n := passed[r.Location.File]
			n.tests++
			n.cases += max(1, leafCases(r))
			passed[r.Location.File] = n
		}
		if len(r.Output) > 0 {
			t.Logf("%s printed:\n%s", where, r.Output)
		}
	}
	return passed
}

// failedCases lists the failing cases of a parameterised Rego test.
func failedCases(r *tester.Result) string {
	var names []string
	for path, sr := range r.SubResults.Iter {
		if sr.Fail && len(sr.SubResults) == 0 {
			names = append(names, strings.Join(path, "/"))
		}
	}
	if len(names) == 0 {
		return ""
	}
	return ": failing cases: " + strings.Join(names, ", ")
}

func leafCases(r *tester.Result) int {
	n := 0
	for _, sr := range r.SubResults.Iter {
		if len(sr.SubResults) == 0 {
			n++
		}
	}
	return n
}

func parseModules(t *testing.T, filenames []string) map[string]*ast.Module {
	t.Helper()
	modules := make(map[string]*ast.Module, len(filenames))
	for _, f := range filenames {
		src, err := files.ReadFile(f)
		if err != nil {
			t.Fatalf("reading embedded %s: %v", f, err)
		}
		m, err := ast.ParseModuleWithOpts(f, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		modules[f] = m
	}
	return modules
}

// TestRegoFormatted keeps the shipped Rego in opa fmt's layout.
func TestRegoFormatted(t *testing.T) {
	names, err := fs.Glob(files, "*"+regoExt)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range names {
		src, err := files.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		formatted, err := format.SourceWithOpts(f, src, format.Opts{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Errorf("formatting %s: %v", f, err)
			continue
		}
		if string(formatted) != string(src) {
			t.Errorf("%s is not formatted: run opa fmt -w rego/library/", f)
		}
	}
}

// TestRegoParsesAsV0 covers meshproof's v0-compatible mode, which parses
// every local module as Rego v0: the library imports rego.v1 so that it
// means the same under either parser.
func TestRegoParsesAsV0(t *testing.T) {
	names, err := fs.Glob(files, "*"+regoExt)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range names {
		src, err := files.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ast.ParseModuleWithOpts(f, string(src), ast.ParserOptions{RegoVersion: ast.RegoV0}); err != nil {
			t.Errorf("%s does not parse as Rego v0 (does it import rego.v1?): %v", f, err)
		}
	}
}

func TestPolicies(t *testing.T) {
	want := []string{"deny-suspect", "observe", "require-spiffe", "spiffe-allowlist"}
	if got := Policies(); !slices.Equal(got, want) {
		t.Errorf("Policies() = %v, want %v", got, want)
	}
}

// TestPolicyAlone compiles each policy with nothing but lib.rego, as
// meshproof loads it, and checks the three rules every builtin promises on a
// plaintext request.
func TestPolicyAlone(t *testing.T) {
	plaintext := map[string]any{
		"attributes": map[string]any{
			"source":      map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.0.1", "portValue": 40000}}},
			"destination": map[string]any{"address": map[string]any{"socketAddress": map[string]any{"address": "10.0.0.2", "portValue": 8080}}},
			"request": map[string]any{"http": map[string]any{
				"method": "GET", "path": "/", "host": "app",
				"headers": map[string]any{":method": "GET", ":path": "/"},
			}},
		},
		"parsed_path":  []any{""},
		"parsed_query": map[string]any{},
		"meshproof": map[string]any{
			"source": map[string]any{}, "destination": map[string]any{},
			"verdict": "plaintext", "reasons": []any{"no source principal"},
		},
	}
	tests := []struct {
		name        string
		wantAllowed bool
	}{
		{name: "observe", wantAllowed: true},
		{name: "require-spiffe", wantAllowed: false},
		{name: "spiffe-allowlist", wantAllowed: false},
		{name: "deny-suspect", wantAllowed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			compiler := compile(t, tt.name)
			if compiler.Failed() {
				t.Fatalf("%s does not compile with lib.rego: %v", tt.name, compiler.Errors)
			}
			rs, err := rego.New(
				rego.Compiler(compiler),
				rego.Query("data.envoy.authz"),
				rego.Input(plaintext),
			).Eval(context.Background())
			if err != nil {
				t.Fatalf("evaluating data.envoy.authz: %v", err)
			}
			if len(rs) != 1 {
				t.Fatalf("data.envoy.authz: got %d results, want 1", len(rs))
			}
			doc, _ := rs[0].Expressions[0].Value.(map[string]any)
			checkDecision(t, tt.name, doc, tt.wantAllowed)
		})
	}
}

func checkDecision(t *testing.T, name string, doc map[string]any, wantAllowed bool) {
	t.Helper()
	allow, ok := doc["allow"].(bool)
	if !ok {
		t.Fatalf("allow = %#v, want a boolean", doc["allow"])
	}
	if allow != wantAllowed {
		t.Errorf("allow = %v, want %v", allow, wantAllowed)
	}
	reasons, ok := doc["deny_reasons"].([]any) // a Rego set comes out as a slice
	if !ok {
		t.Fatalf("deny_reasons = %#v, want a set", doc["deny_reasons"])
	}
	if allow != (len(reasons) == 0) {
		t.Errorf("allow = %v with deny_reasons %v: reasons must be given exactly when denied", allow, reasons)
	}
	decision, ok := doc["decision"].(map[string]any)
	if !ok {
		t.Fatalf("decision = %#v, want an object", doc["decision"])
	}
	if decision["allowed"] != allow {
		t.Errorf("decision.allowed = %v, want allow (%v)", decision["allowed"], allow)
	}
	if got := fmt.Sprint(decision["http_status"]); got != "403" {
		t.Errorf("decision.http_status = %s, want 403", got)
	}
	headers, _ := decision["headers"].(map[string]any)
	if headers["x-meshproof-policy"] != name {
		t.Errorf("decision.headers = %v, want x-meshproof-policy: %s", decision["headers"], name)
	}
	reason, _ := decision["reason"].(string)
	if reason == "" {
		t.Errorf("decision.reason = %#v, want text", decision["reason"])
	}
	if !allow && decision["body"] != reason {
		t.Errorf("decision.body = %#v, want the reason %q", decision["body"], reason)
	}
}

func compile(t *testing.T, policies ...string) *ast.Compiler {
	t.Helper()
	libName, libSrc := Lib()
	srcs := map[string]string{libName: libSrc}
	for _, p := range policies {
		f, src, err := Module(p)
		if err != nil {
			t.Fatal(err)
		}
		srcs[f] = src
	}
	modules := make(map[string]*ast.Module, len(srcs))
	for f, src := range srcs {
		m, err := ast.ParseModuleWithOpts(f, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		modules[f] = m
	}
	compiler := ast.NewCompiler()
	compiler.Compile(modules)
	return compiler
}

// TestPoliciesConflict shows that two builtins loaded together do not
// compile: they define the same rules in package envoy.authz.
func TestPoliciesConflict(t *testing.T) {
	policies := Policies()
	for i, a := range policies {
		for _, b := range policies[i+1:] {
			t.Run(a+"+"+b, func(t *testing.T) {
				compiler := compile(t, a, b)
				if !compiler.Failed() {
					t.Fatalf("%s and %s compiled together, want a conflict", a, b)
				}
				if !conflictError(compiler.Errors) {
					t.Errorf("%s and %s: want a conflicting-rules error on data.envoy.authz, got: %v", a, b, compiler.Errors)
				}
			})
		}
	}
}

// conflictError reports whether errs includes OPA's error for two modules
// defining the same envoy.authz rule incompatibly.
func conflictError(errs ast.Errors) bool {
	for _, e := range errs {
		if strings.Contains(e.Message, "data.envoy.authz.") &&
			(strings.Contains(e.Message, "multiple default rules") || strings.Contains(e.Message, "conflicting rules")) {
			return true
		}
	}
	return false
}

func TestModule(t *testing.T) {
	for _, name := range Policies() {
		filename, src, err := Module(name)
		if err != nil {
			t.Errorf("Module(%q): %v", name, err)
			continue
		}
		if filename != name+".rego" {
			t.Errorf("Module(%q) filename = %q, want %q", name, filename, name+".rego")
		}
		if !strings.Contains(src, "package envoy.authz\n") {
			t.Errorf("Module(%q) is not in package envoy.authz", name)
		}
	}
}

func TestModuleUnknown(t *testing.T) {
	for _, name := range []string{"", "nope", "lib", "lib_test", "observe_test", "fixtures_test", "observe.rego", "../observe", "Observe"} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Module(name)
			if !errors.Is(err, ErrUnknownPolicy) {
				t.Fatalf("Module(%q) error = %v, want ErrUnknownPolicy", name, err)
			}
			for _, p := range Policies() {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not list known policy %s", err, p)
				}
			}
		})
	}
}

func TestLib(t *testing.T) {
	filename, src := Lib()
	if filename != "lib.rego" {
		t.Errorf("Lib() filename = %q, want lib.rego", filename)
	}
	m, err := ast.ParseModuleWithOpts(filename, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("parsing lib.rego: %v", err)
	}
	if got := m.Package.Path.String(); got != "data.meshproof.lib" {
		t.Errorf("lib.rego package = %s, want data.meshproof.lib", got)
	}
}
