package helm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1 "istio.io/api/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	"github.com/meshproof/meshproof/deploy/istio"
	kustomize "github.com/meshproof/meshproof/deploy/kubernetes"
)

// checkFull checks what ci/full.yaml turns on beyond PostgreSQL.
func checkFull(t *testing.T, in *chartObjects, r *rendered, d *appsv1.Deployment) {
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	_, flags, _ := kustomize.Flags(c.Args)
	for flag, want := range map[string]string{
		"kubernetes": "true", "signing-key": "/etc/meshproof/signing/signer.key", "checkpoint-interval": "5m",
		"ingest-token-file": "/etc/meshproof/ingest/tokens", "record-header": "x-request-id",
	} {
		if got := flags[flag]; len(got) != 1 || got[0] != want {
			t.Errorf("--%s %v, want %s", flag, got, want)
		}
	}
	if got := flags["policy"]; !slices.Equal(got, []string{"builtin:require-spiffe", "/etc/meshproof/policy", "/etc/meshproof/team-rules"}) {
		t.Errorf("--policy %v: want the builtin, then both ConfigMaps", got)
	}
	if cm := in.ConfigMaps[releaseName+"-policy"]; cm == nil || cm.Data["data.yaml"] == "" {
		t.Error("the policy ConfigMap with data was not made")
	}
	if in.ConfigMaps["team-a-meshproof-rules"] != nil {
		t.Error("the chart made the ConfigMap it was told exists")
	}

	t.Run("rbac", func(t *testing.T) { checkRBAC(t, in.Install, d) })
	t.Run("servicemonitor", func(t *testing.T) { checkServiceMonitor(t, in) })
	t.Run("prometheusrule", func(t *testing.T) { checkPrometheusRule(t, in) })
	t.Run("dashboard", func(t *testing.T) { checkDashboard(t, in) })
	t.Run("istio", func(t *testing.T) { checkIstio(t, in, r, []string{"mtls-pg", "payments"}) })
}

// checkRBAC: exactly the grants --kubernetes needs, bound to the pods'
// ServiceAccount in the release's namespace.
func checkRBAC(t *testing.T, in *kustomize.Install, d *appsv1.Deployment) {
	role, binding := in.ClusterRoles[releaseName], in.ClusterRoleBindings[releaseName]
	if role == nil || binding == nil || len(in.ClusterRoles) != 1 || len(in.ClusterRoleBindings) != 1 {
		t.Fatalf("ClusterRoles %v, ClusterRoleBindings %v: want one of each", deploytest.Keys(in.ClusterRoles), deploytest.Keys(in.ClusterRoleBindings))
	}
	deploytest.CheckClusterRole(t, role)
	deploytest.CheckClusterRoleBinding(t, binding, role, d, in.ServiceAccounts)
}

// checkServiceMonitor: it selects the Service and scrapes its http port's
// /metrics with the token Secret full.yaml names.
func checkServiceMonitor(t *testing.T, in *chartObjects) {
	if len(in.ServiceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(in.ServiceMonitors))
	}
	sm := in.ServiceMonitors[0]
	svc := in.Services[releaseName]
	if sm.Namespace != svc.Namespace || !deploytest.Selects(t, &sm.Spec.Selector, svc.Labels) {
		t.Errorf("the ServiceMonitor (%s, selector %v) does not select the Service %s/%s", sm.Namespace, sm.Spec.Selector, svc.Namespace, svc.Name)
	}
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("labels %v: the values' labels (Prometheus selects by them) are missing", sm.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != "http" || ep.Path != "/metrics" {
		t.Errorf("endpoint port %q path %q, want the Service's http port and /metrics", ep.Port, ep.Path)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("the Service has no port %v", ep.Port)
	}
	a := ep.Authorization
	if a == nil || a.Type != "Bearer" || a.Credentials == nil || a.Credentials.Name != "meshproof-metrics-token" || a.Credentials.Key != "token" {
		t.Errorf("authorization %+v: want the bearer token of Secret meshproof-metrics-token, key token (/metrics wants one)", a)
	}
}

// checkPrometheusRule: the rule groups are files/alerts.yaml's, unchanged.
func checkPrometheusRule(t *testing.T, in *chartObjects) {
	if len(in.PrometheusRules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(in.PrometheusRules))
	}
	pr := in.PrometheusRules[0]
	var file struct {
		Groups any `json:"groups"`
	}
	fromFile(t, "files/alerts.yaml", &file)
	if eq, err := jsonEqual(pr.Spec.Groups, file.Groups); err != nil || !eq {
		t.Errorf("the PrometheusRule's groups differ from files/alerts.yaml (%v)", err)
	}
	var rules int
	for _, g := range pr.Spec.Groups {
		rules += len(g.Rules)
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr.String() == "" {
				t.Errorf("group %s: rule %+v has no alert name or expression", g.Name, r)
			}
		}
	}
	if rules == 0 || pr.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("%d rules, labels %v: want rules and the values' labels", rules, pr.Labels)
	}
}

