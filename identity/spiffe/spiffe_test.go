package spiffe

import (
	"strings"
	"testing"
)

// idOfLength returns a valid SPIFFE ID of exactly n bytes (n >= 14).
func idOfLength(n int) string {
	const head = "spiffe://td/"
	return head + strings.Repeat("a", n-len(head))
}

func TestParse(t *testing.T) {
	td255 := strings.Repeat("a", 251) + ".org"
	td256 := strings.Repeat("a", 252) + ".org"
	tests := []struct {
		name    string
		in      string
		want    ID
		wantErr string // the whole error message; "" means success
	}{
		{
			name: "istio",
			in:   "spiffe://cluster.local/ns/mtls-pg/sa/sleep",
			want: ID{
				ID: "spiffe://cluster.local/ns/mtls-pg/sa/sleep", TrustDomain: "cluster.local",
				Path: "/ns/mtls-pg/sa/sleep", Namespace: "mtls-pg", ServiceAccount: "sleep",
			},
		},
		{
			name: "istio with namespace called sa",
			in:   "spiffe://td/ns/sa/sa/x",
			want: ID{ID: "spiffe://td/ns/sa/sa/x", TrustDomain: "td", Path: "/ns/sa/sa/x", Namespace: "sa", ServiceAccount: "x"},
		},
		{
			name: "trust domain only",
			in:   "spiffe://example.org",
			want: ID{ID: "spiffe://example.org", TrustDomain: "example.org"},
		},
		{
			name: "namespace without service account is not istio",
			in:   "spiffe://td/ns/x",
			want: ID{ID: "spiffe://td/ns/x", TrustDomain: "td", Path: "/ns/x"},
		},
		{
			name: "extra segment is not istio",
			in:   "spiffe://td/ns/x/sa/y/extra",
			want: ID{ID: "spiffe://td/ns/x/sa/y/extra", TrustDomain: "td", Path: "/ns/x/sa/y/extra"},
		},
		{
			name: "istio markers are case-sensitive",
			in:   "spiffe://td/NS/x/SA/y",
			want: ID{ID: "spiffe://td/NS/x/SA/y", TrustDomain: "td", Path: "/NS/x/SA/y"},
		},
		{
			name: "swapped markers are not istio",
			in:   "spiffe://td/sa/y/ns/x",
			want: ID{ID: "spiffe://td/sa/y/ns/x", TrustDomain: "td", Path: "/sa/y/ns/x"},
		},
		{
			name: "upper case and dots allowed in the path",
			in:   "spiffe://td/Web.API/.../v_1-2",
			want: ID{ID: "spiffe://td/Web.API/.../v_1-2", TrustDomain: "td", Path: "/Web.API/.../v_1-2"},
		},
		{
			name: "trust domain of exactly 255 bytes",
			in:   "spiffe://" + td255 + "/x",
			want: ID{ID: "spiffe://" + td255 + "/x", TrustDomain: td255, Path: "/x"},
		},
		{
			name:    "trust domain of 256 bytes",
			in:      "spiffe://" + td256 + "/x",
			wantErr: "spiffe: trust domain is 256 bytes, the limit is 255",
		},
		{
			name: "ID of exactly 2048 bytes",
			in:   idOfLength(2048),
			want: ID{ID: idOfLength(2048), TrustDomain: "td", Path: idOfLength(2048)[len("spiffe://td"):]},
		},
		{
			name:    "ID of 2049 bytes",
			in:      idOfLength(2049),
			wantErr: "spiffe: ID is 2049 bytes, the limit is 2048",
		},
		{
			name:    "upper-case trust domain",
			in:      "spiffe://Example.org/a",
			wantErr: `spiffe: invalid ID "spiffe://Example.org/a": the trust domain must be lower-case`,
		},
		{
			name:    "query",
			in:      "spiffe://td/a?x=1",
			wantErr: `spiffe: invalid ID "spiffe://td/a?x=1": a query ('?') is not allowed`,
		},
		{
			name:    "fragment",
			in:      "spiffe://td/a#f",
			wantErr: `spiffe: invalid ID "spiffe://td/a#f": a fragment ('#') is not allowed`,
		},
		{
			name:    "port",
			in:      "spiffe://td:443/a",
			wantErr: `spiffe: invalid ID "spiffe://td:443/a": a port (':') is not allowed`,
		},
		{
			name:    "userinfo",
			in:      "spiffe://user@td/a",
			wantErr: `spiffe: invalid ID "spiffe://user@td/a": userinfo ('@') is not allowed`,
		},
		{
			name:    "empty segment",
			in:      "spiffe://td/a//b",
			wantErr: `spiffe: invalid ID "spiffe://td/a//b": path cannot contain empty segments`,
		},
		{
			name:    "dot segment",
			in:      "spiffe://td/a/./b",
			wantErr: `spiffe: invalid ID "spiffe://td/a/./b": path cannot contain dot segments`,
		},
		{
			name:    "dot-dot segment",
			in:      "spiffe://td/a/..",
			wantErr: `spiffe: invalid ID "spiffe://td/a/..": path cannot contain dot segments`,
		},
		{
			name:    "trailing slash",
			in:      "spiffe://td/a/",
			wantErr: `spiffe: invalid ID "spiffe://td/a/": path cannot have a trailing slash`,
		},
		{
			name:    "trust domain with only a slash",
			in:      "spiffe://td/",
			wantErr: `spiffe: invalid ID "spiffe://td/": path cannot have a trailing slash`,
		},
		{
			name:    "percent-encoding is not allowed",
			in:      "spiffe://td/a%2Fb",
			wantErr: `spiffe: invalid ID "spiffe://td/a%2Fb": path segment characters are limited to letters, numbers, dots, dashes, and underscores`,
		},
		{
			name:    "wrong scheme",
			in:      "https://td/a",
			wantErr: `spiffe: invalid ID "https://td/a": the ID must start with "spiffe://"`,
		},
		{
			name:    "upper-case scheme",
			in:      "SPIFFE://td/a",
			wantErr: `spiffe: invalid ID "SPIFFE://td/a": the scheme must be lower-case "spiffe://"`,
		},
		{
			name:    "missing trust domain",
			in:      "spiffe:///a",
			wantErr: `spiffe: invalid ID "spiffe:///a": trust domain is missing`,
		},
		{
			name:    "empty string",
			in:      "",
			wantErr: `spiffe: invalid ID "": the ID is empty`,
		},
		{
			name:    "surrounding blank",
			in:      " spiffe://td/a",
			wantErr: `spiffe: invalid ID " spiffe://td/a": the ID must start with "spiffe://"`,
		},
		{
			name:    "long invalid ID is cut short in the message",
			in:      "spiffe://td/" + strings.Repeat("a", 100) + "/",
			wantErr: `spiffe: invalid ID "spiffe://td/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"...: path cannot have a trailing slash`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Parse(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				if got != (ID{}) {
					t.Errorf("Parse(%q) = %+v with an error, want the zero ID", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}
