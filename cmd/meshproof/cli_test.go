package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/evidence"
	"sigs.k8s.io/yaml"
)

// TestHelpOnStdout: help is on standard output with exit 0, however it is
// asked for (meshproof demo --help | less shows it); a wrong command line
// is on standard error with exit 2.
func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"-help"}, {"help", "demo"}, {"demo", "--help"}, {"demo", "-h"}, {"demo", "-help"},
		{"report", "strict-readiness", "--help"}, {"help", "report", "tls-check"}, {"checkpoint", "save", "--help"},
		{"query", "--help"}, {"export", "--help"}, {"serve", "--help"}, {"eval", "--help"},
	} {
		code, stdout, stderr := cli(t, args...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") || !strings.Contains(stdout, "meshproof") {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s", args, code, stderr, stdout)
		}
		// A boolean flag reads as it is used, --all, not pflag's
		// --all[=true|false].
		if strings.Contains(stdout, "[=true|false]") {
			t.Errorf("%q: help writes a boolean flag as pflag's --x[=true|false]:\n%s", args, stdout)
		}
	}
	if code, stdout, _ := cli(t, "demo", "--help"); !strings.Contains(stdout, "simulated Istio mesh") || !strings.Contains(stdout, "--interval") || code != 0 {
		t.Errorf("demo --help lacks its doc or flags:\n%s", stdout)
	}
	for _, args := range [][]string{{}, {"bogus"}, {"demo", "--bogus"}, {"demo", "extra"}, {"query", "-bogus"}} {
		code, stdout, stderr := cli(t, args...)
		if code != 2 || stdout != "" || stderr == "" {
			t.Errorf("%q: exit %d, want 2 with stderr only\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
	}
}

// TestCompletion: meshproof completion bash|zsh|fish prints a script; bash
// parses its own.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, stdout, stderr := cli(t, "completion", shell)
		if code != 0 || !strings.Contains(stdout, "meshproof") || len(stdout) < 500 {
			t.Errorf("completion %s: exit %d\n%s%s", shell, code, stdout, stderr)
			continue
		}
		if shell != "bash" {
			continue
		}
		bash, err := exec.LookPath("bash")
		if err != nil {
			t.Log("no bash to check the script with")
			continue
		}
		script := filepath.Join(t.TempDir(), "meshproof.bash")
		if err := os.WriteFile(script, []byte(stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
			t.Errorf("bash -n: %v\n%s", err, out)
		}
	}
	// The completion itself: flags of a command, cobra's hidden __complete.
	code, stdout, _ := cli(t, "__complete", "report", "strict-readiness", "--dest")
	if code != 0 || !strings.Contains(stdout, "--destination") {
		t.Errorf("__complete: exit %d\n%s", code, stdout)
	}
}

