package rego

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/rs/zerolog"
)

func TestEvalErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": `package envoy.authz
allow if input.x == 1
multi contains 1
multi contains 2
`})
	e := mustStart(t, Config{Decision: DefaultDecision, Policies: []string{dir}}, nil)
	if _, err := eval(t, e, `{"x": 2}`); !errors.Is(err, ErrUndefined) {
		t.Errorf("Eval of an undefined decision: %v, want ErrUndefined", err)
	}
	if v, err := eval(t, e, `{"x": 1}`); err != nil || v.Compare(ast.Boolean(true)) != 0 {
		t.Errorf("Eval = %v, %v; want true", v, err)
	}

	notStarted, err := New(Config{Decision: DefaultDecision}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := notStarted.Eval(context.Background(), ast.MustParseTerm(`{}`)); !errors.Is(err, ErrNotReady) {
		t.Errorf("Eval before Start: %v, want ErrNotReady", err)
	}
	if notStarted.Ready() || notStarted.Revision() != "" {
		t.Errorf("before Start: Ready %v, Revision %q", notStarted.Ready(), notStarted.Revision())
	}
}

// TestEvalCancelled: a runaway policy stops when the Check's context ends
// (Envoy gave up), instead of holding a worker.
func TestEvalCancelled(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": `package envoy.authz
allow if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`})
	e := mustStart(t, Config{Decision: DefaultDecision, Policies: []string{dir}}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, _, err := e.Eval(ctx, ast.MustParseTerm(`{}`))
	if !topdown.IsCancel(err) {
		t.Errorf("Eval of a runaway policy with a deadline: %v, want a cancel error", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Defaults(), false},
		{"policies", Config{Decision: DefaultDecision, Policies: []string{"a.rego", "builtin:observe"}}, false},
		{"blank policy", Config{Decision: DefaultDecision, Policies: []string{" "}}, true},
		{"no decision", Config{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
