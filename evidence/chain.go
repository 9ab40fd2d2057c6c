package evidence

import (
	"context"
	"errors"
	"fmt"
)

// Link appends r to the chain whose last link is head: it sets r's seq,
// prev_hash and hash, and returns r's link, the new head.
func (head Link) Link(r *Record) Link {
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
}

// Verify walks every replica's chain and reports, per chain, the records
// checked and the first broken link: an edited record (its hash no longer
// matches), a deleted one (a gap in seq), a reordered one (its prev_hash is
// not its predecessor's hash), or a tail that does not end at the head the
// store recorded with the last write (records removed from, or added after,
// the end).
func Verify(ctx context.Context, s Verifiable) ([]ChainReport, error) {
	replicas, err := s.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	reports := make([]ChainReport, 0, len(replicas))
	for _, replica := range replicas {
		rep, err := verifyChain(ctx, s, replica)
		if err != nil {
			return reports, fmt.Errorf("replica %s: %w", replica, err)
		}
		reports = append(reports, rep)
	}
	return reports, nil
}

// Verifiable is what Verify reads: the chains and their recorded heads.
type Verifiable interface {
	Reader
	Head(ctx context.Context, replica string) (Link, error)
}

// errStop ends a walk at the first broken link.
var errStop = errors.New("first broken link found")

func verifyChain(ctx context.Context, s Verifiable, replica string) (ChainReport, error) {
	rep := ChainReport{Replica: replica}
	start, err := s.Checkpoint(ctx, replica)
	if err != nil {
		return rep, err
	}
	rep.Start = start
	prev := start
	err = s.Walk(ctx, replica, func(r *Record, stored Columns) error {
		rep.Checked++
		c := r.Chain
		if rep.Checked == 1 && c.Seq != prev.Seq+1 {
			// Retention may have moved the checkpoint since it was read.
			if again, err := s.Checkpoint(ctx, replica); err == nil && again.Seq == c.Seq-1 && again.Hash == c.PrevHash {
				rep.Start, prev = again, again
			}
		}
		switch {
		case !columnsMatch(stored, r):
			rep.Broken = &Break{Kind: BreakEdited, Seq: uint64(stored.Seq), ID: stored.ID,
				Detail: "the index columns no longer match the record (queries would mislead)"}
		case c.Seq != prev.Seq+1:
			rep.Broken = &Break{Kind: BreakDeleted, Seq: c.Seq, ID: r.ID,
				Detail: fmt.Sprintf("seq %d follows seq %d: %d record(s) missing", c.Seq, prev.Seq, int64(c.Seq)-int64(prev.Seq)-1)}
		case c.PrevHash != prev.Hash:
			rep.Broken = &Break{Kind: BreakReordered, Seq: c.Seq, ID: r.ID,
				Detail: fmt.Sprintf("prev_hash %s is not the hash of seq %d (%s)", short(c.PrevHash), prev.Seq, short(prev.Hash))}
		default:
			if got := ChainHash(c.PrevHash, r); got != c.Hash {
				rep.Broken = &Break{Kind: BreakEdited, Seq: c.Seq, ID: r.ID,
					Detail: fmt.Sprintf("content hashes to %s, the record says %s", short(got), short(c.Hash))}
			}
		}
		if rep.Broken != nil {
			return errStop
		}
		prev = Link{Seq: c.Seq, Hash: c.Hash}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return rep, err
	}
	rep.Head = prev
	if rep.Broken != nil {
		return rep, nil
	}
	want, err := s.Head(ctx, replica)
	if err != nil {
		return rep, err
	}
	switch {
	case want.Seq > prev.Seq:
		rep.Broken = &Break{Kind: BreakTruncated, Seq: prev.Seq + 1,
			Detail: fmt.Sprintf("the chain ends at seq %d; the store recorded seq %d as its last write", prev.Seq, want.Seq)}
	case want.Seq < prev.Seq || want.Hash != prev.Hash:
		rep.Broken = &Break{Kind: BreakForged, Seq: prev.Seq,
			Detail: fmt.Sprintf("the chain ends at seq %d (%s); the store recorded seq %d (%s) as its last write", prev.Seq, short(prev.Hash), want.Seq, short(want.Hash))}
	}
	return rep, nil
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
