package evidence

// Link appends r to the replica's log whose last link is head: it sets r's
// seq, its hash (the RFC 6962 leaf hash of its canonical bytes, version 2)
// and version, and returns r's link, the new head. The order of the leaves
// is the log's: the tree's root covers it, and no record names its
// predecessor.
func (head Link) Link(r *Record) Link {
	return head.linkCanonical(r, r.CanonicalJSON())
}

// LinkLine is Link, and appends r's journal line to dst (its RecordJSON
// and a newline, as storekit.AppendLines writes it) from the canonical
// bytes Link hashes: a writer whose store journals encodes each record
// once, not twice.
func (head Link) LinkLine(r *Record, dst []byte) (Link, []byte) {
	b := r.CanonicalJSON()
	l := head.linkCanonical(r, b)
	return l, append(AppendRecordJSON(dst, b, l.Seq, l.Hash), '\n')
}

func (head Link) linkCanonical(r *Record, canonical []byte) Link {
	r.Chain = Chain{Seq: head.Seq + 1, Hash: LeafHashHex(canonical), Version: CanonicalV2}
	return Link{Seq: r.Chain.Seq, Hash: r.Chain.Hash}
}

// LinkV1 appends r to a version-1 hash chain, as meshproof wrote before the
// transparency log: its hash covers the predecessor's (ChainHash). Only
// tests of stores written then use it.
func (head Link) LinkV1(r *Record) Link {
	r.Chain = Chain{Seq: head.Seq + 1, PrevHash: head.Hash}
	r.Chain.Hash = ChainHash(head.Hash, r)
	return Link{Seq: r.Chain.Seq, Hash: r.Chain.Hash}
}

// Break kinds: what Verify found at the first broken link.
const (
	BreakEdited    = "edited"    // the record's content no longer matches its hash, or its index columns the record
	BreakDeleted   = "deleted"   // records are missing before this one (a gap in seq)
	BreakReordered = "reordered" // the record does not follow its stored predecessor
	BreakTruncated = "truncated" // the chain ends before the head the store recorded
	BreakForged    = "forged"    // the chain goes on past, or away from, the recorded head
)

// Break is the first broken link of a chain.
type Break struct {
	Kind   string `json:"kind"`
	Seq    uint64 `json:"seq"`
	ID     string `json:"id,omitempty"`
	Detail string `json:"detail"`
}

// ChainReport is the verification of one replica's chain.
type ChainReport struct {
	Replica string `json:"replica"`
	// Start is where the verified chain begins: seq 0, or the checkpoint
	// retention left.
	Start   Link   `json:"start"`
	Head    Link   `json:"head"`
	Checked int64  `json:"checked"`
	Broken  *Break `json:"broken,omitempty"`
	// Log is the replica's transparency log, when it has one.
	Log *LogReport `json:"log,omitempty"`
	// Quarantined are the records of the chain the store refused, kept
	// apart (their JSON left out here): their links are checked with the
	// others, but they are not in Checked.
	Quarantined []Quarantined `json:"quarantined,omitempty"`
}

// LogReport is what Verify found of a replica's transparency log.
type LogReport struct {
	Base uint64 `json:"base"`
	Size int64  `json:"size"`
	Root string `json:"root"` // base64, as in a checkpoint
	// Checkpoints is how many signed checkpoints (stored, and given to
	// Verify) the log was checked against; Signed how many of them had
	// their signature checked (Verify was given the key).
	Checkpoints int `json:"checkpoints"`
	Signed      int `json:"signed"`
	// Latest is the size of the largest checkpoint checked.
	Latest int64 `json:"latest_checkpoint,omitempty"`
	// Unchecked are checkpoints older than the records retention left,
	// which the stored tiles can no longer recompute.
	Unchecked int `json:"unchecked,omitempty"`
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "(none)"
	}
	return h
}
