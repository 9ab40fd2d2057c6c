package deploytest

// Checks that the kustomize base (deploy/kubernetes) and the Helm chart
// (deploy/helm) both must pass, on the objects each renders, so that the
// two installations are held to one rule each, written once.

import (
	"cmp"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// CheckSecurity checks the pod's and the container's hardening: a numeric
// non-root user, the RuntimeDefault seccomp profile, no host namespace, no
// privilege escalation, a read-only root filesystem, every capability
// dropped and none added, not privileged. meshproof needs none of these,
// and it holds the evidence store and signing key.
func CheckSecurity(t testing.TB, spec corev1.PodSpec, c corev1.Container) {
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
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("container %s: runAsNonRoot is not true", c.Name)
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

// CheckService checks that the Service s selects the pod and exposes
// exactly the ports grpc and http, each on a port the container declares
// and with the appProtocol of its name: Istio reads appProtocol to treat
// ext_authz's gRPC as HTTP/2.
func CheckService(t testing.TB, s *corev1.Service, podLabels map[string]string, c corev1.Container) {
	t.Helper()
	if s == nil {
		t.Fatal("no Service")
	}
	if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Errorf("Service selector %v does not match the pod labels %v", s.Spec.Selector, podLabels)
	}
	want := map[string]string{"grpc": "grpc", "http": "http"} // port name -> appProtocol
	for _, p := range s.Spec.Ports {
		if ContainerPort(c, p.TargetPort) == nil {
			t.Errorf("Service port %s targets %s, which the container does not declare", p.Name, p.TargetPort.String())
		}
		if ap, ok := want[p.Name]; !ok || p.AppProtocol == nil || *p.AppProtocol != ap {
			t.Errorf("Service port %s: want ports grpc and http with appProtocol of the same name (Istio reads it)", p.Name)
		}
		delete(want, p.Name)
	}
	if len(want) > 0 {
		t.Errorf("Service lacks ports %v", Keys(want))
	}
}

// CheckProbes checks that readiness is GET /readyz and liveness GET
// /healthz on the http port: the paths serve answers, on the port the
// NetworkPolicy opens.
func CheckProbes(t testing.TB, c corev1.Container) {
	t.Helper()
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		cp := ContainerPort(c, p.probe.HTTPGet.Port)
		if p.probe.HTTPGet.Path != p.path || cp == nil || cp.Name != "http" {
			t.Errorf("%s probe GET %s on port %s, want %s on the http port", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
}

// CheckNetworkPolicy checks that np isolates the pod for ingress and opens
// only the container's grpc and http ports, each rule to named sources:
// an open rule would let any pod call ext_authz or read the evidence API.
func CheckNetworkPolicy(t testing.TB, np *networkingv1.NetworkPolicy, podLabels map[string]string, c corev1.Container) {
	t.Helper()
	if np == nil {
		t.Fatal("no NetworkPolicy")
	}
	if !Selects(t, &np.Spec.PodSelector, podLabels) || !slices.Contains(np.Spec.PolicyTypes, "Ingress") {
		t.Fatal("the NetworkPolicy does not isolate meshproof's pods for ingress")
	}
	opened := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 || len(rule.Ports) == 0 {
			t.Errorf("ingress rule %+v opens to every source or every port", rule)
		}
		for _, p := range rule.Ports {
			cp := ContainerPort(c, *p.Port)
			if cp == nil {
				t.Errorf("NetworkPolicy port %s is not a container port", p.Port.String())
				continue
			}
			opened[cp.Name] = true
		}
	}
	if !opened["grpc"] || !opened["http"] {
		t.Errorf("the NetworkPolicy opens %v, want grpc and http", Keys(opened))
	}
}

// Watched is what serve --kubernetes reads (cluster/workload's Watch:
// pods, replicasets, jobs; cluster/istio's watch: peerauthentications,
// destinationrules), as API group and resource; each needs get, list and
// watch, and the ClusterRole may grant nothing else. cluster/workload's
// TestRBAC applies the base's files to a real API server and shows the
// same from the other side.
var Watched = [][2]string{
	{"", "pods"}, {"apps", "replicasets"}, {"batch", "jobs"},
	{"security.istio.io", "peerauthentications"}, {"networking.istio.io", "destinationrules"},
}

// Grant is one verb on one resource of one API group.
type Grant struct{ Group, Resource, Verb string }

func cmpGrant(a, b Grant) int {
	return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Resource, b.Resource), strings.Compare(a.Verb, b.Verb))
}

