// Package xfcc parses Envoy's x-forwarded-client-cert (XFCC) header.
//
// A header value is a comma-separated list of elements, one per proxy hop,
// each a semicolon-separated list of key=value pairs. Every hop appends its
// element on the right, so the rightmost element (see [Rightmost]) is the one
// written by the proxy that called us; the elements to its left are claims
// made by upstream hops and prove nothing on their own.
//
// Keys are case-insensitive and the known ones (By, Hash, Cert, Chain,
// Subject, URI, DNS, and the legacy SAN, read as URI) land in the fields of
// [Element]; any other key is kept in Element.Other rather than rejected, so a
// newer Envoy that adds keys does not break parsing. Values that hold ',' ';'
// or '=' are double-quoted; inside quotes \" and \\ are escapes and any other
// backslash, such as the RFC 2253 \, in a Subject, is kept as written. A value
// that is not quoted is taken verbatim and may contain '=' (Envoy writes URI
// SANs unquoted).
//
// [Parse] is strict about structure, because a header it cannot read
// unambiguously is not evidence: an unmatched quote, a pair without '=', an
// empty pair or element, a quote inside an unquoted value, a known
// single-valued key given twice in one element, or a Cert or Chain that is
// not valid percent-encoding all fail the whole header with an [*Error] that
// names the element (counting from 0 at the left) and the byte offset
// (counting from 0). Work is bounded: headers over [MaxHeaderBytes] are
// refused before they are scanned, parsing is a single linear pass, and
// string values share the header's memory unless they had to be unescaped.
package xfcc
