package xfcc

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that what it returns is
// self-consistent and deterministic, and that encode and Parse are inverses,
// both for what Parse read from the input and for elements built from it.
// Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, header string) {
		elems, err := Parse(header)
		if err != nil {
			checkError(t, header, elems, err)
		} else {
			checkElements(t, header, elems)
			again, err := Parse(header)
			if err != nil || !reflect.DeepEqual(again, elems) {
				t.Fatalf("second Parse(%q) = %#v, %v; first gave %#v", header, again, err, elems)
			}
			if elems != nil {
				roundTrip(t, elems, encodeOptions{})
			}
		}
		built := elementsFrom(header)
		roundTrip(t, built, encodeOptions{})
		roundTrip(t, built, encodeOptions{upperKeys: true, legacySAN: true, spaces: true})
	})
}

// TestRoundTrip is the encode/Parse property over random elements, so that
// it runs on every `go test`, not only under -fuzz.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		elems := make([]Element, 1+r.IntN(4))
		for i := range elems {
			elems[i] = randomElement(r)
		}
		o := encodeOptions{upperKeys: r.IntN(2) == 0, legacySAN: r.IntN(2) == 0, spaces: r.IntN(2) == 0}
		roundTrip(t, elems, o)
	}
}

// roundTrip encodes elems, parses the result and wants elems back.
func roundTrip(t *testing.T, elems []Element, o encodeOptions) {
	t.Helper()
	header := encode(elems, o)
	if len(header) > MaxHeaderBytes {
		return
	}
	got, err := Parse(header)
	if err != nil {
		t.Fatalf("Parse(encode(%#v)) = %v\nheader: %q", elems, err, header)
	}
	if !reflect.DeepEqual(got, elems) {
		t.Fatalf("round trip changed the elements\nheader: %q\n   got: %#v\n  want: %#v", header, got, elems)
	}
}

// elementsFrom builds elements out of the fuzzer's bytes: every ';'-separated
// piece becomes a value, taken in turn by each field, eight to an element.
func elementsFrom(s string) []Element {
	parts := strings.Split(s, ";")
	if len(parts) > 8*MaxElements {
		parts = parts[:8*MaxElements]
	}
	elems := make([]Element, (len(parts)+7)/8)
	for i, v := range parts {
		e := &elems[i/8]
		switch i % 8 {
		case 0:
			e.By = append(e.By, v)
		case 1:
			e.Hash = v
		case 2:
			e.Cert = v
		case 3:
			e.Chain = v
		case 4:
			e.Subject = v
		case 5:
			e.URI = append(e.URI, v)
		case 6:
			e.DNS = append(e.DNS, v)
		case 7:
			e.Other = map[string][]string{"Issuer": {v}}
		}
	}
	return elems
}

// randomElement returns an element whose values are drawn from the bytes
// that matter to the syntax, plus some that do not.
func randomElement(r *rand.Rand) Element {
	const alphabet = "aZ09:/.-_ \t,;=\"\\%+é\xff"
	value := func() string {
		b := make([]byte, r.IntN(8))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	list := func() []string {
		var l []string
		for range r.IntN(3) {
			l = append(l, value())
		}
		return l
	}
	e := Element{By: list(), Hash: value(), Cert: value(), Chain: value(), Subject: value(), URI: list(), DNS: list()}
	for _, k := range []string{"Issuer", "x-extra"} {
		if vs := list(); vs != nil {
			if e.Other == nil {
				e.Other = map[string][]string{}
			}
			e.Other[k] = vs
		}
	}
	return e
}

// checkError checks that a failure is an *Error that points inside the header.
func checkError(t *testing.T, header string, elems []Element, err error) {
	t.Helper()
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("Parse(%q) error %v is %T, want *Error", header, err, err)
	}
	if elems != nil {
		t.Fatalf("Parse(%q) returned elements with error %v", header, err)
	}
	if !strings.HasPrefix(err.Error(), "xfcc: ") {
		t.Fatalf("error %q lacks the xfcc: prefix", err)
	}
	if perr.Offset < 0 || perr.Offset > len(header) {
		t.Fatalf("error %q: offset %d outside a %d-byte header", err, perr.Offset, len(header))
	}
	if perr.Element < -1 || perr.Element > MaxElements {
		t.Fatalf("error %q: element %d out of range", err, perr.Element)
	}
	if tooLarge := len(header) > MaxHeaderBytes; tooLarge != errors.Is(err, ErrTooLarge) || tooLarge != (perr.Element == -1) {
		t.Fatalf("error %q for a %d-byte header", err, len(header))
	}
}

// checkElements checks the invariants of a successful Parse.
func checkElements(t *testing.T, header string, elems []Element) {
	t.Helper()
	if len(header) > MaxHeaderBytes {
		t.Fatalf("Parse accepted a %d-byte header", len(header))
	}
	if isBlank(header) != (elems == nil) || len(elems) > MaxElements {
		t.Fatalf("Parse(%q) gave %d elements", header, len(elems))
	}
	// Without backslashes nothing is unescaped, so every value other than
	// Cert and Chain must be a piece of the header.
	verbatim := !strings.Contains(header, `\`)
	for i, e := range elems {
		values := []string{e.Hash, e.Subject}
		pairs := 0
		for name, l := range map[string][]string{"By": e.By, "URI": e.URI, "DNS": e.DNS} {
			if l != nil && len(l) == 0 {
				t.Fatalf("element %d: %s is empty but not nil", i, name)
			}
			values = append(values, l...)
			pairs += len(l)
		}
		if e.Other != nil && len(e.Other) == 0 {
			t.Fatalf("element %d: Other is empty but not nil", i)
		}
		for k, vs := range e.Other {
			if k == "" || fieldOf(k) != fieldOther || strings.ContainsAny(k, "\",;=") ||
				isBlankByte(k[0]) || isBlankByte(k[len(k)-1]) {
				t.Fatalf("element %d: bad Other key %q", i, k)
			}
			if len(vs) == 0 {
				t.Fatalf("element %d: Other[%q] is empty", i, k)
			}
			values = append(values, vs...)
			pairs += len(vs)
		}
		if pairs > MaxPairs {
			t.Fatalf("element %d has %d pairs", i, pairs)
		}
		for _, v := range values {
			if verbatim && !strings.Contains(header, v) {
				t.Fatalf("element %d: value %q is not in header %q", i, v, header)
			}
		}
	}
}
