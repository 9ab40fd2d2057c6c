package helm

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	kustomize "github.com/meshproof/meshproof/deploy/kubernetes"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/getter"
	kubefake "helm.sh/helm/v4/pkg/kube/fake"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/meshproof/meshproof/deploy/istio"
)

// The release the tests install: named as the kustomize base's objects,
// so that the chart's default names are the base's.
const (
	releaseName = "meshproof"
	namespace   = "meshproof"
)

func chartDir(t testing.TB) string {
	return filepath.Join(deploytest.Root(t), "helm", "meshproof")
}

// ciFiles are the values files in the chart's ci/ directory, by base name.
func ciFiles(t testing.TB) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no values files in ci/ (%v)", err)
	}
	files := map[string]string{}
	for _, p := range paths {
		files[strings.TrimSuffix(filepath.Base(p), ".yaml")] = p
	}
	return files
}

// valuesOf merges values files and --set expressions as the helm command
// does (files first, then each --set in order).
func valuesOf(t testing.TB, files []string, set []string) map[string]any {
	t.Helper()
	opts := values.Options{ValueFiles: files, Values: set}
	vals, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// rendered is what `helm template` prints, apart: the objects the release
// applies, the hooks it runs, and NOTES.txt.
type rendered struct {
	manifest string
	hooks    []*release.Hook
	notes    string
}

// stream is every document, the hooks' included, as `helm template` prints.
func (r *rendered) stream() []byte {
	var b strings.Builder
	b.WriteString(r.manifest)
	for _, h := range r.hooks {
		b.WriteString("\n---\n" + h.Manifest + "\n")
	}
	return []byte(b.String())
}

// render installs the chart with vals in client-side dry-run, which is what
// `helm template` runs: the templates, the values schema, the hooks and
// NOTES.txt, with no cluster.
func render(t testing.TB, vals map[string]any) (*rendered, error) {
	t.Helper()
	ch, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: common.DefaultCapabilities,
	}
	install := action.NewInstall(cfg)
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = releaseName
	install.Namespace = namespace
	install.Replace = true
	rel, err := install.Run(ch, vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		t.Fatalf("release of type %T", rel)
	}
	return &rendered{manifest: r.Manifest, hooks: r.Hooks, notes: r.Info.Notes}, nil
}

func mustRender(t testing.TB, vals map[string]any) *rendered {
	t.Helper()
	r, err := render(t, vals)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	return r
}

// chartObjects is one rendered release decoded: the Kubernetes objects,
// indexed as the kustomize tests index theirs, and the custom resources,
// each in its own typed struct.
type chartObjects struct {
	*kustomize.Install
	ServiceMonitors       []*monitoringv1.ServiceMonitor
	PrometheusRules       []*monitoringv1.PrometheusRule
	AuthorizationPolicies []*istio.Object
}

// decode decodes every document of r strictly: the Kubernetes kinds with
// the API server's decoder into k8s.io/api types, ServiceMonitor and
// PrometheusRule into prometheus-operator's types, AuthorizationPolicy
// into istio.io/api's; an unknown field or kind fails the test.
func decode(t testing.TB, r *rendered) *chartObjects {
	t.Helper()
	out := &chartObjects{}
	var objs []runtime.Object
	for _, doc := range deploytest.Docs(t, r.stream()) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		var err error
		switch head.APIVersion + " " + head.Kind {
		case "monitoring.coreos.com/v1 ServiceMonitor":
			var sm monitoringv1.ServiceMonitor
			err = yaml.UnmarshalStrict(doc, &sm)
			out.ServiceMonitors = append(out.ServiceMonitors, &sm)
		case "monitoring.coreos.com/v1 PrometheusRule":
			var pr monitoringv1.PrometheusRule
			err = yaml.UnmarshalStrict(doc, &pr)
			out.PrometheusRules = append(out.PrometheusRules, &pr)
		case "security.istio.io/v1 AuthorizationPolicy":
			var o *istio.Object
			o, err = istio.DecodeObject(doc)
			out.AuthorizationPolicies = append(out.AuthorizationPolicies, o)
		default:
			objs = append(objs, deploytest.Objects(t, doc)...)
		}
		if err != nil {
			t.Fatalf("decoding %s %s: %v\n%s", head.APIVersion, head.Kind, err, doc)
		}
	}
	in, err := kustomize.NewInstall(objs)
	if err != nil {
		t.Fatal(err)
	}
	out.Install = in
	return out
}

// fromFile reads a chart file (files/...) as YAML or JSON into v.
func fromFile(t testing.TB, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// jsonEqual compares two values by their JSON forms (a decoded object and
// what a file holds).
func jsonEqual(a, b any) (bool, error) {
	ja, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	jb, err := json.Marshal(b)
	if err != nil {
		return false, err
	}
	var va, vb any
	if err := json.Unmarshal(ja, &va); err != nil {
		return false, err
	}
	if err := json.Unmarshal(jb, &vb); err != nil {
		return false, err
	}
	return reflect.DeepEqual(va, vb), nil
}
