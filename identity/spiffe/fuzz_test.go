package spiffe

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzParse checks that Parse never panics, that an accepted ID round-trips
// through spiffeid.FromString within the byte limits, that Namespace and
// ServiceAccount are set exactly for Istio-shaped paths, and that HasPrefix
// agrees with the ID's own structure. Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "spiffe: ") || id != (ID{}) {
				t.Fatalf("Parse(%q) = %+v, %q", s, id, err)
			}
			return
		}
		if len(s) > MaxIDBytes || len(id.TrustDomain) > MaxTrustDomainBytes {
			t.Fatalf("Parse(%q) accepted an ID over the limits", s)
		}
		sid, err := spiffeid.FromString(id.ID)
		if err != nil {
			t.Fatalf("spiffeid.FromString(%q): %v", id.ID, err)
		}
		if id.ID != s || sid.String() != s || sid.TrustDomain().Name() != id.TrustDomain ||
			sid.Path() != id.Path || scheme+id.TrustDomain+id.Path != s {
			t.Fatalf("Parse(%q) = %+v, disagrees with spiffeid %q", s, id, sid)
		}
		seg := strings.Split(id.Path, "/")
		isIstio := len(seg) == 5 && seg[1] == "ns" && seg[3] == "sa"
		if isIstio != (id.Namespace != "") || isIstio != (id.ServiceAccount != "") ||
			(isIstio && (seg[2] != id.Namespace || seg[4] != id.ServiceAccount)) {
			t.Fatalf("Parse(%q) = %+v, Istio fields wrong", s, id)
		}

		root := scheme + id.TrustDomain
		for _, p := range []string{s, root, root + "/", parent(s)} {
			want := p != root+"/" || id.Path != ""
			if got := HasPrefix(s, p); got != want {
				t.Fatalf("HasPrefix(%q, %q) = %v, want %v", s, p, got, want)
			}
		}
		for _, p := range []string{s + "x", s + "/", s + "/x", ""} {
			if HasPrefix(s, p) {
				t.Fatalf("HasPrefix(%q, %q) = true", s, p)
			}
		}
		if HasPrefix("", s) {
			t.Fatalf("HasPrefix(\"\", %q) = true", s)
		}
	})
}

// FuzzHasPrefix checks HasPrefix against its definition, and against
// a plain string comparison when both arguments are valid SPIFFE IDs.
func FuzzHasPrefix(f *testing.F) {
	f.Add("spiffe://td/ns/prod/sa/x", "spiffe://td/ns/prod")
	f.Add("spiffe://td/ns/production", "spiffe://td/ns/prod")
	f.Add("spiffe://td/ns/prod/../admin", "spiffe://td/ns/prod")
	f.Add("spiffe://td/a", "spiffe://td/")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, id, prefix string) {
		got := HasPrefix(id, prefix)
		if got && (id == "" || prefix == "" || !strings.HasPrefix(id, prefix)) {
			t.Fatalf("HasPrefix(%q, %q) = true", id, prefix)
		}
		if got && id != prefix && !strings.HasSuffix(prefix, "/") && id[len(prefix)] != '/' {
			t.Fatalf("HasPrefix(%q, %q) = true off a segment boundary", id, prefix)
		}
		// Valid IDs have no empty or dot segments, so for them HasPrefix is
		// exactly "equal, or a string prefix followed by '/'".
		if _, err := Parse(id); err != nil {
			return
		}
		if _, err := Parse(prefix); err != nil {
			return
		}
		want := id == prefix || strings.HasPrefix(id, prefix+"/")
		if got != want {
			t.Fatalf("HasPrefix(%q, %q) = %v, want %v", id, prefix, got, want)
		}
	})
}

// parent returns s without its last path segment, or s if it has no path.
func parent(s string) string {
	i := strings.LastIndexByte(s, '/')
	if i < len(scheme) {
		return s
	}
	return s[:i]
}
