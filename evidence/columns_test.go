package evidence

import (
	"strings"
	"testing"
)

func TestSourceKey(t *testing.T) {
	const sleep = "spiffe://cluster.local/ns/legacy/sa/sleep"
	id := func(ns, sa string) *SPIFFEID {
		return &SPIFFEID{ID: "spiffe://cluster.local/ns/" + ns + "/sa/" + sa, TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
	}
	deploy := &Workload{Namespace: "legacy", Kind: "Deployment", Name: "sleep", ServiceAccount: "sleep"}
	cases := []struct {
		name string
		peer Peer
		key  string
		want SourceKeyParts
	}{
		{"address only", Peer{Address: "10.42.3.7"}, "10.42.3.7", SourceKeyParts{Address: "10.42.3.7"}},
		{"ipv6 address", Peer{Address: "fd00::7"}, "fd00::7", SourceKeyParts{Address: "fd00::7"}},
		{"nothing", Peer{}, "", SourceKeyParts{}},
		{"principal only", Peer{Address: "10.42.3.7", Principal: sleep, SPIFFE: id("legacy", "sleep")}, sleep, SourceKeyParts{Principal: sleep}},
		{"principal not spiffe", Peer{Principal: "CN=legacy client,O=Example"}, "CN=legacy client,O=Example",
			SourceKeyParts{Principal: "CN=legacy client,O=Example"}},
		{"plaintext workload", Peer{Address: "10.42.3.7", Workload: deploy}, "workload:legacy/Deployment/sleep",
			SourceKeyParts{Namespace: "legacy", Kind: "Deployment", Name: "sleep"}},
		{"principal of its workload", Peer{Address: "10.42.3.7", Principal: sleep, SPIFFE: id("legacy", "sleep"), Workload: deploy},
			sleep, SourceKeyParts{Principal: sleep}},
		{"service account differs", Peer{Address: "10.42.3.7", Principal: id("legacy", "admin").ID, SPIFFE: id("legacy", "admin"), Workload: deploy},
			"spiffe://cluster.local/ns/legacy/sa/admin workload:legacy/Deployment/sleep",
			SourceKeyParts{Principal: id("legacy", "admin").ID, Namespace: "legacy", Kind: "Deployment", Name: "sleep", Mismatch: true}},
		{"namespace differs", Peer{Principal: id("shop", "sleep").ID, SPIFFE: id("shop", "sleep"), Workload: deploy},
			"spiffe://cluster.local/ns/shop/sa/sleep workload:legacy/Deployment/sleep",
			SourceKeyParts{Principal: id("shop", "sleep").ID, Namespace: "legacy", Kind: "Deployment", Name: "sleep", Mismatch: true}},
		{"non-istio spiffe id and a workload", Peer{Principal: "spiffe://td/web", SPIFFE: &SPIFFEID{ID: "spiffe://td/web", TrustDomain: "td"}, Workload: deploy},
			"spiffe://td/web", SourceKeyParts{Principal: "spiffe://td/web"}},
		{"workload without a kind is not keyed", Peer{Address: "10.0.0.1", Workload: &Workload{Namespace: "a", Name: "b"}}, "10.0.0.1",
			SourceKeyParts{Address: "10.0.0.1"}},
		{"workload with a slash is not keyed", Peer{Address: "10.0.0.1", Workload: &Workload{Namespace: "a", Kind: "K", Name: "b/c"}}, "10.0.0.1",
			SourceKeyParts{Address: "10.0.0.1"}},
		{"bare pod", Peer{Address: "10.0.0.1", Workload: &Workload{Namespace: "default", Kind: "Pod", Name: "debug"}}, "workload:default/Pod/debug",
			SourceKeyParts{Namespace: "default", Kind: "Pod", Name: "debug"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &Record{Source: tc.peer}
			key := SourceKey(r)
			if key != tc.key {
				t.Fatalf("SourceKey = %q, want %q", key, tc.key)
			}
			if got := ParseSourceKey(key); got != tc.want {
				t.Errorf("ParseSourceKey(%q) = %+v, want %+v", key, got, tc.want)
			}
			if got := ParseSourceKey(key).String(); got != key {
				t.Errorf("ParseSourceKey(%q).String() = %q", key, got)
			}
			if RollupOf(r).Source != key {
				t.Errorf("RollupOf keys the source %q, not by SourceKey", RollupOf(r).Source)
			}
			if tc.peer.Workload == nil {
				// The key records had before workloads: stored rollups
				// and their seals depend on it.
				old := tc.peer.Principal
				if old == "" {
					old = tc.peer.Address
				}
				if key != old {
					t.Errorf("a record without a workload is keyed %q, was %q", key, old)
				}
			}
		})
	}
}

// TestParseSourceKeyOdd reads keys no record gives: they must come back as
// principals or addresses, never as a half-read workload.
func TestParseSourceKeyOdd(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want SourceKeyParts
	}{
		{"workload:", SourceKeyParts{Principal: "workload:"}},
		{"workload:a/b", SourceKeyParts{Principal: "workload:a/b"}},
		{"workload:a/b/c/d", SourceKeyParts{Principal: "workload:a/b/c/d"}},
		{"workload:a//c", SourceKeyParts{Principal: "workload:a//c"}},
		{"CN=a b workload:x/Y/z", SourceKeyParts{Principal: "CN=a b workload:x/Y/z"}},
		{" workload:x/Y/z", SourceKeyParts{Principal: " workload:x/Y/z"}},
		{"spiffe://td/ns/a/sa/b workload:x/Y", SourceKeyParts{Principal: "spiffe://td/ns/a/sa/b workload:x/Y"}},
		{"10.0.0.1:80", SourceKeyParts{Principal: "10.0.0.1:80"}},
	} {
		if got := ParseSourceKey(tc.key); got != tc.want {
			t.Errorf("ParseSourceKey(%q) = %+v, want %+v", tc.key, got, tc.want)
		}
	}
}

