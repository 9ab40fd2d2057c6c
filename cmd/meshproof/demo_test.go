package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/internal/meshsim"
)

// TestDemo runs `meshproof demo` for a few seconds: the page it prints
// answers, the evidence of every client of the story is there within
// seconds, the commands it prints work as printed, and it stops cleanly,
// removing its temporary store.
func TestDemo(t *testing.T) {
	out, errOut, done, stop := startDemo(t)

	page := waitMatch(t, out, regexp.MustCompile(`The page:\s+(http://127\.0\.0\.1:\d+)/ui/\n`), done)
	server := page[1]
	resp, err := http.Get(server + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(body)), "<html") {
		t.Fatalf("GET %s/ui/: %d %.200q", server, resp.StatusCode, body)
	}

	api, err := client.New(server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs := waitVerdicts(t, api, evidence.MTLS, evidence.Plaintext, evidence.XFCCUnverified)
	checkDemoEvidence(t, recs)

	// The commands, exactly as printed.
	commands := regexp.MustCompile(`(?m)^  (meshproof (?:query|report) .+)$`).FindAllStringSubmatch(out.String(), -1)
	if len(commands) != 4 {
		t.Errorf("%d commands printed, want 4", len(commands))
	}
	for _, c := range commands {
		line := c[1]
		args := strings.Fields(line)[1:]
		want := 0
		if args[0] == "report" && args[1] == "strict-readiness" {
			want = 3 // legacy talks plaintext
		}
		code, stdout, stderr := cli(t, args...)
		if code != want || stdout == "" {
			t.Errorf("%s: exit %d, want %d\n%s%s", line, code, want, stdout, stderr)
		}
	}

	store := waitMatch(t, out, regexp.MustCompile(`evidence\s+sqlite:(\S+)`), done)[1]
	stop()
	if !strings.Contains(out.String(), "Stopped.") {
		t.Error("no summary when stopping")
	}
	if _, err := os.Stat(filepath.Dir(store)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary store %s left behind: %v", store, err)
	}
	if s := errOut.String(); strings.Contains(s, `"level":"error"`) {
		t.Errorf("errors logged:\n%s", s)
	}
}

// checkDemoEvidence: sleep's records are mTLS with its certificate's hash
// in XFCC, the legacy client's plaintext and allowed, the forger's
// xfcc_unverified and denied; each names both peers' workloads from the
// demo's cluster (the legacy client's without a sidecar), with no reason
// about them.
func checkDemoEvidence(t *testing.T, recs []*evidence.Record) {
	t.Helper()
	httpbin := &evidence.Workload{Namespace: "mtls-pg", Kind: "Deployment", Name: "httpbin", Pod: "httpbin-5b8c7d9f4-k2x7q",
		ServiceAccount: "default", App: "httpbin", Version: "v1", Sidecar: true}
	sources := map[evidence.Verdict]*evidence.Workload{
		evidence.MTLS: {Namespace: "mtls-pg", Kind: "Deployment", Name: "sleep", Pod: "sleep-6f8d5c9b7-w4n2m",
			ServiceAccount: "sleep", App: "sleep", Version: "v1", Sidecar: true},
		evidence.Plaintext: {Namespace: "legacy", Kind: "Deployment", Name: "legacy", Pod: "legacy-7c9d4b8f6-p9r3t",
			ServiceAccount: "legacy", App: "legacy", Version: "v1"},
		evidence.XFCCUnverified: {Namespace: "legacy", Kind: "Pod", Name: "forger", Pod: "forger", ServiceAccount: "default", App: "forger"},
	}
	for _, r := range recs {
		if want := sources[r.Verdict]; want != nil && !equalWorkload(r.Source.Workload, want) {
			t.Errorf("%s record's source workload %+v, want %+v", r.Verdict, r.Source.Workload, want)
		}
		if !equalWorkload(r.Destination.Workload, httpbin) {
			t.Errorf("%s record's destination workload %+v, want %+v", r.Verdict, r.Destination.Workload, httpbin)
		}
		for _, why := range r.Reasons {
			if strings.Contains(why, "workload") {
				t.Errorf("%s record: reason %q", r.Verdict, why)
			}
		}
	}
	seen := map[evidence.Verdict]bool{}
	for _, r := range recs {
		if seen[r.Verdict] {
			continue
		}
		seen[r.Verdict] = true
		switch r.Verdict {
		case evidence.MTLS:
			if r.Source.Principal != meshsim.SleepID || r.Destination.Principal != meshsim.ServerID || !r.Decision.Allowed ||
				r.Source.Certificate == nil || r.XFCC == nil || len(r.XFCC.Elements) != 1 || r.XFCC.Elements[0].Hash != r.Source.Certificate.SHA256 {
				t.Errorf("sleep's record: %+v", r)
			}
		case evidence.Plaintext:
			if r.Source.Principal != "" || r.Destination.Principal != "" || r.XFCC != nil || !r.Decision.Allowed {
				t.Errorf("legacy's record: %+v", r)
			}
		case evidence.XFCCUnverified:
			if r.Source.Principal != "" || r.Decision.Allowed || r.Decision.HTTPStatus != http.StatusForbidden || r.XFCC == nil || r.XFCC.Raw != meshsim.ForgedXFCC {
				t.Errorf("forger's record: %+v", r)
			}
		default:
			t.Errorf("unexpected verdict %s: %+v", r.Verdict, r)
		}
	}
}

// waitVerdicts waits until the API has records of every verdict in want,
// and returns the newest records.
func waitVerdicts(t *testing.T, api *client.Client, want ...evidence.Verdict) []*evidence.Record {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := api.List(context.Background(), client.Filter{}, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		got := map[evidence.Verdict]bool{}
		for _, r := range p.Records {
			got[r.Verdict] = true
		}
		missing := false
		for _, v := range want {
			missing = missing || !got[v]
		}
		if !missing {
			return p.Records
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s, verdicts seen %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startDemo runs `meshproof demo`, its output in out and errOut, until stop, which waits for it to end
// and fails the test if it ended with an error or took over 20 s. The demo
// is stopped also when the test fails first, so that it removes its
// temporary files before the test binary exits; its output is logged then.
func startDemo(t *testing.T) (out, errOut *syncBuffer, done <-chan error, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut = &syncBuffer{}, &syncBuffer{}
	ended, stopped := make(chan error, 1), make(chan struct{})
	go func() {
		ended <- demo(ctx, []string{"--log-format", "json"}, out, errOut)
		close(stopped)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("demo stdout:\n%s\nstderr:\n%s", out, errOut)
		}
		cancel()
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
		}
	})
	stop = func() {
		t.Helper()
		cancel()
		select {
		case err := <-ended:
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("demo did not stop within 20s of its context ending")
		}
	}
	return out, errOut, ended, stop
}

// waitMatch waits for re in out, failing early when the demo ends.
func waitMatch(t *testing.T, out *syncBuffer, re *regexp.Regexp, done <-chan error) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		select {
		case err := <-done:
			t.Fatalf("demo ended (%v) before printing %s", err, re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the demo's output within 20s", re)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func equalWorkload(a, b *evidence.Workload) bool { return a != nil && b != nil && *a == *b }
