// Command testsum reads `go test -json` on its standard input and writes
// what plain `go test` would (a line per package, the output of each test
// that failed, build errors) followed by the skipped and the failed tests
// and one summary line:
//
//	1187 passed, 2 failed, 23 skipped (tests of 64 packages; subtests not counted)
//
// It exits 1 when a test or a package failed, 0 otherwise; test/run pipes
// every module's `go test -json` through it. Lines that are not JSON (a
// section heading, go vet's output) are copied as they are.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: go test -json ./... | testsum")
		os.Exit(2)
	}
	os.Exit(run(os.Stdin, os.Stdout))
}

// event is a line of `go test -json` (cmd/test2json), build events
// included.
type event struct {
	Action      string
	Package     string
	ImportPath  string // build-output, build-fail
	Test        string
	Output      string
	FailedBuild string
}

type key struct{ pkg, test string }

// tally follows a stream of events.
type tally struct {
	w                       io.Writer
	passed, failed, skipped int
	packages                map[string]bool
	// output holds each running test's lines until it ends: printed when
	// it fails, dropped otherwise.
	output map[key][]string
	// failedIn counts the failed tests of each package.
	failedIn map[string]int
	// failures are the failed tests (and packages that failed outside a
	// test), in order, for the recap; skips the skipped tests.
	failures, skips []string
}

func run(r io.Reader, w io.Writer) int {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	t := &tally{w: bw, packages: map[string]bool{}, output: map[key][]string{}, failedIn: map[string]int{}}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			t.line(line)
			// A package's result is news: show it as it comes.
			bw.Flush()
		}
		if err != nil {
			if err != io.EOF {
				fmt.Fprintf(bw, "testsum: reading the test output: %v\n", err)
				t.failures = append(t.failures, "(the rest of the test output, unread)")
			}
			break
		}
	}
	return t.finish()
}

func (t *tally) line(line string) {
	var e event
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e.Action == "" {
		fmt.Fprint(t.w, line)
		return
	}
	if e.Package != "" {
		t.packages[e.Package] = true
	}
	k := key{e.Package, e.Test}
	switch {
	case e.Action == "build-output":
		fmt.Fprint(t.w, e.Output)
	case e.Test == "" && e.Action == "output":
		// The package's own lines: "ok  pkg 1.2s", "FAIL pkg", "?  pkg
		// [no test files]", a panic outside any test, shown when the
		// package ends, after its tests'. The bare PASS and FAIL before
		// the result line say nothing more.
		if e.Output != "PASS\n" && e.Output != "FAIL\n" {
			t.output[k] = append(t.output[k], e.Output)
		}
	case e.Test == "" && (e.Action == "pass" || e.Action == "skip" || e.Action == "fail"):
		if e.Action == "fail" {
			t.packageFailed(e)
		}
		t.print(k)
		delete(t.output, k)
	case e.Test == "":
	case e.Action == "output":
		t.output[k] = append(t.output[k], e.Output)
	case e.Action == "pass" || e.Action == "skip" || e.Action == "fail":
		if e.Action == "fail" {
			// A failed subtest's parents' lines so far first, so that
			// the output reads in order (their rest comes when they end).
			for i := range len(e.Test) {
				if e.Test[i] == '/' {
					p := key{e.Package, e.Test[:i]}
					t.print(p)
					t.output[p] = t.output[p][:0]
				}
			}
			t.print(k)
		}
		delete(t.output, k)
		if strings.Contains(e.Test, "/") {
			return
		}
		switch e.Action {
		case "pass":
			t.passed++
		case "skip":
			t.skipped++
			t.skips = append(t.skips, k.pkg+" "+k.test)
		case "fail":
			t.testFailed(k)
		}
	}
}

func (t *tally) print(k key) {
	for _, l := range t.output[k] {
		fmt.Fprint(t.w, l)
	}
}

func (t *tally) testFailed(k key) {
	t.failed++
	t.failedIn[k.pkg]++
	t.failures = append(t.failures, k.pkg+" "+k.test)
}

// packageFailed: tests that never ended (a timeout, a crash) failed with
// it, and their output is shown; a package that failed with no failed test
// (a build error, TestMain, a crash outside any test) is a failure too.
func (t *tally) packageFailed(e event) {
	var left []key
	for k := range t.output {
		if k.pkg == e.Package && k.test != "" {
			left = append(left, k)
		}
	}
	slices.SortFunc(left, func(a, b key) int { return strings.Compare(a.test, b.test) })
	for _, k := range left {
		t.print(k)
		delete(t.output, k)
		if !strings.Contains(k.test, "/") {
			t.testFailed(k)
		}
	}
	if t.failedIn[e.Package] > 0 {
		return
	}
	why := "failed outside its tests"
	if e.FailedBuild != "" {
		why = "failed to build"
	}
	t.failures = append(t.failures, e.Package+" ("+why+")")
}

// finish prints the recap and the summary, and returns the exit status.
func (t *tally) finish() int {
	// A test that skips where it should run (no PostgreSQL, no browser)
	// passes unseen otherwise.
	if len(t.skips) > 0 {
		fmt.Fprintln(t.w, "\nSkipped:")
		for _, f := range t.skips {
			fmt.Fprintln(t.w, "  "+f)
		}
	}
	if len(t.failures) > 0 {
		fmt.Fprintln(t.w, "\nFailed:")
		for _, f := range t.failures {
			fmt.Fprintln(t.w, "  "+f)
		}
	}
	packages := "packages"
	if len(t.packages) == 1 {
		packages = "package"
	}
	line := fmt.Sprintf("%d passed, %d failed, %d skipped (tests of %d %s; subtests not counted)",
		t.passed, t.failed, t.skipped, len(t.packages), packages)
	if n := len(t.failures) - t.failed; n == 1 {
		line += "; 1 package failed outside its tests"
	} else if n > 1 {
		line += fmt.Sprintf("; %d packages failed outside their tests", n)
	}
	fmt.Fprintln(t.w, line)
	if len(t.failures) > 0 {
		return 1
	}
	return 0
}
