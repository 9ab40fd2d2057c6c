package postgres

import (
	"fmt"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// splitRow is a record's shape and rest as the store keeps them.
func splitRow(r *evidence.Record) (shape, rest []byte, err error) {
	return compact.Split(r)
}

// joinRow is the record of a shape, a rest and the row's columns.
func joinRow(shape, rest []byte, id string, timeNS int64, seq uint64) (*evidence.Record, error) {
	r, err := compact.Join(shape, rest)
	if err != nil {
		return nil, err
	}
	if r.ID != id || r.Chain.Seq != seq {
		return nil, fmt.Errorf("the columns (id %s, seq %d) do not match the record", id, seq)
	}
	return r, nil
}

// The row codec, for tools and tests that write or read rows behind the
// store's back (postgrestest's Tamperer, as an attacker who knows the
// format would).

// IDKey is the id column's value for id.
func IDKey(id string) []byte { return idKey(id) }

// SplitRecord is a record's shape and rest as Append stores them.
func SplitRecord(r *evidence.Record) (shape, rest []byte, err error) { return splitRow(r) }

// JoinRecord is the record a row holds, given its shape's bytes; it
// checks the shape as the store does.
func JoinRecord(shape, rest, id []byte, timeNS, seq int64) (*evidence.Record, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	ids, err := idOf(id)
	if err != nil {
		return nil, err
	}
	return joinRow(shape, rest, ids, timeNS, uint64(seq))
}

// LeafHex is a stored record's chain hash: for v2 records the leaf hash of
// its canonical bytes, recomputed.
func LeafHex(r *evidence.Record) string { return leafHex(r) }