// checkDashboard: the ConfigMap the Grafana sidecar loads holds
// files/dashboard.json, still valid JSON after templating.
func checkDashboard(t *testing.T, in *chartObjects) {
	cm := in.ConfigMaps[releaseName+"-dashboard"]
	if cm == nil {
		t.Fatal("no dashboard ConfigMap")
	}
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" {
		t.Errorf("the dashboard ConfigMap is in %q with labels %v: want namespace monitoring (full.yaml) and grafana_dashboard: \"1\"", cm.Namespace, cm.Labels)
	}
	raw, err := os.ReadFile(filepath.Join(chartDir(t), "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	if err := json.Unmarshal([]byte(cm.Data["meshproof.json"]), &got); err != nil {
		t.Fatalf("the ConfigMap's meshproof.json: %v", err)
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("files/dashboard.json: %v", err)
	}
	if eq, _ := jsonEqual(got, want); !eq {
		t.Error("the ConfigMap's dashboard differs from files/dashboard.json")
	}
	if panels, _ := want["panels"].([]any); len(panels) == 0 {
		t.Error("the dashboard has no panels")
	}
}

// checkIstio: a CUSTOM AuthorizationPolicy per listed namespace, naming the
// provider NOTES.txt registers, whose service and port are the release's
// Service and gRPC port; the provider's other settings are those of
// deploy/istio/meshconfig.yaml.
func checkIstio(t *testing.T, in *chartObjects, r *rendered, namespaces []string) {
	provider := notesProvider(t, r.notes)
	svc := in.Services[releaseName]
	grpc := provider.GetEnvoyExtAuthzGrpc()
	var port int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "grpc" {
			port = p.Port
		}
	}
	if grpc.GetService() != svc.Name+"."+svc.Namespace+".svc.cluster.local" || int32(grpc.GetPort()) != port {
		t.Errorf("the provider points at %s:%d, want the Service %s/%s's gRPC port %d", grpc.GetService(), grpc.GetPort(), svc.Namespace, svc.Name, port)
	}
	file, err := os.ReadFile(filepath.Join(deploytest.Root(t), "istio", "meshconfig.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mc, err := istio.DecodeMeshConfigValues(file)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(mc.GetExtensionProviders()[0]).(*meshv1alpha1.MeshConfig_ExtensionProvider)
	want.GetEnvoyExtAuthzGrpc().Service = grpc.GetService()
	if !proto.Equal(provider, want) {
		t.Errorf("NOTES.txt's provider\n%v\ndiffers from deploy/istio/meshconfig.yaml's beyond the service\n%v", provider, want)
	}

	var got []string
	for _, o := range in.AuthorizationPolicies {
		got = append(got, o.Metadata.Namespace)
		ap := o.Spec.(*securityv1.AuthorizationPolicy)
		if ap.GetAction() != securityv1.AuthorizationPolicy_CUSTOM || ap.GetProvider().GetName() != provider.GetName() {
			t.Errorf("%s/%s: action %v provider %q, want CUSTOM and %q", o.Metadata.Namespace, o.Metadata.Name, ap.GetAction(), ap.GetProvider().GetName(), provider.GetName())
		}
		if len(ap.GetRules()) != 1 || !proto.Equal(ap.GetRules()[0], &securityv1.Rule{}) {
			t.Errorf("%s/%s: rules %v, want one empty rule (every request checked)", o.Metadata.Namespace, o.Metadata.Name, ap.GetRules())
		}
		if !labels.SelectorFromSet(ap.GetSelector().GetMatchLabels()).Matches(labels.Set{"app": "httpbin"}) || len(ap.GetSelector().GetMatchLabels()) != 1 {
			t.Errorf("%s/%s: selector %v, want full.yaml's app: httpbin", o.Metadata.Namespace, o.Metadata.Name, ap.GetSelector())
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, namespaces) {
		t.Errorf("AuthorizationPolicies in %v, want one in each of %v", got, namespaces)
	}
}

// notesProvider decodes the meshConfig snippet NOTES.txt prints (from its
// "meshConfig:" line to the next blank line) as istiod's values, strictly.
func notesProvider(t *testing.T, notes string) *meshv1alpha1.MeshConfig_ExtensionProvider {
	t.Helper()
	_, after, ok := strings.Cut(notes, "\nmeshConfig:\n")
	if !ok {
		t.Fatalf("NOTES.txt has no meshConfig snippet:\n%s", notes)
	}
	snippet, _, _ := strings.Cut("meshConfig:\n"+after, "\n\n")
	mc, err := istio.DecodeMeshConfigValues([]byte(snippet))
	if err != nil {
		t.Fatalf("NOTES.txt's snippet: %v\n%s", err, snippet)
	}
	if len(mc.GetExtensionProviders()) != 1 {
		t.Fatalf("NOTES.txt's snippet has %d providers, want 1", len(mc.GetExtensionProviders()))
	}
	return mc.GetExtensionProviders()[0]
}
