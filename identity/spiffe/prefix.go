package spiffe

import "strings"

// HasPrefix reports whether id equals prefix or lies below it on a path-segment boundary: prefix "spiffe://td/ns/prod" matches "spiffe://td/ns/prod" and "spiffe://td/ns/prod/sa/x" but not "spiffe://td/ns/production". A prefix ending in "/" matches anything below it. An empty id never matches anything (an empty principal is not a wildcard).
//
// HasPrefix compares strings and does not validate id (Parse does that), but
// the part of id below prefix must be segments that are neither empty nor
// "." nor "..", so "spiffe://td/ns/prod/../admin" does not match
// "spiffe://td/ns/prod". An empty prefix matches nothing either.
func HasPrefix(id, prefix string) bool {
	if id == "" || prefix == "" || !strings.HasPrefix(id, prefix) {
		return false
	}
	if len(id) == len(prefix) {
		return true
	}
	rest := id[len(prefix):]
	if prefix[len(prefix)-1] != '/' {
		if rest[0] != '/' {
			return false // "spiffe://td/ns/prod" is not a prefix of ".../production"
		}
		rest = rest[1:]
	}
	return plainSegments(rest)
}

// plainSegments reports whether rest is one or more '/'-separated segments,
// none of them empty, "." or "..".
func plainSegments(rest string) bool {
	for {
		seg, more, found := strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		if !found {
			return true
		}
		rest = more
	}
}
