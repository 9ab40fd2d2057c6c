package istio

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	networkingapiv1 "istio.io/api/networking/v1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The rules cited below, from Istio's docs and, where the docs are silent,
// from pilot's code:
//
//	[ops:lookup]   Traffic Management Best Practices, cross-namespace configuration: a rule
//	               applies only if its namespace is on the lookup path "1. client namespace
//	               2. service namespace 3. Istio configuration root (istio-system by default)".
//	[ref:host]     DestinationRule reference, host: "Istio will interpret the short name based on
//	               the namespace of the rule, not the service".
//	[ref:exportTo] reference, exportTo: no namespaces "exported to all namespaces by default";
//	               "." "an export to the same namespace that the destination rule is declared
//	               in"; "*" "an export to all namespaces"; otherwise the namespaces named.
//	[ref:port]     reference, portLevelSettings: "port level settings will override the
//	               destination-level settings".
//	[pilot:host]   PushContext.destinationRule and MostSpecificHostMatch: within one namespace an
//	               exact host, then the longest wildcard; if the rules for that host are not
//	               exported to the client, the next namespace is tried.
//	[pilot:root]   PushContext.destinationRule: a client in the root namespace looks at the root's
//	               private rules first, then the service's namespace, then the root's exported
//	               rules, so that mesh-wide defaults do not shadow a service's own rule.
//	[pilot:merge]  mergeDestinationRule: rules for one host in one namespace are merged, the
//	               oldest rule's trafficPolicy kept, a later one's used only if it had none.
//	[pilot:tls]    MergeTrafficPolicy: a port's settings replace tls only when they carry one.

const reviews = "reviews.bookinfo.svc.cluster.local"

// dr builds a DestinationRule created age minutes after epoch. tls "" means
// no trafficPolicy, "none" a trafficPolicy without tls; in ports, "none" is
// a port entry without tls.
func dr(namespace, name string, age int, host string, exportTo []string, tls string, ports map[uint32]string) *networkingv1.DestinationRule {
	r := &networkingv1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:         namespace,
			Name:              name,
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Minute)),
		},
	}
	r.Spec.Host = host
	r.Spec.ExportTo = exportTo
	if tls == "" && ports == nil {
		return r
	}
	tp := &networkingapiv1.TrafficPolicy{Tls: tlsSettings(tls)}
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		tp.PortLevelSettings = append(tp.PortLevelSettings, &networkingapiv1.TrafficPolicy_PortTrafficPolicy{
			Port: &networkingapiv1.PortSelector{Number: port},
			Tls:  tlsSettings(ports[port]),
		})
	}
	r.Spec.TrafficPolicy = tp
	return r
}

func tlsSettings(mode string) *networkingapiv1.ClientTLSSettings {
	if mode == "" || mode == "none" {
		return nil
	}
	for m := range networkingapiv1.ClientTLSSettings_TLSmode(8) {
		if m.String() == mode {
			return &networkingapiv1.ClientTLSSettings{Mode: m}
		}
	}
	panic("no client TLS mode " + mode)
}

