package helm

import (
	"path"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	kustomize "github.com/meshproof/meshproof/deploy/kubernetes"
)

// TestLint runs `helm lint --strict` on the chart with its defaults and
// with each ci/ values file: a warning fails as an error does.
func TestLint(t *testing.T) {
	cases := map[string][]string{"defaults": nil}
	for name, file := range ciFiles(t) {
		cases[name] = []string{file}
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = namespace
			res := lint.Run([]string{chartDir(t)}, valuesOf(t, files, nil))
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if len(res.Errors) > 0 || res.TotalChartsLinted != 1 {
				t.Errorf("helm lint --strict: %d charts linted, errors %v", res.TotalChartsLinted, res.Errors)
			}
		})
	}
}

// TestCIValues renders the chart with each ci/ file, decodes every object
// strictly, and checks what every installation shares and what each file
// asks for.
func TestCIValues(t *testing.T) {
	files := ciFiles(t)
	for _, want := range []string{"sqlite", "postgres", "full"} {
		if files[want] == "" {
			t.Errorf("ci/%s.yaml is missing", want)
		}
	}
	for name, file := range files {
		t.Run(name, func(t *testing.T) {
			vals := valuesOf(t, []string{file}, nil)
			r := mustRender(t, vals)
			objs := decode(t, r)
			d := checkInstall(t, objs, vals)
			switch name {
			case "sqlite":
				checkSQLite(t, objs, d)
			case "postgres", "full":
				checkPostgres(t, objs, r, d)
			}
			if name == "full" {
				checkFull(t, objs, r, d)
			}
		})
	}
}

// checkInstall checks what every rendering shares and returns the
// Deployment.
func checkInstall(t *testing.T, in *chartObjects, vals map[string]any) *appsv1.Deployment {
	t.Helper()
	d := in.Deployments[releaseName]
	if d == nil || len(in.Deployments) != 1 || len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("Deployments %v: want one, %s, with one container", deploytest.Keys(in.Deployments), releaseName)
	}
	for _, o := range []metav1.Object{d, in.Services[releaseName]} {
		if o == nil || o.GetNamespace() != namespace {
			t.Fatalf("Deployment and Service must be in the release's namespace %q", namespace)
		}
	}
	for kind, names := range map[string][]string{
		"Deployment": deploytest.Keys(in.Deployments), "Service": deploytest.Keys(in.Services), "ConfigMap": deploytest.Keys(in.ConfigMaps),
		"NetworkPolicy": deploytest.Keys(in.NetworkPolicies), "PVC": deploytest.Keys(in.PVCs), "Job": deploytest.Keys(in.Jobs),
	} {
		for _, n := range names {
			if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
				t.Errorf("%s %q: %v", kind, n, errs)
			}
		}
	}
	pod := d.Spec.Template
	c := pod.Spec.Containers[0]
	if !deploytest.Selects(t, d.Spec.Selector, pod.Labels) {
		t.Error("the Deployment's selector does not match its pod labels")
	}
	if c.Image != "registry.example/meshproof:v0.1.0" {
		t.Errorf("image %q, want the ci files' registry.example/meshproof:v0.1.0", c.Image)
	}
	sa := pod.Spec.ServiceAccountName
	if in.ServiceAccounts[sa] == nil {
		t.Errorf("service account %q is not part of the release", sa)
	}

	t.Run("service", func(t *testing.T) { deploytest.CheckService(t, in.Services[releaseName], pod.Labels, c) })
	t.Run("probes", func(t *testing.T) { deploytest.CheckProbes(t, c) })
	t.Run("volumes", func(t *testing.T) { checkVolumes(t, in, pod.Spec, c, vals) })
	t.Run("args", func(t *testing.T) { checkArgs(t, pod.Spec, c) })
	t.Run("security", func(t *testing.T) { deploytest.CheckSecurity(t, pod.Spec, c) })
	t.Run("resources", func(t *testing.T) { checkResources(t, c) })
	t.Run("networkpolicy", func(t *testing.T) { deploytest.CheckNetworkPolicy(t, in.NetworkPolicies[releaseName], pod.Labels, c) })
	return d
}

