//go:build linux

// Command loadbench is meshproof's load benchmark. It drives the reference
// workload (test/testdata/bench) with ghz against the bare gRPC "ceiling" and
// against `meshproof serve`, alternating for several rounds, and reports
// meshproof's throughput as a ratio of the ceiling's measured in the same run,
// plus the server CPU each Check costs (read from /proc, hence Linux only).
//
// Usage, from the tools module:
//
//	cd tools && go run ./loadbench [-n 20000] [--rounds 3] [--json] [--variant sync=--evidence-durability sync]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// config is everything one benchmark run needs; flags map onto it.
type config struct {
	Requests      int      // measured Checks per run (ghz -n)
	Concurrency   int      // ghz -c
	Connections   int      // ghz --connections
	Rounds        int      // how many times each target is measured
	Repo          string   // repository root; found from the working directory when empty
	MeshproofBin  string   // prebuilt meshproof; built from ./cmd/meshproof when empty
	MeshproofArgs []string // extra arguments appended to `meshproof serve ...`
	Variants      []string // NAME=ARGS: more meshproof targets, each with its own extra arguments
	CompareBin    string   // optional third target, e.g. an OPA-Envoy binary
	CompareArgs   string   // its arguments, with {grpc}, {http}, {policy}, {repo} placeholders
	CompareName   string   // its name in the report
	AllowErrors   bool     // report non-OK Checks instead of failing
	JSON          bool     // print the report as JSON instead of a table
}

// Validate says what is wrong with c and how to fix it.
func (c *config) Validate() error {
	switch {
	case c.Connections < 1:
		return errors.New("--connections must be at least 1")
	case c.Concurrency < c.Connections:
		return fmt.Errorf("-c (%d) must be at least --connections (%d): ghz spreads workers over connections", c.Concurrency, c.Connections)
	case c.Requests < c.Concurrency:
		return fmt.Errorf("-n (%d) must be at least -c (%d)", c.Requests, c.Concurrency)
	case c.Rounds < 1:
		return errors.New("--rounds must be at least 1")
	case c.CompareArgs != "" && c.CompareBin == "":
		return errors.New("--compare-args needs --compare-bin")
	case c.CompareBin != "" && !strings.Contains(c.CompareArgs, "{grpc}"):
		return errors.New("--compare-args must contain {grpc}: the compare target has to listen on the port loadbench picks")
	case c.CompareBin != "" && (c.CompareName == "" || c.CompareName == "ceiling" || c.CompareName == "meshproof"):
		return errors.New("--compare-name must be set and differ from ceiling and meshproof")
	}
	seen := map[string]bool{"ceiling": true, "meshproof": true}
	if c.CompareBin != "" {
		seen[c.CompareName] = true
	}
	for _, v := range c.Variants {
		name, _, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			return fmt.Errorf("--variant %q: want NAME=ARGS, e.g. sync=--evidence-durability sync", v)
		}
		if seen[name] {
			return fmt.Errorf("--variant %q: the name %s is taken", v, name)
		}
		seen[name] = true
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("loadbench", flag.ContinueOnError)
	fs.IntVar(&c.Requests, "n", 20000, "measured Checks per run (a warm-up of n/10 runs first)")
	fs.IntVar(&c.Concurrency, "c", 16, "ghz concurrency (the reference workload uses 16)")
	fs.IntVar(&c.Connections, "connections", 2, "ghz connections (the reference workload uses 2)")
	fs.IntVar(&c.Rounds, "rounds", 3, "rounds; each target is measured once per round and the median is reported")
	fs.StringVar(&c.Repo, "repo", "", "repository root (default: found from the working directory)")
	fs.StringVar(&c.MeshproofBin, "meshproof-bin", "", "prebuilt meshproof binary (default: go build ./cmd/meshproof)")
	fs.Var((*stringList)(&c.MeshproofArgs), "meshproof-arg", "extra argument for `meshproof serve` (repeatable)")
	fs.Var((*stringList)(&c.Variants), "variant", "NAME=ARGS: one more meshproof target, serve with the space-separated ARGS added, e.g. sync=--evidence-durability sync (repeatable)")
	fs.StringVar(&c.CompareBin, "compare-bin", "", "binary of an optional third target, e.g. OPA-Envoy")
	fs.StringVar(&c.CompareArgs, "compare-args", "", "space-separated arguments of the third target; {grpc}, {http}, {policy} and {repo} are replaced")
	fs.StringVar(&c.CompareName, "compare-name", "compare", "name of the third target in the report")
	fs.BoolVar(&c.AllowErrors, "allow-errors", false, "report non-OK Checks instead of failing the run")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON on stdout (progress stays on stderr)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, c.Validate()
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(2)
	}
	// Children run in their own process groups, so Ctrl-C reaches only us;
	// cancelling ctx is what kills them.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

