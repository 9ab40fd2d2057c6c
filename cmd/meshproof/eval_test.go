package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/meshproof/meshproof/rego"
)

// TestEvalPrintsTheStoredRecord: eval prints the record as serve stores
// it. A path and a recorded header over evidence.MaxFieldBytes are cut, and
// the record says so (truncated, and the reason), in eval's output as in the
// record a real serve path (Check, a Recorder, a SQLite file) stores for
// the same request. Eval used to print the record before it was bounded:
// the bounds were applied by the writer, after the Check had answered.
func TestEvalPrintsTheStoredRecord(t *testing.T) {
	long := "/" + strings.Repeat("p", evidence.MaxFieldBytes+100)
	req := authztest.NewRequest(authztest.Path(long), authztest.Header("x-note", strings.Repeat("n", evidence.MaxFieldBytes+1)))
	raw, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "request.json")
	if err := os.WriteFile(input, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"eval", "--input", input, "--record-header", "x-note"}, &stdout, &stderr); code != 0 {
		t.Fatalf("eval: exit %d: %s", code, stderr.String())
	}
	var out struct {
		Reasons []string         `json:"reasons"`
		Record  *evidence.Record `json:"record"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("eval's output: %v\n%s", err, stdout.String())
	}
	printed := out.Record
	if len(printed.Request.Path) != evidence.MaxFieldBytes || len(printed.Headers["x-note"]) != evidence.MaxFieldBytes ||
		!printed.Truncated || !slices.Contains(printed.Reasons, evidence.ReasonTruncated) || !slices.Equal(out.Reasons, printed.Reasons) {
		t.Errorf("eval printed a record not bounded: path %d bytes, x-note %d bytes, truncated %v, reasons %q (top-level %q)",
			len(printed.Request.Path), len(printed.Headers["x-note"]), printed.Truncated, printed.Reasons, out.Reasons)
	}

	// The same request through serve's path, stored and read back.
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rc := recorder.DefaultConfig()
	rc.Durability = recorder.Sync
	rec, err := recorder.New(ctx, rc, "eval", store, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close(ctx)
	p := rego.Defaults()
	p.Watch = false
	engine, err := rego.New(p, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer engine.Stop(ctx)
	a := authz.DefaultConfig()
	a.Replica = "eval"
	a.RecordHeaders = []string{"x-note"}
	svc, err := authz.NewServer(a, engine, rec, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.Check(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := store.Get(ctx, resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue())
	if err != nil {
		t.Fatal(err)
	}
	// What differs between two Checks of one request, and the link only
	// the writer sets.
	for _, r := range []*evidence.Record{printed, stored} {
		r.ID, r.Decision.DecisionID, r.Chain = "", "", evidence.Chain{}
		r.Time = r.Time.UTC().Truncate(0)
	}
	printed.Time = stored.Time
	if !reflect.DeepEqual(printed, stored) {
		p, _ := json.Marshal(printed)
		s, _ := json.Marshal(stored)
		t.Errorf("eval printed\n%.600s\nserve stored\n%.600s", p, s)
	}
}

// TestEvalFailOnDeny: eval --fail-on-deny exits 3 when the policy denies
// (as opa eval --fail), 0 when it allows; without it, 0 either way. The
// output is the same.
func TestEvalFailOnDeny(t *testing.T) {
	raw, err := protojson.Marshal(authztest.NewRequest())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	input := filepath.Join(dir, "request.json")
	allow := filepath.Join(dir, "allow.rego")
	deny := filepath.Join(dir, "deny.rego")
	for name, text := range map[string]string{input: string(raw),
		allow: "package envoy.authz\n\ndefault allow := true\n", deny: "package envoy.authz\n\ndefault allow := false\n"} {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		policy string
		fail   bool
		code   int
	}{{deny, true, 3}, {allow, true, 0}, {deny, false, 0}} {
		args := []string{"eval", "--input", input, "--policy", tt.policy}
		if tt.fail {
			args = append(args, "--fail-on-deny")
		}
		code, stdout, stderr := cli(t, args...)
		var out evalOutput
		if err := json.Unmarshal([]byte(stdout), &out); code != tt.code || err != nil || out.Record == nil || out.Record.Decision.Allowed != (tt.policy == allow) {
			t.Errorf("%q: exit %d, want %d (%v)\n%s%s", args, code, tt.code, err, stdout, stderr)
		}
	}
	if _, stdout, _ := cli(t, "eval", "--help"); !strings.Contains(stdout, "--fail-on-deny") || !strings.Contains(stdout, "3 when the policy denies") {
		t.Errorf("eval --help does not document --fail-on-deny:\n%s", stdout)
	}
}

// TestEvalOutput: eval takes -o as every command that prints does: json
// (the default, as before -o) and yaml, the same document; anything else
// is a usage error naming what eval supports.
func TestEvalOutput(t *testing.T) {
	raw, err := protojson.Marshal(authztest.NewRequest())
	if err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "request.json")
	if err := os.WriteFile(input, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	docs := map[string]map[string]any{}
	for _, format := range []string{"", "json", "yaml"} {
		args := []string{"eval", "--input", input}
		if format != "" {
			args = append(args, "-o", format)
		}
		code, stdout, stderr := cli(t, args...)
		var doc map[string]any
		err := yaml.Unmarshal([]byte(stdout), &doc) // JSON is YAML
		if code != 0 || err != nil || doc["record"] == nil {
			t.Fatalf("%q: exit %d (%v)\n%s%s", args, code, err, stdout, stderr)
		}
		if format == "yaml" && strings.HasPrefix(strings.TrimSpace(stdout), "{") {
			t.Errorf("-o yaml printed JSON:\n%s", stdout)
		}
		docs[format] = doc
	}
	// Each run is a new Check (its own id and time): the same document
	// is the same fields, verdict and reasons.
	shape := func(doc map[string]any) string {
		rec, _ := doc["record"].(map[string]any)
		return fmt.Sprint(slices.Sorted(maps.Keys(doc)), slices.Sorted(maps.Keys(rec)), doc["verdict"], doc["reasons"], rec["request"])
	}
	if a, b, c := shape(docs[""]), shape(docs["json"]), shape(docs["yaml"]); a != b || b != c {
		t.Errorf("eval's documents differ by -o:\n%s\n%s\n%s", a, b, c)
	}
	if code, _, stderr := cli(t, "eval", "--input", input, "-o", "table"); code != 2 || !strings.Contains(stderr, "json, yaml") {
		t.Errorf("-o table: exit %d, stderr %q; want 2 naming json, yaml", code, stderr)
	}
}
