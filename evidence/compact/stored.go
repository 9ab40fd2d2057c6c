package compact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
)

// A store keeps a record as its shape (interned: a number in the row), a
// stored rest, and columns of its own: Outside. A stored rest leaves out
// what the columns hold (the id, the time when the time column holds it
// exactly, the request id, the path, the seq) and, of a version 2 record, the chain
// hash but for its first checkBytes bytes: JoinStored recomputes the hash
// (the RFC 6962 leaf hash of the canonical bytes) and compares it with the
// check, so that Verify names a record edited behind the store's back
// (one whose check is rewritten too is found by the log, whose tiles and
// root no longer match its leaves). A version 1 record keeps its prev_hash
// and hash whole.

// VersionCommon is the first byte of a stored rest in the usual layout
// (commonTags): a record of a chain of version 2 whose id, time, request
// id, path and seq are in the store's columns, stream id and source port
// numbers, trace id 32 hex digits, decision id its id. Its tags and chain
// version are not written (7 bytes fewer).
const VersionCommon = 2

var commonTags = [nFields]byte{fID: tOutside, fTime: tOutside, fRequestID: tOutside, fStreamID: tUvarint,
	fTraceID: tHex16, fSourcePort: tUvarint, fDecisionID: tSameID, fPath: tOutside, fSeq: tOutside,
	fHash: tCheck, fChainVersion: tVarint}

// commonLayout says whether fs's tags are commonTags and its chain
// version 2.
func commonLayout(fs *[nFields]field) bool {
	for i, f := range fs {
		if f.tag != commonTags[i] {
			return false
		}
	}
	return len(fs[fChainVersion].val) == 1 && fs[fChainVersion].val[0] == 4
}

// checkBytes is the length of a stored rest's check of a version 2 hash.
const checkBytes = 4

// ErrCheck: a stored record no longer hashes to the check its rest keeps
// (edited behind the store's back). JoinStored returns the record along
// with it.
var ErrCheck = errors.New("the stored record no longer matches its hash (edited?)")

// Outside is what a store keeps of a record in its own columns.
type Outside struct {
	ID string
	// TimeNS is evidence.Nanos(Time), as the time column holds it.
	TimeNS    int64
	RequestID string
	Path      string
	Seq       uint64
}

// OutsideOf is what a store keeps of r in its columns.
func OutsideOf(r *evidence.Record) Outside {
	return Outside{ID: r.ID, TimeNS: evidence.Nanos(r.Time), RequestID: r.RequestID, Path: r.Request.Path, Seq: r.Chain.Seq}
}

// timeOutside says whether the time column (Unix nanoseconds) holds t
// exactly.
func timeOutside(t time.Time) bool {
	return t.Equal(time.Unix(0, evidence.Nanos(t)))
}

// SplitStored returns rec's shape and its stored rest, to keep beside
// OutsideOf(rec) in the store's columns. The shape is Split's.
func SplitStored(rec *evidence.Record) (shape, rest []byte, err error) {
	shape, err = splitShape(rec)
	if err != nil {
		return nil, nil, err
	}
	rest, err = StoredRest(rec)
	return shape, rest, err
}

// StoredRest is rec's stored rest alone, for a writer that already knows
// rec's shape.
func StoredRest(rec *evidence.Record) ([]byte, error) {
	rest, err := appendRest(make([]byte, 0, 96), rec, true)
	if err != nil {
		return nil, err
	}
	if len(rest) > MaxRestBytes {
		return nil, fmt.Errorf("compact: rest of %d bytes, more than %d", len(rest), MaxRestBytes)
	}
	return rest, nil
}

// JoinStored is the record of a shape, a stored rest and the columns kept
// beside them (SplitStored's inverse). The chain hash of a version 2
// record is recomputed; when it does not match the rest's check the error
// wraps ErrCheck and the record is returned too.
func JoinStored(shape, rest []byte, out Outside) (*evidence.Record, error) {
	tmpl, err := DecodeShape(shape)
	if err != nil {
		return nil, err
	}
	r, _, err := joinShape(tmpl, rest, out)
	return r, err
}

func joinShape(tmpl *evidence.Record, rest []byte, out Outside) (*evidence.Record, []byte, error) {
	tags, body, err := restTags(rest)
	if err != nil {
		return nil, nil, err
	}
	r := clone(tmpl)
	canonical, err := applyRest(r, tags, body, &out)
	if err != nil {
		if errors.Is(err, ErrCheck) {
			return r, canonical, err
		}
		return nil, nil, err
	}
	return r, canonical, nil
}

