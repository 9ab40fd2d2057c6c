package istio

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The rules cited below, from Istio's docs:
//
//	[concepts:order]  security concepts, Authentication policies: "Istio applies the narrowest
//	                  matching policy for each workload using the following order: workload-specific,
//	                  namespace-wide, mesh-wide".
//	[concepts:scope]  same page: mesh-wide is "a policy specified for the root namespace without or
//	                  with an empty selector field"; namespace-wide the same in a non-root namespace;
//	                  workload-specific "a policy defined in the regular namespace, with non-empty
//	                  selector field".
//	[concepts:oldest] same page: "When you configure multiple mesh- or namespace-wide peer
//	                  authentication policies ... Istio ignores the newer policies. When more than one
//	                  workload-specific peer authentication policy matches, Istio picks the oldest one."
//	                  Equal timestamps: pilot sorts by creation time, then name.
//	[ref:root]        PeerAuthentication reference: "PeerAuthentication policies with workload
//	                  selectors are ignored when deployed in the root namespace."
//	[ref:selector]    reference, selector: "will match with workloads in the same namespace as the
//	                  policy"; unset: "applied to all workloads in the same namespace".
//	[ref:unset]       reference, Mode UNSET: "Inherit from parent, if has one. Otherwise treated as
//	                  PERMISSIVE"; mtls: "If not defined, inherit from parent."
//	[ref:port]        reference, portLevelMtls: "These only apply when a workload selector is
//	                  specified. The port refers to the port of the workload".

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pa builds a PeerAuthentication created age minutes after epoch. mode ""
// leaves mtls out altogether; ports maps a port to its mode.
func pa(namespace, name string, age int, selector map[string]string, mode string, ports map[uint32]string) *securityv1.PeerAuthentication {
	p := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         namespace,
			Name:              name,
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute)),
		},
	}
	if selector != nil {
		p.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: selector}
	}
	if mode != "" {
		p.Spec.Mtls = paMode(mode)
	}
	if ports != nil {
		p.Spec.PortLevelMtls = map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		for port, m := range ports {
			p.Spec.PortLevelMtls[port] = paMode(m)
		}
	}
	return p
}

func paMode(mode string) *securityv1beta1.PeerAuthentication_MutualTLS {
	v, ok := securityv1beta1.PeerAuthentication_MutualTLS_Mode_value[mode]
	if !ok {
		panic("no PeerAuthentication mode " + mode)
	}
	return &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_Mode(v)}
}