func checkSQLite(t *testing.T, in *chartObjects, d *appsv1.Deployment) {
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("replicas %d, strategy %s: SQLite is one writer's file, want 1 and Recreate", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	c := d.Spec.Template.Spec.Containers[0]
	_, flags, _ := kustomize.Flags(c.Args)
	file, ok := strings.CutPrefix(deploytest.One(t, flags, "store"), "sqlite:")
	if !ok {
		t.Fatalf("--store=%s, want the SQLite store", flags["store"][0])
	}
	m := deploytest.MountOf(c, file)
	if m == nil {
		t.Fatalf("the SQLite file %s is on no volume: the root filesystem is read-only", file)
	}
	v := deploytest.Volume(d.Spec.Template.Spec, m.Name)
	if m.ReadOnly || v.PersistentVolumeClaim == nil || in.PVCs[v.PersistentVolumeClaim.ClaimName] == nil {
		t.Errorf("the SQLite file %s is on volume %q, not on a writable PersistentVolumeClaim of the release", file, m.Name)
	}
	if len(in.PDBs) != 0 || len(in.Jobs) != 0 || len(d.Spec.Template.Spec.TopologySpreadConstraints) != 0 {
		t.Error("one SQLite replica has no PodDisruptionBudget, migrate Job or topology spread")
	}
}

func checkPostgres(t *testing.T, in *chartObjects, r *rendered, d *appsv1.Deployment) {
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if ru := d.Spec.Strategy.RollingUpdate; *d.Spec.Replicas < 2 || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicas %d, strategy %+v: want 2 or more, replaced one at a time with none unavailable", *d.Spec.Replicas, d.Spec.Strategy)
	}
	if len(in.PVCs) != 0 || slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil }) {
		t.Error("a PersistentVolumeClaim with the PostgreSQL store")
	}
	_, flags, _ := kustomize.Flags(c.Args)
	if deploytest.One(t, flags, "store") != "$(MESHPROOF_STORE)" || deploytest.One(t, flags, "evidence-durability") != "sync" {
		t.Errorf("--store %v, --evidence-durability %v: want the DSN from the Secret and sync evidence", flags["store"], flags["evidence-durability"])
	}
	checkStoreEnv(t, c)

	pdb := in.PDBs[releaseName]
	if pdb == nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !deploytest.Selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("no PodDisruptionBudget letting one of meshproof's pods go at a time")
	}
	keys := map[string]bool{}
	for _, tsc := range spec.TopologySpreadConstraints {
		if deploytest.Selects(t, tsc.LabelSelector, d.Spec.Template.Labels) {
			keys[tsc.TopologyKey] = true
		}
	}
	if !keys["kubernetes.io/hostname"] || !keys["topology.kubernetes.io/zone"] {
		t.Errorf("topology spread over %v, want hosts and zones", keys)
	}

	// The migrate Job is a hook: it runs before the pods of an install or
	// upgrade start, not beside them.
	if len(in.Jobs) != 1 {
		t.Fatalf("Jobs %v: want the migrate Job", deploytest.Keys(in.Jobs))
	}
	var hook bool
	for _, h := range r.hooks {
		if h.Kind == "Job" && h.Name == releaseName+"-migrate" {
			hook = slices.Equal(eventNames(h.Events), []string{"pre-install", "pre-upgrade"})
		}
	}
	if !hook {
		t.Error("the migrate Job is not a pre-install, pre-upgrade hook")
	}
	job := in.Jobs[releaseName+"-migrate"]
	if job == nil {
		t.Fatal("no Job " + releaseName + "-migrate")
	}
	pod := job.Spec.Template
	jc := pod.Spec.Containers[0]
	cmd, jflags, err := kustomize.Flags(jc.Args)
	if err != nil || cmd != "migrate" || !slices.Equal(jflags["store"], flags["store"]) {
		t.Errorf("Job args %v: want migrate with serve's --store", jc.Args)
	}
	if jc.Image != c.Image {
		t.Errorf("the Job runs %s, serve runs %s: migrate with the schema of the version that serves", jc.Image, c.Image)
	}
	checkStoreEnv(t, jc)
	deploytest.CheckSecurity(t, pod.Spec, jc)
	if pod.Spec.ServiceAccountName != "" || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the hook Job names a ServiceAccount (the release's does not exist yet before install) or mounts a token")
	}
	if pod.Annotations["sidecar.istio.io/inject"] != "false" {
		t.Error("the Job's pod would get an Istio sidecar, which keeps it running after migrate exits")
	}
	if labels.SelectorFromSet(in.Services[releaseName].Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Error("the Service selects the Job's pod: ext_authz calls could land on it")
	}
}

