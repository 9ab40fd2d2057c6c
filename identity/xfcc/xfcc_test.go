package xfcc

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const (
	istioHash   = "0fd8a69e4977ba156e25cea9aad41bf56837da968c189c626d3d02c6be6e54e9"
	istioHeader = "By=spiffe://cluster.local/ns/mtls-pg/sa/default;Hash=" + istioHash +
		`;Subject="";URI=spiffe://cluster.local/ns/mtls-pg/sa/sleep`
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		want    []Element
		wantErr string // the whole error message; "" means success
	}{
		{
			name:   "domain vector: quoted URI with escaped quote",
			header: `By=test;URI="a,b,c;\"e;f;g=x";DNS=example.com`,
			want:   []Element{{By: []string{"test"}, URI: []string{`a,b,c;"e;f;g=x`}, DNS: []string{"example.com"}}},
		},
		{
			name:   "domain vector: escaped backslash",
			header: `URI="\\"`,
			want:   []Element{{URI: []string{`\`}}},
		},
		{
			name:    "domain vector: unmatched quote",
			header:  `By=test;URI="abc;DNS=example.com`,
			wantErr: "xfcc: element 0: unmatched quote at byte 12",
		},
		{
			name:   "istio sidecar inbound",
			header: istioHeader,
			want: []Element{{
				By:   []string{"spiffe://cluster.local/ns/mtls-pg/sa/default"},
				Hash: istioHash,
				URI:  []string{"spiffe://cluster.local/ns/mtls-pg/sa/sleep"},
			}},
		},
		{
			name:   "two hops, oldest first",
			header: "By=spiffe://td/gw;Hash=aa;URI=spiffe://td/client,By=spiffe://td/app;Hash=bb;URI=spiffe://td/gw",
			want: []Element{
				{By: []string{"spiffe://td/gw"}, Hash: "aa", URI: []string{"spiffe://td/client"}},
				{By: []string{"spiffe://td/app"}, Hash: "bb", URI: []string{"spiffe://td/gw"}},
			},
		},
		{
			name:   "repeated By and DNS keep their order",
			header: "By=spiffe://a;By=spiffe://b;Hash=h;DNS=a.example;DNS=b.example",
			want: []Element{{
				By:   []string{"spiffe://a", "spiffe://b"},
				Hash: "h",
				DNS:  []string{"a.example", "b.example"},
			}},
		},
		{
			name:   "legacy SAN key counts as URI",
			header: "Hash=h;SAN=spiffe://td/old;URI=spiffe://td/new",
			want:   []Element{{Hash: "h", URI: []string{"spiffe://td/old", "spiffe://td/new"}}},
		},
		{
			name:   "unknown key kept with its RFC 2253 escape intact",
			header: `Hash=h;Issuer="CN=x\,y"`,
			want:   []Element{{Hash: "h", Other: map[string][]string{"Issuer": {`CN=x\,y`}}}},
		},
		{
			name:   "unknown keys keyed as written, values in order",
			header: "issuer=a;Issuer=b;issuer=c",
			want:   []Element{{Other: map[string][]string{"issuer": {"a", "c"}, "Issuer": {"b"}}}},
		},
		{
			name:   "subject with RFC 2253 escapes",
			header: `Subject="CN=a\,b,O=\"q\",OU=c\\d"`,
			want:   []Element{{Subject: `CN=a\,b,O="q",OU=c\d`}},
		},
		{
			name:   "keys are case-insensitive, values are not",
			header: `BY=A;by=b;hAsH=H;uri=U;Dns=D;SUBJECT="S";sAn=V`,
			want: []Element{{
				By: []string{"A", "b"}, Hash: "H", Subject: "S", URI: []string{"U", "V"}, DNS: []string{"D"},
			}},
		},
		{
			name:   "ASCII folding only: long s is not an s",
			header: "ſubject=x",
			want:   []Element{{Other: map[string][]string{"ſubject": {"x"}}}},
		},
		{
			name:   "empty URI is present, absent URI is nil",
			header: "Hash=a;URI=,Hash=b",
			want:   []Element{{Hash: "a", URI: []string{""}}, {Hash: "b"}},
		},
		{
			name:   "unquoted value may hold '='",
			header: "URI=spiffe://td/a?x=y",
			want:   []Element{{URI: []string{"spiffe://td/a?x=y"}}},
		},
		{
			name:   "blanks around elements and pairs are trimmed, quoted blanks kept",
			header: " By = a ;\tURI= \" x y \" , Hash=h ",
			want:   []Element{{By: []string{"a"}, URI: []string{" x y "}}, {Hash: "h"}},
		},
		{
			name:   "escaped backslash before escaped quote",
			header: `URI="a\\\"b"`,
			want:   []Element{{URI: []string{`a\"b`}}},
		},
		{
			name:   "invalid UTF-8 is kept byte for byte",
			header: "URI=\xff\xfe;Issuer=\"\xc3\"",
			want:   []Element{{URI: []string{"\xff\xfe"}, Other: map[string][]string{"Issuer": {"\xc3"}}}},
		},
		{name: "empty header", header: "", want: nil},
		{name: "blank header", header: " \t ", want: nil},
		{
			name:    "pair without '='",
			header:  "By=a;oops;URI=b",
			wantErr: `xfcc: element 0: "oops" has no '=' at byte 5`,
		},
		{
			name:    "unmatched quote in the third element",
			header:  `Hash=a,Hash=b,URI="x`,
			wantErr: "xfcc: element 2: unmatched quote at byte 18",
		},
		{
			name:    "empty element",
			header:  "By=a,,By=b",
			wantErr: "xfcc: element 1: empty element at byte 5",
		},
		{
			name:    "trailing comma",
			header:  "By=a,",
			wantErr: "xfcc: element 1: empty element at byte 5",
		},
		{
			name:    "trailing semicolon",
			header:  "By=a;",
			wantErr: "xfcc: element 0: empty key=value pair at byte 5",
		},
		{
			name:    "empty key",
			header:  "Hash=h;=x",
			wantErr: "xfcc: element 0: key=value pair with an empty key at byte 7",
		},
		{
			name:    "quote in key",
			header:  `"By"=x`,
			wantErr: `xfcc: element 0: quote in key "\"By\"" at byte 0`,
		},
		{
			name:    "text after closing quote",
			header:  `URI="a"b;Hash=h`,
			wantErr: "xfcc: element 0: unexpected text after closing quote at byte 7",
		},
		{
			name:    "quote inside unquoted value",
			header:  `Hash=h;URI=a"b"`,
			wantErr: "xfcc: element 0: quote inside an unquoted value at byte 12",
		},
		{
			name:    "escaped quote outside quotes",
			header:  `URI=a\"b`,
			wantErr: "xfcc: element 0: quote inside an unquoted value at byte 6",
		},
		{
			name:    "single-valued key given twice",
			header:  "Hash=a;URI=u,Hash=b;hash=c",
			wantErr: `xfcc: element 1: key "hash" given twice at byte 20`,
		},
		{
			name:    "Cert that is not percent-encoding",
			header:  `Hash=h;Cert="%zz"`,
			wantErr: `xfcc: element 0: Cert is not valid percent-encoding (invalid URL escape "%zz") at byte 12`,
		},
		{
			name:    "JSON format is not the header format",
			header:  `[{"By":"x"}]`,
			wantErr: `xfcc: element 0: "[{\"By\":\"x\"}]" has no '=' at byte 0`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.header)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %+v, want error %q", tt.header, got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("Parse(%q) error = %q, want %q", tt.header, err, tt.wantErr)
				}
				var perr *Error
				if !errors.As(err, &perr) {
					t.Fatalf("Parse(%q) error is %T, want *Error", tt.header, err)
				}
				if got != nil {
					t.Errorf("Parse(%q) returned %+v with an error, want nil", tt.header, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.header, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.header, got, tt.want)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	elements := func(n int) string {
		return strings.TrimSuffix(strings.Repeat("Hash=h,", n), ",")
	}
	pairs := func(n int) string {
		return strings.TrimSuffix(strings.Repeat("DNS=d;", n), ";")
	}
	tests := []struct {
		name    string
		header  string
		wantErr error // nil means success
	}{
		{name: "header at the size limit", header: "Hash=" + strings.Repeat("a", MaxHeaderBytes-5)},
		{name: "header one byte over", header: "Hash=" + strings.Repeat("a", MaxHeaderBytes-4), wantErr: ErrTooLarge},
		{name: "oversized garbage is refused before scanning", header: strings.Repeat(`"`, MaxHeaderBytes+1), wantErr: ErrTooLarge},
		{name: "elements at the limit", header: elements(MaxElements)},
		{name: "one element too many", header: elements(MaxElements + 1), wantErr: ErrTooManyElements},
		{name: "pairs at the limit", header: pairs(MaxPairs)},
		{name: "one pair too many", header: pairs(MaxPairs + 1), wantErr: ErrTooManyPairs},
		{name: "pairs counted per element", header: pairs(MaxPairs) + "," + pairs(MaxPairs)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.header)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse error: %v", err)
				}
				if len(got) == 0 {
					t.Fatal("Parse returned no elements")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse error = %v, want errors.Is %v", err, tt.wantErr)
			}
			if got != nil {
				t.Errorf("Parse returned %d elements with an error", len(got))
			}
		})
	}
}