// CheckClusterRole checks that role grants exactly get, list and watch of
// each Watched resource, by name (no wildcard, no resourceNames, no URL),
// and aggregates no other role, which would grant what that one grants.
func CheckClusterRole(t testing.TB, role *rbacv1.ClusterRole) {
	t.Helper()
	var want, got []Grant
	for _, w := range Watched {
		for _, v := range []string{"get", "list", "watch"} {
			want = append(want, Grant{w[0], w[1], v})
		}
	}
	for _, r := range role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: names resources or URLs", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, Grant{g, res, v})
				}
			}
		}
	}
	slices.SortFunc(got, cmpGrant)
	slices.SortFunc(want, cmpGrant)
	if !slices.Equal(got, want) {
		t.Errorf("the ClusterRole grants\n%v\nwant exactly\n%v", got, want)
	}
	if role.AggregationRule != nil {
		t.Error("the ClusterRole aggregates others: it would grant what they grant")
	}
}

// CheckClusterRoleBinding checks that binding binds role to the
// Deployment's ServiceAccount, in the Deployment's namespace, and to it
// alone, and that the ServiceAccount is among accounts (those installed):
// otherwise serve --kubernetes would be refused its watches.
func CheckClusterRoleBinding(t testing.TB, binding *rbacv1.ClusterRoleBinding, role *rbacv1.ClusterRole, d *appsv1.Deployment, accounts map[string]*corev1.ServiceAccount) {
	t.Helper()
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}
	wantSubject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: d.Spec.Template.Spec.ServiceAccountName, Namespace: d.Namespace}
	if binding.RoleRef != wantRef || len(binding.Subjects) != 1 || binding.Subjects[0] != wantSubject {
		t.Errorf("the binding: %+v to %+v, want %+v to [%+v]", binding.RoleRef, binding.Subjects, wantRef, wantSubject)
	}
	if sa := accounts[wantSubject.Name]; sa == nil || sa.Namespace != wantSubject.Namespace {
		t.Errorf("the bound ServiceAccount %s/%s is not installed", wantSubject.Namespace, wantSubject.Name)
	}
}

// EnvRef is a $(VAR) reference in a container argument, which the kubelet
// expands from the container's env.
var EnvRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// Expand does the kubelet's $(VAR) expansion of an argument; a variable
// not in env fails the test, as the argument would reach serve unexpanded.
func Expand(t testing.TB, arg string, env map[string]string) string {
	t.Helper()
	return EnvRef.ReplaceAllStringFunc(arg, func(ref string) string {
		v, ok := env[ref[2:len(ref)-1]]
		if !ok {
			t.Fatalf("argument %q: %s is not in the environment", arg, ref)
		}
		return v
	})
}

// PodSpecs are the pod templates of the Deployments and Jobs: every pod an
// installation runs.
func PodSpecs(deployments map[string]*appsv1.Deployment, jobs map[string]*batchv1.Job) []corev1.PodSpec {
	var pods []corev1.PodSpec
	for _, d := range deployments {
		pods = append(pods, d.Spec.Template.Spec)
	}
	for _, j := range jobs {
		pods = append(pods, j.Spec.Template.Spec)
	}
	return pods
}

