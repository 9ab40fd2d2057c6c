package kubernetes

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The inputs of the secret generators, which users write by hand (and git
// ignores).
const (
	testToken = "0123456789abcdef0123456789abcdef"
	testDSN   = "postgres://meshproof:secret@db.example:5432/meshproof?sslmode=require"
)

func inputs() map[string]string {
	return map[string]string{
		"kubernetes/base/api-tokens":    testToken + "\n",
		"kubernetes/postgres/store.env": "MESHPROOF_STORE=" + testDSN + "\n",
	}
}

func build(t *testing.T, dir string) *Install {
	t.Helper()
	in, err := NewInstall(deploytest.Objects(t, deploytest.Kustomize(t, dir, inputs())))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestBase(t *testing.T) {
	in := build(t, "kubernetes/base")
	d := checkInstall(t, in)
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != "Recreate" {
		t.Errorf("replicas %d, strategy %s: SQLite is one writer's file, want 1 and Recreate", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	_, flags, _ := Flags(d.Spec.Template.Spec.Containers[0].Args)
	store := flags["store"][0]
	file, ok := strings.CutPrefix(store, "sqlite:")
	if !ok {
		t.Fatalf("--store=%s, want the SQLite store", store)
	}
	m := deploytest.MountOf(d.Spec.Template.Spec.Containers[0], file)
	if m == nil {
		t.Fatalf("the SQLite file %s is on no volume: the root filesystem is read-only", file)
	}
	if v := deploytest.Volume(d.Spec.Template.Spec, m.Name); m.ReadOnly || v.PersistentVolumeClaim == nil {
		t.Errorf("the SQLite file %s is on volume %q, which is not a writable PersistentVolumeClaim", file, m.Name)
	}
}

func TestPostgres(t *testing.T) {
	in := build(t, "kubernetes/postgres")
	d := checkInstall(t, in)
	if len(in.PVCs) != 0 {
		t.Errorf("PVCs %v left over from the SQLite base", deploytest.Keys(in.PVCs))
	}
	if ru := d.Spec.Strategy.RollingUpdate; *d.Spec.Replicas < 2 || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicas %d, strategy %+v: want 2 or more, replaced one at a time with none unavailable", *d.Spec.Replicas, d.Spec.Strategy)
	}
	c := d.Spec.Template.Spec.Containers[0]
	_, flags, _ := Flags(c.Args)
	if got := flags["store"]; len(got) != 1 || got[0] != "$(MESHPROOF_STORE)" {
		t.Errorf("--store %v, want $(MESHPROOF_STORE) from the Secret", got)
	}
	// The overlay repeats base's args (a patch replaces a list whole): they
	// must not drift apart.
	baseArgs := build(t, "kubernetes/base").Deployments["meshproof"].Spec.Template.Spec.Containers[0].Args
	var want []string
	for _, a := range baseArgs {
		if strings.HasPrefix(a, "--store=") {
			want = append(want, "--store=$(MESHPROOF_STORE)", "--evidence-durability=sync")
		} else {
			want = append(want, a)
		}
	}
	if !slices.Equal(c.Args, want) {
		t.Errorf("args %v\nwant base's with the store from the Secret and sync evidence: %v", c.Args, want)
	}
	if s := in.SecretNamed("meshproof-store"); s == nil || string(s.Data["MESHPROOF_STORE"]) != testDSN {
		t.Errorf("the store Secret does not hold the DSN from store.env under MESHPROOF_STORE")
	}

	pdb := in.PDBs["meshproof"]
	if pdb == nil || !deploytest.Selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("no PodDisruptionBudget selecting meshproof's pods")
	}

	job := in.Jobs["meshproof-migrate"]
	if job == nil {
		t.Fatal("no migrate Job")
	}
	pod := job.Spec.Template
	jc := pod.Spec.Containers[0]
	cmd, jflags, err := Flags(jc.Args)
	if err != nil || cmd != "migrate" || !slices.Equal(jflags["store"], flags["store"]) {
		t.Errorf("Job args %v: want migrate with serve's --store", jc.Args)
	}
	if jc.Image != c.Image {
		t.Errorf("the Job runs %s, serve runs %s: migrate with the schema of the version that serves", jc.Image, c.Image)
	}
	checkEnv(t, in, jc)
	deploytest.CheckSecurity(t, pod.Spec, jc)
	if pod.Annotations["sidecar.istio.io/inject"] != "false" {
		t.Error("the Job's pod would get an Istio sidecar, which keeps it running after migrate exits")
	}
	if labels.SelectorFromSet(in.Services["meshproof"].Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Error("the Service selects the Job's pod: ext_authz calls could land on it")
	}
}

// checkInstall checks what every variant shares and returns the Deployment.
func checkInstall(t *testing.T, in *Install) *appsv1.Deployment {
	t.Helper()
	d := in.Deployments["meshproof"]
	if d == nil || len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("want a Deployment meshproof with one container")
	}
	for kind, names := range map[string][]string{
		"Deployment": deploytest.Keys(in.Deployments), "Service": deploytest.Keys(in.Services), "ConfigMap": deploytest.Keys(in.ConfigMaps),
		"Secret": deploytest.Keys(in.Secrets), "NetworkPolicy": deploytest.Keys(in.NetworkPolicies),
	} {
		for _, n := range names {
			if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
				t.Errorf("%s %q: %v", kind, n, errs)
			}
		}
	}
	pod := d.Spec.Template
	c := pod.Spec.Containers[0]
	if _, ok := in.Namespaces[d.Namespace]; !ok {
		t.Errorf("namespace %q is not part of the installation", d.Namespace)
	}
	if sa := pod.Spec.ServiceAccountName; in.ServiceAccounts[sa] == nil {
		t.Errorf("service account %q is not part of the installation", sa)
	}
	if !deploytest.Selects(t, d.Spec.Selector, pod.Labels) {
		t.Error("the Deployment's selector does not match its pod labels")
	}
	if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("image %q: name a version", c.Image)
	}

	t.Run("service", func(t *testing.T) { deploytest.CheckService(t, in.Services["meshproof"], pod.Labels, c) })
	t.Run("probes", func(t *testing.T) { deploytest.CheckProbes(t, c) })
	t.Run("volumes", func(t *testing.T) { checkVolumes(t, in, pod.Spec, c) })
	t.Run("env", func(t *testing.T) { checkEnv(t, in, c) })
	t.Run("args", func(t *testing.T) { checkArgs(t, in, pod.Spec, c) })
	t.Run("security", func(t *testing.T) { deploytest.CheckSecurity(t, pod.Spec, c) })
	t.Run("resources", func(t *testing.T) { checkResources(t, c) })
	t.Run("networkpolicy", func(t *testing.T) { checkNetworkPolicy(t, in.NetworkPolicies["meshproof"], pod.Labels, c) })
	return d
}