func TestDestinationRuleTLS(t *testing.T) {
	selected := dr("frontend", "by-label", 0, reviews, nil, "DISABLE", nil)
	selected.Spec.WorkloadSelector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}

	tests := []struct {
		name   string
		root   string
		rules  []*networkingv1.DestinationRule
		client string
		host   string
		port   uint32
		want   ClientDecision
	}{
		{
			name:   "[ops:lookup] no rule anywhere: auto mTLS",
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ops:lookup] a rule in the service's namespace applies to clients elsewhere",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:host] a short host is completed with the rule's namespace: reviews in bookinfo",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, "reviews", nil, "MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:host] a short host in the client's namespace names a service there, not the one called",
			rules: []*networkingv1.DestinationRule{
				dr("frontend", "reviews", 0, "reviews", nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ref:host] a host with a dot is taken as written: reviews.bookinfo is not the FQDN",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, "reviews.bookinfo", nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ops:lookup] the client's namespace beats the service's",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, nil, "ISTIO_MUTUAL", nil),
				dr("frontend", "reviews-plain", 9, reviews, nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "DISABLE", Rule: "reviews-plain.frontend"},
		},
		{
			name: "[ops:lookup] the service's namespace beats the root, even against an exact root host",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "reviews", 0, reviews, nil, "DISABLE", nil),
				dr("bookinfo", "all", 9, "*.bookinfo.svc.cluster.local", nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "all.bookinfo"},
		},
		{
			name: "[ops:lookup] the root namespace comes last: a mesh-wide *.local default",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "default", 0, "*.local", nil, "ISTIO_MUTUAL", nil),
				dr("elsewhere", "reviews", 0, reviews, nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "default.istio-system"},
		},
		{
			name: "[ops:lookup] a custom root namespace; istio-system is then off the path",
			root: "mesh-root",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "default", 0, "*.local", nil, "DISABLE", nil),
				dr("mesh-root", "default", 0, "*.local", nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "default.mesh-root"},
		},
		{
			name: "[ref:exportTo] \".\" hides the service namespace's rule from other clients: the root decides",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{"."}, "DISABLE", nil),
				dr("istio-system", "default", 0, "*.local", nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "default.istio-system"},
		},
		{
			name: "[ref:exportTo] \".\" still serves clients in the rule's own namespace",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{"."}, "DISABLE", nil),
			},
			client: "bookinfo", host: reviews, port: 9080,
			want: ClientDecision{Mode: "DISABLE", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:exportTo] the rule's own namespace by name is as private as \".\"",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{"bookinfo"}, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ref:exportTo] \".\" listed twice is still private (pilot keeps exportTo as a set)",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{".", "."}, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ref:exportTo] exported to a named namespace: visible there, \".\" first or not",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{".", "frontend"}, "SIMPLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "SIMPLE", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:exportTo] exported to a named namespace: hidden from any other",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{"frontend", "."}, "SIMPLE", nil),
			},
			client: "batch", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ref:exportTo] a rule exported only elsewhere does not serve its own namespace",
			rules: []*networkingv1.DestinationRule{
				dr("frontend", "reviews", 0, reviews, []string{"batch"}, "DISABLE", nil),
				dr("bookinfo", "reviews", 0, reviews, nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:exportTo] \"~\" exports to no namespace: hidden even at the root",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "default", 0, "*.local", []string{"~"}, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[pilot:host] a hidden exact rule is not replaced by a visible wildcard in its namespace: the root decides",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, []string{"batch"}, "DISABLE", nil),
				dr("bookinfo", "all", 0, "*.bookinfo.svc.cluster.local", nil, "SIMPLE", nil),
				dr("istio-system", "default", 0, "*.local", nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "default.istio-system"},
		},
		{
			name: "[pilot:host] an exact host beats a wildcard in one namespace, whatever their age",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "all", 0, "*.bookinfo.svc.cluster.local", nil, "ISTIO_MUTUAL", nil),
				dr("bookinfo", "reviews", 60, reviews, nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "DISABLE", Rule: "reviews.bookinfo"},
		},
		{
			name: "[pilot:host] the longest wildcard wins: *.bookinfo.svc.cluster.local over *.local over *",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "star", 0, "*", nil, "DISABLE", nil),
				dr("istio-system", "local", 0, "*.local", nil, "SIMPLE", nil),
				dr("istio-system", "bookinfo", 0, "*.bookinfo.svc.cluster.local", nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "bookinfo.istio-system"},
		},
		{
			name: "[pilot:host] a wildcard covers only names below it: *.reviews.bookinfo.svc.cluster.local does not",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "below", 0, "*."+reviews, nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{},
		},
		{
			name: "[ref:port] portLevelSettings override the rule's tls on that port",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, nil, "ISTIO_MUTUAL", map[uint32]string{9080: "DISABLE"}),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "DISABLE", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:port] portLevelSettings for another port leave the rule's tls",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, nil, "ISTIO_MUTUAL", map[uint32]string{9443: "SIMPLE"}),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:port][pilot:tls] port settings without tls keep the rule's tls",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, nil, "MUTUAL", map[uint32]string{9080: "none"}),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ref:port] port tls with no rule-level tls",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "reviews", 0, reviews, nil, "none", map[uint32]string{9080: "ISTIO_MUTUAL"}),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ops:lookup] a matching rule with no TLS still decides, and stops the lookup: auto mTLS",
			rules: []*networkingv1.DestinationRule{
				dr("frontend", "reviews-lb", 0, reviews, nil, "none", nil),
				dr("bookinfo", "reviews", 0, reviews, nil, "DISABLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Rule: "reviews-lb.frontend"},
		},
		{
			name: "[pilot:merge] two rules for one host: the oldest trafficPolicy is kept",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "newer", 30, reviews, nil, "DISABLE", nil),
				dr("bookinfo", "older", 10, reviews, nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "older.bookinfo"},
		},
		{
			name: "[pilot:merge] the oldest rule has no trafficPolicy: the next one's is used",
			rules: []*networkingv1.DestinationRule{
				dr("bookinfo", "subsets-only", 0, reviews, nil, "", nil),
				dr("bookinfo", "tls", 10, reviews, nil, "SIMPLE", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "SIMPLE", Rule: "tls.bookinfo"},
		},
		{
			name: "[pilot:root] a client in the root namespace: the service's rule beats the root's exported default",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "default", 0, "*.local", nil, "ISTIO_MUTUAL", nil),
				dr("bookinfo", "reviews", 0, reviews, nil, "DISABLE", nil),
			},
			client: "istio-system", host: reviews, port: 9080,
			want: ClientDecision{Mode: "DISABLE", Rule: "reviews.bookinfo"},
		},
		{
			name: "[pilot:root] a client in the root namespace: the root's private rule comes first",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "gateway-only", 0, "*.local", []string{"."}, "SIMPLE", nil),
				dr("bookinfo", "reviews", 0, reviews, nil, "DISABLE", nil),
			},
			client: "istio-system", host: reviews, port: 9080,
			want: ClientDecision{Mode: "SIMPLE", Rule: "gateway-only.istio-system"},
		},
		{
			name: "workloadSelector rules are not modelled: skipped",
			rules: []*networkingv1.DestinationRule{
				selected,
				dr("bookinfo", "reviews", 0, reviews, nil, "ISTIO_MUTUAL", nil),
			},
			client: "frontend", host: reviews, port: 9080,
			want: ClientDecision{Mode: "ISTIO_MUTUAL", Rule: "reviews.bookinfo"},
		},
		{
			name: "[ops:lookup] an external host has no service namespace: client namespace, then root",
			rules: []*networkingv1.DestinationRule{
				dr("istio-system", "egress", 0, "*.example.com", nil, "SIMPLE", nil),
			},
			client: "frontend", host: "api.example.com", port: 443,
			want: ClientDecision{Mode: "SIMPLE", Rule: "egress.istio-system"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBothOrders(tt.rules, func(order string, rules []*networkingv1.DestinationRule) {
				if got := DestinationRuleTLS(rules, tt.root, tt.client, tt.host, tt.port); got != tt.want {
					t.Errorf("DestinationRuleTLS (%s) = %+v, want %+v", order, got, tt.want)
				}
			})
		})
	}
}