// CheckCommandLines checks, in a subtest name/container per container of
// pods, that the meshproof binary bin accepts the container's arguments
// (see AcceptsFlags), with each $(VAR) expanded to a placeholder value: a
// flag renamed in cmd/ and not in the manifests fails here, not at rollout.
func CheckCommandLines(t *testing.T, bin, name string, pods []corev1.PodSpec) {
	t.Helper()
	for _, p := range pods {
		for _, c := range p.Containers {
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = "value-of-" + e.Name
			}
			args := make([]string, len(c.Args))
			for i, a := range c.Args {
				args[i] = Expand(t, a, env)
			}
			t.Run(name+"/"+c.Name, func(t *testing.T) { AcceptsFlags(t, bin, args) })
		}
	}
}

// CheckServeArgs checks serve's arguments in c, parsed into flags: every
// $(VAR) is in the container's env (the kubelet passes an unknown one on
// unexpanded), --grpc-addr and --http-addr listen on 0.0.0.0 at the
// container's grpc and http ports, and --replica is the pod's name from the
// downward API, so that each replica keeps a hash chain of its own.
func CheckServeArgs(t testing.TB, c corev1.Container, flags map[string][]string) {
	t.Helper()
	for _, a := range c.Args {
		for _, m := range EnvRef.FindAllStringSubmatch(a, -1) {
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == m[1] }) {
				t.Errorf("argument %q expands $(%s), which the container's env does not define", a, m[1])
			}
		}
	}
	for flag, port := range map[string]string{"grpc-addr": "grpc", "http-addr": "http"} {
		addr := One(t, flags, flag)
		host, p, _ := strings.Cut(addr, ":")
		cp := ContainerPort(c, intstr.FromString(port))
		if host != "0.0.0.0" || cp == nil || p != strconv.Itoa(int(cp.ContainerPort)) {
			t.Errorf("--%s=%s: want 0.0.0.0 and the %s container port", flag, addr, port)
		}
	}
	if One(t, flags, "replica") != "$(POD_NAME)" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Error("--replica is not the pod's name from the downward API: replicas would share one hash chain name")
	}
}

// CheckPolicyMounts checks that every --policy other than a builtin is the
// mount path of a read-only ConfigMap volume, and that there is at least
// one: serve loads a policy directory whole, and the pod must not write it.
func CheckPolicyMounts(t testing.TB, spec corev1.PodSpec, c corev1.Container, flags map[string][]string) {
	t.Helper()
	var dirs int
	for _, p := range flags["policy"] {
		if strings.HasPrefix(p, "builtin:") {
			continue
		}
		dirs++
		m := MountOf(c, p)
		if m == nil || !m.ReadOnly || Volume(spec, m.Name).ConfigMap == nil || m.MountPath != p {
			t.Errorf("--policy=%s is not a read-only ConfigMap mount", p)
		}
	}
	if dirs == 0 {
		t.Error("no --policy names a policy ConfigMap")
	}
}

// Selects reports whether sel, which must not be empty (an empty selector
// selects every pod), selects a pod with podLabels.
func Selects(t testing.TB, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// ContainerPort is c's port that p names, by name or number; nil if none.
func ContainerPort(c corev1.Container, p intstr.IntOrString) *corev1.ContainerPort {
	for i, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return &c.Ports[i]
		}
	}
	return nil
}

// Volume is the pod's volume called name; nil if none.
func Volume(spec corev1.PodSpec, name string) *corev1.Volume {
	for i, v := range spec.Volumes {
		if v.Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// MountOf is the volume mount holding file, the deepest if several do.
func MountOf(c corev1.Container, file string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if (file == m.MountPath || strings.HasPrefix(file, m.MountPath+"/")) && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	return best
}

// One is the value of a flag that must be given once, as serve keeps only
// the last of several.
func One(t testing.TB, flags map[string][]string, name string) string {
	t.Helper()
	if len(flags[name]) != 1 {
		t.Fatalf("--%s given %d times, want once", name, len(flags[name]))
	}
	return flags[name][0]
}

// Keys are m's keys, sorted, for messages that do not change between runs.
func Keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// FreeAddr is a loopback address with a port free at the time of the call,
// for a serve the test starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// LockedBuffer collects a child process's output while the process may
// still be writing and the test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
