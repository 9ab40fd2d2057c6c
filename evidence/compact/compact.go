// Package compact splits an evidence record into its shape, what every
// request of an edge shares, and its rest, what each request has of its own,
// and joins them back: the storage codec of issue 15, not yet used by any
// store.
//
// The shape is the record's canonical JSON (Record.CanonicalJSON) with the
// per-request fields blanked: two records of the same edge, method and
// decision give the same bytes, so a store can keep it once and refer to
// it. The rest is a small binary: a version byte, one 4-bit tag per field
// (two to a byte) saying how the field is written, then the fields. Each
// field has a raw form (length and bytes) so that any record round-trips,
// and the common forms have shorter ones (a ULID as its 16 bytes, a UUID
// as 16 bytes, 32 hex digits as 16 bytes, a decimal stream id as a
// varint, a decision id equal to the id as nothing). Join(Split(r)) has
// r's Canonical and CanonicalJSON bytes, so hashes stay valid.
package compact

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
)

// Version is the first byte of every rest this package writes.
const Version = 1

// Bounds on Join's input: a bounded record (evidence.Bound) is far below
// both.
const (
	MaxShapeBytes = 1 << 20
	MaxRestBytes  = 64 << 10
)

// The per-request fields, in the order their tags and values are written.
const (
	fID = iota
	fTime
	fRequestID
	fStreamID
	fTraceID
	fSourcePort
	fDecisionID
	fPath
	fAmendsID
	fSeq
	fPrevHash
	fHash
	fChainVersion
	nFields
)

var fieldNames = [nFields]string{"id", "time", "request_id", "stream_id", "trace_id", "source.port",
	"decision.decision_id", "request.path", "amends.id", "chain.seq", "chain.prev_hash", "chain.hash", "chain.version"}

// Tags: how a field is written. Not every tag applies to every field.
const (
	tEmpty   = 0 // the zero value: nothing written
	tRaw     = 1 // uvarint length, bytes
	tULID    = 2 // 16 bytes, the canonical 26-character ULID text
	tUUID    = 3 // 16 bytes, canonical lowercase UUID text (8-4-4-4-12)
	tHex16   = 4 // 16 bytes, 32 lowercase hex digits
	tHex32   = 5 // 32 bytes, 64 lowercase hex digits
	tUvarint = 6 // uvarint, a canonical decimal (stream id) or the number itself
	tVarint  = 7 // zigzag varint (chain version)
	tTime    = 8 // zigzag varint Unix seconds, uvarint nanoseconds (< 1e9)
	tSameID  = 9 // equal to the record's id (decision id) or to its amended id (amends id)
	// Stored rests only (SplitStored, JoinStored):
	tOutside = 10 // kept by the store in its own column (Outside)
	tCheck   = 11 // chain.hash of version 2: its first checkBytes bytes, the rest recomputed
)

// Split returns rec's shape and rest. It fails when the shape would not
// decode to the same record: strings that are not valid UTF-8 (a bounded
// record has none).
func Split(rec *evidence.Record) (shape, rest []byte, err error) {
	shape, err = splitShape(rec)
	if err != nil {
		return nil, nil, err
	}
	rest, err = appendRest(make([]byte, 0, 128), rec, false)
	if err != nil {
		return nil, nil, err
	}
	if len(rest) > MaxRestBytes {
		return nil, nil, fmt.Errorf("compact: rest of %d bytes, more than %d", len(rest), MaxRestBytes)
	}
	return shape, rest, nil
}

// splitShape is rec's shape.
func splitShape(rec *evidence.Record) ([]byte, error) {
	b := blanked(rec)
	shape := b.CanonicalJSON()
	// CanonicalJSON writes a byte that is not UTF-8 as U+FFFD: the shape
	// would decode to another record. Only then look at the raw strings
	// (Canonical writes them as they are).
	if bytes.Contains(shape, []byte("\ufffd")) && !utf8.Valid(b.Canonical()) {
		return nil, errors.New("compact: the record has a string that is not valid UTF-8 (outside id, path and the other per-request fields)")
	}
	if len(shape) > MaxShapeBytes {
		return nil, fmt.Errorf("compact: shape of %d bytes, more than %d", len(shape), MaxShapeBytes)
	}
	return shape, nil
}

// blanked is rec with its per-request fields blanked: its shape.
func blanked(rec *evidence.Record) *evidence.Record {
	b := *rec
	b.ID, b.Time, b.RequestID, b.StreamID, b.TraceID = "", time.Time{}, "", "", ""
	b.Source.Port = 0
	b.Decision.DecisionID = ""
	b.Request.Path = ""
	b.Chain = evidence.Chain{}
	if rec.Amends != nil {
		a := *rec.Amends
		a.ID = ""
		b.Amends = &a
	}
	return &b
}

