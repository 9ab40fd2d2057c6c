package evidence

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits on one record: evidence is kept for a year or more and copied to
// auditors, so a hostile request must not make it huge. A field over its
// limit is cut and the record marked Truncated.
const (
	MaxFieldBytes = 2048  // any string field
	MaxRawBytes   = 16384 // the raw XFCC header
	MaxListItems  = 32    // reasons, SANs, XFCC values, header allowlist entries
	MaxElements   = 16    // XFCC elements kept (the newest ones)
)

// neverKept are request headers a record never keeps, whatever the
// allowlist says: they carry credentials.
var neverKept = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true,
	"x-api-key": true,
}

// NeverKept reports whether a header is never kept in evidence.
func NeverKept(name string) bool { return neverKept[strings.ToLower(name)] }

// Bound makes r safe to store and to hash: strings become valid UTF-8
// without NUL bytes (so that every store and every JSON round trip keeps
// them byte for byte), and over-long fields are cut, setting Truncated.
// Parts of r shared with other records (peers, XFCC) are copied before any
// change, never modified in place.
func Bound(r *Record) {
	b := bounder{}
	for _, s := range []*string{&r.ID, &r.RequestID, &r.StreamID, &r.TraceID, &r.Replica,
		&r.Request.Method, &r.Request.Host, &r.Request.Path, &r.Request.Protocol, &r.TLS.SNI,
		&r.Decision.DecisionID, &r.Decision.PolicyRevision, &r.Decision.Reason, &r.Decision.Error} {
		*s = b.str(*s, MaxFieldBytes)
	}
	r.Reasons = b.list(r.Reasons)
	b.peer(&r.Source)
	b.peer(&r.Destination)
	if r.XFCC != nil && b.xfccNeedsWork(r.XFCC) {
		r.XFCC = b.xfcc(r.XFCC)
	}
	if len(r.Headers) > 0 {
		r.Headers = b.headers(r.Headers)
	}
	if b.cut {
		r.Truncated = true
		r.Reasons = append(slices.Clip(r.Reasons), ReasonTruncated)
	}
	if b.dirty {
		r.Reasons = append(slices.Clip(r.Reasons), ReasonReplacedBytes)
	}
}

// Reasons Bound adds to a record it had to change.
const (
	ReasonTruncated     = "evidence: fields cut to size limits"
	ReasonReplacedBytes = "evidence: invalid UTF-8 or NUL bytes replaced"
)

type bounder struct{ cut, dirty bool }

func clean(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func (b *bounder) str(s string, max int) string {
	if len(s) <= max && clean(s) {
		return s
	}
	if len(s) > max {
		b.cut = true
		s = s[:max]
		// Do not leave half a character behind (at most UTFMax-1 bytes).
		for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
			if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size > 1 {
				break
			}
			s = s[:len(s)-1]
		}
	}
	if !clean(s) {
		b.dirty = true
		s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	}
	return s
}

func (b *bounder) list(ss []string) []string {
	ok := len(ss) <= MaxListItems
	for _, s := range ss {
		ok = ok && len(s) <= MaxFieldBytes && clean(s)
	}
	if ok {
		return ss
	}
	if len(ss) > MaxListItems {
		b.cut = true
		ss = ss[:MaxListItems]
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = b.str(s, MaxFieldBytes)
	}
	return out
}

func (b *bounder) peer(p *Peer) {
	p.Address = b.str(p.Address, MaxFieldBytes)
	p.Principal = b.str(p.Principal, MaxFieldBytes)
	if s := p.SPIFFE; s != nil && !(clean(s.ID) && len(s.ID) <= MaxFieldBytes) {
		p.SPIFFE = nil // only valid IDs parse: this cannot be one
	}
	if c := p.Certificate; c != nil {
		cc := *c
		for _, s := range []*string{&cc.SHA256, &cc.Serial, &cc.Subject, &cc.Issuer, &cc.Error} {
			*s = b.str(*s, MaxFieldBytes)
		}
		cc.URISANs, cc.DNSSANs = b.list(cc.URISANs), b.list(cc.DNSSANs)
		p.Certificate = &cc
	}
	if w := p.Workload; w != nil {
		ww := *w // shared by the records of the workload: copied, never changed
		for _, s := range []*string{&ww.Namespace, &ww.Kind, &ww.Name, &ww.Pod, &ww.ServiceAccount, &ww.App, &ww.Version} {
			*s = b.str(*s, MaxFieldBytes)
		}
		if ww != *w {
			p.Workload = &ww
		}
	}
}

func (b *bounder) xfccNeedsWork(x *XFCC) bool {
	if len(x.Raw) > MaxRawBytes || !clean(x.Raw) || len(x.Error) > MaxFieldBytes || !clean(x.Error) || len(x.Elements) > MaxElements {
		return true
	}
	for _, e := range x.Elements {
		for _, s := range append(append(append([]string{e.Hash, e.Subject, e.CertSHA256}, e.By...), e.URI...), e.DNS...) {
			if len(s) > MaxFieldBytes || !clean(s) {
				return true
			}
		}
		if len(e.By) > MaxListItems || len(e.URI) > MaxListItems || len(e.DNS) > MaxListItems || len(e.Other) > 0 {
			return true
		}
	}
	return false
}

func (b *bounder) xfcc(x *XFCC) *XFCC {
	out := &XFCC{Raw: b.str(x.Raw, MaxRawBytes), Error: b.str(x.Error, MaxFieldBytes)}
	elems := x.Elements
	if len(elems) > MaxElements {
		b.cut = true
		elems = elems[len(elems)-MaxElements:] // the newest speak for the nearest hops
	}
	for _, e := range elems {
		ne := XFCCElement{
			By: b.list(e.By), Hash: b.str(e.Hash, MaxFieldBytes), Subject: b.str(e.Subject, MaxFieldBytes),
			URI: b.list(e.URI), DNS: b.list(e.DNS), CertSHA256: b.str(e.CertSHA256, MaxFieldBytes),
		}
		if len(e.Other) > 0 {
			ne.Other = make(map[string][]string, len(e.Other))
			n := 0
			for k, vs := range e.Other {
				if n == MaxListItems {
					b.cut = true
					break
				}
				ne.Other[b.str(k, MaxFieldBytes)] = b.list(vs)
				n++
			}
		}
		out.Elements = append(out.Elements, ne)
	}
	return out
}

func (b *bounder) headers(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(out) == MaxListItems {
			b.cut = true
			break
		}
		out[b.str(k, MaxFieldBytes)] = b.str(v, MaxFieldBytes)
	}
	return out
}
