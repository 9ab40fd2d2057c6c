package report

import (
	"slices"
	"testing"

	"github.com/meshproof/meshproof/evidence"
)

// TestHostNamespace pins the rule that places a host that never served
// mTLS: Kubernetes' service names, any port; anything else is namespace "".
func TestHostNamespace(t *testing.T) {
	for _, tc := range []struct{ host, namespace, workload string }{
		{"httpbin.mtls-pg:8000", "mtls-pg", "httpbin"},
		{"httpbin.mtls-pg", "mtls-pg", "httpbin"},
		{"httpbin.mtls-pg.svc:8000", "mtls-pg", "httpbin"},
		{"httpbin.mtls-pg.svc.cluster.local:8000", "mtls-pg", "httpbin"},
		{"httpbin.mtls-pg.svc.cluster.local.", "mtls-pg", "httpbin"},
		{"httpbin.mtls-pg.svc.corp.example:80", "mtls-pg", "httpbin"},
		{"HTTPBIN.Mtls-Pg:80", "mtls-pg", "httpbin"},
		{"httpbin", "", "httpbin"},
		{"httpbin:8000", "", "httpbin"},
		{"10.0.0.1:80", "", "10.0.0.1"},
		{"10.0.0.1", "", "10.0.0.1"},
		{"[fd00::1]:8080", "", "fd00::1"},
		{"fd00::1", "", "fd00::1"},
		{"api.github.com:443", "", "api.github.com"},
		{"a.b.c.d.e", "", "a.b.c.d.e"},
		{"under_score.shop:80", "", "under_score.shop"},
		{"-bad.shop", "", "-bad.shop"},
		{"svc.100%", "", "svc.100%"},
		{"", "", ""},
		// Two labels are a service of a namespace to Kubernetes, whatever
		// they look like: the rule says so, and so does the package doc.
		{"example.com", "com", "example"},
	} {
		ns, wl := hostNamespace(tc.host)
		if ns != tc.namespace || wl != tc.workload {
			t.Errorf("hostNamespace(%q) = %q, %q; want %q, %q", tc.host, ns, wl, tc.namespace, tc.workload)
		}
	}
}

func TestPrincipalNamespace(t *testing.T) {
	for _, tc := range []struct{ principal, namespace, workload string }{
		{"spiffe://cluster.local/ns/shop/sa/cart", "shop", "cart"},
		{"spiffe://partner.example/ns/pay-ments/sa/led.ger", "pay-ments", "led.ger"},
		// Not a SPIFFE ID (its path is not ASCII): records of it carry no
		// namespace either, for the destination_namespace filter.
		{"spiffe://partner.example/ns/café/sa/ünï", "", "spiffe://partner.example/ns/café/sa/ünï"},
		{"spiffe://cluster.local/workload/cart", "", "spiffe://cluster.local/workload/cart"},
		{"spiffe://cluster.local/ns/shop/sa/cart/extra", "", "spiffe://cluster.local/ns/shop/sa/cart/extra"},
		{"CN=legacy,O=Example", "", "CN=legacy,O=Example"},
	} {
		ns, wl := principalNamespace(tc.principal)
		if ns != tc.namespace || wl != tc.workload {
			t.Errorf("principalNamespace(%q) = %q, %q; want %q, %q", tc.principal, ns, wl, tc.namespace, tc.workload)
		}
	}
}

// TestAttribution: a group goes to its principal; plaintext to the
// principals its host served (each of them); a host that served none, by
// its name.
func TestAttribution(t *testing.T) {
	const (
		cartID  = "spiffe://cluster.local/ns/shop/sa/cart"
		cart2ID = "spiffe://cluster.local/ns/shop-canary/sa/cart"
		cart    = "cart.shop.svc.cluster.local:8080"
	)
	attr := newAttribution([]evidence.Group{
		g(sleepID, cart, cartID, evidence.MTLS, true, 1, 0, 1, "a"),
		g(sleepID, "shared:80", cartID, evidence.MTLS, true, 1, 0, 1, "b"),
		g(sleepID, "shared:80", cart2ID, evidence.MTLS, true, 1, 0, 1, "c"),
		g(sleepID, "shared:80", cart2ID, evidence.MTLS, false, 1, 0, 1, "d"),
	})
	for _, tc := range []struct {
		name  string
		group evidence.Group
		want  []dest
	}{
		{"principal", g(sleepID, "anything:1", cartID, evidence.MTLS, true, 1, 0, 1, "x"),
			[]dest{{key: cartID, principal: cartID, namespace: "shop", workload: "cart"}}},
		{"plaintext to a host that served mTLS", g(legacy, cart, "", evidence.Plaintext, true, 1, 0, 1, "x"),
			[]dest{{key: cartID, principal: cartID, namespace: "shop", workload: "cart"}}},
		{"plaintext to a host two principals served", g(legacy, "shared:80", "", evidence.Plaintext, true, 1, 0, 1, "x"),
			[]dest{{key: cart2ID, principal: cart2ID, namespace: "shop-canary", workload: "cart"},
				{key: cartID, principal: cartID, namespace: "shop", workload: "cart"}}},
		{"the same name on another port served nothing", g(legacy, "cart.shop.svc.cluster.local:9090", "", evidence.Plaintext, true, 1, 0, 1, "x"),
			[]dest{{key: "cart.shop.svc.cluster.local:9090", namespace: "shop", workload: "cart"}}},
		{"a bare name", g(legacy, "metrics:9090", "", evidence.Plaintext, true, 1, 0, 1, "x"),
			[]dest{{key: "metrics:9090", workload: "metrics"}}},
		{"TLS without a client certificate has a principal", g(legacy, "other.ns:1", "spiffe://cluster.local/ns/ns/sa/other", evidence.TLSServerOnly, true, 1, 0, 1, "x"),
			[]dest{{key: "spiffe://cluster.local/ns/ns/sa/other", principal: "spiffe://cluster.local/ns/ns/sa/other", namespace: "ns", workload: "other"}}},
	} {
		if got := attr.of(tc.group); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if !attr.in(g(legacy, "shared:80", "", evidence.Plaintext, true, 1, 0, 1, "x"), "shop-canary") ||
		attr.in(g(legacy, "metrics:9090", "", evidence.Plaintext, true, 1, 0, 1, "x"), "shop") {
		t.Error("in disagrees with of")
	}
}