// DecodeShape decodes a shape strictly: the bytes must be the canonical
// JSON of a record whose per-request fields are blank, exactly as Split
// makes it, so that every reader of the stored bytes sees the record that
// was hashed. Treat the record as read-only (Shapes shares it).
func DecodeShape(shape []byte) (*evidence.Record, error) {
	if len(shape) > MaxShapeBytes {
		return nil, fmt.Errorf("compact: shape of %d bytes, more than %d", len(shape), MaxShapeBytes)
	}
	var r evidence.Record
	if err := json.Unmarshal(shape, &r); err != nil {
		return nil, fmt.Errorf("compact: shape: %w", err)
	}
	// The canonical JSON of the record blanked: a member the record does
	// not have, a per-request field set, another order or spelling all
	// differ from it.
	if !bytes.Equal(blanked(&r).CanonicalJSON(), shape) {
		return nil, errors.New("compact: shape: not the canonical JSON of a shape (edited?)")
	}
	return &r, nil
}

// clone is a deep copy of r.
func clone(t *evidence.Record) *evidence.Record {
	r := *t
	r.Source, r.Destination = clonePeer(t.Source), clonePeer(t.Destination)
	if t.XFCC != nil {
		x := *t.XFCC
		if x.Elements != nil {
			x.Elements = make([]evidence.XFCCElement, len(t.XFCC.Elements))
			for i, e := range t.XFCC.Elements {
				e.By, e.URI, e.DNS = slices.Clone(e.By), slices.Clone(e.URI), slices.Clone(e.DNS)
				if e.Other != nil {
					o := make(map[string][]string, len(e.Other))
					for k, v := range e.Other {
						o[k] = slices.Clone(v)
					}
					e.Other = o
				}
				x.Elements[i] = e
			}
		}
		r.XFCC = &x
	}
	r.Headers = maps.Clone(t.Headers)
	r.Reasons = slices.Clone(t.Reasons)
	if t.Amends != nil {
		a := *t.Amends
		r.Amends = &a
	}
	return &r
}

func clonePeer(p evidence.Peer) evidence.Peer {
	if p.SPIFFE != nil {
		s := *p.SPIFFE
		p.SPIFFE = &s
	}
	if p.Certificate != nil {
		c := *p.Certificate
		c.URISANs, c.DNSSANs = slices.Clone(c.URISANs), slices.Clone(c.DNSSANs)
		p.Certificate = &c
	}
	if p.Workload != nil {
		w := *p.Workload
		p.Workload = &w
	}
	return p
}

// Shapes is a bounded cache of decoded shapes by their number in a store,
// safe for concurrent use: joining a record with a cached shape copies it
// instead of decoding its JSON. Verify must not read through a cache that
// outlives it (a shape edited behind the store's back would not show): it
// takes a Shapes of its own.
type Shapes struct {
	mu  sync.RWMutex
	m   map[int64]*evidence.Record
	max int
}

// NewShapes makes a cache of at most max shapes.
func NewShapes(max int) *Shapes {
	return &Shapes{m: map[int64]*evidence.Record{}, max: max}
}

// Join is JoinStored with the shape numbered id, from the cache or, when
// missing, from load (its stored bytes), which a failed decode does not
// cache.
func (s *Shapes) Join(id int64, rest []byte, out Outside, load func(id int64) ([]byte, error)) (*evidence.Record, error) {
	tmpl, err := s.Get(id, load)
	if err != nil {
		return nil, err
	}
	r, _, err := joinShape(tmpl, rest, out)
	return r, err
}

// JoinJSON is Join and the record's JSON form as the API serves it
// (evidence.RecordJSON), made from the canonical bytes the join hashed
// rather than encoded again. With ErrCheck both come back too.
func (s *Shapes) JoinJSON(id int64, rest []byte, out Outside, load func(id int64) ([]byte, error)) (*evidence.Record, []byte, error) {
	tmpl, err := s.Get(id, load)
	if err != nil {
		return nil, nil, err
	}
	r, canonical, err := joinShape(tmpl, rest, out)
	if r == nil {
		return nil, nil, err
	}
	if canonical == nil {
		js, jerr := evidence.RecordJSON(r)
		if jerr != nil {
			return nil, nil, jerr
		}
		return r, js, err
	}
	return r, evidence.AppendRecordJSON(make([]byte, 0, len(canonical)+128), canonical, r.Chain.Seq, r.Chain.Hash), err
}

// Get returns the decoded shape numbered id (read-only).
func (s *Shapes) Get(id int64, load func(id int64) ([]byte, error)) (*evidence.Record, error) {
	s.mu.RLock()
	tmpl, ok := s.m[id]
	s.mu.RUnlock()
	if ok {
		return tmpl, nil
	}
	shape, err := load(id)
	if err != nil {
		return nil, err
	}
	tmpl, err = DecodeShape(shape)
	if err != nil {
		return nil, fmt.Errorf("shape %d: %w", id, err)
	}
	s.mu.Lock()
	if len(s.m) >= s.max {
		for k := range s.m { // evict one, any
			delete(s.m, k)
			break
		}
	}
	s.m[id] = tmpl
	s.mu.Unlock()
	return tmpl, nil
}

