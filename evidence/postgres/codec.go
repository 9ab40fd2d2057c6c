package postgres

import (
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// The row codec, for tools and tests that write or read rows behind the
// store's back (postgrestest's Tamperer, as an attacker who knows the
// format would).

// IDKey is the id column's value for id.
func IDKey(id string) []byte { return idKey(id) }

// RequestKey is the request_id column's value for a request id.
func RequestKey(requestID string) []byte { return requestKey(requestID) }

// SplitRecord is a record's shape and rest as Append stores them.
func SplitRecord(r *evidence.Record) (shape, rest []byte, err error) { return compact.SplitStored(r) }

// JoinRecord is the record a row holds, given its columns and its shape's
// bytes; it reads them as the store does (an error wrapping
// compact.ErrCheck comes with the record).
func JoinRecord(shape, rest, id, requestID []byte, path string, timeNS, seq int64) (*evidence.Record, error) {
	ids, err := idOf(id)
	if err != nil {
		return nil, err
	}
	req, err := requestOf(requestID)
	if err != nil {
		return nil, err
	}
	return compact.JoinStored(shape, rest, compact.Outside{ID: ids, TimeNS: timeNS, RequestID: req, Path: path, Seq: uint64(seq)})
}

// PackShape is the shapes.body of a shape's bytes (compressed).
func PackShape(shape []byte) []byte { return packShape(shape) }

// UnpackShape is the shape's bytes a shapes.body holds.
func UnpackShape(body []byte) ([]byte, error) { return unpackShape(body) }

// LeafHex is a stored record's chain hash: for v2 records the leaf hash of
// its canonical bytes, recomputed.
func LeafHex(r *evidence.Record) string { return leafHex(r) }
