package evidence

import (
	"encoding/hex"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// Canonical encodings: the bytes a record's hash covers.
const (
	// CanonicalV1 is meshproof's own length-prefixed encoding (Canonical),
	// hashed into a chain with the predecessor's hash (ChainHash). Records
	// written before the transparency log keep it.
	CanonicalV1 = 1
	// CanonicalV2 is RFC 8785, the JSON Canonicalization Scheme, of the
	// record without its chain fields (CanonicalJSON): the stored body of
	// the record, and the data of its transparency-log leaf.
	CanonicalV2 = 2
)

// CanonicalJSON returns the record's canonical encoding, version 2: RFC 8785
// (JSON Canonicalization Scheme) of the record's JSON form without "chain".
// Any JCS implementation, in any language, makes the same bytes from the
// same JSON, so a third party can recompute them, and the stores keep these
// bytes as the record itself: what is hashed is what is stored, byte for
// byte.
//
// It is the JSON that encoding/json makes of the record (the same fields,
// the same omitempty rules), canonicalized: members sorted by their names'
// UTF-16 code units, no white space, strings escaped only where JSON
// requires it (", \ and control characters; < > & and U+2028 stay as they
// are), integers in decimal, times in RFC 3339 with nanoseconds in UTC.
// jcs_test.go holds it equal to a JCS library applied to encoding/json's
// output, over every field. The members of each object below are written in
// that sorted order; a field added to Record must be added here, in order.
func (r *Record) CanonicalJSON() []byte {
	w := &jcsWriter{b: make([]byte, 0, 2048)}
	w.b = append(w.b, '{')
	if a := r.Amends; a != nil {
		w.key("amends")
		w.b = append(w.b, '{')
		w.optBool("allowed", a.Allowed)
		w.str("id", a.ID)
		w.end()
	}
	w.decision("decision", &r.Decision)
	w.peer("destination", &r.Destination)
	if len(r.Headers) > 0 {
		w.key("headers")
		w.stringMap(r.Headers)
	}
	w.str("id", r.ID)
	w.key("reasons")
	w.strings(r.Reasons)
	w.optStr("replica", r.Replica)
	w.key("request")
	w.b = append(w.b, '{')
	w.optStr("host", r.Request.Host)
	w.optStr("method", r.Request.Method)
	w.optStr("path", r.Request.Path)
	w.optStr("protocol", r.Request.Protocol)
	w.end()
	w.optStr("request_id", r.RequestID)
	w.peer("source", &r.Source)
	w.optStr("stream_id", r.StreamID)
	w.time("time", r.Time)
	w.key("tls")
	w.b = append(w.b, '{')
	w.optStr("sni", r.TLS.SNI)
	w.end()
	w.optStr("trace_id", r.TraceID)
	if r.Truncated {
		w.key("truncated")
		w.b = append(w.b, "true"...)
	}
	w.str("verdict", string(r.Verdict))
	if x := r.XFCC; x != nil {
		w.key("xfcc")
		w.b = append(w.b, '{')
		if len(x.Elements) > 0 {
			w.key("elements")
			w.b = append(w.b, '[')
			for i := range x.Elements {
				if i > 0 {
					w.b = append(w.b, ',')
				}
				w.element(&x.Elements[i])
			}
			w.b = append(w.b, ']')
		}
		w.optStr("error", x.Error)
		w.str("raw", x.Raw)
		w.end()
	}
	w.end()
	return w.b
}

// LeafHash is the RFC 6962 leaf hash of canonical bytes: SHA-256 of a zero
// byte followed by them.
func LeafHash(canonical []byte) [32]byte { return tlog.RecordHash(canonical) }

// LeafHashHex is LeafHash in lowercase hex, as Chain.Hash holds it for a
// version 2 record.
func LeafHashHex(canonical []byte) string {
	h := LeafHash(canonical)
	return hex.EncodeToString(h[:])
}

// jcsWriter writes JSON objects member by member: a member follows a comma
// unless it opens its object.
type jcsWriter struct{ b []byte }

func (w *jcsWriter) key(k string) {
	if n := len(w.b); n > 0 && w.b[n-1] != '{' {
		w.b = append(w.b, ',')
	}
	w.quote(k)
	w.b = append(w.b, ':')
}

func (w *jcsWriter) end() { w.b = append(w.b, '}') }

// str writes a member that is always present.
func (w *jcsWriter) str(k, v string) {
	w.key(k)
	w.quote(v)
}

// optStr writes a member that omitempty leaves out when empty.
func (w *jcsWriter) optStr(k, v string) {
	if v != "" {
		w.str(k, v)
	}
}

func (w *jcsWriter) optInt(k string, v int64) {
	if v != 0 {
		w.key(k)
		w.b = strconv.AppendInt(w.b, v, 10)
	}
}

func (w *jcsWriter) optBool(k string, v bool) {
	if v {
		w.key(k)
		w.b = append(w.b, "true"...)
	}
}

// time writes a time as encoding/json does, in UTC.
func (w *jcsWriter) time(k string, t time.Time) {
	w.key(k)
	w.b = append(w.b, '"')
	w.b = t.UTC().AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

// strings writes a list that is always present: null when nil.
func (w *jcsWriter) strings(ss []string) {
	if ss == nil {
		w.b = append(w.b, "null"...)
		return
	}
	w.b = append(w.b, '[')
	for i, s := range ss {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.quote(s)
	}
	w.b = append(w.b, ']')
}

func (w *jcsWriter) optStrings(k string, ss []string) {
	if len(ss) > 0 {
		w.key(k)
		w.strings(ss)
	}
}

func (w *jcsWriter) stringMap(m map[string]string) {
	w.b = append(w.b, '{')
	for i, k := range jcsKeys(m) {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.quote(k)
		w.b = append(w.b, ':')
		w.quote(m[k])
	}
	w.b = append(w.b, '}')
}

func (w *jcsWriter) listMap(m map[string][]string) {
	w.b = append(w.b, '{')
	for i, k := range jcsKeys(m) {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.quote(k)
		w.b = append(w.b, ':')
		w.strings(m[k])
	}
	w.b = append(w.b, '}')
}

func (w *jcsWriter) peer(k string, p *Peer) {
	w.key(k)
	w.b = append(w.b, '{')
	w.optStr("address", p.Address)
	if c := p.Certificate; c != nil {
		w.key("certificate")
		w.b = append(w.b, '{')
		w.optStrings("dns_sans", c.DNSSANs)
		w.optStr("error", c.Error)
		w.optStr("issuer", c.Issuer)
		if !c.NotAfter.IsZero() {
			w.time("not_after", c.NotAfter)
		}
		if !c.NotBefore.IsZero() {
			w.time("not_before", c.NotBefore)
		}
		w.optStr("serial", c.Serial)
		w.str("sha256", c.SHA256)
		w.optStr("subject", c.Subject)
		w.optStrings("uri_sans", c.URISANs)
		w.end()
	}
	w.optInt("port", int64(p.Port))
	w.optStr("principal", p.Principal)
	if s := p.SPIFFE; s != nil {
		w.key("spiffe")
		w.b = append(w.b, '{')
		w.str("id", s.ID)
		w.optStr("namespace", s.Namespace)
		w.optStr("path", s.Path)
		w.optStr("service_account", s.ServiceAccount)
		w.str("trust_domain", s.TrustDomain)
		w.end()
	}
	if wl := p.Workload; wl != nil {
		w.key("workload")
		w.b = append(w.b, '{')
		w.optStr("app", wl.App)
		w.str("kind", wl.Kind)
		w.str("name", wl.Name)
		w.str("namespace", wl.Namespace)
		w.optStr("pod", wl.Pod)
		w.optStr("service_account", wl.ServiceAccount)
		w.key("sidecar")
		w.b = strconv.AppendBool(w.b, wl.Sidecar)
		w.optStr("version", wl.Version)
		w.end()
	}
	w.end()
}

func (w *jcsWriter) element(x *XFCCElement) {
	w.b = append(w.b, '{')
	w.optStrings("by", x.By)
	w.optStr("cert_sha256", x.CertSHA256)
	w.optStrings("dns", x.DNS)
	w.optStr("hash", x.Hash)
	if len(x.Other) > 0 {
		w.key("other")
		w.listMap(x.Other)
	}
	w.optStr("subject", x.Subject)
	w.optStrings("uri", x.URI)
	w.end()
}

func (w *jcsWriter) decision(k string, d *Decision) {
	w.key(k)
	w.b = append(w.b, '{')
	w.key("allowed")
	w.b = strconv.AppendBool(w.b, d.Allowed)
	w.optStr("decision_id", d.DecisionID)
	w.optBool("dry_run", d.DryRun)
	w.optStr("error", d.Error)
	w.optInt("http_status", int64(d.HTTPStatus))
	w.optStr("policy_revision", d.PolicyRevision)
	w.optStr("reason", d.Reason)
	w.end()
}

const hexDigits = "0123456789abcdef"

// load8 is s's eight bytes as a little-endian integer (the compiler makes
// it one load).
func load8(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// needsLook reports whether any of the eight bytes in x is one quote
// must look at: a control character, '"', '\\' or a byte of a multi-byte
// UTF-8 sequence. (The classic "has a zero byte" test, (v - 0x01..) &^ v
// & 0x80.., applied to x, x ^ '"', x ^ '\\' and x - 0x20; no false
// negatives, and a false positive only sends quote to its byte loop.)
func needsLook(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	zero := func(v uint64) uint64 { return (v - lo) &^ v & hi }
	return (x|zero(x^(lo*'"'))|zero(x^(lo*'\\'))|((x-lo*0x20)&^x))&hi != 0
}

// quote writes s as a JSON string the RFC 8785 way: only ", \ and the
// control characters are escaped (with \b \t \n \f \r where JSON has
// them, else \u00xx in lowercase hex). Invalid UTF-8, which Bound never
// lets through, becomes U+FFFD as encoding/json makes it.
func (w *jcsWriter) quote(s string) {
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Eight bytes at a time while none needs a look (most strings).
		for i+8 <= len(s) && !needsLook(load8(s[i:i+8])) {
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				w.b = append(w.b, s[start:i]...)
				w.b = append(w.b, "\ufffd"...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		w.b = append(w.b, s[start:i]...)
		switch c {
		case '"', '\\':
			w.b = append(w.b, '\\', c)
		case '\b':
			w.b = append(w.b, '\\', 'b')
		case '\t':
			w.b = append(w.b, '\\', 't')
		case '\n':
			w.b = append(w.b, '\\', 'n')
		case '\f':
			w.b = append(w.b, '\\', 'f')
		case '\r':
			w.b = append(w.b, '\\', 'r')
		default:
			w.b = append(w.b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}

// jcsKeys returns m's keys in RFC 8785 order: by UTF-16 code units. For
// keys without characters beyond U+FFFF that is byte order.
func jcsKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	wide := false
	for k := range m {
		keys = append(keys, k)
		if !wide {
			for i := 0; i < len(k); i++ {
				if k[i] >= 0xF0 { // a 4-byte UTF-8 sequence: a surrogate pair in UTF-16
					wide = true
					break
				}
			}
		}
	}
	if !wide {
		slices.Sort(keys)
		return keys
	}
	slices.SortFunc(keys, compareUTF16)
	return keys
}

func compareUTF16(a, b string) int {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	return slices.Compare(ua, ub)
}