// Forget drops every cached shape (after the store's shapes changed under
// it, e.g. a migration).
func (s *Shapes) Forget() {
	s.mu.Lock()
	clear(s.m)
	s.mu.Unlock()
}

// Len is how many shapes are cached.
func (s *Shapes) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// RequestIDKey is how a store keeps a request id: a canonical lowercase
// UUID as its 16 bytes, anything else as the string (RequestIDOfKey is the
// inverse).
func RequestIDKey(id string) any {
	if f := uuidField(id); f.tag == tUUID {
		return f.val
	}
	return id
}

// RequestIDOfKey is the request id RequestIDKey made key of.
func RequestIDOfKey(key any) (string, error) {
	switch k := key.(type) {
	case string:
		if uuidField(k).tag == tUUID {
			return "", fmt.Errorf("compact: request id key %q is a UUID as text", k)
		}
		return k, nil
	case []byte:
		if len(k) != 16 {
			return "", fmt.Errorf("compact: request id key of %d bytes, want 16", len(k))
		}
		d := decoder{b: k}
		return d.str(tUUID, tUUID)
	}
	return "", fmt.Errorf("compact: request id key of type %T", key)
}

// IDKey is how a store keeps a record id so that its column sorts as the
// ids do (bytewise, as the stores' (time, id) order wants): a canonical
// ULID is its 16 bytes; another id at or above the least ULID
// ("000...0") is the 16 bytes of the greatest ULID not above it, a 0x01
// byte, then the id itself (a []byte of 17 + len(id)); an id below every
// ULID is the string itself. In SQLite a TEXT sorts before every BLOB, and
// BLOBs compare as bytes, so ordering by IDKey is ordering by id. A store
// whose column takes bytes only cannot keep the ids below every ULID in
// that order (none that meshproof makes; an uploaded decision log may
// have them).
func IDKey(id string) any {
	if len(id) == ulid.EncodedSize {
		if u, err := ulid.ParseStrict(id); err == nil && u.String() == id {
			return u[:]
		}
	}
	f, ok := floorULID(id)
	if !ok {
		return id
	}
	k := make([]byte, 0, 17+len(id))
	k = append(append(append(k, f[:]...), 1), id...)
	return k
}

// IDOfKey is the id IDKey made key of: a []byte or a string, as the store's
// column gives it back.
func IDOfKey(key any) (string, error) {
	switch k := key.(type) {
	case string:
		if _, ok := IDKey(k).(string); !ok {
			return "", fmt.Errorf("compact: id key %q is text but sorts among the ULIDs", k)
		}
		return k, nil
	case []byte:
		if len(k) == 16 {
			var u ulid.ULID
			copy(u[:], k)
			return u.String(), nil
		}
		if len(k) > 17 && k[16] == 1 {
			id := string(k[17:])
			if again, ok := IDKey(id).([]byte); ok && bytes.Equal(again, k) {
				return id, nil
			}
		}
		return "", fmt.Errorf("compact: id key %x is not one IDKey makes", k)
	case nil:
		return "", errors.New("compact: id key is NULL")
	}
	return "", fmt.Errorf("compact: id key of type %T", key)
}

// ULID text: the first character holds 3 bits, the others 5 each.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

func ulidChars(i int) string {
	if i == 0 {
		return crockford[:8]
	}
	return crockford
}

// floorULID is the greatest canonical ULID whose text is at or below s
// (bytewise); ok is false when s is below every ULID.
func floorULID(s string) (u ulid.ULID, ok bool) {
	const n = ulid.EncodedSize
	// k: the longest prefix of s that begins a ULID.
	k := 0
	for k < n && k < len(s) && bytes.IndexByte([]byte(ulidChars(k)), s[k]) >= 0 {
		k++
	}
	var text []byte
	if k == n {
		text = []byte(s[:n])
	} else {
		// Lower the first position possible from k down, then fill with
		// the greatest character.
		for i := k; i >= 0 && text == nil; i-- {
			if i == len(s) {
				continue // s ends here: a ULID with s as prefix is above s
			}
			cs := ulidChars(i)
			for j := len(cs) - 1; j >= 0; j-- {
				if cs[j] < s[i] {
					text = append([]byte(s[:i]), cs[j])
					break
				}
			}
		}
		if text == nil {
			return u, false
		}
		for len(text) < n {
			cs := ulidChars(len(text))
			text = append(text, cs[len(cs)-1])
		}
	}
	u, err := ulid.ParseStrict(string(text))
	if err != nil {
		panic("compact: floorULID made " + string(text) + ": " + err.Error())
	}
	return u, true
}
