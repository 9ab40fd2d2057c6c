package workload

import (
	"testing"

	"github.com/meshproof/meshproof/identity/spiffe"
)

func TestCheckIdentity(t *testing.T) {
	cart := Workload{Namespace: "shop", Kind: "Deployment", Name: "cart", Pod: "cart-1", ServiceAccount: "cart"}
	tests := []struct {
		name   string
		w      Workload
		id     string
		ok     bool
		reason string
	}{
		{"same", cart, "spiffe://cluster.local/ns/shop/sa/cart", true, ""},
		{"other trust domain, same workload", cart, "spiffe://other.example/ns/shop/sa/cart", true, ""},
		{"namespace differs", cart, "spiffe://cluster.local/ns/billing/sa/cart", false,
			`namespace differs: workload "shop", SPIFFE ID "billing"`},
		{"service account differs", cart, "spiffe://cluster.local/ns/shop/sa/default", false,
			`service account differs: workload "cart", SPIFFE ID "default"`},
		{"both differ", cart, "spiffe://cluster.local/ns/billing/sa/payer", false,
			"namespace and service account differ: workload shop/cart, SPIFFE ID billing/payer"},
		{"not an Istio-style ID", cart, "spiffe://cluster.local/workload/cart", false,
			"the SPIFFE ID names no namespace and service account (not Istio-style)"},
		{"no workload", Workload{}, "spiffe://cluster.local/ns/shop/sa/cart", false, "no workload to compare"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := spiffe.Parse(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			ok, reason := CheckIdentity(tc.w, id.Namespace, id.ServiceAccount)
			if ok != tc.ok || reason != tc.reason {
				t.Errorf("CheckIdentity = %v, %q; want %v, %q", ok, reason, tc.ok, tc.reason)
			}
		})
	}
}
