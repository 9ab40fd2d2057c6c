package monitoring

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
)

// rulesFile is the plain rules file, and what the chart's PrometheusRule
// embeds.
type rulesFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// unitTests is a promtool test rules file, as far as this test reads it.
type unitTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			EvalTime  string            `json:"eval_time"`
			Alertname string            `json:"alertname"`
			ExpAlerts []json.RawMessage `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func files(t *testing.T) string {
	return filepath.Join(deploytest.Root(t), "helm", "meshproof", "files")
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(files(t), "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	return rf
}

// TestAlertRules: promtool accepts the rules file; every alert has a unit
// test file of its name (testdata/alerts/ALERT.yaml) that reads the
// shipped file and holds a case where it fires and one where it must not;
// and promtool test rules passes them all.
func TestAlertRules(t *testing.T) {
	promtool := promtoolPath(t)
	rules := readRules(t)
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name (recording rules belong elsewhere)", g.Name)
				continue
			}
			if r.Labels["severity"] != "critical" && r.Labels["severity"] != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a summary and a description", r.Alert)
			}
			alerts = append(alerts, r.Alert)
		}
	}
	for _, want := range []string{"MeshproofEvidenceStoreDown", "MeshproofEvidenceDropped", "MeshproofEvidenceQuarantined",
		"MeshproofEvidenceQueueFilling", "MeshproofSpoolGrowing", "MeshproofCheckpointStale", "MeshproofPolicyReloadFailing",
		"MeshproofPlaintextToStrict", "MeshproofPlaintextShareRising"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yaml has no %s (issue 17 asks for it)", want)
		}
	}

	dir := filepath.Join("testdata", "alerts")
	tests, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, alert := range alerts {
		path := filepath.Join(dir, alert+".yaml")
		if !slices.Contains(tests, path) {
			t.Errorf("%s has no unit test: want %s", alert, path)
		}
	}
	for _, path := range tests {
		alert := strings.TrimSuffix(filepath.Base(path), ".yaml")
		if !slices.Contains(alerts, alert) {
			t.Errorf("%s tests %s, which alerts.yaml does not have", path, alert)
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var ut unitTests
		if err := yaml.Unmarshal(b, &ut); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(ut.RuleFiles) != 1 || filepath.Clean(filepath.Join(dir, ut.RuleFiles[0])) != filepath.Join(files(t), "alerts.yaml") &&
			filepath.Clean(filepath.Join(dir, ut.RuleFiles[0])) != filepath.Clean(filepath.Join("..", "helm", "meshproof", "files", "alerts.yaml")) {
			t.Errorf("%s: rule_files %q, want the shipped alerts.yaml only", path, ut.RuleFiles)
		}
		var fires, silent bool
		for _, tc := range ut.Tests {
			for _, at := range tc.AlertRuleTest {
				if at.Alertname != alert {
					t.Errorf("%s: case %q tests %s; each file tests its own alert", path, tc.Name, at.Alertname)
				}
				if len(at.ExpAlerts) > 0 {
					fires = true
				} else {
					silent = true
				}
			}
		}
		if !fires || !silent {
			t.Errorf("%s: want a case where %s fires (%v) and one where it must not (%v)", path, alert, fires, silent)
		}
	}

	if promtool == "" {
		return
	}
	if out, err := exec.Command(promtool, "check", "rules", filepath.Join(files(t), "alerts.yaml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := exec.Command(promtool, append([]string{"test", "rules"}, tests...)...).CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}

// promql is Prometheus's parser with its default options: the functions
// of a Prometheus without feature flags.
var promql = parser.NewParser(parser.Options{})

// grafanaVars are the dashboard's variables and Grafana's own, replaced by
// values of their kind before the PromQL is parsed.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "6h", "$job", ".*")

// dashboard is what the test reads of the dashboard JSON.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// TestDashboard parses every panel's PromQL and the alert rules' with
// Prometheus's parser, and checks that every series they name is one a
// freshly started meshproof serve exports, and that the dashboard has the
// panels issue 17 asks for.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(files(t), "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard.json: uid %q, title %q: want both (the Grafana sidecar keys on the uid)", d.UID, d.Title)
	}

	used := map[string][]string{} // series name -> where
	ids := map[int]string{}
	var titles []string
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			titles = append(titles, p.Title)
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %q, want the dashboard's ${datasource} variable", p.Title, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				where := "panel " + p.Title + " " + tg.RefID
				for _, name := range seriesOf(t, where, tg.Expr) {
					used[name] = append(used[name], where)
				}
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := regexp.MustCompile(`^label_values\((\w+),\s*\w+\)$`).FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: %q, want label_values(series, label)", v.Name, v.Definition)
			continue
		}
		used[m[1]] = append(used[m[1]], "variable "+v.Name)
	}
	for _, want := range []string{"Checks/s by decision and verdict", "mTLS share by destination namespace", "Top plaintext destinations",
		"Top plaintext clients", "Queue depth against capacity", "Write latency", "Dropped and quarantined", "Spool", "Store up", "Checkpoint age"} {
		if !slices.Contains(titles, want) {
			t.Errorf("the dashboard has no panel %q", want)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			for _, name := range seriesOf(t, where, r.Expr) {
				used[name] = append(used[name], where)
			}
		}
	}

	exported := scrape(t)
	var names []string
	for name := range used {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !exported[name] {
			t.Errorf("%s (in %s) is not exported by meshproof serve", name, strings.Join(used[name], ", "))
		}
	}
	if len(names) < 20 {
		t.Errorf("the dashboard and the rules name %d series; want the evidence pipeline, store and checkpoints covered", len(names))
	}
}

// seriesOf parses expr as Prometheus does and returns the names of the
// series it selects.
func seriesOf(t *testing.T, where, expr string) []string {
	t.Helper()
	q := grafanaVars.Replace(expr)
	if strings.Contains(q, "$") {
		t.Errorf("%s: a variable the test does not know in %q", where, expr)
		return nil
	}
	e, err := promql.ParseExpr(q)
	if err != nil {
		t.Errorf("%s: %v\n%s", where, err, expr)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			if name == "" {
				t.Errorf("%s: a selector without a series name: %s", where, vs)
			} else {
				names = append(names, name)
			}
		}
		return nil
	})
	return names
}

// scrape runs meshproof serve with every part that has metrics (a spool,
// a signing key) on loopback, reads /metrics once and returns the sample
// names there (a histogram's _bucket, _sum and _count).
func scrape(t *testing.T) map[string]bool {
	t.Helper()
	bin := deploytest.Meshproof(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "signer")
	if out, err := exec.Command(bin, "keygen", "--name", "meshproof.test", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("meshproof keygen: %v\n%s", err, out)
	}
	httpAddr := deploytest.FreeAddr(t)
	cmd := exec.Command(bin, "serve", "--store", "sqlite:"+filepath.Join(dir, "evidence.db"), "--spool", filepath.Join(dir, "spool.db"),
		"--signing-key", key, "--grpc-addr", deploytest.FreeAddr(t), "--http-addr", httpAddr, "--metrics-open")
	var stderr deploytest.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	var body []byte
	deadline := time.Now().Add(30 * time.Second)
	for body == nil {
		select {
		case err := <-exited:
			t.Fatalf("meshproof serve exited (%v):\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshproof serve not ready after 30s:\n%s", stderr.String())
		}
		if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				body = get(t, "http://"+httpAddr+"/metrics")
				break
			}
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("readyz: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	names := map[string]bool{}
	for line := range strings.Lines(string(body)) {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		names[name] = true
	}
	return names
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, b)
	}
	return b
}

// promtoolPath is promtool: $MESHPROOF_PROMTOOL, else the one in PATH.
// Without one the promtool checks are skipped, unless
// MESHPROOF_REQUIRE_PROMTOOL is set (test/run sets both; test/promtool
// installs it).
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
	t.Log("no promtool: promtool check rules and test rules skipped (test/promtool installs it)")
	return ""
}
