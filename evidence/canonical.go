package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"time"
)

// Canonical returns the record's canonical encoding, version 1: the bytes
// its chain hash covers. It leaves out the chain fields (seq, prev_hash,
// hash) and nothing else. The format is fixed; records written years ago
// must hash the same today (canonical_test.go pins it with a golden file):
//
//	encoding = "meshproof-evidence-v1" field*
//	field    = name value             written only when the value is not zero
//	name     = "." len ":" bytes      the field's JSON name
//	value    = string | int | bool | struct | list | map
//	string   = "s" len ":" bytes      len is the byte length, in decimal
//	int      = "i" decimal ";"
//	bool     = "t"                    (false is zero, so never written)
//	struct   = "{" field* "}"
//	list     = "[" len ":" value* "]" of strings or structs, in order
//	map      = "<" len ":" (string value)* ">" keys sorted bytewise
//	time     = string of RFC 3339 with nanoseconds, in UTC
//
// Fields appear in the order of the Record type's declaration. Because a
// zero value is never written, a field added in a later version leaves the
// encoding of records that do not use it unchanged.
func (r *Record) Canonical() []byte {
	e := &encoder{b: make([]byte, 0, 1024)}
	e.b = append(e.b, "meshproof-evidence-v1"...)
	e.str("id", r.ID)
	e.time("time", r.Time)
	e.str("request_id", r.RequestID)
	e.str("stream_id", r.StreamID)
	e.str("trace_id", r.TraceID)
	e.str("replica", r.Replica)
	e.peer("source", &r.Source)
	e.peer("destination", &r.Destination)
	if r.TLS.SNI != "" {
		e.open("tls")
		e.str("sni", r.TLS.SNI)
		e.close()
	}
	if x := r.XFCC; x != nil {
		e.open("xfcc")
		e.str("raw", x.Raw)
		if len(x.Elements) > 0 {
			e.list("elements", len(x.Elements))
			for i := range x.Elements {
				e.element(&x.Elements[i])
			}
			e.b = append(e.b, ']')
		}
		e.str("error", x.Error)
		e.close()
	}
	if r.Request != (Request{}) {
		e.open("request")
		e.str("method", r.Request.Method)
		e.str("host", r.Request.Host)
		e.str("path", r.Request.Path)
		e.str("protocol", r.Request.Protocol)
		e.close()
	}
	e.stringMap("headers", r.Headers)
	e.str("verdict", string(r.Verdict))
	e.strings("reasons", r.Reasons)
	e.decision(&r.Decision)
	e.bool("truncated", r.Truncated)
	if a := r.Amends; a != nil {
		e.open("amends")
		e.str("id", a.ID)
		e.bool("allowed", a.Allowed)
		e.close()
	}
	return e.b
}

// ChainHash is a record's hash given its predecessor's: the lowercase hex
// SHA-256 of the predecessor's hash (64 hex characters, or nothing for the
// first record of a chain) followed by the record's canonical encoding.
func ChainHash(prevHash string, r *Record) string {
	h := sha256.New()
	h.Write([]byte(prevHash))
	h.Write(r.Canonical())
	return hex.EncodeToString(h.Sum(nil))
}

type encoder struct{ b []byte }

func (e *encoder) name(n string) {
	e.b = append(e.b, '.')
	e.b = strconv.AppendInt(e.b, int64(len(n)), 10)
	e.b = append(e.b, ':')
	e.b = append(e.b, n...)
}

func (e *encoder) rawStr(s string) {
	e.b = append(e.b, 's')
	e.b = strconv.AppendInt(e.b, int64(len(s)), 10)
	e.b = append(e.b, ':')
	e.b = append(e.b, s...)
}

func (e *encoder) str(n, s string) {
	if s == "" {
		return
	}
	e.name(n)
	e.rawStr(s)
}

func (e *encoder) int(n string, i int64) {
	if i == 0 {
		return
	}
	e.name(n)
	e.b = append(e.b, 'i')
	e.b = strconv.AppendInt(e.b, i, 10)
	e.b = append(e.b, ';')
}

