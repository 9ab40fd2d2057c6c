package rego

import (
	"os"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestInputPaths pins what the dependency analysis finds, and what makes a
// policy uncacheable.
func TestInputPaths(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   string // input paths joined with " ", or "error: <substring>"
	}{
		{"reference policy", readBench(t),
			`input.attributes.request.http.method input.attributes.source.principal input.parsed_path[0]`},
		{"computed header name reads all headers", `allow if { some name in ["a", "b"]; input.attributes.request.http.headers[name] == "x" }`,
			`input.attributes.request.http.headers`},
		{"iteration", `allow if { some h in input.attributes.request.http.headers; h == "x" }`,
			`input.attributes.request.http.headers`},
		{"function reading input", `f(x) if input.a == x
allow if f(1)`, `input.a`},
		{"unreachable rules do not count", `allow if input.a
other if input.secret`, `input.a`},
		{"else chain", `allow := true if input.a == 1
else := false if input.z == 2`, `input.a input.z`},
		{"comprehension and every", `allow if { every x in input.list { x > 0 }; count([y | some y in input.more]) > 1 }`, `input.list input.more`},
		{"import alias", `import input.attributes.request.http as r
allow if r.method == "GET"`, `input.attributes.request.http.method`},
		{"computed data ref follows every rule below it", `allow if data.envoy.authz.sub[input.p].ok
sub["a"] := {"ok": input.q}`, `input.p input.q`},
		{"with", `allow if { inner with input.a as 1; input.b }
inner if input.a`, `input.a input.b`},
		{"input as a value", `allow if { x := input; x.a }`, "error: input as a whole"},
		{"input passed to a built-in", `allow if walk(input, [_, _])`, "error: input as a whole"},
		{"object.get on input", `allow if object.get(input, ["a"], false)`, "error: input as a whole"},
		{"computed top-level key", `allow if { some k in ["a"]; input[k] }`, "error: computed key"},
		{"clock", `allow if time.now_ns() > 0`, "error: time.now_ns"},
		{"clock in a helper", `h if time.now_ns() > input.t
allow if h`, "error: time.now_ns"},
		{"network", `allow if http.send({"method": "GET", "url": "http://127.0.0.1:1"}).status_code == 200`, "error: http.send"},
		{"print", `allow if { print(input.a); true }`, "error: print"},
		{"randomness", `allow if rand.intn("x", 2) == 1`, "error: rand.intn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.policy
			if !strings.HasPrefix(src, "package") {
				src = "package envoy.authz\n" + src
			}
			c := ast.NewCompiler().WithEnablePrintStatements(true)
			if c.Compile(map[string]*ast.Module{"p.rego": ast.MustParseModule(src)}); c.Failed() {
				t.Fatal(c.Errors)
			}
			ref := ast.MustParseRef("data.envoy.authz.allow")
			q, err := c.QueryCompiler().Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(resultVar), ast.NewTerm(ref))))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(src, "result :=") {
				q, _ = c.QueryCompiler().Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(resultVar), ast.NewTerm(ast.MustParseRef("data.envoy.authz.result")))))
			}
			paths, err := inputPaths(c, q)
			if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("got paths %v, err %v; want an error about %q", paths, err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := refList(paths).String(); strings.ReplaceAll(got, ", ", " ") != tt.want {
				t.Fatalf("paths %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMemoStopsWhenKeysDoNotRepeat(t *testing.T) {
	m := newMemo([]ast.Ref{ast.MustParseRef("input.id")[1:]}, 100000, 64<<20)
	for i := range memoProbe {
		in := ast.NewTerm(ast.MustParseTerm(`{"id": ` + itoa(i) + `}`).Value)
		k, ki, ok := m.key(in, nil)
		if !ok {
			t.Fatal("key not built")
		}
		_, found := m.get(k, ki.hash)
		m.count(found)
		m.put(k, ki, ast.Boolean(true))
	}
	if !m.off.Load() {
		t.Fatal("a memo that never hits must switch itself off")
	}
}

func itoa(i int) string { return ast.IntNumberTerm(i).String() }

func readBench(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../test/testdata/bench/policy.rego")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKeyOfChargesRealSizes: a key is charged everything its values hold,
// so a composite value (the whole headers object, read by headers[name])
// carrying a large string is never a key. It used to be charged 64 bytes.
func TestKeyOfChargesRealSizes(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	headers := ast.NewTerm(ast.NewObject(
		[2]*ast.Term{ast.StringTerm("x-small"), ast.StringTerm("blue")},
		[2]*ast.Term{ast.StringTerm("x-big"), ast.StringTerm(big)},
	))
	if _, _, ok := keyOf([]*ast.Term{ast.StringTerm("GET"), headers}); ok {
		t.Fatal("a key holding a 1 MiB header value was accepted")
	}
	if _, _, ok := keyOf([]*ast.Term{ast.ArrayTerm(ast.StringTerm(big))}); ok {
		t.Fatal("a key holding an array of a 1 MiB string was accepted")
	}
	small := ast.NewTerm(ast.NewObject([2]*ast.Term{ast.StringTerm("x-team"), ast.StringTerm("blue")}))
	_, ki, ok := keyOf([]*ast.Term{ast.StringTerm("GET"), small, nil})
	if !ok {
		t.Fatal("a small key was refused")
	}
	if ki.size < len("GET")+len("x-team")+len("blue") || ki.size > 1024 {
		t.Fatalf("small key charged %d bytes", ki.size)
	}
	if n, ok := termSize(ast.StringTerm(big), 4096); ok || n > 4096+len(big)+64 {
		t.Fatalf("termSize of a 1 MiB string under a 4 KiB limit: %d, %v", n, ok)
	}
}

// TestMemoBoundedByBytes: the cache never holds more than its byte budget,
// however many entries it may hold, and keeps no decision larger than
// maxMemoValue.
func TestMemoBoundedByBytes(t *testing.T) {
	const budget = 256 << 10
	m := newMemo([]ast.Ref{ast.MustParseRef("input.id")[1:]}, 1<<30, budget)
	value := strings.Repeat("v", 1000)
	for i := range 5000 {
		k, ki, ok := keyOf([]*ast.Term{ast.StringTerm(strings.Repeat("k", 1000) + itoa(i))})
		if !ok {
			t.Fatal("key refused")
		}
		m.put(k, ki, ast.String(value))
		if m.bytes > budget {
			t.Fatalf("after %d puts the memo holds %d bytes, over its budget %d", i+1, m.bytes, budget)
		}
		if got := m.n * 2000; got > budget {
			t.Fatalf("after %d puts the memo holds %d entries of 2,000 bytes, over its budget %d", i+1, m.n, budget)
		}
	}
	if m.n == 0 {
		t.Fatal("nothing kept")
	}
	k, ki, _ := keyOf([]*ast.Term{ast.StringTerm("large decision")})
	m.put(k, ki, ast.String(strings.Repeat("v", maxMemoValue+1)))
	if _, found := m.get(k, ki.hash); found {
		t.Fatal("a decision larger than maxMemoValue was kept")
	}
}