func TestEffectivePeerAuthentication(t *testing.T) {
	finance := Workload{Namespace: "foo", Labels: map[string]string{"app": "finance", "version": "v1"}}
	app := func(a string) map[string]string { return map[string]string{"app": a} }
	tests := []struct {
		name     string
		root     string
		policies []*securityv1.PeerAuthentication
		w        Workload
		port     uint32
		want     PeerDecision
	}{
		{
			name: "[ref:unset] no policy anywhere is PERMISSIVE",
			w:    finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Scope: ScopeDefault},
		},
		{
			name: "[concepts:scope] a selectorless policy in the root namespace covers every namespace",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[concepts:order] namespace-wide beats mesh-wide",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "STRICT", nil),
				pa("foo", "default", 5, nil, "PERMISSIVE", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Policy: "default.foo", Scope: ScopeNamespace},
		},
		{
			name: "[concepts:order] workload-specific beats namespace-wide (the reference's finance example)",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 0, nil, "PERMISSIVE", nil),
				pa("foo", "finance", 5, app("finance"), "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "finance.foo", Scope: ScopeWorkload},
		},
		{
			name: "[ref:selector] a selector must carry every label: version v2 does not select finance v1",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 0, nil, "PERMISSIVE", nil),
				pa("foo", "finance-v2", 5, map[string]string{"app": "finance", "version": "v2"}, "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Policy: "default.foo", Scope: ScopeNamespace},
		},
		{
			name: "[ref:selector] policies in another namespace never apply, with or without selector",
			policies: []*securityv1.PeerAuthentication{
				pa("bar", "default", 0, nil, "STRICT", nil),
				pa("bar", "finance", 0, app("finance"), "DISABLE", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Scope: ScopeDefault},
		},
		{
			name: "[ref:root] a selector policy in the root namespace is not mesh-wide: the mesh policy still decides",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 10, nil, "PERMISSIVE", nil),
				pa("istio-system", "finance", 0, app("finance"), "STRICT", map[uint32]string{8080: "DISABLE"}),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[ref:root] a selector policy in the root namespace is ignored for the root's own workloads too",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "ingress", 0, app("istio-ingressgateway"), "STRICT", nil),
			},
			w:    Workload{Namespace: "istio-system", Labels: app("istio-ingressgateway")},
			port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Scope: ScopeDefault},
		},
		{
			name: "[concepts:scope] in the root namespace its selectorless policy is the mesh policy",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "STRICT", nil),
			},
			w:    Workload{Namespace: "istio-system", Labels: app("istiod")},
			port: 15012,
			want: PeerDecision{Mode: "STRICT", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[concepts:scope] a custom root namespace: istio-system is then an ordinary namespace",
			root: "mesh-root",
			policies: []*securityv1.PeerAuthentication{
				pa("mesh-root", "default", 0, nil, "STRICT", nil),
				pa("istio-system", "default", 0, nil, "DISABLE", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.mesh-root", Scope: ScopeMesh},
		},
		{
			name: "[concepts:oldest] two namespace-wide policies: the newer is ignored",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "lockdown", 30, nil, "STRICT", nil),
				pa("foo", "default", 10, nil, "PERMISSIVE", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Policy: "default.foo", Scope: ScopeNamespace},
		},
		{
			name: "[concepts:oldest] two namespace-wide policies created in the same second: the lower name wins",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "b-strict", 10, nil, "STRICT", nil),
				pa("foo", "a-disable", 10, nil, "DISABLE", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "DISABLE", Policy: "a-disable.foo", Scope: ScopeNamespace},
		},
		{
			name: "[concepts:oldest][ref:unset] the oldest mesh policy wins even when UNSET: the newer STRICT one is ignored",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "old", 0, nil, "UNSET", nil),
				pa("istio-system", "new", 60, nil, "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Scope: ScopeDefault},
		},
		{
			name: "[concepts:oldest] two matching workload policies: the oldest wins",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "by-version", 20, map[string]string{"version": "v1"}, "DISABLE", nil),
				pa("foo", "by-app", 10, app("finance"), "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "by-app.foo", Scope: ScopeWorkload},
		},
		{
			name: "[ref:unset] mesh UNSET has no parent: PERMISSIVE",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "UNSET", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Scope: ScopeDefault},
		},
		{
			name: "[ref:unset] namespace UNSET inherits the mesh",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "DISABLE", nil),
				pa("foo", "default", 0, nil, "UNSET", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "DISABLE", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[ref:unset] a namespace policy with no mtls at all inherits the mesh",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "STRICT", nil),
				pa("foo", "default", 0, nil, "", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[ref:unset] workload UNSET inherits the namespace",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "PERMISSIVE", nil),
				pa("foo", "default", 0, nil, "STRICT", nil),
				pa("foo", "finance", 0, app("finance"), "UNSET", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.foo", Scope: ScopeNamespace},
		},
		{
			name: "[ref:unset] workload and namespace UNSET inherit the mesh",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "STRICT", nil),
				pa("foo", "default", 0, nil, "UNSET", nil),
				pa("foo", "finance", 0, app("finance"), "UNSET", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[ref:port] port 8080 DISABLE under a STRICT workload policy (the reference's example)",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 0, app("finance"), "STRICT", map[uint32]string{8080: "DISABLE"}),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "DISABLE", Policy: "default.foo", Scope: ScopePort},
		},
		{
			name: "[ref:port] the same policy on another port: the workload mode",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 0, app("finance"), "STRICT", map[uint32]string{8080: "DISABLE"}),
			},
			w: finance, port: 9090,
			want: PeerDecision{Mode: "STRICT", Policy: "default.foo", Scope: ScopeWorkload},
		},
		{
			name: "[ref:port][ref:unset] workload UNSET with port 8080 DISABLE: other ports inherit the namespace",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "strict", 0, nil, "STRICT", nil),
				pa("foo", "default", 0, app("finance"), "UNSET", map[uint32]string{8080: "DISABLE"}),
			},
			w: finance, port: 9090,
			want: PeerDecision{Mode: "STRICT", Policy: "strict.foo", Scope: ScopeNamespace},
		},
		{
			name: "[ref:port][ref:unset] a port UNSET inherits the workload's mode",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 0, nil, "PERMISSIVE", nil),
				pa("foo", "finance", 0, app("finance"), "STRICT", map[uint32]string{8080: "UNSET"}),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "finance.foo", Scope: ScopeWorkload},
		},
		{
			name: "[ref:port][ref:unset] a port UNSET under a workload UNSET inherits the mesh",
			policies: []*securityv1.PeerAuthentication{
				pa("istio-system", "default", 0, nil, "DISABLE", nil),
				pa("foo", "finance", 0, app("finance"), "UNSET", map[uint32]string{8080: "UNSET"}),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "DISABLE", Policy: "default.istio-system", Scope: ScopeMesh},
		},
		{
			name: "[ref:port] portLevelMtls in a namespace-wide policy is ignored",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 0, nil, "STRICT", map[uint32]string{8080: "DISABLE"}),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.foo", Scope: ScopeNamespace},
		},
		{
			name: "[ref:port][concepts:oldest] only the winning workload policy's ports count",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "old", 0, app("finance"), "STRICT", nil),
				pa("foo", "new", 9, app("finance"), "STRICT", map[uint32]string{8080: "DISABLE"}),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "old.foo", Scope: ScopeWorkload},
		},
		{
			name: "[concepts:scope] a selector with no labels is namespace-wide, and an older one wins over no selector",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "empty-selector", 0, map[string]string{}, "DISABLE", nil),
				pa("foo", "default", 5, nil, "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "DISABLE", Policy: "empty-selector.foo", Scope: ScopeNamespace},
		},
		{
			name: "[ref:selector] a workload without labels is selected only by selectorless policies",
			policies: []*securityv1.PeerAuthentication{
				pa("foo", "default", 5, nil, "PERMISSIVE", nil),
				pa("foo", "finance", 0, app("finance"), "STRICT", nil),
			},
			w:    Workload{Namespace: "foo"},
			port: 8080,
			want: PeerDecision{Mode: "PERMISSIVE", Policy: "default.foo", Scope: ScopeNamespace},
		},
		{
			name: "nil entries in the list are skipped",
			policies: []*securityv1.PeerAuthentication{
				nil,
				pa("foo", "default", 0, nil, "STRICT", nil),
			},
			w: finance, port: 8080,
			want: PeerDecision{Mode: "STRICT", Policy: "default.foo", Scope: ScopeNamespace},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBothOrders(tt.policies, func(order string, policies []*securityv1.PeerAuthentication) {
				if got := EffectivePeerAuthentication(policies, tt.root, tt.w, tt.port); got != tt.want {
					t.Errorf("EffectivePeerAuthentication (%s) = %+v, want %+v", order, got, tt.want)
				}
				if got := NewPolicyIndex(policies, tt.root).Effective(tt.w, tt.port); got != tt.want {
					t.Errorf("PolicyIndex.Effective (%s) = %+v, want %+v", order, got, tt.want)
				}
			})
		})
	}
}