// findRepo walks up from dir to the directory that holds both the tools
// module and the reference workload, so the tool runs from tools/ or the root.
func findRepo(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "tools", "go.mod")) && fileExists(filepath.Join(d, benchDir, "request.json")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no meshproof repository above %s; run from tools/ or pass --repo", dir)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// benchDir holds the reference workload, relative to the repository root.
const benchDir = "test/testdata/bench"

// targets lists what each round measures, in order; the ceiling comes first
// because every ratio is taken against it.
func targets(cfg config, b binaries, policy, repo string) []target {
	ts := []target{
		{name: "ceiling", bin: b.ceiling, args: func(grpc, _ string) []string {
			return []string{"--addr", grpc}
		}},
		{name: "meshproof", bin: b.meshproof, args: func(grpc, http string) []string {
			return append([]string{"serve", "--grpc-addr", grpc, "--http-addr", http,
				"--policy", policy, "--decision", "envoy/authz/result", "--log-level", "warn"},
				cfg.MeshproofArgs...)
		}},
	}
	base := ts[1].args
	for _, v := range cfg.Variants {
		name, extra, _ := strings.Cut(v, "=")
		ts = append(ts, target{name: name, bin: b.meshproof, args: func(grpc, http string) []string {
			return append(base(grpc, http), strings.Fields(extra)...)
		}})
	}
	if cfg.CompareBin != "" {
		ts = append(ts, target{name: cfg.CompareName, bin: cfg.CompareBin, args: func(grpc, http string) []string {
			r := strings.NewReplacer("{grpc}", grpc, "{http}", http, "{policy}", policy, "{repo}", repo)
			return strings.Fields(r.Replace(cfg.CompareArgs))
		}})
	}
	return ts
}

// run builds the binaries, measures every target Rounds times and writes the
// report to stdout; progress goes to stderr.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	repo := cfg.Repo
	if repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if repo, err = findRepo(wd); err != nil {
			return err
		}
	}
	repo, err := filepath.Abs(repo)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "loadbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bins, err := buildAll(ctx, cfg, repo, tmp, logf)
	if err != nil {
		return err
	}
	env := runEnv{
		tmp:      tmp,
		request:  filepath.Join(repo, benchDir, "request.json"),
		protoset: filepath.Join(tmp, "authz.protoset"),
		ghz:      bins.ghz,
		ticks:    clockTicks(logf),
		logf:     logf,
	}
	if err := writeProtoset(env.protoset); err != nil {
		return err
	}
	if env.check, err = loadRequest(env.request); err != nil {
		return err
	}
	ts := targets(cfg, bins, filepath.Join(repo, benchDir, "policy.rego"), repo)
	samples := make(map[string][]sample)
	for round := 1; round <= cfg.Rounds; round++ {
		for _, t := range ts {
			s, err := measure(ctx, cfg, env, t, round)
			if ctx.Err() != nil {
				return errors.New("interrupted; every server and ghz was stopped")
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, t.name, err)
			}
			logf("round %d/%d %-10s %s", round, cfg.Rounds, t.name, s)
			samples[t.name] = append(samples[t.name], s)
		}
	}
	rep := summarize(cfg, ts, samples, env.ticks, ghzVersion(bins.ghz))
	if cfg.JSON {
		return rep.writeJSON(stdout)
	}
	return rep.writeTable(stdout)
}