type field struct {
	tag byte
	val []byte
}

// appendRest appends r's rest. A stored rest (SplitStored) leaves out what
// the store keeps in its columns (see Outside) and keeps only a check of a
// version 2 hash.
func appendRest(out []byte, r *evidence.Record, stored bool) ([]byte, error) {
	var fs [nFields]field
	fs[fID] = idField(r.ID)
	if !r.Time.IsZero() {
		if stored && timeOutside(r.Time) {
			fs[fTime] = field{tag: tOutside}
		} else {
			v := binary.AppendVarint(nil, r.Time.Unix())
			fs[fTime] = field{tTime, binary.AppendUvarint(v, uint64(r.Time.Nanosecond()))}
		}
	}
	fs[fRequestID] = uuidField(r.RequestID)
	fs[fStreamID] = decimalField(r.StreamID)
	fs[fTraceID] = hexField(r.TraceID, 16)
	if r.Source.Port != 0 {
		fs[fSourcePort] = field{tUvarint, binary.AppendUvarint(nil, uint64(r.Source.Port))}
	}
	if d := r.Decision.DecisionID; d != "" && d == r.ID {
		fs[fDecisionID] = field{tag: tSameID}
	} else {
		fs[fDecisionID] = rawField(d)
	}
	fs[fPath] = rawField(r.Request.Path)
	if a := r.Amends; a != nil && a.ID != "" {
		if a.ID+evidence.AmendmentSuffix == r.ID {
			fs[fAmendsID] = field{tag: tSameID}
		} else {
			fs[fAmendsID] = rawField(a.ID)
		}
	}
	if r.Chain.Seq != 0 {
		fs[fSeq] = field{tUvarint, binary.AppendUvarint(nil, r.Chain.Seq)}
	}
	fs[fPrevHash] = hexField(r.Chain.PrevHash, 32)
	fs[fHash] = hexField(r.Chain.Hash, 32)
	if r.Chain.Version != 0 {
		fs[fChainVersion] = field{tVarint, binary.AppendVarint(nil, int64(r.Chain.Version))}
	}
	if stored {
		for _, i := range [...]int{fID, fRequestID, fPath, fSeq} {
			if fs[i].tag != tEmpty {
				fs[i] = field{tag: tOutside}
			}
		}
		if r.Chain.Version == evidence.CanonicalV2 && fs[fHash].tag == tHex32 {
			fs[fHash] = field{tCheck, fs[fHash].val[:checkBytes]}
		}
	}
	if stored && commonLayout(&fs) {
		// The usual stored rest: its tags and chain version implied.
		out = append(out, VersionCommon)
		for _, f := range fs[:fChainVersion] {
			out = append(out, f.val...)
		}
		return out, nil
	}
	out = append(out, Version)
	for i := 0; i < nFields; i += 2 {
		t := fs[i].tag
		if i+1 < nFields {
			t |= fs[i+1].tag << 4
		}
		out = append(out, t)
	}
	for _, f := range fs {
		if f.tag == tRaw {
			out = binary.AppendUvarint(out, uint64(len(f.val)))
		}
		out = append(out, f.val...)
	}
	return out, nil
}

func rawField(s string) field {
	if s == "" {
		return field{}
	}
	return field{tRaw, []byte(s)}
}

func idField(s string) field {
	if len(s) == ulid.EncodedSize {
		if u, err := ulid.ParseStrict(s); err == nil && u.String() == s {
			return field{tULID, u[:]}
		}
	}
	return rawField(s)
}

func uuidField(s string) field {
	if len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' {
		h := s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
		if isLowerHex(h) {
			v, _ := hex.DecodeString(h)
			return field{tUUID, v}
		}
	}
	return rawField(s)
}

func hexField(s string, n int) field {
	if len(s) == 2*n && isLowerHex(s) {
		v, _ := hex.DecodeString(s)
		if n == 16 {
			return field{tHex16, v}
		}
		return field{tHex32, v}
	}
	return rawField(s)
}