// TestSingleDashLongFlags: Go's flag package took -name and -name=value
// for long flags; they still work, a value that looks like a flag stays a
// value, and an unknown one is a usage error.
func TestSingleDashLongFlags(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	now := time.Now()
	a.add(t, rec(now.Add(-time.Minute), sleep, httpbin, httpbinID, evidence.MTLS), rec(now.Add(-2*time.Minute), legacy, httpbin, "", evidence.Plaintext))
	code, stdout, stderr := cli(t, "query", "-server", a.url, "-token-file="+a.tokenFile, "-output", "json", "-mtls=false", "-limit", "5")
	var page evidence.RecordPage
	if err := json.Unmarshal([]byte(stdout), &page); code != 0 || err != nil || len(page.Records) != 1 || page.Records[0].Verdict != evidence.Plaintext {
		t.Fatalf("single-dash flags: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	// A flag's value is not a flag, even when it starts with a dash.
	code, stdout, stderr = cli(t, "query", "-server", a.url, "-token-file", a.tokenFile, "--path-prefix", "-output", "-o", "json")
	if err := json.Unmarshal([]byte(stdout), &page); code != 0 || err != nil || len(page.Records) != 0 {
		t.Fatalf("--path-prefix -output: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if got := normalizeArgs(newRootCommand(nil, nil), []string{"serve", "-policy", "x.rego", "-dry-run", "--decision", "-v0-compatible", "-n", "-- -x"}); strings.Join(got, " ") !=
		"serve --policy x.rego --dry-run --decision -v0-compatible -n -- -x" {
		t.Errorf("normalizeArgs: %q", got)
	}
	code, _, stderr = cli(t, "query", "-bogus-flag")
	if code != 2 || !strings.HasPrefix(stderr, "meshproof query: ") {
		t.Errorf("-bogus-flag: exit %d: %s", code, stderr)
	}
}

// TestOutputFormats: -o takes the same values everywhere; yaml is the
// JSON's; a value a command does not support is a usage error listing
// those it does.
func TestOutputFormats(t *testing.T) {
	a := newTestAPI(t, api.Config{})
	now := time.Now().UTC()
	a.add(t, rec(now.Add(-time.Minute), sleep, httpbin, httpbinID, evidence.MTLS))
	window := []string{"--since", now.Add(-time.Hour).Format(time.RFC3339), "--until", now.Add(time.Second).Format(time.RFC3339)}
	for _, args := range [][]string{
		{"query"}, {"report", "tls-check"}, {"report", "strict-readiness", "--destination", httpbin},
	} {
		args = append(args, window...)
		_, jsonOut, _ := cli(t, append(append(args, a.args()...), "-o", "json")...)
		code, yamlOut, stderr := cli(t, append(append(args, a.args()...), "-o", "yaml")...)
		if code != 0 {
			t.Errorf("%q -o yaml: exit %d: %s", args, code, stderr)
			continue
		}
		var fromJSON, fromYAML any
		if err := json.Unmarshal([]byte(jsonOut), &fromJSON); err != nil {
			t.Fatalf("%q -o json: %v", args, err)
		}
		if err := yaml.Unmarshal([]byte(yamlOut), &fromYAML); err != nil {
			t.Fatalf("%q -o yaml: %v", args, err)
		}
		j1, _ := json.Marshal(fromJSON)
		j2, _ := json.Marshal(fromYAML)
		if string(j1) != string(j2) {
			t.Errorf("%q: yaml is not the json:\n%s\n%s", args, j1, j2)
		}
		_, table, _ := cli(t, append(append(args, a.args()...), "--output", "table")...)
		code, wide, stderr := cli(t, append(append(args, a.args()...), "--output", "wide")...)
		if code != 0 || !strings.Contains(table, "mtls") && !strings.Contains(table, "OK") && !strings.Contains(table, "READY") {
			t.Errorf("%q -o table: exit %d\n%s%s", args, code, table, stderr)
		}
		// wide: the table with more columns, where there are more.
		if moreCols := map[string]string{"query": "REQUEST ID", "tls-check": "FIRST SEEN"}[args[len(args)-5]]; moreCols != "" &&
			(!strings.Contains(wide, moreCols) || strings.Contains(table, moreCols)) {
			t.Errorf("%q -o wide lacks %s:\n%s", args, moreCols, wide)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"query", "-o", "xml"}, "want table, wide, json, yaml, ndjson"},
		{[]string{"report", "tls-check", "-o", "ndjson"}, "want table, wide, json, yaml"},
		{[]string{"export", "-o", "table"}, "want ndjson, json"},
		{[]string{"verify", "-o", "ndjson"}, "want table, wide, json, yaml, text"},
		{[]string{"verify-proof", "--public-key", "k.pub", "-o", "csv"}, "want table, wide, json, yaml, text"},
	} {
		code, _, stderr := cli(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, want 2 naming %q: %s", tt.args, code, tt.want, stderr)
		}
	}
}

// TestServeConfigThroughCommand: serve's --config through the command
// line as run parses it: the file is read, and a flag given beats it.
func TestServeConfigThroughCommand(t *testing.T) {
	cfg := writeFile(t, "c.yaml", "http-addr: from-the-file\nrole: query\n")
	code, _, stderr := cli(t, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, `http-addr "from-the-file"`) {
		t.Errorf("file value: exit %d: %s", code, stderr)
	}
	code, _, stderr = cli(t, "serve", "-config", cfg, "--http-addr", "from-the-flag")
	if code != 2 || !strings.Contains(stderr, `http-addr "from-the-flag"`) || strings.Contains(stderr, "from-the-file") {
		t.Errorf("flag over file: exit %d: %s", code, stderr)
	}
	code, _, stderr = cli(t, "serve", "--config", writeFile(t, "bad.yaml", "grpc-adr: x\n"))
	if code != 2 || !strings.Contains(stderr, `unknown option "grpc-adr"`) {
		t.Errorf("unknown key: exit %d: %s", code, stderr)
	}
}

// TestVerifyTextIsTable: verify's and verify-proof's old "text" output is
// still taken, as the table it always was.
func TestVerifyTextIsTable(t *testing.T) {
	store := "sqlite:" + filepath.Join(t.TempDir(), "e.db")
	if code, _, stderr := cli(t, "migrate", "--store", store); code != 0 {
		t.Fatal(stderr)
	}
	_, text, _ := cli(t, "verify", "--store", store, "--output", "text")
	code, table, stderr := cli(t, "verify", "--store", store)
	if code != 0 || text != table || !strings.Contains(table, "no chains") {
		t.Errorf("verify: exit %d, text %q, table %q: %s", code, text, table, stderr)
	}
	code, y, _ := cli(t, "verify", "--store", store, "-o", "yaml")
	var v map[string]any
	if err := yaml.Unmarshal([]byte(y), &v); code != 0 || err != nil || v["intact"] != true {
		t.Errorf("verify -o yaml: exit %d, %v\n%s", code, err, y)
	}
}
