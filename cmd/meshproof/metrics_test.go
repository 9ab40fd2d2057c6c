package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
)

// TestMetricsFromStartUp scrapes a server that has served nothing yet: every
// series the README's table documents is there (so that absent() alerts
// and the dashboard work from the first scrape), every meshproof_ series
// there is documented, and neither promlint nor promtool check metrics
// finds a problem.
func TestMetricsFromStartUp(t *testing.T) {
	body := scrapeFresh(t)
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	documented := readmeSeries(t)
	for _, name := range documented {
		if _, ok := families[name]; !ok {
			t.Errorf("%s is documented in README.md but not exported at start-up", name)
		}
	}
	for name := range families {
		if strings.HasPrefix(name, "meshproof_") && !slices.Contains(documented, name) {
			t.Errorf("%s is exported but not in README.md's table of metrics", name)
		}
	}
	if len(families["meshproof_build_info"].GetMetric()) != 1 || families["meshproof_build_info"].GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("meshproof_build_info: want one series of value 1, got %v", families["meshproof_build_info"])
	}
	// Each route is there as the method it serves (README.md's table):
	// GET, and POST for the decision logs' /logs.
	routes := map[string]string{}
	for _, m := range families["meshproof_http_requests_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		routes[l["route"]] = l["method"]
	}
	for route, want := range map[string]string{"/v1/evidence": "GET", "/metrics": "GET", "unmatched": "GET", "/logs": "POST"} {
		if routes[route] != want {
			t.Errorf("meshproof_http_requests_total{route=%q}: method %q at start-up, want %q", route, routes[route], want)
		}
	}

	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	promtool := promtoolPath(t)
	if promtool == "" {
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// scrapeFresh starts serve with every optional part that has metrics (a
// spool, a signing key), scrapes /metrics once and stops it.
func scrapeFresh(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "signer")
	var out strings.Builder
	if code := run([]string{"keygen", "--name", "meshproof.test", "--out", key}, &out, &out); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, out.String())
	}
	o, err := parseServe(t, "--store", "sqlite:"+filepath.Join(dir, "evidence.db"), "--spool", filepath.Join(dir, "spool.db"),
		"--signing-key", key, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-open")
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(context.Background(), o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	resp, err := http.Get("http://" + s.hlis.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	return body
}

// readmeSeries are the series README.md's table of metrics names.
func readmeSeries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(meshproof_[a-z_]+)` \\|").FindAllSubmatch(b, -1) {
		names = append(names, string(m[1]))
	}
	if len(names) < 20 {
		t.Fatalf("README.md's table of metrics names %d series; is it still a table of `| `name` |` rows?", len(names))
	}
	return names
}

// promtoolPath is promtool: $MESHPROOF_PROMTOOL, else the one in PATH. Without
// one the caller skips its promtool check, unless MESHPROOF_REQUIRE_PROMTOOL
// is set (test/run sets both; test/promtool installs it).
func promtoolPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHPROOF_PROMTOOL"); p != "" {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if os.Getenv("MESHPROOF_REQUIRE_PROMTOOL") != "" {
		t.Fatal("MESHPROOF_REQUIRE_PROMTOOL is set, but there is no promtool (test/promtool installs it, MESHPROOF_PROMTOOL names it)")
	}
	t.Log("no promtool: promtool check metrics skipped (test/promtool installs it)")
	return ""
}

// TestOldestRecord: meshproof_evidence_oldest_record_age_seconds reads the
// oldest of the replicas' first records, and 0 from an empty store.
func TestOldestRecord(t *testing.T) {
	ctx := context.Background()
	s, err := evidence.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "e.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := newOldestRecord(s, zerolog.Nop(), prometheus.NewRegistry())
	o.read(ctx)
	if got := o.oldest.Load(); got != 0 {
		t.Errorf("empty store: oldest %v, want none (0)", time.Unix(0, got))
	}
	end := time.Now().UTC().Truncate(time.Second)
	// r1's records (step apart, the last a step before end) end later but
	// begin earlier than r2's.
	for _, w := range []struct {
		replica string
		n       int
		end     time.Time
	}{{"r1", 20, end}, {"r2", 3, end.Add(-time.Hour)}} {
		if _, err := traffic.Write(ctx, s, traffic.New(t, 1, w.replica), w.n, w.end, 15*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	o.read(ctx)
	if got, want := time.Unix(0, o.oldest.Load()).UTC(), end.Add(-20*15*time.Minute); !got.Equal(want) {
		t.Errorf("oldest %v, want r1's first record's time %v", got, want)
	}
}