func decimalField(s string) field {
	if v, err := strconv.ParseUint(s, 10, 64); err == nil && strconv.FormatUint(v, 10) == s {
		return field{tUvarint, binary.AppendUvarint(nil, v)}
	}
	return rawField(s)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Join is the record whose shape and rest these are (Split's inverse). It
// refuses input over MaxShapeBytes or MaxRestBytes, a rest of another
// version, truncated or with bytes left over, and tags a field cannot have.
func Join(shape, rest []byte) (*evidence.Record, error) {
	if len(shape) > MaxShapeBytes {
		return nil, fmt.Errorf("compact: shape of %d bytes, more than %d", len(shape), MaxShapeBytes)
	}
	tags, body, err := restTags(rest)
	if err != nil {
		return nil, err
	}
	var r evidence.Record
	if err := json.Unmarshal(shape, &r); err != nil {
		return nil, fmt.Errorf("compact: shape: %w", err)
	}
	if err := applyRest(&r, tags, body, nil); err != nil {
		return nil, err
	}
	return &r, nil
}

// restTags checks a rest's size, version and tags, and returns the tags and
// the field bytes after them.
func restTags(rest []byte) (tags [nFields]byte, body []byte, err error) {
	if len(rest) > MaxRestBytes {
		return tags, nil, fmt.Errorf("compact: rest of %d bytes, more than %d", len(rest), MaxRestBytes)
	}
	if len(rest) == 0 {
		return tags, nil, errors.New("compact: empty rest")
	}
	if rest[0] == VersionCommon {
		// The chain version, 2, as its zigzag varint after the fields.
		return commonTags, append(rest[1:len(rest):len(rest)], 4), nil
	}
	if rest[0] != Version {
		return tags, nil, fmt.Errorf("compact: rest version %d, want %d", rest[0], Version)
	}
	ntags := (nFields + 1) / 2
	if len(rest) < 1+ntags {
		return tags, nil, errors.New("compact: rest truncated in its tags")
	}
	for i := range tags {
		t := rest[1+i/2]
		if i%2 == 1 {
			t >>= 4
		}
		tags[i] = t & 0x0f
	}
	if nFields%2 == 1 && rest[ntags]>>4 != 0 {
		return tags, nil, errors.New("compact: rest has a tag past its last field")
	}
	return tags, rest[1+ntags:], nil
}

// applyRest sets r's per-request fields from a rest's tags and fields, the
// stored columns from out (nil for a rest of Split).
func applyRest(r *evidence.Record, tags [nFields]byte, body []byte, out *Outside) error {
	d := decoder{b: body, out: out}
	for i := 0; i < nFields; i++ {
		if err := d.field(r, i, tags[i]); err != nil {
			return fmt.Errorf("compact: rest: %s: %w", fieldNames[i], err)
		}
	}
	if len(d.b) != 0 {
		return fmt.Errorf("compact: rest has %d bytes after its last field", len(d.b))
	}
	if d.check != nil {
		if r.Chain.Version != evidence.CanonicalV2 {
			return fmt.Errorf("compact: rest: chain.hash: a check of a record of canonical encoding v%d", max(r.Chain.Version, 1))
		}
		h := evidence.LeafHash(r.CanonicalJSON())
		r.Chain.Hash = hex.EncodeToString(h[:])
		if !bytes.Equal(h[:checkBytes], d.check) {
			return fmt.Errorf("%w: the record hashes to %.12s, its check says %x", ErrCheck, r.Chain.Hash, d.check)
		}
	}
	return nil
}

type decoder struct {
	b     []byte
	out   *Outside // a stored rest's columns
	check []byte   // a stored rest's check of chain.hash
}

var errTruncated = errors.New("truncated")

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.b) {
		return nil, errTruncated
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		return 0, errors.New("bad uvarint")
	}
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) varint() (int64, error) {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		return 0, errors.New("bad varint")
	}
	d.b = d.b[n:]
	return v, nil
}

// str decodes a string field: tEmpty, tRaw, or the typed forms in ok.
func (d *decoder) str(tag byte, ok ...byte) (string, error) {
	switch tag {
	case tEmpty:
		return "", nil
	case tRaw:
		n, err := d.uvarint()
		if err != nil {
			return "", err
		}
		if n == 0 || n > uint64(len(d.b)) {
			return "", fmt.Errorf("raw length %d with %d bytes left", n, len(d.b))
		}
		v, _ := d.take(int(n))
		return string(v), nil
	}
	if !bytes.Contains(ok, []byte{tag}) {
		return "", fmt.Errorf("tag %d not valid here", tag)
	}
	switch tag {
	case tULID:
		v, err := d.take(16)
		if err != nil {
			return "", err
		}
		var u ulid.ULID
		copy(u[:], v)
		return u.String(), nil
	case tUUID:
		v, err := d.take(16)
		if err != nil {
			return "", err
		}
		h := hex.EncodeToString(v)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
	case tHex16, tHex32:
		n := 16
		if tag == tHex32 {
			n = 32
		}
		v, err := d.take(n)
		if err != nil {
			return "", err
		}
		return hex.EncodeToString(v), nil
	case tUvarint:
		v, err := d.uvarint()
		if err != nil {
			return "", err
		}
		return strconv.FormatUint(v, 10), nil
	}
	return "", fmt.Errorf("tag %d not valid here", tag)
}

