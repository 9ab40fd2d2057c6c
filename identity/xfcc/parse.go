package xfcc

import (
	"fmt"
	"net/url"
	"strings"
)

// field says which Element field a key fills.
type field uint8

const (
	fieldOther field = iota
	fieldBy
	fieldHash
	fieldCert
	fieldChain
	fieldSubject
	fieldURI
	fieldDNS
)

// parser holds the state of one Parse call.
type parser struct {
	s     string
	elems []Element
	cur   Element // the element being filled
	pairs int     // pairs seen so far in cur
	seen  uint16  // bit per single-valued field already set in cur
}

// parse makes one pass over p.s. The scan only finds where pairs and elements
// end (';' and ',' outside quotes) and the first '=' of each pair; pair does
// the rest, so every byte is looked at a small, fixed number of times.
func (p *parser) parse() ([]Element, error) {
	s := p.s
	if isBlank(s) {
		return nil, nil
	}
	start, eq := 0, -1
	for i := 0; i <= len(s); i++ {
		for i < len(s) && !structural[s[i]] {
			i++
		}
		if i < len(s) {
			switch s[i] {
			case '"':
				end := closingQuote(s, i)
				if end < 0 {
					return nil, p.errorf(i, nil, "unmatched quote")
				}
				i = end
				continue
			case '=':
				if eq < 0 {
					eq = i
				}
				continue
			}
		}
		// s[start:i] is one pair, ended by ';', ',' or the end of the header.
		endsElement := i == len(s) || s[i] == ','
		if err := p.pair(start, i, eq, endsElement); err != nil {
			return nil, err
		}
		if endsElement {
			p.elems = append(p.elems, p.cur)
			p.cur, p.pairs, p.seen = Element{}, 0, 0
			if i < len(s) && len(p.elems) == MaxElements {
				return nil, p.errorf(i+1, ErrTooManyElements, "more than %d elements", MaxElements)
			}
		}
		start, eq = i+1, -1
	}
	return p.elems, nil
}

// structural marks the bytes the scan in parse stops at.
var structural = [256]bool{'"': true, '=': true, ';': true, ',': true}

// closingQuote returns the index of the quote that closes the one at open, or
// -1 if none does. It follows Envoy: a quote preceded by an odd number of
// backslashes is escaped and changes nothing. If the quote at open is itself
// escaped, it opens nothing and closingQuote returns open.
func closingQuote(s string, open int) int {
	if escaped(s, open) {
		return open
	}
	for i := open + 1; i < len(s); i++ {
		j := strings.IndexByte(s[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		if !escaped(s, i) {
			return i
		}
	}
	return -1
}

// escaped reports whether s[i] is preceded by an odd number of backslashes.
// Each run of backslashes is counted for the one quote that ends it, so the
// calls made by one Parse look at every byte at most once.
func escaped(s string, i int) bool {
	n := 0
	for i > 0 && s[i-1] == '\\' {
		n++
		i--
	}
	return n%2 == 1
}

// pair parses s[start:end], whose first '=' outside quotes is at eq (-1 if none),
// and stores it in p.cur.
func (p *parser) pair(start, end, eq int, endsElement bool) error {
	ps, pe := trim(p.s, start, end)
	if ps == pe {
		if p.pairs == 0 && endsElement {
			return p.errorf(start, nil, "empty element")
		}
		return p.errorf(start, nil, "empty key=value pair")
	}
	p.pairs++
	if p.pairs > MaxPairs {
		return p.errorf(ps, ErrTooManyPairs, "more than %d key=value pairs", MaxPairs)
	}
	if eq < 0 {
		return p.errorf(ps, nil, "%s has no '='", snippet(p.s[ps:pe]))
	}
	ks, ke := trim(p.s, ps, eq)
	if ks == ke {
		return p.errorf(ps, nil, "key=value pair with an empty key")
	}
	key := p.s[ks:ke]
	if i := strings.IndexByte(key, '"'); i >= 0 {
		return p.errorf(ks+i, nil, "quote in key %s", snippet(key))
	}
	vs, ve := trim(p.s, eq+1, pe)
	val, err := p.value(vs, ve)
	if err != nil {
		return err
	}
	return p.set(key, ks, val, vs)
}

// value returns the value in s[vs:ve], unquoted and unescaped if it is quoted.
func (p *parser) value(vs, ve int) (string, error) {
	v := p.s[vs:ve]
	if v == "" || v[0] != '"' {
		if i := strings.IndexByte(v, '"'); i >= 0 {
			return "", p.errorf(vs+i, nil, "quote inside an unquoted value")
		}
		return v, nil
	}
	escapes := false
	for j := 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			if j+1 < len(v) && (v[j+1] == '"' || v[j+1] == '\\') {
				escapes = true
				j++
			}
		case '"':
			if j != len(v)-1 {
				return "", p.errorf(vs+j+1, nil, "unexpected text after closing quote")
			}
			if !escapes {
				return v[1:j], nil
			}
			return unescape(v[1:j]), nil
		}
	}
	// The scan in parse has matched every quote, so this is unreachable;
	// it is kept so that a future change cannot turn it into a panic.
	return "", p.errorf(vs, nil, "unmatched quote")
}