// inBothOrders calls check with list as given and reversed: Istio decides
// by age and name, never by list position.
func inBothOrders[T any](list []T, check func(order string, list []T)) {
	check("as listed", list)
	reversed := slices.Clone(list)
	slices.Reverse(reversed)
	check("reversed", reversed)
}

// benchPolicies is a cluster of n policies over namespaces namespaces:
// a mesh policy, a namespace-wide one per namespace, and selector
// policies for the rest, some with port-level settings.
func benchPolicies(n, namespaces int) []*securityv1.PeerAuthentication {
	modes := []string{"STRICT", "PERMISSIVE", "DISABLE", "UNSET"}
	ps := []*securityv1.PeerAuthentication{pa("istio-system", "default", 0, nil, "STRICT", nil)}
	for i := range namespaces {
		ps = append(ps, pa(fmt.Sprintf("ns-%d", i), "default", i, nil, modes[i%len(modes)], nil))
	}
	for i := 0; len(ps) < n; i++ {
		var ports map[uint32]string
		if i%3 == 0 {
			ports = map[uint32]string{8080: "DISABLE"}
		}
		ps = append(ps, pa(fmt.Sprintf("ns-%d", i%namespaces), fmt.Sprintf("app-%d", i), i,
			map[string]string{"app": fmt.Sprintf("app-%d", i)}, modes[i%len(modes)], ports))
	}
	return ps
}

