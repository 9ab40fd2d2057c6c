package rego

import (
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshproof/meshproof/identity/spiffe"
	"github.com/meshproof/meshproof/identity/xfcc"
)

// TestBuiltinsInPolicy calls spiffe.parse and xfcc.parse from a policy
// through the engine; the decision is the whole package, so a rule left
// undefined by an invalid argument is simply absent.
func TestBuiltinsInPolicy(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": `package t
id := spiffe.parse(input.id)
elements := xfcc.parse(input.xfcc)
`})
	e := mustStart(t, Config{Decision: "t", Policies: []string{filepath.Join(dir, "p.rego")}}, nil)
	const hash = "0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9"
	tests := []struct {
		name  string
		input string
		want  string // the package document
	}{
		{
			name:  "SPIFFE ID",
			input: `{"id": "spiffe://example.org/web/frontend"}`,
			want:  `{"id": {"id": "spiffe://example.org/web/frontend", "trust_domain": "example.org", "path": "/web/frontend"}}`,
		},
		{
			name:  "Istio ID",
			input: `{"id": "spiffe://cluster.local/ns/shop/sa/frontend"}`,
			want: `{"id": {"id": "spiffe://cluster.local/ns/shop/sa/frontend", "trust_domain": "cluster.local",
				"path": "/ns/shop/sa/frontend", "namespace": "shop", "service_account": "frontend"}}`,
		},
		{
			name:  "trust domain only",
			input: `{"id": "spiffe://example.org"}`,
			want:  `{"id": {"id": "spiffe://example.org", "trust_domain": "example.org", "path": ""}}`,
		},
		{name: "invalid ID", input: `{"id": "https://example.org/web"}`, want: `{}`},
		{name: "upper-case trust domain", input: `{"id": "spiffe://Example.org/web"}`, want: `{}`},
		{name: "ID not a string", input: `{"id": 7}`, want: `{}`},
		{
			name:  "Istio XFCC",
			input: `{"xfcc": "By=spiffe://cluster.local/ns/shop/sa/backend;Hash=` + hash + `;Subject=\"\";URI=spiffe://cluster.local/ns/shop/sa/frontend"}`,
			want: `{"elements": [{"by": ["spiffe://cluster.local/ns/shop/sa/backend"], "hash": "` + hash + `",
				"uri": ["spiffe://cluster.local/ns/shop/sa/frontend"]}]}`,
		},
		{
			name:  "XFCC with two elements, every key",
			input: `{"xfcc": "By=a;URI=u1,By=b;Hash=h;Cert=c%20;Chain=d;Subject=\"CN=x,O=y\";URI=;DNS=d1;DNS=d2;Issuer=\"CN=ca\""}`,
			want: `{"elements": [
				{"by": ["a"], "uri": ["u1"]},
				{"by": ["b"], "hash": "h", "cert": "c ", "chain": "d", "subject": "CN=x,O=y", "uri": [""], "dns": ["d1", "d2"], "other": {"Issuer": ["CN=ca"]}}
			]}`,
		},
		{name: "invalid XFCC", input: `{"xfcc": "By=a;URI=\"b"}`, want: `{}`},
		{name: "empty XFCC", input: `{"xfcc": ""}`, want: `{"elements": []}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := eval(t, e, tt.input)
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if want := ast.MustParseTerm(tt.want).Value; got.Compare(want) != 0 {
				t.Errorf("data.t = %v\nwant     %v", got, want)
			}
		})
	}
}

// TestSPIFFEValue checks the documented keys: id, trust_domain and path
// always; namespace and service_account only for Istio-style IDs.
func TestSPIFFEValue(t *testing.T) {
	tests := []struct {
		name string
		id   spiffe.ID
		want string
	}{
		{
			name: "plain",
			id:   spiffe.ID{ID: "spiffe://td/a", TrustDomain: "td", Path: "/a"},
			want: `{"id": "spiffe://td/a", "trust_domain": "td", "path": "/a"}`,
		},
		{
			name: "Istio",
			id:   spiffe.ID{ID: "spiffe://td/ns/n/sa/s", TrustDomain: "td", Path: "/ns/n/sa/s", Namespace: "n", ServiceAccount: "s"},
			want: `{"id": "spiffe://td/ns/n/sa/s", "trust_domain": "td", "path": "/ns/n/sa/s", "namespace": "n", "service_account": "s"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := SPIFFEValue(tt.id), ast.MustParseTerm(tt.want).Value; got.Compare(want) != 0 {
				t.Errorf("SPIFFEValue = %v, want %v", got, want)
			}
		})
	}
}

// TestXFCCValue checks the documented keys: by, hash, cert, chain,
// subject, uri, dns, other; absent when the element did not carry them.
func TestXFCCValue(t *testing.T) {
	tests := []struct {
		name  string
		elems []xfcc.Element
		want  string
	}{
		{name: "none", elems: nil, want: `[]`},
		{name: "empty element", elems: []xfcc.Element{{}}, want: `[{}]`},
		{
			name: "every key",
			elems: []xfcc.Element{{
				By: []string{"b1", "b2"}, Hash: "h", Cert: "c", Chain: "ch", Subject: "s",
				URI: []string{"u"}, DNS: []string{"d"}, Other: map[string][]string{"Issuer": {"i"}},
			}},
			want: `[{"by": ["b1", "b2"], "hash": "h", "cert": "c", "chain": "ch", "subject": "s", "uri": ["u"], "dns": ["d"], "other": {"Issuer": ["i"]}}]`,
		},
		{
			name:  "URI= with an empty value is kept",
			elems: []xfcc.Element{{URI: []string{""}}, {By: []string{"x"}}},
			want:  `[{"uri": [""]}, {"by": ["x"]}]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := XFCCValue(tt.elems), ast.MustParseTerm(tt.want).Value; got.Compare(want) != 0 {
				t.Errorf("XFCCValue = %v, want %v", got, want)
			}
		})
	}
}
