package kubernetes

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Checks of the pod's hardening, resources and reachability, and the
// helpers that look things up in a pod.

func checkSecurity(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	ps := spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Error("the pod does not run as a numeric non-root user")
	}
	if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("the pod's seccomp profile is not RuntimeDefault")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("the pod shares a host namespace")
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatalf("container %s has no securityContext", c.Name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("container %s: the root filesystem is writable", c.Name)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("container %s: capabilities %v, want drop ALL and add none", c.Name, sc.Capabilities)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("container %s is privileged", c.Name)
	}
}

func checkResources(t *testing.T, c corev1.Container) {
	r := c.Resources
	limit, ok := r.Limits[corev1.ResourceMemory]
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || !ok {
		t.Fatalf("resources %v: want CPU and memory requests and a memory limit", r)
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		v, ok := strings.CutSuffix(e.Value, "B") // Go writes MiB, Kubernetes Mi
		q, err := resource.ParseQuantity(v)
		if !ok || err != nil || q.Cmp(limit) >= 0 || q.Cmp(*r.Requests.Memory()) < 0 {
			t.Errorf("GOMEMLIMIT=%s: want a size in Go's form between the memory request and limit %s", e.Value, limit.String())
		}
		return
	}
	t.Error("no GOMEMLIMIT: with --gc-percent 400 the heap may pass the memory limit before a collection")
}

func checkNetworkPolicy(t *testing.T, in *Install, podLabels map[string]string, c corev1.Container) {
	np := in.NetworkPolicies["meshproof"]
	if np == nil {
		t.Fatal("no NetworkPolicy meshproof")
	}
	if !selects(t, &np.Spec.PodSelector, podLabels) || !slices.Contains(np.Spec.PolicyTypes, "Ingress") {
		t.Fatal("the NetworkPolicy does not isolate meshproof's pods for ingress")
	}
	opened := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 || len(rule.Ports) == 0 {
			t.Errorf("ingress rule %+v opens to every source or every port", rule)
		}
		for _, p := range rule.Ports {
			cp := containerPort(c, *p.Port)
			if cp == nil {
				t.Errorf("NetworkPolicy port %s is not a container port", p.Port.String())
				continue
			}
			opened[cp.Name] = true
		}
		for _, peer := range rule.From {
			if peer.NamespaceSelector == nil || peer.IPBlock != nil ||
				len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("peer %+v: want labelled namespaces only", peer)
			}
		}
	}
	if !opened["grpc"] || !opened["http"] {
		t.Errorf("the NetworkPolicy opens %v, want grpc and http", keys(opened))
	}
}

func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

func containerPort(c corev1.Container, p intstr.IntOrString) *corev1.ContainerPort {
	for i, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return &c.Ports[i]
		}
	}
	return nil
}

func volume(spec corev1.PodSpec, name string) *corev1.Volume {
	for i, v := range spec.Volumes {
		if v.Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// mountOf is the volume mount holding file, the deepest if several do.
func mountOf(c corev1.Container, file string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if (file == m.MountPath || strings.HasPrefix(file, m.MountPath+"/")) && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}

func one(t *testing.T, flags map[string][]string, name string) string {
	t.Helper()
	if len(flags[name]) != 1 {
		t.Fatalf("--%s given %d times, want once", name, len(flags[name]))
	}
	return flags[name][0]
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