// checkStoreEnv: the DSN comes from the Secret named in the ci files.
func checkStoreEnv(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == "MESHPROOF_STORE" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
			e.ValueFrom.SecretKeyRef.Name == "meshproof-store" && e.ValueFrom.SecretKeyRef.Key == "MESHPROOF_STORE" {
			return
		}
	}
	t.Errorf("container %s: MESHPROOF_STORE is not the Secret meshproof-store's key MESHPROOF_STORE", c.Name)
}

func eventNames[E ~string](es []E) []string {
	var s []string
	for _, e := range es {
		s = append(s, string(e))
	}
	slices.Sort(s)
	return s
}

// checkVolumes: every mount has its volume; ConfigMaps are the release's
// own or named in the values as made elsewhere; Secrets are the ones the
// values name, mounted unreadable by others.
func checkVolumes(t *testing.T, in *chartObjects, spec corev1.PodSpec, c corev1.Container, vals map[string]any) {
	for _, m := range c.VolumeMounts {
		if deploytest.Volume(spec, m.Name) == nil {
			t.Errorf("volumeMount %q names no volume", m.Name)
		}
	}
	existing := map[string]bool{}
	for _, cm := range dig[[]any](vals, "policy", "configMaps") {
		if name, _ := cm.(map[string]any)["existingConfigMap"].(string); name != "" {
			existing[name] = true
		}
	}
	secrets := map[string]bool{}
	for _, key := range []string{"apiTokens", "ingestTokens", "signingKey"} {
		if name := dig[string](vals, key, "existingSecret"); name != "" {
			secrets[name] = true
		}
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil && in.ConfigMaps[v.ConfigMap.Name] == nil && !existing[v.ConfigMap.Name]:
			t.Errorf("volume %q: ConfigMap %q is neither the release's nor named in the values", v.Name, v.ConfigMap.Name)
		case v.Secret != nil && !secrets[v.Secret.SecretName]:
			t.Errorf("volume %q: Secret %q is not one the values name", v.Name, v.Secret.SecretName)
		case v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0):
			t.Errorf("volume %q: Secret %q is readable by others", v.Name, v.Secret.SecretName)
		case v.PersistentVolumeClaim != nil && in.PVCs[v.PersistentVolumeClaim.ClaimName] == nil:
			t.Errorf("volume %q: PVC %q is not part of the release", v.Name, v.PersistentVolumeClaim.ClaimName)
		case v.HostPath != nil:
			t.Errorf("volume %q is a hostPath", v.Name)
		}
	}
}

// checkArgs: the flags refer to what the pod really has.
func checkArgs(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	cmd, flags, err := kustomize.Flags(c.Args)
	if err != nil || cmd != "serve" {
		t.Fatalf("args %v: want serve and --name=value flags (%v)", c.Args, err)
	}
	deploytest.CheckServeArgs(t, c, flags)
	// Every file a flag names is in a read-only Secret volume under the
	// key the flag's file name says.
	for _, flag := range []string{"api-token-file", "ingest-token-file", "signing-key"} {
		for _, file := range flags[flag] {
			m := deploytest.MountOf(c, file)
			if m == nil || !m.ReadOnly || path.Dir(file) != m.MountPath {
				t.Errorf("--%s=%s is not a file of a read-only mount", flag, file)
				continue
			}
			if v := deploytest.Volume(spec, m.Name); v == nil || v.Secret == nil {
				t.Errorf("--%s=%s is not on a Secret volume", flag, file)
			}
		}
	}
	if len(flags["api-token-file"]) != 1 {
		t.Error("no --api-token-file: serve refuses a non-loopback HTTP listener without one")
	}
	deploytest.CheckPolicyMounts(t, spec, c, flags)
	_, kube := flags["kubernetes"]
	if token := spec.AutomountServiceAccountToken; token == nil || *token != kube {
		t.Errorf("--kubernetes %v but automountServiceAccountToken %v: the token is mounted for --kubernetes and only then", kube, token)
	}
}

func checkResources(t *testing.T, c corev1.Container) {
	r := c.Resources
	limit, ok := r.Limits[corev1.ResourceMemory]
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || !ok {
		t.Fatalf("resources %v: want CPU and memory requests and a memory limit", r)
	}
	if _, cpu := r.Limits[corev1.ResourceCPU]; cpu {
		t.Error("a CPU limit: CFS throttling shows up as ext_authz timeouts")
	}
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			return
		}
	}
	t.Errorf("no GOMEMLIMIT under the memory limit %s", limit.String())
}
