package evidence

import (
	"encoding/base64"
	"fmt"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Proof is a record's inclusion proof in its replica's transparency log, as
// GET /v1/evidence/{id}/proof answers it. A third party checks it with
// golang.org/x/mod/sumdb/note (open the checkpoint with the verifier key)
// and tlog.CheckRecord(proof, tree_size, root, leaf_index,
// tlog.RecordHash(leaf)): nothing of meshproof.
type Proof struct {
	Replica   string `json:"replica"`
	LeafIndex int64  `json:"leaf_index"`
	TreeSize  int64  `json:"tree_size"`
	// Leaf is the record's canonical bytes (RFC 8785), standard base64.
	Leaf string `json:"leaf"`
	// Proof is the RFC 6962 inclusion path, each hash standard base64.
	Proof []string `json:"proof"`
	// Checkpoint is the signed note of a checkpoint of exactly TreeSize.
	Checkpoint string `json:"checkpoint"`
}

// ConsistencyProof shows that a replica's log of From leaves is a prefix of
// its log of To leaves (RFC 6962): tlog.CheckTree.
type ConsistencyProof struct {
	Replica string   `json:"replica"`
	From    int64    `json:"from"`
	To      int64    `json:"to"`
	Proof   []string `json:"proof"`
}

// Check verifies the proof: the checkpoint's signature by one of
// verifiers, its origin and size, and the leaf's inclusion in its root. It
// returns the checkpoint and the record the leaf holds. With no verifiers
// the signature is not checked (the inclusion still is): say so to
// whoever reads the result.
func (p *Proof) Check(verifiers note.Verifiers) (Checkpoint, *Record, error) {
	var c Checkpoint
	var err error
	if verifiers != nil {
		c, err = OpenCheckpoint([]byte(p.Checkpoint), verifiers, p.Replica)
	} else {
		c, err = ParseUnverified([]byte(p.Checkpoint))
	}
	if err != nil {
		return c, nil, err
	}
	if c.Size != p.TreeSize {
		return c, nil, fmt.Errorf("the checkpoint is of %d leaves, the proof of %d", c.Size, p.TreeSize)
	}
	leaf, err := base64.StdEncoding.DecodeString(p.Leaf)
	if err != nil {
		return c, nil, fmt.Errorf("leaf: not base64: %w", err)
	}
	path := make(tlog.RecordProof, len(p.Proof))
	for i, s := range p.Proof {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != tlog.HashSize {
			return c, nil, fmt.Errorf("proof hash %d: not 32 bytes of base64", i)
		}
		copy(path[i][:], b)
	}
	if err := tlog.CheckRecord(path, p.TreeSize, c.Root, p.LeafIndex, tlog.RecordHash(leaf)); err != nil {
		return c, nil, fmt.Errorf("the record is not in the log of the checkpoint: %w", err)
	}
	r, err := DecodeStored("leaf", leaf, 0, "")
	if err != nil {
		return c, nil, err
	}
	base, _, err := c.Base()
	if err != nil {
		return c, nil, err
	}
	r.Chain = Chain{Seq: base + uint64(p.LeafIndex) + 1, Hash: LeafHashHex(leaf), Version: CanonicalV2}
	return c, r, nil
}