func TestBenchPoliciesShape(t *testing.T) {
	ps := benchPolicies(1000, 100)
	namespaces := map[string]bool{}
	for _, p := range ps {
		namespaces[p.Namespace] = true
	}
	if len(ps) != 1000 || len(namespaces) != 101 { // 100 and the root
		t.Fatalf("benchPolicies: %d policies over %d namespaces, want 1000 over 101", len(ps), len(namespaces))
	}
	// The workload the benchmarks ask about is decided by its own policy's
	// port setting, so they exercise every level.
	w := Workload{Namespace: "ns-42", Labels: map[string]string{"app": "app-642"}}
	want := PeerDecision{Mode: "DISABLE", Policy: "app-642.ns-42", Scope: ScopePort}
	if got := EffectivePeerAuthentication(ps, "", w, 8080); got != want {
		t.Fatalf("EffectivePeerAuthentication = %+v, want %+v", got, want)
	}
}

func BenchmarkEffectivePeerAuthentication(b *testing.B) {
	ps := benchPolicies(1000, 100)
	w := Workload{Namespace: "ns-42", Labels: map[string]string{"app": "app-642"}}
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			EffectivePeerAuthentication(ps, "", w, 8080)
		}
	})
	b.Run("index", func(b *testing.B) {
		ix := NewPolicyIndex(ps, "")
		b.ReportAllocs()
		for b.Loop() {
			ix.Effective(w, 8080)
		}
	})
	b.Run("build-index", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewPolicyIndex(ps, "")
		}
	})
}

// TestPolicyIndexAgreesWithScan checks the index against the scan over
// random clusters: same namespaces, overlapping labels, clashing ages and
// names, every mode, so that each level's tie-breaks and the root-namespace
// exclusions are exercised together.
func TestPolicyIndexAgreesWithScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 3))
	namespaces := []string{"istio-system", "foo", "bar", "baz"}
	modes := []string{"", "UNSET", "DISABLE", "PERMISSIVE", "STRICT"}
	labelSets := []map[string]string{nil, {}, {"app": "a"}, {"app": "b"}, {"tier": "x"}, {"app": "a", "tier": "x"}}
	for cluster := range 200 {
		var ps []*securityv1.PeerAuthentication
		for i := range rng.IntN(12) {
			var ports map[uint32]string
			if rng.IntN(3) == 0 {
				ports = map[uint32]string{8080: modes[1+rng.IntN(len(modes)-1)]}
			}
			ps = append(ps, pa(namespaces[rng.IntN(len(namespaces))], fmt.Sprintf("p%d", rng.IntN(4)+i%2), rng.IntN(3),
				labelSets[rng.IntN(len(labelSets))], modes[rng.IntN(len(modes))], ports))
		}
		ix := NewPolicyIndex(ps, "")
		for _, ns := range namespaces {
			for _, labels := range labelSets {
				for _, port := range []uint32{8080, 9090} {
					w := Workload{Namespace: ns, Labels: labels}
					scan, indexed := EffectivePeerAuthentication(ps, "", w, port), ix.Effective(w, port)
					if scan != indexed {
						t.Fatalf("cluster %d, workload %+v port %d: scan %+v, index %+v", cluster, w, port, scan, indexed)
					}
				}
			}
		}
	}
}
