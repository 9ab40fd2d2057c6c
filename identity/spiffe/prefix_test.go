package spiffe

import "testing"

func TestHasPrefix(t *testing.T) {
	tests := []struct {
		name   string
		id     string
		prefix string
		want   bool
	}{
		{name: "equal", id: "spiffe://td/ns/prod", prefix: "spiffe://td/ns/prod", want: true},
		{name: "below", id: "spiffe://td/ns/prod/sa/x", prefix: "spiffe://td/ns/prod", want: true},
		{name: "sibling sharing a name prefix", id: "spiffe://td/ns/production", prefix: "spiffe://td/ns/prod", want: false},
		{name: "above", id: "spiffe://td/ns", prefix: "spiffe://td/ns/prod", want: false},
		{name: "other trust domain", id: "spiffe://other/ns/prod", prefix: "spiffe://td/ns/prod", want: false},
		{name: "trust domain prefix", id: "spiffe://td/ns/prod", prefix: "spiffe://td", want: true},
		{name: "trust domain is not a string prefix", id: "spiffe://td.evil/ns/prod", prefix: "spiffe://td", want: false},
		{name: "trailing slash matches below", id: "spiffe://td/ns/prod/sa/x", prefix: "spiffe://td/ns/", want: true},
		{name: "trailing slash does not match the parent", id: "spiffe://td/ns", prefix: "spiffe://td/ns/", want: false},
		{name: "trailing slash is a segment boundary", id: "spiffe://td/nsx/a", prefix: "spiffe://td/ns/", want: false},
		{name: "trust domain with slash matches every path", id: "spiffe://td/a/b", prefix: "spiffe://td/", want: true},
		{name: "trust domain with slash does not match the bare trust domain", id: "spiffe://td", prefix: "spiffe://td/", want: false},
		{name: "empty id matches nothing", id: "", prefix: "spiffe://td/", want: false},
		{name: "empty id does not match empty prefix", id: "", prefix: "", want: false},
		{name: "empty prefix matches nothing", id: "spiffe://td/a", prefix: "", want: false},
		{name: "case matters", id: "spiffe://td/NS/prod", prefix: "spiffe://td/ns/prod", want: false},
		{name: "dot-dot below the prefix", id: "spiffe://td/ns/prod/../admin", prefix: "spiffe://td/ns/prod", want: false},
		{name: "dot below a slash prefix", id: "spiffe://td/ns/./x", prefix: "spiffe://td/ns/", want: false},
		{name: "empty segment below", id: "spiffe://td/ns/prod//x", prefix: "spiffe://td/ns/prod", want: false},
		{name: "trailing slash below", id: "spiffe://td/ns/prod/", prefix: "spiffe://td/ns/prod", want: false},
		{name: "dots inside a segment are fine", id: "spiffe://td/ns/prod/a..b", prefix: "spiffe://td/ns/prod", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HasPrefix(tt.id, tt.prefix); got != tt.want {
				t.Errorf("HasPrefix(%q, %q) = %v, want %v", tt.id, tt.prefix, got, tt.want)
			}
		})
	}
}