func checkVolumes(t *testing.T, in *Install, spec corev1.PodSpec, c corev1.Container) {
	for _, m := range c.VolumeMounts {
		if deploytest.Volume(spec, m.Name) == nil {
			t.Errorf("volumeMount %q names no volume", m.Name)
		}
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil && in.ConfigMaps[v.ConfigMap.Name] == nil:
			t.Errorf("volume %q: ConfigMap %q is not part of the installation", v.Name, v.ConfigMap.Name)
		case v.Secret != nil && in.Secrets[v.Secret.SecretName] == nil:
			t.Errorf("volume %q: Secret %q is not part of the installation", v.Name, v.Secret.SecretName)
		case v.PersistentVolumeClaim != nil && in.PVCs[v.PersistentVolumeClaim.ClaimName] == nil:
			t.Errorf("volume %q: PVC %q is not part of the installation", v.Name, v.PersistentVolumeClaim.ClaimName)
		case v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0):
			t.Errorf("volume %q: the token Secret is readable by others", v.Name)
		case v.HostPath != nil:
			t.Errorf("volume %q is a hostPath", v.Name)
		}
	}
}

func checkEnv(t *testing.T, in *Install, c corev1.Container) {
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		s := in.Secrets[ref.Name]
		if s == nil {
			t.Errorf("env %s: Secret %q is not part of the installation", e.Name, ref.Name)
		} else if _, ok := s.Data[ref.Key]; !ok {
			t.Errorf("env %s: Secret %q has no key %q", e.Name, ref.Name, ref.Key)
		}
	}
}

// checkArgs: the flags refer to what the pod really has.
func checkArgs(t *testing.T, in *Install, spec corev1.PodSpec, c corev1.Container) {
	cmd, flags, err := Flags(c.Args)
	if err != nil || cmd != "serve" {
		t.Fatalf("args %v: want serve and --name=value flags (%v)", c.Args, err)
	}
	deploytest.CheckServeArgs(t, c, flags)

	tokens := deploytest.One(t, flags, "api-token-file")
	if m := deploytest.MountOf(c, tokens); m == nil {
		t.Errorf("--api-token-file=%s is on no mounted volume", tokens)
	} else if v := deploytest.Volume(spec, m.Name); v == nil || v.Secret == nil || !m.ReadOnly {
		t.Errorf("--api-token-file=%s is not on a read-only Secret volume", tokens)
	} else if s := in.Secrets[v.Secret.SecretName]; s == nil || len(s.Data[path.Base(tokens)]) == 0 {
		t.Errorf("--api-token-file=%s: the Secret has no key %q", tokens, path.Base(tokens))
	}

	deploytest.CheckPolicyMounts(t, spec, c, flags)
}