func TestServiceNamespace(t *testing.T) {
	for host, want := range map[string]string{
		reviews:                        "bookinfo",
		"a.b.c.svc.cluster.local":      "c", // a subdomain of a service (a StatefulSet pod)
		"svc.cluster.local":            "",
		"bookinfo.svc.cluster.local":   "",
		".bookinfo.svc.cluster.local":  "",
		"reviews.bookinfo":             "",
		"api.example.com":              "",
		"reviews.bookinfo.svc.example": "",
	} {
		if got := serviceNamespace(host); got != want {
			t.Errorf("serviceNamespace(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestResolveHost(t *testing.T) {
	for _, tc := range []struct{ host, namespace, want string }{
		{"reviews", "bookinfo", reviews},
		{"reviews.bookinfo", "frontend", "reviews.bookinfo"},
		{"*", "frontend", "*"},
		{"*.local", "frontend", "*.local"},
		{"10.0.0.1", "frontend", "10.0.0.1"},
		{"fd00::1", "frontend", "fd00::1"},
		{"", "frontend", ""},
	} {
		if got := resolveHost(tc.host, tc.namespace); got != tc.want {
			t.Errorf("resolveHost(%q, %q) = %q, want %q", tc.host, tc.namespace, got, tc.want)
		}
	}
}

// BenchmarkDestinationRuleTLS asks about one service in a cluster of 1,000
// rules over 100 namespaces (one per service, a wildcard per namespace,
// a mesh default), the rule in the service's namespace deciding.
func BenchmarkDestinationRuleTLS(b *testing.B) {
	rules := []*networkingv1.DestinationRule{dr("istio-system", "default", 0, "*.local", nil, "ISTIO_MUTUAL", nil)}
	for i := range 100 {
		rules = append(rules, dr(fmt.Sprintf("ns-%d", i), "all", i, "*", []string{"."}, "DISABLE", nil))
	}
	for i := 0; len(rules) < 1000; i++ {
		ns := fmt.Sprintf("ns-%d", i%100)
		rules = append(rules, dr(ns, fmt.Sprintf("svc-%d", i), i, fmt.Sprintf("svc-%d", i), nil, "SIMPLE", map[uint32]string{9080: "MUTUAL"}))
	}
	want := ClientDecision{Mode: "MUTUAL", Rule: "svc-642.ns-42"}
	if got := DestinationRuleTLS(rules, "", "frontend", "svc-642.ns-42.svc.cluster.local", 9080); got != want {
		b.Fatalf("DestinationRuleTLS = %+v, want %+v", got, want)
	}
	b.ReportAllocs()
	for b.Loop() {
		DestinationRuleTLS(rules, "", "frontend", "svc-642.ns-42.svc.cluster.local", 9080)
	}
}