func TestColumnsNamespaceAndWorkload(t *testing.T) {
	legacy := &Workload{Namespace: "legacy", Kind: "Deployment", Name: "sleep", ServiceAccount: "sleep"}
	cases := []struct {
		name           string
		src, dst       Peer
		srcNS, dstNS   string
		srcRef, dstRef string
	}{
		{"nothing", Peer{Address: "10.0.0.1"}, Peer{}, "", "", "", ""},
		{"plaintext from a workload", Peer{Address: "10.0.0.1", Workload: legacy}, Peer{Workload: &Workload{Namespace: "web", Kind: "StatefulSet", Name: "db-0"}},
			"legacy", "web", "legacy/sleep", "web/db-0"},
		{"spiffe namespace first", Peer{SPIFFE: &SPIFFEID{Namespace: "shop", ServiceAccount: "x"}, Workload: legacy}, Peer{},
			"shop", "", "legacy/sleep", ""},
		{"workload without a namespace", Peer{Workload: &Workload{Kind: "Pod", Name: "x"}}, Peer{}, "", "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ColumnsOf(&Record{Source: tc.src, Destination: tc.dst})
			got := []string{c.SourceNamespace, c.DestinationNamespace, c.SourceWorkload, c.DestinationWorkload}
			if want := []string{tc.srcNS, tc.dstNS, tc.srcRef, tc.dstRef}; strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("namespaces and workloads = %q, want %q", got, want)
			}
		})
	}
}

