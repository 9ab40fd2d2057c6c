package evidence

import (
	"bytes"
	"fmt"
	"strconv"

	jsonv2 "github.com/go-json-experiment/json"
)

// A store keeps each record as bytes: for canonical encoding v2 its
// canonical bytes (CanonicalJSON, no chain fields; the store keeps seq and
// hash in columns), for v1 the JSON of the whole record (MarshalJSON). A v1
// body always begins with `{"id":`, the first field of Record; a v2 body
// never does: "decision" is always there and sorts before "id" (as does
// "amends", on an amendment).

var v1Prefix = []byte(`{"id":`)

// StoredVersion is the canonical encoding a stored body is in.
func StoredVersion(body []byte) int {
	if bytes.HasPrefix(body, v1Prefix) {
		return CanonicalV1
	}
	return CanonicalV2
}

// strict decodes as encoding/json/v2 does by default, and more: member
// names match exactly (no case folding), a name twice is an error, and so
// is a member the record does not have. A stored body that encoding/json
// would read one way and another reader another way does not decode.
var strict = jsonv2.JoinOptions(jsonv2.RejectUnknownMembers(true))

// DecodeStored decodes a stored body. For v2 the chain comes from the
// store's columns (seq and hash); a v1 body carries its own. The decoding
// is strict (see strict), and the body must be exactly what encoding the
// decoded record makes again: canonical bytes for v2, MarshalJSON for v1.
// So every reader of the stored bytes, whatever its JSON library, sees the
// record that was hashed.
func DecodeStored(id string, body []byte, seq uint64, hash string) (*Record, error) {
	r := new(Record)
	if err := jsonv2.Unmarshal(body, r, strict); err != nil {
		return nil, fmt.Errorf("record %s: the stored record does not decode: %w", id, err)
	}
	switch StoredVersion(body) {
	case CanonicalV1:
		again, err := MarshalJSON(r)
		if err != nil || !bytes.Equal(again, body) {
			return nil, fmt.Errorf("record %s: the stored record is not in its canonical form (edited?)", id)
		}
	default:
		if r.Chain != (Chain{}) {
			return nil, fmt.Errorf("record %s: the stored record carries chain fields", id)
		}
		if !bytes.Equal(r.CanonicalJSON(), body) {
			return nil, fmt.Errorf("record %s: the stored record is not in its canonical form (edited?)", id)
		}
		r.Chain = Chain{Seq: seq, Hash: hash, Version: CanonicalV2}
	}
	return r, nil
}

// AppendRecordJSON appends the JSON form of a stored record, as the API
// serves it, to dst: a v1 body as it is; a v2 body with its chain member
// put first (the rest stays the canonical bytes, in their order).
func AppendRecordJSON(dst, body []byte, seq uint64, hash string) []byte {
	if StoredVersion(body) == CanonicalV1 || len(body) < 2 {
		return append(dst, body...)
	}
	dst = append(dst, `{"chain":{"hash":"`...)
	dst = append(dst, hash...)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"version":2},`...)
	return append(dst, body[1:]...)
}

// StoredBody is what a store keeps of a chained record: its canonical
// bytes for version 2, its JSON for version 1 (records of a chain written
// before the log, which a spool of an earlier meshproof may still hold).
func StoredBody(r *Record) ([]byte, error) {
	if r.Chain.Version == CanonicalV2 {
		return r.CanonicalJSON(), nil
	}
	return MarshalJSON(r)
}

// RecordJSON is a record's JSON form as the API serves it, the same bytes
// whether read from the store (AppendRecordJSON) or encoded from a record:
// for version 2, its canonical bytes with the chain member in front.
func RecordJSON(r *Record) ([]byte, error) {
	if r.Chain.Version != CanonicalV2 {
		return MarshalJSON(r)
	}
	b := r.CanonicalJSON()
	return AppendRecordJSON(make([]byte, 0, len(b)+128), b, r.Chain.Seq, r.Chain.Hash), nil
}
