package istio

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// ClusterDomain is the Kubernetes DNS domain that short hosts are completed
// with, and that tells a service's namespace from its hostname.
const ClusterDomain = "cluster.local"

// ClientDecision is the TLS a client sidecar is configured to originate
// towards one host and port.
type ClientDecision struct {
	// Mode is DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL; "" when no rule sets
	// TLS for this port, which leaves Istio's auto mTLS in charge.
	Mode string
	// Rule is "name.namespace" of the rule that decided: the one whose
	// trafficPolicy applies, or the matching rule that has none. "" when no
	// rule matched.
	Rule string
}

// DestinationRuleTLS returns the client TLS mode Istio configures for a
// client in clientNamespace calling host (a fully qualified service host
// such as reviews.bookinfo.svc.cluster.local, or an external one) on
// service port port. rootNamespace "" means DefaultRootNamespace.
func DestinationRuleTLS(rules []*networkingv1.DestinationRule, rootNamespace, clientNamespace, host string, port uint32) ClientDecision {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	// Only three namespaces are ever on the path; resolve their rules alone.
	inNamespace := func(ns string) []resolvedRule {
		var out []resolvedRule
		for _, r := range rules {
			if r == nil || r.Namespace != ns || r.Spec.GetWorkloadSelector() != nil {
				continue
			}
			if h := resolveHost(r.Spec.GetHost(), r.Namespace); h != "" {
				out = append(out, resolvedRule{rule: r, host: h})
			}
		}
		return out
	}

	// 1. The client's own namespace: whatever it can see of its own rules.
	// A client in the root namespace looks only at the root's private rules
	// here, so that mesh-wide defaults there do not shadow a service's own.
	if clientNamespace != rootNamespace {
		if d, ok := decide(inNamespace(clientNamespace), host, port, func(r resolvedRule) bool { return r.local() }); ok {
			return d
		}
	} else {
		if d, ok := decide(inNamespace(rootNamespace), host, port, func(r resolvedRule) bool { return r.privateOnly() }); ok {
			return d
		}
	}
	// 2. The service's namespace, then 3. the root namespace: rules exported
	// beyond their namespace, if exported to the client.
	exported := func(ns string) (ClientDecision, bool) {
		var visible []resolvedRule
		for _, r := range inNamespace(ns) {
			if !r.privateOnly() {
				visible = append(visible, r)
			}
		}
		h, ok := mostSpecificHost(visible, host)
		if !ok {
			return ClientDecision{}, false
		}
		var forClient []resolvedRule
		for _, r := range visible {
			if r.host == h && r.exportedTo(clientNamespace) {
				forClient = append(forClient, r)
			}
		}
		return merged(forClient, port)
	}
	if ns := serviceNamespace(host); ns != "" {
		if d, ok := exported(ns); ok {
			return d
		}
	}
	if d, ok := exported(rootNamespace); ok {
		return d
	}
	return ClientDecision{}
}

type resolvedRule struct {
	rule *networkingv1.DestinationRule
	host string
}

func (r resolvedRule) exports(to string) bool {
	return slices.Contains(r.rule.Spec.GetExportTo(), to)
}

// local reports whether a rule is visible in its own namespace: exportTo
// absent, "*", "." or naming that namespace.
func (r resolvedRule) local() bool {
	return len(r.rule.Spec.GetExportTo()) == 0 || r.exports("*") || r.exports(".") || r.exports(r.rule.Namespace)
}

// privateOnly reports whether a rule is exported to its own namespace alone
// ("." or its namespace's name, however often repeated); Istio keeps such
// rules out of the lookups made from other namespaces.
func (r resolvedRule) privateOnly() bool {
	to := r.rule.Spec.GetExportTo()
	if len(to) == 0 {
		return false
	}
	for _, e := range to {
		if e != to[0] {
			return false
		}
	}
	return to[0] == "." || to[0] == r.rule.Namespace
}

// exportedTo is Istio's check on a rule found outside the client's
// namespace: exportTo absent, "*" or naming the client's namespace.
func (r resolvedRule) exportedTo(ns string) bool {
	return len(r.rule.Spec.GetExportTo()) == 0 || r.exports("*") || r.exports(ns)
}

// decide picks, among the rules that pass keep, those for the most specific
// host, and merges them.
func decide(rules []resolvedRule, host string, port uint32, keep func(resolvedRule) bool) (ClientDecision, bool) {
	var kept []resolvedRule
	for _, r := range rules {
		if keep(r) {
			kept = append(kept, r)
		}
	}
	h, ok := mostSpecificHost(kept, host)
	if !ok {
		return ClientDecision{}, false
	}
	var same []resolvedRule
	for _, r := range kept {
		if r.host == h {
			same = append(same, r)
		}
	}
	return merged(same, port)
}

// merged is Istio's merge of one namespace's rules for one host: the oldest
// rule with a trafficPolicy supplies it. ok is false when there is no rule.
func merged(rules []resolvedRule, port uint32) (ClientDecision, bool) {
	if len(rules) == 0 {
		return ClientDecision{}, false
	}
	slices.SortFunc(rules, func(a, b resolvedRule) int {
		if c := a.rule.CreationTimestamp.Time.Compare(b.rule.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.rule.Name, b.rule.Name)
	})
	for _, r := range rules {
		tp := r.rule.Spec.GetTrafficPolicy()
		if tp == nil {
			continue
		}
		tls := tp.GetTls()
		for _, pl := range tp.GetPortLevelSettings() {
			if pl.GetPort() != nil && pl.GetPort().GetNumber() == port {
				if pl.GetTls() != nil {
					tls = pl.GetTls()
				}
				break // the first entry for the port is the one Istio uses
			}
		}
		d := ClientDecision{Rule: r.rule.Name + "." + r.rule.Namespace}
		if tls != nil {
			d.Mode = tls.GetMode().String()
		}
		return d, true
	}
	first := rules[0].rule
	return ClientDecision{Rule: first.Name + "." + first.Namespace}, true
}

// mostSpecificHost is Istio's MostSpecificHostMatch for a concrete host:
// an exact rule host, else the longest wildcard that covers it.
func mostSpecificHost(rules []resolvedRule, host string) (string, bool) {
	best, found := "", false
	for _, r := range rules {
		switch {
		case r.host == host:
			return host, true
		case wildcardCovers(r.host, host) && (!found || len(r.host) > len(best)):
			best, found = r.host, true
		}
	}
	return best, found
}

// wildcardCovers reports whether pattern is a wildcard host matching host:
// "*" matches all, "*.example.com" any name ending in ".example.com".
func wildcardCovers(pattern, host string) bool {
	if !strings.HasPrefix(pattern, "*") {
		return false
	}
	return strings.HasSuffix(host, pattern[1:])
}

// resolveHost completes a rule's short host relative to the rule's
// namespace, as Istio's ResolveShortnameToFQDN does: only a name with no
// dot is completed.
func resolveHost(h, namespace string) string {
	if h == "" || h == "*" || strings.Contains(h, ".") {
		return h
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h // an IPv6 address has no dot
	}
	return h + "." + namespace + ".svc." + ClusterDomain
}

// serviceNamespace is the namespace of a Kubernetes service host
// name.namespace.svc.cluster.local, "" for any other host.
func serviceNamespace(host string) string {
	rest, ok := strings.CutSuffix(host, ".svc."+ClusterDomain)
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return ""
	}
	return rest[i+1:]
}
