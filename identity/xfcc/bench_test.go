package xfcc

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParse measures Parse on the typical Istio value and on a two-hop
// header carrying a certificate. The "split-baseline" case is a naive
// strings.Split of the Istio value that ignores quoting: a floor to read the
// other figures against, not a parser.
func BenchmarkParse(b *testing.B) {
	leaf, leafDER := newCert(b)
	withCert := "By=spiffe://td/gw;Hash=aa;URI=spiffe://td/client,By=spiffe://td/app;Hash=" + sha256Hex(leafDER) +
		`;Cert="` + envoyEncode(leaf) + `";Subject="";URI=spiffe://td/gw`

	b.Run("istio", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(istioHeader)))
		for b.Loop() {
			if _, err := Parse(istioHeader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("split-baseline", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(istioHeader)))
		for b.Loop() {
			for _, elem := range strings.Split(istioHeader, ",") {
				for _, pair := range strings.Split(elem, ";") {
					_, _, _ = strings.Cut(pair, "=")
				}
			}
		}
	})
	b.Run("two-hops-with-cert", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(withCert)))
		for b.Loop() {
			if _, err := Parse(withCert); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func ExampleParse() {
	elems, err := Parse(`By=spiffe://cluster.local/ns/shop/sa/api;Hash=0fd8;Subject="";URI=spiffe://cluster.local/ns/shop/sa/web`)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Only the rightmost element was written by the proxy that called us.
	hop, _ := Rightmost(elems)
	fmt.Println(hop.URI[0], "via", hop.By[0])
	// Output: spiffe://cluster.local/ns/shop/sa/web via spiffe://cluster.local/ns/shop/sa/api
}
