package xfcc

import (
	"net/url"
	"sort"
	"strings"
)

// encodeOptions vary how encode spells a header, to exercise the parser's
// tolerance without changing what the header means.
type encodeOptions struct {
	upperKeys bool // write known keys in upper case ("BY", "URI")
	legacySAN bool // write URI values under the old "SAN" key
	spaces    bool // put blanks around elements and pairs
}

// encode writes elems as an XFCC header, quoting values that need it. It is
// the inverse of Parse for elements whose lists are nil rather than empty and
// whose Other keys are valid keys that are not known ones.
func encode(elems []Element, o encodeOptions) string {
	var b strings.Builder
	for i, e := range elems {
		if i > 0 {
			b.WriteByte(',')
		}
		n := 0
		put := func(key, val string) {
			if n > 0 {
				b.WriteByte(';')
			}
			n++
			if o.spaces {
				b.WriteString(" \t")
			}
			if o.upperKeys && fieldOf(key) != fieldOther {
				key = strings.ToUpper(key)
			}
			b.WriteString(key)
			b.WriteByte('=')
			b.WriteString(quote(val))
			if o.spaces {
				b.WriteByte(' ')
			}
		}
		for _, v := range e.By {
			put("By", v)
		}
		if e.Hash != "" {
			put("Hash", e.Hash)
		}
		if e.Cert != "" {
			put("Cert", url.PathEscape(e.Cert))
		}
		if e.Chain != "" {
			put("Chain", url.PathEscape(e.Chain))
		}
		if e.Subject != "" {
			put("Subject", e.Subject)
		}
		uriKey := "URI"
		if o.legacySAN {
			uriKey = "SAN"
		}
		for _, v := range e.URI {
			put(uriKey, v)
		}
		for _, v := range e.DNS {
			put("DNS", v)
		}
		keys := make([]string, 0, len(e.Other))
		for k := range e.Other {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range e.Other[k] {
				put(k, v)
			}
		}
		if n == 0 {
			// An element needs a pair; "Hash=" parses back to the zero Element.
			put("Hash", "")
		}
	}
	return b.String()
}

// quote returns v as an XFCC value: as is when that is unambiguous, else
// double-quoted with '"' and '\' escaped.
func quote(v string) string {
	needs := strings.ContainsAny(v, `,;="\`) ||
		(v != "" && (isBlankByte(v[0]) || isBlankByte(v[len(v)-1])))
	if !needs {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}