func (d *decoder) field(r *evidence.Record, i int, tag byte) error {
	if tag == tOutside || tag == tCheck {
		return d.stored(r, i, tag)
	}
	var err error
	switch i {
	case fID:
		r.ID, err = d.str(tag, tULID)
	case fTime:
		r.Time = time.Time{}
		switch tag {
		case tEmpty:
		case tTime:
			s, err := d.varint()
			if err != nil {
				return err
			}
			ns, err := d.uvarint()
			if err != nil {
				return err
			}
			if ns >= 1e9 {
				return fmt.Errorf("nanoseconds %d out of range", ns)
			}
			r.Time = time.Unix(s, int64(ns)).UTC()
			if r.Time.IsZero() {
				return errors.New("the zero time written as a time")
			}
		default:
			return fmt.Errorf("tag %d not valid here", tag)
		}
	case fRequestID:
		r.RequestID, err = d.str(tag, tUUID)
	case fStreamID:
		r.StreamID, err = d.str(tag, tUvarint)
	case fTraceID:
		r.TraceID, err = d.str(tag, tHex16)
	case fSourcePort:
		r.Source.Port = 0
		switch tag {
		case tEmpty:
		case tUvarint:
			v, err := d.uvarint()
			if err != nil {
				return err
			}
			if v == 0 || v > math.MaxUint32 {
				return fmt.Errorf("port %d out of range", v)
			}
			r.Source.Port = uint32(v)
		default:
			return fmt.Errorf("tag %d not valid here", tag)
		}
	case fDecisionID:
		if tag == tSameID {
			if r.ID == "" {
				return errors.New("equal to an empty id")
			}
			r.Decision.DecisionID = r.ID
			return nil
		}
		r.Decision.DecisionID, err = d.str(tag)
	case fPath:
		r.Request.Path, err = d.str(tag)
	case fAmendsID:
		if tag != tEmpty && r.Amends == nil {
			return errors.New("set on a record whose shape has no amends")
		}
		if tag == tSameID {
			id, ok := strings.CutSuffix(r.ID, evidence.AmendmentSuffix)
			if !ok || id == "" {
				return errors.New("equal to the amended id of a record that is no amendment")
			}
			r.Amends.ID = id
			return nil
		}
		var s string
		s, err = d.str(tag)
		if r.Amends != nil {
			r.Amends.ID = s
		}
	case fSeq:
		r.Chain.Seq = 0
		switch tag {
		case tEmpty:
		case tUvarint:
			v, err := d.uvarint()
			if err != nil {
				return err
			}
			if v == 0 {
				return errors.New("zero written as a number")
			}
			r.Chain.Seq = v
		default:
			return fmt.Errorf("tag %d not valid here", tag)
		}
	case fPrevHash:
		r.Chain.PrevHash, err = d.str(tag, tHex32)
	case fHash:
		r.Chain.Hash, err = d.str(tag, tHex32)
	case fChainVersion:
		r.Chain.Version = 0
		switch tag {
		case tEmpty:
		case tVarint:
			v, err := d.varint()
			if err != nil {
				return err
			}
			if v == 0 || v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("version %d out of range", v)
			}
			r.Chain.Version = int(v)
		default:
			return fmt.Errorf("tag %d not valid here", tag)
		}
	}
	return err
}

// stored sets a field a stored rest leaves to the store's columns
// (tOutside) or checks (tCheck).
func (d *decoder) stored(r *evidence.Record, i int, tag byte) error {
	if d.out == nil {
		return fmt.Errorf("tag %d not valid here (a stored rest: JoinStored)", tag)
	}
	switch {
	case tag == tCheck && i == fHash:
		v, err := d.take(checkBytes)
		if err != nil {
			return err
		}
		d.check = v
		return nil
	case tag == tCheck:
	case i == fID:
		if d.out.ID == "" {
			return errors.New("kept in a column, but the column is empty")
		}
		r.ID = d.out.ID
		return nil
	case i == fTime:
		r.Time = time.Unix(0, d.out.TimeNS).UTC()
		return nil
	case i == fRequestID:
		if d.out.RequestID == "" {
			return errors.New("kept in a column, but the column is empty")
		}
		r.RequestID = d.out.RequestID
		return nil
	case i == fPath:
		if d.out.Path == "" {
			return errors.New("kept in a column, but the column is empty")
		}
		r.Request.Path = d.out.Path
		return nil
	case i == fSeq:
		if d.out.Seq == 0 {
			return errors.New("kept in a column, but the column is zero")
		}
		r.Chain.Seq = d.out.Seq
		return nil
	}
	return fmt.Errorf("tag %d not valid here", tag)
}
