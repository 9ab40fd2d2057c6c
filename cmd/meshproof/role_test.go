package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence/spool"
)

// TestRoleQueryFlags: --role query takes the store, HTTP, API access and log
// flags, and refuses every flag of the data path, by name, whether given on
// the command line or in --config.
func TestRoleQueryFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // in the error; none: accepted
	}{
		{name: "serve takes everything", args: []string{"--role", "serve", "--spool", "s.db", "--grpc-addr", "127.0.0.1:1"}},
		{name: "query with its own flags", args: []string{"--role", "query", "--store", "postgres://db/x", "--http-addr", "127.0.0.1:0",
			"--api-token-file", "t", "--metrics-open", "--log-level", "warn", "--shutdown-grace", "3s"}},
		{name: "unknown role", args: []string{"--role", "audit"}, want: []string{`role "audit": want serve or query`}},
		{name: "gRPC flags", args: []string{"--role", "query", "--grpc-addr", "127.0.0.1:1", "--grpc-stream-workers", "4"},
			want: []string{"--grpc-addr", "--grpc-stream-workers", "--role serve"}},
		{name: "spool", args: []string{"--role", "query", "--spool", "s.db"}, want: []string{"--spool"}},
		{name: "evidence flags", args: []string{"--role", "query", "--evidence-durability", "sync", "--retention", "1h"},
			want: []string{"--evidence-durability", "--retention"}},
		{name: "policy and ext_authz flags", args: []string{"--role", "query", "--policy", "p.rego", "--dry-run", "--replica", "r1"},
			want: []string{"--policy", "--dry-run", "--replica"}},
		{name: "in the config file", args: []string{"--config", writeFile(t, "q.yaml", "role: query\ngrpc-addr: 127.0.0.1:1\n")},
			want: []string{"--grpc-addr"}},
		{name: "a flag that hides its value, in the config file",
			args: []string{"--config", writeFile(t, "q2.yaml", "role: query\nevidence-overflow: deny\n")},
			want: []string{"--evidence-*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultServeOptions()
			fs := newFlagSet("serve")
			o.flags(fs)
			if err := parseOptions(fs, tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.checkRole(fs)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("checkRole: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkRole accepted %v", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestSpoolValidate(t *testing.T) {
	o, err := parseServe(t, "--store", "sqlite:/var/lib/x.db", "--spool", "/var/lib/./x.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "spool: the store's own file") {
		t.Fatalf("validate: %v", err)
	}
}

// TestOpenStoreWithSpool: with --spool, serve writes through the spool, its
// metrics are registered, and the health detail reports it.
func TestOpenStoreWithSpool(t *testing.T) {
	dir := t.TempDir()
	o := defaultEvidenceOptions()
	o.Store, o.Spool = "sqlite:"+filepath.Join(dir, "evidence.db"), filepath.Join(dir, "spool.db")
	reg := prometheus.NewRegistry()
	s, health, err := openStore(context.Background(), o, "r1", zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*spool.Store); !ok {
		t.Fatalf("store is a %T, want the spool", s)
	}
	b, _ := json.Marshal(health())
	if string(b) != `{"evidence_store":{"degraded":false,"spooled":0}}` {
		t.Errorf("health detail %s", b)
	}
	names := map[string]bool{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"meshproof_evidence_spool_depth", "meshproof_evidence_spool_drained_total", "meshproof_evidence_primary_up"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}

	o.Spool = ""
	plain, health, err := openStore(context.Background(), o, "r1", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, ok := plain.(*spool.Store); ok || health != nil {
		t.Errorf("without --spool: %T, health %v", plain, health != nil)
	}
}

// TestMaxClockSkewFlag: --max-clock-skew reaches the /logs endpoint, 5m
// by default, and must be positive.
func TestMaxClockSkewFlag(t *testing.T) {
	o, err := parseServe(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := decisionLogConfig(nil, o.Evidence, nil).MaxClockSkew; got != 5*time.Minute {
		t.Errorf("default MaxClockSkew = %s, want 5m", got)
	}
	if o, err = parseServe(t, "--max-clock-skew", "90s"); err != nil || o.validate() != nil {
		t.Fatalf("--max-clock-skew 90s: %v, %v", err, o.validate())
	}
	if got := decisionLogConfig(nil, o.Evidence, nil).MaxClockSkew; got != 90*time.Second {
		t.Errorf("MaxClockSkew = %s, want 90s", got)
	}
	if o, err = parseServe(t, "--max-clock-skew", "0s"); err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "max-clock-skew must be positive") {
		t.Errorf("validate(--max-clock-skew 0s) = %v", err)
	}
}