// set stores val under key in p.cur. ks and vs are the offsets of key and
// value, for error messages.
func (p *parser) set(key string, ks int, val string, vs int) error {
	f := fieldOf(key)
	switch f {
	case fieldBy:
		p.cur.By = append(p.cur.By, val)
		return nil
	case fieldURI:
		p.cur.URI = append(p.cur.URI, val)
		return nil
	case fieldDNS:
		p.cur.DNS = append(p.cur.DNS, val)
		return nil
	case fieldOther:
		if p.cur.Other == nil {
			p.cur.Other = make(map[string][]string, 1)
		}
		p.cur.Other[key] = append(p.cur.Other[key], val)
		return nil
	}
	// Single-valued keys: a second one would leave the element ambiguous.
	if p.seen&(1<<f) != 0 {
		return p.errorf(ks, nil, "key %s given twice", snippet(key))
	}
	p.seen |= 1 << f
	switch f {
	case fieldHash:
		p.cur.Hash = val
	case fieldSubject:
		p.cur.Subject = val
	case fieldCert, fieldChain:
		dec, err := url.PathUnescape(val)
		if err != nil {
			return p.errorf(vs, err, "%s is not valid percent-encoding (%v)", key, err)
		}
		if f == fieldCert {
			p.cur.Cert = dec
		} else {
			p.cur.Chain = dec
		}
	}
	return nil
}

// errorf returns an *Error for the element being parsed.
func (p *parser) errorf(offset int, err error, format string, args ...any) error {
	return &Error{Element: len(p.elems), Offset: offset, Reason: fmt.Sprintf(format, args...), Err: err}
}

// fieldOf maps a key to its field. It folds ASCII case only: Unicode folding
// would let "ſubject" (long s) or "\u212Aey" (Kelvin sign) pose as known keys.
func fieldOf(key string) field {
	switch len(key) {
	case 2:
		if equalFoldASCII(key, "by") {
			return fieldBy
		}
	case 3:
		switch {
		case equalFoldASCII(key, "uri"), equalFoldASCII(key, "san"):
			return fieldURI
		case equalFoldASCII(key, "dns"):
			return fieldDNS
		}
	case 4:
		switch {
		case equalFoldASCII(key, "hash"):
			return fieldHash
		case equalFoldASCII(key, "cert"):
			return fieldCert
		}
	case 5:
		if equalFoldASCII(key, "chain") {
			return fieldChain
		}
	case 7:
		if equalFoldASCII(key, "subject") {
			return fieldSubject
		}
	}
	return fieldOther
}

// equalFoldASCII reports whether s equals lower, a lower-case ASCII word of the
// same length, ignoring ASCII case.
func equalFoldASCII(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// unescape turns \" into " and \\ into \ and keeps every other backslash.
func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
			i++
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String()
}

// trim returns the bounds of s[i:j] without surrounding spaces and tabs.
func trim(s string, i, j int) (int, int) {
	for i < j && isBlankByte(s[i]) {
		i++
	}
	for j > i && isBlankByte(s[j-1]) {
		j--
	}
	return i, j
}

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isBlankByte(s[i]) {
			return false
		}
	}
	return true
}

func isBlankByte(c byte) bool { return c == ' ' || c == '\t' }

// snippet quotes s for an error message, cut short so that one bad pair in a
// 64 KiB header does not produce a 64 KiB message.
func snippet(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