func TestSourceKeyName(t *testing.T) {
	for key, want := range map[string]string{
		"10.42.3.7":                        "10.42.3.7",
		"spiffe://cluster.local/ns/a/sa/b": "spiffe://cluster.local/ns/a/sa/b",
		"workload:legacy/Deployment/sleep": "legacy/deployment/sleep",
		"workload:default/Pod/debug.1":     "default/pod/debug.1",
		"spiffe://cluster.local/ns/a/sa/b workload:legacy/Deployment/sleep": "legacy/deployment/sleep as spiffe://cluster.local/ns/a/sa/b",
		"": "",
	} {
		if got := ParseSourceKey(key).Display(); got != want {
			t.Errorf("ParseSourceKey(%q).Display() = %q, want %q", key, got, want)
		}
	}
	if got := WorkloadName(&Workload{Namespace: "payments", Kind: "StatefulSet", Name: "ledger"}); got != "payments/statefulset/ledger" {
		t.Errorf("WorkloadName = %q", got)
	}
	if got := WorkloadName(nil); got != "" {
		t.Errorf("WorkloadName(nil) = %q", got)
	}
}

// BenchmarkColumnsOf is the columns of a record as Append derives them,
// with and without the workloads serve --kubernetes records (the
// workload refs and a workload key are new strings).
func BenchmarkColumnsOf(b *testing.B) {
	id := &SPIFFEID{ID: "spiffe://cluster.local/ns/shop/sa/frontend", TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "frontend"}
	for _, bc := range []struct {
		name string
		rec  Record
	}{
		{"mtls without workloads", Record{Source: Peer{Address: "10.0.0.7", Principal: id.ID, SPIFFE: id}, Destination: Peer{Address: "10.0.1.9"}}},
		{"mtls with workloads", Record{
			Source:      Peer{Address: "10.0.0.7", Principal: id.ID, SPIFFE: id, Workload: &Workload{Namespace: "shop", Kind: "Deployment", Name: "frontend", ServiceAccount: "frontend"}},
			Destination: Peer{Address: "10.0.1.9", Workload: &Workload{Namespace: "payments", Kind: "StatefulSet", Name: "ledger"}}}},
		{"plaintext without workloads", Record{Source: Peer{Address: "10.0.0.7"}, Destination: Peer{Address: "10.0.1.9"}}},
		{"plaintext with workloads", Record{
			Source:      Peer{Address: "10.0.0.7", Workload: &Workload{Namespace: "legacy", Kind: "Deployment", Name: "sleep"}},
			Destination: Peer{Address: "10.0.1.9", Workload: &Workload{Namespace: "payments", Kind: "StatefulSet", Name: "ledger"}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = ColumnsOf(&bc.rec)
			}
		})
	}
}

// TestMismatchCaseOf reads back, from a record's reasons, which case serve
// --kubernetes said a source identity that is not its pod's most likely is.
func TestMismatchCaseOf(t *testing.T) {
	const sides = `source identity is not its workload's: service account differs: workload "api", SPIFFE ID "sleep"`
	for _, tc := range []struct {
		reasons []string
		kind    string
	}{
		{[]string{"client certificate presented", sides + "; stale address data: pod shop/sleep-1, which runs as that identity, held 10.0.0.1 too"}, CaseStaleAddress},
		{[]string{sides + "; stale address data, likely: pod shop/api-1, created 10s ago, holds 10.0.0.1 now"}, CaseStaleAddress},
		{[]string{sides + "; a workload presenting another's identity: pod shop/api-1 holds 10.0.0.1"}, CaseBorrowedIdentity},
		{[]string{sides + "; a workload presenting another's identity, or stale address data"}, CaseIdentityMismatch},
		{[]string{sides}, CaseIdentityMismatch}, // recorded before serve said which
		// The destination's identity, or none: not the source's case.
		{[]string{"destination identity is not its workload's: namespace differs: workload \"a\", SPIFFE ID \"b\"; stale address data: pod a/x, which runs as that identity, held 10.0.0.2 too"}, ""},
		{[]string{"no client certificate", "source workload: unknown address"}, ""},
		{nil, ""},
	} {
		kind, reason := MismatchCaseOf(tc.reasons)
		if kind != tc.kind || (kind == "") != (reason == "") || kind != "" && !strings.HasPrefix(reason, "source identity") {
			t.Errorf("MismatchCaseOf(%q) = %q, %q; want %q", tc.reasons, kind, reason, tc.kind)
		}
	}
}
