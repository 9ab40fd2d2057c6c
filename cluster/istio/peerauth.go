package istio

import (
	"cmp"
	"slices"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// DefaultRootNamespace is Istio's root (config) namespace when the mesh
// config names none; an empty rootNamespace argument means it.
const DefaultRootNamespace = "istio-system"

// The levels a PeerDecision can come from, in the words of Istio's docs.
const (
	ScopeMesh      = "mesh"      // no selector, in the root namespace
	ScopeNamespace = "namespace" // no selector, in the workload's namespace
	ScopeWorkload  = "workload"  // a selector matching the workload
	ScopePort      = "port"      // the workload policy's portLevelMtls
	ScopeDefault   = "default"   // nothing set: Istio's PERMISSIVE
)

// Workload is what PeerAuthentication selects on: a pod's namespace and
// labels.
type Workload struct {
	Namespace string
	Labels    map[string]string
}

// PeerDecision is the mTLS mode a workload's sidecar enforces on one inbound
// port, and which policy set it.
type PeerDecision struct {
	// Mode is STRICT, PERMISSIVE or DISABLE.
	Mode string
	// Policy is "name.namespace" of the policy whose mode won, "" when no
	// policy set one (Istio's default).
	Policy string
	// Scope is one of the Scope constants.
	Scope string
}

// EffectivePeerAuthentication returns the mode Istio enforces for workload w
// on its (container) port, from every PeerAuthentication in the cluster.
// It scans them all; PolicyIndex answers the same question for many
// workloads without the scan.
func EffectivePeerAuthentication(policies []*securityv1.PeerAuthentication, rootNamespace string, w Workload, port uint32) PeerDecision {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	var mesh, namespace, workload *securityv1.PeerAuthentication
	for _, p := range policies {
		if p == nil {
			continue
		}
		switch {
		case !hasLabels(p.Spec.GetSelector()):
			if p.Namespace == rootNamespace {
				mesh = older(mesh, p)
			} else if p.Namespace == w.Namespace {
				namespace = older(namespace, p)
			}
		case p.Namespace != rootNamespace && p.Namespace == w.Namespace && selects(p.Spec.GetSelector(), w.Labels):
			workload = older(workload, p)
		}
	}
	return compose(mesh, namespace, workload, port)
}

// PolicyIndex is every PeerAuthentication grouped once, so that a decision
// costs the workload's own namespace rather than the whole cluster. Build a
// new one when a policy changes; it is safe for concurrent reads.
type PolicyIndex struct {
	root string
	mesh *securityv1.PeerAuthentication
	// byNamespace holds, outside the root namespace, the namespace-wide
	// winner and the selector policies oldest first.
	byNamespace map[string]*namespacePolicies
}

type namespacePolicies struct {
	wide      *securityv1.PeerAuthentication
	selectors []*securityv1.PeerAuthentication
}

// NewPolicyIndex indexes policies under rootNamespace ("" for
// DefaultRootNamespace). It keeps the pointers, not copies: the policies
// must not change while the index is in use.
func NewPolicyIndex(policies []*securityv1.PeerAuthentication, rootNamespace string) *PolicyIndex {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	ix := &PolicyIndex{root: rootNamespace, byNamespace: map[string]*namespacePolicies{}}
	for _, p := range policies {
		if p == nil {
			continue
		}
		wide := !hasLabels(p.Spec.GetSelector())
		if p.Namespace == rootNamespace {
			if wide {
				ix.mesh = older(ix.mesh, p)
			}
			// A selector policy in the root namespace applies nowhere.
			continue
		}
		ns := ix.byNamespace[p.Namespace]
		if ns == nil {
			ns = &namespacePolicies{}
			ix.byNamespace[p.Namespace] = ns
		}
		if wide {
			ns.wide = older(ns.wide, p)
		} else {
			ns.selectors = append(ns.selectors, p)
		}
	}
	for _, ns := range ix.byNamespace {
		slices.SortFunc(ns.selectors, compareAge)
	}
	return ix
}

// Effective is EffectivePeerAuthentication over the indexed policies.
func (ix *PolicyIndex) Effective(w Workload, port uint32) PeerDecision {
	var namespace, workload *securityv1.PeerAuthentication
	if ns := ix.byNamespace[w.Namespace]; ns != nil && w.Namespace != ix.root {
		namespace = ns.wide
		for _, p := range ns.selectors {
			if selects(p.Spec.GetSelector(), w.Labels) {
				workload = p // oldest first: the first match wins
				break
			}
		}
	}
	return compose(ix.mesh, namespace, workload, port)
}

// compose resolves the chosen policy of each level from the mesh down, an
// UNSET mode leaving the level above in force, as Istio's
// ComposePeerAuthentication does.
func compose(mesh, namespace, workload *securityv1.PeerAuthentication, port uint32) PeerDecision {
	var decided *securityv1.PeerAuthentication
	mode, scope := securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE, ScopeDefault
	for _, l := range [...]struct {
		p     *securityv1.PeerAuthentication
		port  bool
		scope string
	}{{mesh, false, ScopeMesh}, {namespace, false, ScopeNamespace}, {workload, false, ScopeWorkload}, {workload, true, ScopePort}} {
		if l.p == nil {
			continue
		}
		m := l.p.Spec.GetMtls()
		if l.port {
			m = l.p.Spec.GetPortLevelMtls()[port]
		}
		if m.GetMode() != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			decided, mode, scope = l.p, m.GetMode(), l.scope
		}
	}
	d := PeerDecision{Mode: mode.String(), Scope: scope}
	if decided != nil {
		d.Policy = decided.Name + "." + decided.Namespace
	}
	return d
}

// older returns whichever of the two Istio would pick at one level: the
// oldest, then by name and namespace (its sortConfigByCreationTime).
func older(current, candidate *securityv1.PeerAuthentication) *securityv1.PeerAuthentication {
	if current == nil || compareAge(candidate, current) < 0 {
		return candidate
	}
	return current
}

func compareAge(a, b *securityv1.PeerAuthentication) int {
	if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return cmp.Compare(a.Namespace, b.Namespace)
}

// hasLabels tells a workload policy from a namespace-wide one: Istio treats
// a selector with no labels as no selector.
func hasLabels(s *typev1beta1.WorkloadSelector) bool {
	return len(s.GetMatchLabels()) > 0
}

// selects reports whether every label of the selector is on the workload
// with the same value.
func selects(s *typev1beta1.WorkloadSelector, labels map[string]string) bool {
	for k, v := range s.GetMatchLabels() {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