func (e *encoder) bool(n string, v bool) {
	if v {
		e.name(n)
		e.b = append(e.b, 't')
	}
}

func (e *encoder) time(n string, t time.Time) {
	if !t.IsZero() {
		e.str(n, t.UTC().Format(time.RFC3339Nano))
	}
}

func (e *encoder) open(n string) {
	e.name(n)
	e.b = append(e.b, '{')
}

func (e *encoder) close() { e.b = append(e.b, '}') }

func (e *encoder) list(n string, count int) {
	e.name(n)
	e.b = append(e.b, '[')
	e.b = strconv.AppendInt(e.b, int64(count), 10)
	e.b = append(e.b, ':')
}

func (e *encoder) strings(n string, ss []string) {
	if len(ss) == 0 {
		return
	}
	e.list(n, len(ss))
	for _, s := range ss {
		e.rawStr(s)
	}
	e.b = append(e.b, ']')
}

func (e *encoder) mapHead(n string, count int) {
	e.name(n)
	e.b = append(e.b, '<')
	e.b = strconv.AppendInt(e.b, int64(count), 10)
	e.b = append(e.b, ':')
}

func (e *encoder) stringMap(n string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	e.mapHead(n, len(m))
	for _, k := range sortedKeys(m) {
		e.rawStr(k)
		e.rawStr(m[k])
	}
	e.b = append(e.b, '>')
}

func (e *encoder) listMap(n string, m map[string][]string) {
	if len(m) == 0 {
		return
	}
	e.mapHead(n, len(m))
	for _, k := range sortedKeys(m) {
		e.rawStr(k)
		vs := m[k]
		e.b = append(e.b, '[')
		e.b = strconv.AppendInt(e.b, int64(len(vs)), 10)
		e.b = append(e.b, ':')
		for _, v := range vs {
			e.rawStr(v)
		}
		e.b = append(e.b, ']')
	}
	e.b = append(e.b, '>')
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (e *encoder) peer(n string, p *Peer) {
	if p.Address == "" && p.Port == 0 && p.Principal == "" && p.SPIFFE == nil && p.Certificate == nil {
		return
	}
	e.open(n)
	e.str("address", p.Address)
	e.int("port", int64(p.Port))
	e.str("principal", p.Principal)
	if s := p.SPIFFE; s != nil {
		e.open("spiffe")
		e.str("id", s.ID)
		e.str("trust_domain", s.TrustDomain)
		e.str("path", s.Path)
		e.str("namespace", s.Namespace)
		e.str("service_account", s.ServiceAccount)
		e.close()
	}
	if c := p.Certificate; c != nil {
		e.open("certificate")
		e.str("sha256", c.SHA256)
		e.str("serial", c.Serial)
		e.str("subject", c.Subject)
		e.str("issuer", c.Issuer)
		e.time("not_before", c.NotBefore)
		e.time("not_after", c.NotAfter)
		e.strings("uri_sans", c.URISANs)
		e.strings("dns_sans", c.DNSSANs)
		e.str("error", c.Error)
		e.close()
	}
	e.close()
}

func (e *encoder) element(x *XFCCElement) {
	e.b = append(e.b, '{')
	e.strings("by", x.By)
	e.str("hash", x.Hash)
	e.str("subject", x.Subject)
	e.strings("uri", x.URI)
	e.strings("dns", x.DNS)
	e.str("cert_sha256", x.CertSHA256)
	e.listMap("other", x.Other)
	e.b = append(e.b, '}')
}

func (e *encoder) decision(d *Decision) {
	e.open("decision")
	e.bool("allowed", d.Allowed)
	e.int("http_status", int64(d.HTTPStatus))
	e.str("decision_id", d.DecisionID)
	e.str("policy_revision", d.PolicyRevision)
	e.bool("dry_run", d.DryRun)
	e.str("reason", d.Reason)
	e.str("error", d.Error)
	e.close()
}