func TestParseErrorMessages(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   string
	}{
		{
			name:   "too large says how large",
			header: strings.Repeat("a", MaxHeaderBytes+1),
			want:   "xfcc: header is 65537 bytes, the limit is 65536",
		},
		{
			name:   "too many elements names the first extra one",
			header: strings.TrimSuffix(strings.Repeat("Hash=h,", MaxElements+1), ","),
			want:   "xfcc: element 64: more than 64 elements at byte 448",
		},
		{
			name:   "long pair is cut short in the message",
			header: "Hash=h;" + strings.Repeat("x", 100),
			want:   `xfcc: element 0: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"... has no '=' at byte 7`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.header)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Parse error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRightmost(t *testing.T) {
	tests := []struct {
		name   string
		elems  []Element
		want   Element
		wantOK bool
	}{
		{name: "nil", elems: nil},
		{name: "empty", elems: []Element{}},
		{name: "one", elems: []Element{{Hash: "a"}}, want: Element{Hash: "a"}, wantOK: true},
		{name: "newest is last", elems: []Element{{Hash: "a"}, {Hash: "b"}}, want: Element{Hash: "b"}, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Rightmost(tt.elems)
			if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Rightmost = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRightmostOfParsedHeader(t *testing.T) {
	elems, err := Parse("By=spiffe://td/gw;Hash=aa;URI=spiffe://td/client," + istioHeader)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := Rightmost(elems)
	if !ok || got.Hash != istioHash || got.URI[0] != "spiffe://cluster.local/ns/mtls-pg/sa/sleep" {
		t.Errorf("Rightmost = %+v, %v; want the Istio element", got, ok)
	}
}
