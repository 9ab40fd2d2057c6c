package report

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/identity/spiffe"
)

// dest is a destination as the namespace reports attribute traffic to it:
// a principal, or a host that served no mTLS.
type dest struct {
	key       string // the principal, or the host
	principal string
	namespace string
	workload  string
}

// attribution places each group's destination in a namespace. It is built
// from every group of a period (see newAttribution) and then asked about
// single groups.
//
// The rule, which the package doc and the OpenAPI document state:
//   - a group with a destination principal belongs to it: the SPIFFE ID's
//     namespace and service account (an ID not of Istio's form
//     spiffe://TD/ns/NS/sa/SA has namespace "", workload the ID);
//   - a group without one (plaintext carries none) belongs to every
//     principal its host served over mTLS in the period;
//   - a host that served none is placed by its name (hostNamespace).
type attribution struct {
	served map[string][]string // host -> the principals that served it, sorted
	dests  map[string]dest     // by key
}

func newAttribution(groups []evidence.Group) *attribution {
	a := &attribution{served: map[string][]string{}, dests: map[string]dest{}}
	for _, g := range groups {
		if g.DestinationPrincipal == "" {
			continue
		}
		if ps := a.served[g.DestinationHost]; !slices.Contains(ps, g.DestinationPrincipal) {
			a.served[g.DestinationHost] = append(ps, g.DestinationPrincipal)
		}
	}
	for _, ps := range a.served {
		slices.Sort(ps)
	}
	return a
}

// of returns the destinations g counts for: one, but for plaintext to a
// host that several principals served, which counts for each of them.
func (a *attribution) of(g evidence.Group) []dest {
	if g.DestinationPrincipal != "" {
		return []dest{a.dest(g.DestinationPrincipal, true)}
	}
	if ps := a.served[g.DestinationHost]; len(ps) > 0 {
		out := make([]dest, len(ps))
		for i, p := range ps {
			out[i] = a.dest(p, true)
		}
		return out
	}
	return []dest{a.dest(g.DestinationHost, false)}
}

// in reports whether g counts for a destination of namespace ns.
func (a *attribution) in(g evidence.Group, ns string) bool {
	return slices.ContainsFunc(a.of(g), func(d dest) bool { return d.namespace == ns })
}

func (a *attribution) dest(key string, principal bool) dest {
	if d, ok := a.dests[key]; ok {
		return d
	}
	d := dest{key: key}
	if principal {
		d.principal = key
		d.namespace, d.workload = principalNamespace(key)
	} else {
		d.namespace, d.workload = hostNamespace(key)
	}
	a.dests[key] = d
	return d
}

// principalNamespace is the namespace and workload (service account) of an
// Istio SPIFFE ID; for any other principal, "" and the principal itself.
func principalNamespace(p string) (namespace, workload string) {
	id, err := spiffe.Parse(p)
	if err != nil || id.Namespace == "" {
		return "", p
	}
	return id.Namespace, id.ServiceAccount
}

// hostNamespace places a host (an :authority, with or without a port) by
// its name, as Kubernetes' DNS names services: svc.NS, svc.NS.svc and
// svc.NS.svc.<cluster domain> (cluster.local by default) are service svc
// of namespace NS. A bare name, an IP address or any other name has
// namespace "", workload the name without its port.
func hostNamespace(host string) (namespace, workload string) {
	name := hostName(host)
	if _, err := netip.ParseAddr(name); err == nil {
		return "", name
	}
	labels := strings.Split(strings.ToLower(strings.TrimSuffix(name, ".")), ".")
	switch {
	case len(labels) == 2, len(labels) >= 3 && labels[2] == "svc":
		if dnsLabel(labels[0]) && dnsLabel(labels[1]) {
			return labels[1], labels[0]
		}
	}
	return "", name
}

// hostName is host without its port: "a.b:80" is "a.b", "[::1]:80" is
// "::1".
func hostName(host string) string {
	if strings.HasPrefix(host, "[") {
		if end := strings.Index(host, "]"); end > 0 {
			return host[1:end]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.Count(host, ":") == 1 {
		return host[:i]
	}
	return host
}

// dnsLabel reports whether s is an RFC 1123 label, as Kubernetes names
// namespaces and services.
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
