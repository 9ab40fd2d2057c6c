package helm

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	kustomize "github.com/meshproof/meshproof/deploy/kubernetes"
	corev1 "k8s.io/api/core/v1"
)

// byName sorts env by name: the patch puts the overlay's variable first,
// the chart last, and neither refers to another.
func byName(env []corev1.EnvVar) []corev1.EnvVar {
	env = slices.Clone(env)
	slices.SortFunc(env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return env
}

// unhashed is env with kustomize's content hash cut from the generated
// Secrets' names (meshproof-store-<10 characters>): the chart names the
// Secret made beforehand.
func unhashed(env []corev1.EnvVar) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, e := range env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := *e.ValueFrom.SecretKeyRef
			if i := strings.LastIndex(ref.Name, "-"); i > 0 && len(ref.Name)-i == 11 {
				ref.Name = ref.Name[:i]
			}
			e.ValueFrom = &corev1.EnvVarSource{SecretKeyRef: &ref}
		}
		out = append(out, e)
	}
	return out
}

// TestMatchesKustomize keeps deploy/kubernetes and the chart from drifting:
// the chart's defaults render base's Deployment (arguments, environment,
// hardening, probes, ports, resources, strategy), Service, NetworkPolicy
// rules, volume and policy; with kubernetes.enabled, base's ClusterRole
// rules; and with the PostgreSQL store, the overlay's arguments, strategy,
// PodDisruptionBudget and migrate container.
func TestMatchesKustomize(t *testing.T) {
	inputs := map[string]string{
		"kubernetes/base/api-tokens":    "0123456789abcdef0123456789abcdef\n",
		"kubernetes/postgres/store.env": "MESHPROOF_STORE=postgres://meshproof:secret@db.example:5432/meshproof\n",
	}
	kust := func(dir string) *kustomize.Install {
		in, err := kustomize.NewInstall(deploytest.Objects(t, deploytest.Kustomize(t, dir, inputs)))
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	same := func(what string, chart, base any) {
		t.Helper()
		if !reflect.DeepEqual(chart, base) {
			t.Errorf("%s: the chart renders\n%+v\nthe kustomize base has\n%+v", what, chart, base)
		}
	}

	t.Run("base", func(t *testing.T) {
		base := kust("kubernetes/base")
		chart := decode(t, mustRender(t, valuesOf(t, nil, nil)))
		bd, cd := base.Deployments["meshproof"], chart.Deployments[releaseName]
		bp, cp := bd.Spec.Template.Spec, cd.Spec.Template.Spec
		bc, cc := bp.Containers[0], cp.Containers[0]
		same("replicas", *cd.Spec.Replicas, *bd.Spec.Replicas)
		same("strategy", cd.Spec.Strategy, bd.Spec.Strategy)
		same("pod securityContext", cp.SecurityContext, bp.SecurityContext)
		same("container securityContext", cc.SecurityContext, bc.SecurityContext)
		same("automountServiceAccountToken", cp.AutomountServiceAccountToken, bp.AutomountServiceAccountToken)
		same("terminationGracePeriodSeconds", cp.TerminationGracePeriodSeconds, bp.TerminationGracePeriodSeconds)
		same("image", cc.Image, bc.Image)
		same("args", cc.Args, bc.Args)
		same("env", cc.Env, bc.Env)
		same("ports", cc.Ports, bc.Ports)
		same("readinessProbe", cc.ReadinessProbe, bc.ReadinessProbe)
		same("livenessProbe", cc.LivenessProbe, bc.LivenessProbe)
		same("resources", cc.Resources, bc.Resources)
		same("pod label app", cd.Spec.Template.Labels["app"], bd.Spec.Template.Labels["app"])
		same("Service ports", chart.Services[releaseName].Spec.Ports, base.Services["meshproof"].Spec.Ports)
		bn, cn := base.NetworkPolicies["meshproof"].Spec, chart.NetworkPolicies[releaseName].Spec
		same("NetworkPolicy ingress", cn.Ingress, bn.Ingress)
		same("NetworkPolicy policyTypes", cn.PolicyTypes, bn.PolicyTypes)
		same("PVC spec", chart.PVCs[releaseName+"-data"].Spec, base.PVCs["meshproof-data"].Spec)
		same("policy ConfigMap", chart.ConfigMaps[releaseName+"-policy"].Data, base.ConfigMaps["meshproof-policy"].Data)
		same("ServiceAccount automount", chart.ServiceAccounts[releaseName].AutomountServiceAccountToken, base.ServiceAccounts["meshproof"].AutomountServiceAccountToken)
		// The mounts, by path: the chart names volumes after each policy
		// ConfigMap, base has one.
		bm, cm := map[string]bool{}, map[string]bool{}
		for _, m := range bc.VolumeMounts {
			bm[m.MountPath] = m.ReadOnly
		}
		for _, m := range cc.VolumeMounts {
			cm[m.MountPath] = m.ReadOnly
		}
		same("mount paths (read-only)", cm, bm)
		if len(chart.ClusterRoles) != 0 {
			t.Error("a ClusterRole without kubernetes.enabled: nothing would use it")
		}
	})

	t.Run("rbac", func(t *testing.T) {
		base := kust("kubernetes/base")
		chart := decode(t, mustRender(t, valuesOf(t, nil, []string{"kubernetes.enabled=true"})))
		same("ClusterRole rules", chart.ClusterRoles[releaseName].Rules, base.ClusterRoles["meshproof"].Rules)
		same("ClusterRoleBinding subjects", chart.ClusterRoleBindings[releaseName].Subjects, base.ClusterRoleBindings["meshproof"].Subjects)
		same("ClusterRoleBinding roleRef", chart.ClusterRoleBindings[releaseName].RoleRef, base.ClusterRoleBindings["meshproof"].RoleRef)
	})

	t.Run("postgres", func(t *testing.T) {
		base := kust("kubernetes/postgres")
		chart := decode(t, mustRender(t, valuesOf(t, nil, []string{"store.type=postgres", "store.postgres.existingSecret=meshproof-store"})))
		bd, cd := base.Deployments["meshproof"], chart.Deployments[releaseName]
		bc, cc := bd.Spec.Template.Spec.Containers[0], cd.Spec.Template.Spec.Containers[0]
		same("replicas", *cd.Spec.Replicas, *bd.Spec.Replicas)
		same("strategy", cd.Spec.Strategy, bd.Spec.Strategy)
		same("args", cc.Args, bc.Args)
		same("env (by name)", byName(cc.Env), byName(unhashed(bc.Env)))
		same("PodDisruptionBudget maxUnavailable", chart.PDBs[releaseName].Spec.MaxUnavailable, base.PDBs["meshproof"].Spec.MaxUnavailable)
		bj, cj := base.Jobs["meshproof-migrate"].Spec, chart.Jobs[releaseName+"-migrate"].Spec
		same("Job backoffLimit", cj.BackoffLimit, bj.BackoffLimit)
		bjc, cjc := bj.Template.Spec.Containers[0], cj.Template.Spec.Containers[0]
		same("Job args", cjc.Args, bjc.Args)
		same("Job env (by name)", byName(cjc.Env), byName(unhashed(bjc.Env)))
		same("Job resources", cjc.Resources, bjc.Resources)
		same("Job container securityContext", cjc.SecurityContext, bjc.SecurityContext)
		same("Job restartPolicy", cj.Template.Spec.RestartPolicy, bj.Template.Spec.RestartPolicy)
		same("Job sidecar annotation", cj.Template.Annotations, bj.Template.Annotations)
	})
}
