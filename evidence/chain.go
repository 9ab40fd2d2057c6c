package evidence

import (
	"context"
	"encoding/json"
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
	// Quarantined are the records of the chain the store refused, kept
	// apart (their JSON left out here): their links are checked with the
	// others, but they are not in Checked.
	Quarantined []Quarantined `json:"quarantined,omitempty"`
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
	// Quarantined records hold their places in the chain: each is checked
	// where its seq comes, between the stored records around it.
	quarantined, err := s.Quarantined(ctx, replica)
	if err != nil {
		return rep, err
	}
	var q []Quarantined
	for _, e := range quarantined {
		if e.Seq > start.Seq {
			q = append(q, e)
		}
	}
	// takeQuarantined checks the quarantined records that come next, up to
	// seq before (0: all of them).
	takeQuarantined := func(before uint64) {
		for len(q) > 0 && rep.Broken == nil && q[0].Seq == prev.Seq+1 && (before == 0 || q[0].Seq < before) {
			e := q[0]
			q = q[1:]
			if rep.Broken = checkQuarantined(e, prev); rep.Broken == nil {
				e.Record = nil
				rep.Quarantined = append(rep.Quarantined, e)
				prev = Link{Seq: e.Seq, Hash: e.Hash}
			}
		}
	}
	err = s.Walk(ctx, replica, func(r *Record, stored Columns) error {
		rep.Checked++
		c := r.Chain
		if takeQuarantined(c.Seq); rep.Broken != nil {
			return errStop
		}
		if rep.Checked == 1 && c.Seq != prev.Seq+1 {
			// Retention may have moved the checkpoint since it was read.
			if again, err := s.Checkpoint(ctx, replica); err == nil && again.Seq == c.Seq-1 && again.Hash == c.PrevHash {
				rep.Start, prev = again, again
				for len(q) > 0 && q[0].Seq <= again.Seq {
					q = q[1:]
				}
			}
		}
		switch {
		case stored != ColumnsOf(r):
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
	if rep.Broken == nil {
		takeQuarantined(0)
	}
	if rep.Broken == nil && len(q) > 0 {
		rep.Broken = &Break{Kind: BreakForged, Seq: q[0].Seq, ID: q[0].ID,
			Detail: fmt.Sprintf("a quarantined record at seq %d does not fit the chain (it ends at seq %d, or holds that seq already)", q[0].Seq, prev.Seq)}
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

// checkQuarantined checks that the quarantined record e follows prev: its
// prev_hash is prev's hash and, when its JSON was kept, the record hashes to
// its hash at its seq.
func checkQuarantined(e Quarantined, prev Link) *Break {
	if e.PrevHash != prev.Hash {
		return &Break{Kind: BreakReordered, Seq: e.Seq, ID: e.ID,
			Detail: fmt.Sprintf("quarantined record: prev_hash %s is not the hash of seq %d (%s)", short(e.PrevHash), prev.Seq, short(prev.Hash))}
	}
	if len(e.Record) == 0 {
		return nil
	}
	var r Record
	if err := json.Unmarshal(e.Record, &r); err != nil {
		return &Break{Kind: BreakEdited, Seq: e.Seq, ID: e.ID, Detail: "quarantined record: its JSON does not decode: " + err.Error()}
	}
	if r.Chain.Seq != e.Seq || r.Chain.Hash != e.Hash || r.Chain.PrevHash != e.PrevHash {
		return &Break{Kind: BreakEdited, Seq: e.Seq, ID: e.ID, Detail: "quarantined record: its JSON holds another place in the chain"}
	}
	if got := ChainHash(e.PrevHash, &r); got != e.Hash {
		return &Break{Kind: BreakEdited, Seq: e.Seq, ID: e.ID,
			Detail: fmt.Sprintf("quarantined record: content hashes to %s, the record says %s", short(got), short(e.Hash))}
	}
	return nil
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
