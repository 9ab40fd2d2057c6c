package evidence

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyOptions are what Verify checks the logs against beyond the store.
type VerifyOptions struct {
	// Verifiers check the signatures of checkpoints (stored and given).
	// Without them stored checkpoints are checked for their roots only: a
	// database writer could forge them.
	Verifiers note.Verifiers
	// Checkpoints are signed checkpoints kept outside the store (meshproof
	// checkpoint save): each replica's log must extend every one of them.
	// They need Verifiers.
	Checkpoints [][]byte
	// Retention is the store's retention window (serve's --retention), 0
	// when unknown: a log whose oldest records are gone although a signed
	// checkpoint younger than the window lacks them was cut too early (or
	// behind the store's back).
	Retention time.Duration
	// RollupRetention is the store's rollup retention (serve's
	// --rollup-retention), 0 when unknown: rollups removed although
	// younger than it were removed too early.
	RollupRetention time.Duration
	// Now is the time to judge retention by; time.Now when zero.
	Now time.Time
}

// clockSlack is how much the clocks of the signer and the verifier may
// disagree when Verify judges retention.
const clockSlack = 5 * time.Minute

// maxStoredCheckpoints is how many of a replica's stored checkpoints, the
// newest, Verify checks the log against.
const maxStoredCheckpoints = 1000

// Verify walks every replica's chain and reports, per chain, the records
// checked and the first broken link: an edited record (its stored bytes no
// longer hash to its hash, or are not in canonical form, or its index
// columns disagree with it), a deleted one (a gap in seq), a reordered one
// (a v1 record whose prev_hash is not its predecessor's hash), a tail that
// does not end at the head the store recorded with the last write (records
// removed from, or added after, the end), and for a transparency log: tiles
// that disagree with the records' hashes, or a root that is not the one a
// signed checkpoint says (the log rewritten or cut).
func Verify(ctx context.Context, s Verifiable) ([]ChainReport, error) {
	return VerifyWith(ctx, s, VerifyOptions{})
}

// VerifyWith is Verify against signed checkpoints and keys. A checkpoint
// given for a replica the store does not hold is reported as a truncated
// chain of that replica.
func VerifyWith(ctx context.Context, s Verifiable, opts VerifyOptions) ([]ChainReport, error) {
	given := map[string][]Checkpoint{}
	for i, signed := range opts.Checkpoints {
		if opts.Verifiers == nil {
			return nil, errors.New("verify: checkpoints need the public key that signed them")
		}
		n, err := note.Open(signed, opts.Verifiers)
		if err != nil {
			return nil, fmt.Errorf("verify: checkpoint %d: %w", i+1, err)
		}
		c, err := ParseCheckpoint(n.Text)
		if err != nil {
			return nil, fmt.Errorf("verify: checkpoint %d: %w", i+1, err)
		}
		replica := ReplicaOf(c.Origin, n.Sigs[0].Name)
		if replica == "" {
			return nil, fmt.Errorf("verify: checkpoint %d: origin %q is not a meshproof log of key %s", i+1, c.Origin, n.Sigs[0].Name)
		}
		given[replica] = append(given[replica], c)
	}
	replicas, err := s.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	reports := make([]ChainReport, 0, len(replicas))
	tally := newRollupTally()
	for _, replica := range replicas {
		rep, err := verifyChain(ctx, s, replica, opts, given[replica], tally)
		if err != nil {
			return reports, fmt.Errorf("replica %s: %w", replica, err)
		}
		reports = append(reports, rep)
		delete(given, replica)
	}
	// The rollups are counted again only over intact chains: a broken one
	// is already the answer, and its records are not the rollups' any more.
	intact := true
	for _, rep := range reports {
		intact = intact && rep.Broken == nil
	}
	if intact {
		rep, err := tally.check(ctx, s, opts)
		if err != nil {
			return reports, fmt.Errorf("rollups: %w", err)
		}
		if rep != nil {
			reports = append(reports, *rep)
		}
	}
	for _, replica := range slices.Sorted(maps.Keys(given)) {
		c := slices.MaxFunc(given[replica], func(a, b Checkpoint) int { return int(a.Size - b.Size) })
		reports = append(reports, ChainReport{Replica: replica, Broken: &Break{Kind: BreakTruncated,
			Detail: fmt.Sprintf("a signed checkpoint says the log of %s held %d leaves; the store holds none", replica, c.Size)}})
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

func verifyChain(ctx context.Context, s Verifiable, replica string, opts VerifyOptions, given []Checkpoint, tally *rollupTally) (ChainReport, error) {
	rep := ChainReport{Replica: replica}
	start, err := s.Checkpoint(ctx, replica)
	if err != nil {
		return rep, err
	}
	rep.Start = start
	prev := start
	th, hasLog, err := s.TreeHead(ctx, replica)
	if err != nil {
		return rep, err
	}
	var lv *logVerifier
	if hasLog {
		if lv, err = newLogVerifier(ctx, s, replica, th, opts, given); err != nil {
			return rep, err
		}
		rep.Log = lv.rep
		if lv.broken == nil {
			lv.broken = lv.checkRetention(start)
		}
		if lv.broken != nil {
			rep.Broken = lv.broken
			return rep, nil
		}
	} else if len(given) > 0 {
		rep.Broken = &Break{Kind: BreakTruncated, Detail: fmt.Sprintf("a signed checkpoint says the log held %d leaves; the store has no log for this replica", given[0].Size)}
		return rep, nil
	}
	// Quarantined records hold their places in the chain (and their leaves
	// in the log): each is checked where its seq comes, between the stored
	// records around it.
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
			inLog := hasLog && e.Seq > th.Base
			if rep.Broken = checkQuarantined(e, prev, inLog); rep.Broken == nil && inLog {
				rep.Broken = lv.add(e.Seq, e.Hash, e.ID, prev)
			}
			if rep.Broken == nil {
				e.Record = nil
				rep.Quarantined = append(rep.Quarantined, e)
				prev = Link{Seq: e.Seq, Hash: e.Hash}
			}
		}
	}
	err = s.Walk(ctx, replica, func(r *Record, stored Stored) error {
		rep.Checked++
		c := r.Chain
		if takeQuarantined(c.Seq); rep.Broken != nil {
			return errStop
		}
		if rep.Checked == 1 && c.Seq != prev.Seq+1 {
			// Retention may have moved the checkpoint since it was read.
			if again, err := s.Checkpoint(ctx, replica); err == nil && again.Seq == c.Seq-1 && (again.Hash == c.PrevHash || c.Version == CanonicalV2) {
				rep.Start, prev = again, again
				for len(q) > 0 && q[0].Seq <= again.Seq {
					q = q[1:]
				}
			}
		}
		inLog := hasLog && c.Seq > th.Base
		switch {
		case stored.Err != nil:
			rep.Broken = &Break{Kind: BreakEdited, Seq: uint64(stored.Seq), ID: stored.ID, Detail: stored.Err.Error()}
		case !columnsMatch(stored.Columns, r):
			rep.Broken = &Break{Kind: BreakEdited, Seq: uint64(stored.Seq), ID: stored.ID,
				Detail: "the index columns no longer match the record (queries would mislead)"}
		case c.Seq != prev.Seq+1:
			rep.Broken = &Break{Kind: BreakDeleted, Seq: c.Seq, ID: r.ID,
				Detail: fmt.Sprintf("seq %d follows seq %d: %d record(s) missing", c.Seq, prev.Seq, int64(c.Seq)-int64(prev.Seq)-1)}
		case inLog != (c.Version == CanonicalV2):
			rep.Broken = &Break{Kind: BreakEdited, Seq: c.Seq, ID: r.ID,
				Detail: fmt.Sprintf("a record of canonical encoding v%d where the log (from seq %d) wants v%d", max(c.Version, 1), th.Base+1, map[bool]int{true: 2, false: 1}[inLog])}
		case inLog:
			rep.Broken = lv.leaf(r, stored.Body, prev)
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
		tally.add(replica, r)
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
	case lv != nil:
		rep.Broken = lv.finish(prev)
	}
	if rep.Broken == nil {
		var cps []checkpointAt
		if lv != nil {
			cps = lv.cps
		}
		tally.done(replica, rep.Start, cps)
	}
	return rep, nil
}

// logVerifier rebuilds a replica's log from the hashes of its stored
// records, as Verify walks them, and compares what it builds with the
// stored tiles and the signed checkpoints.
type logVerifier struct {
	ctx     context.Context
	s       Verifiable
	replica string
	th      TreeHead
	edge    *TreeEdge // nil until the first leaf
	cps     []checkpointAt
	next    int // cps[next] is the first not yet reached
	rep     *LogReport
	broken  *Break
	opts    VerifyOptions
}

// checkpointAt is a checkpoint to check the log against, and where it came
// from, for the report.
type checkpointAt struct {
	Checkpoint
	from string
}

func newLogVerifier(ctx context.Context, s Verifiable, replica string, th TreeHead, opts VerifyOptions, given []Checkpoint) (*logVerifier, error) {
	v := &logVerifier{ctx: ctx, s: s, replica: replica, th: th, rep: &LogReport{Base: th.Base}, opts: opts}
	stored, err := s.Checkpoints(ctx, replica, 0, maxStoredCheckpoints)
	if err != nil {
		return nil, err
	}
	for _, sc := range stored {
		var c Checkpoint
		if opts.Verifiers != nil {
			c, err = OpenCheckpoint(sc.Note, opts.Verifiers, replica)
			if err == nil {
				v.rep.Signed++
			}
		} else {
			c, err = ParseUnverified(sc.Note)
		}
		if err == nil && c.Size != sc.Size {
			err = fmt.Errorf("it is stored as size %d but says %d", sc.Size, c.Size)
		}
		if err != nil {
			v.broken = &Break{Kind: BreakForged, Detail: fmt.Sprintf("the stored checkpoint of size %d does not hold: %v", sc.Size, err)}
			return v, nil
		}
		v.cps = append(v.cps, checkpointAt{c, "the stored checkpoint"})
	}
	for _, c := range given {
		v.rep.Signed++
		v.cps = append(v.cps, checkpointAt{c, "the checkpoint given"})
	}
	slices.SortStableFunc(v.cps, func(a, b checkpointAt) int { return int(a.Size - b.Size) })
	for _, c := range v.cps {
		base, baseHash, err := c.Base()
		if err == nil && (base != th.Base || (base > 0 && baseHash != th.BaseHash)) {
			err = fmt.Errorf("it says the log starts after seq %d, the store after seq %d", base, th.Base)
		}
		if err != nil {
			v.broken = &Break{Kind: BreakForged, Detail: fmt.Sprintf("%s of size %d: %v", c.from, c.Size, err)}
			return v, nil
		}
	}
	v.rep.Checkpoints = len(v.cps)
	if n := len(v.cps); n > 0 {
		v.rep.Latest = v.cps[n-1].Size
	}
	return v, nil
}

// checkRetention: the records before start are gone. The last one, leaf d,
// was written after every checkpoint that lacks it; if the latest of those
// was signed within the retention window, so was the record, and it was
// removed too early.
func (v *logVerifier) checkRetention(start Link) *Break {
	if v.opts.Retention <= 0 || start.Seq <= v.th.Base {
		return nil
	}
	d := v.th.Leaf(start.Seq) // the last removed leaf
	var latest *checkpointAt
	for i := range v.cps {
		if c := &v.cps[i]; c.Size <= d && (latest == nil || c.Size > latest.Size) {
			latest = c
		}
	}
	if stored, err := v.s.Checkpoints(v.ctx, v.replica, d, 1); err == nil && len(stored) > 0 && (latest == nil || stored[0].Size > latest.Size) {
		var c Checkpoint
		if v.opts.Verifiers != nil {
			c, err = OpenCheckpoint(stored[0].Note, v.opts.Verifiers, v.replica)
		} else {
			c, err = ParseUnverified(stored[0].Note)
		}
		if err == nil {
			latest = &checkpointAt{c, "the stored checkpoint"}
		}
	}
	if latest == nil {
		return nil
	}
	signed, ok := latest.Time()
	now := v.opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if ok && signed.After(now.Add(-v.opts.Retention).Add(clockSlack)) {
		return &Break{Kind: BreakDeleted, Seq: start.Seq, Detail: fmt.Sprintf("records up to seq %d are gone, but %s of %d leaves, signed %s, lacks seq %d: it was written after then, within the retention window (%s), so it was removed too early",
			start.Seq, latest.from, latest.Size, signed.Format(time.RFC3339), start.Seq, v.opts.Retention)}
	}
	return nil
}

// checkQuarantined checks a quarantined record at its place: its JSON (when
// it could be kept) holds that place and hashes to its hash, as a record of
// the log (inLog) or of a v1 chain, whose prev_hash must be prev's.
func checkQuarantined(e Quarantined, prev Link, inLog bool) *Break {
	if !inLog && e.PrevHash != prev.Hash {
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
	if r.Chain.Seq != e.Seq || r.Chain.Hash != e.Hash || r.Chain.PrevHash != e.PrevHash || (r.Chain.Version == CanonicalV2) != inLog {
		return &Break{Kind: BreakEdited, Seq: e.Seq, ID: e.ID, Detail: "quarantined record: its JSON holds another place in the chain"}
	}
	got := ChainHash(e.PrevHash, &r)
	if inLog {
		got = LeafHashHex(r.CanonicalJSON())
	}
	if got != e.Hash {
		return &Break{Kind: BreakEdited, Seq: e.Seq, ID: e.ID,
			Detail: fmt.Sprintf("quarantined record: content hashes to %s, the record says %s", short(got), short(e.Hash))}
	}
	return nil
}

// ParseUnverified reads a signed note's text without checking a signature.
func ParseUnverified(signed []byte) (Checkpoint, error) {
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 {
		return Checkpoint{}, errors.New("not a signed note")
	}
	return ParseCheckpoint(string(signed[:i+1]))
}

// leaf checks one record of the log: its stored bytes hash to its hash,
// and the log rebuilt with it agrees with the stored tiles and with every
// checkpoint of the size it reaches.
func (v *logVerifier) leaf(r *Record, body []byte, prev Link) *Break {
	c := r.Chain
	if got := LeafHashHex(body); got != c.Hash {
		return &Break{Kind: BreakEdited, Seq: c.Seq, ID: r.ID,
			Detail: fmt.Sprintf("the stored record hashes to %s, its hash says %s", short(got), short(c.Hash))}
	}
	return v.add(c.Seq, c.Hash, r.ID, prev)
}

// add puts the leaf of the record at seq (its hash in hex) in the rebuilt
// log and compares what it completes.
func (v *logVerifier) add(seq uint64, hash, id string, prev Link) *Break {
	if seq == v.th.Base+1 && prev.Seq == v.th.Base && prev.Hash != v.th.BaseHash {
		return &Break{Kind: BreakReordered, Seq: seq, ID: id,
			Detail: fmt.Sprintf("the log starts after seq %d (%s), but the chain before it ends at %s", v.th.Base, short(v.th.BaseHash), short(prev.Hash))}
	}
	h, err := ParseHexHash(hash)
	if err != nil {
		return &Break{Kind: BreakEdited, Seq: seq, ID: id, Detail: err.Error()}
	}
	if v.edge == nil {
		if b := v.begin(v.th.Leaf(seq), seq); b != nil {
			return b
		}
	}
	for _, t := range v.edge.Append([]tlog.Hash{h}) {
		// A tile of level 0 is the records' own hashes (ReadLogTilesFrom):
		// the ones above hold what they must add up to.
		if t.W() < tileWidth || t.L == 0 {
			continue
		}
		if b := v.compareTile(t, seq, id); b != nil {
			return b
		}
	}
	return v.reached(seq, id)
}

// begin starts the rebuilt log at leaf: empty, or, after retention, from
// the stored tiles that stand for the removed leaves.
func (v *logVerifier) begin(leaf int64, seq uint64) *Break {
	coords := EdgeTiles(leaf)
	data, err := v.s.ReadTiles(v.ctx, v.replica, coords)
	if err != nil {
		return &Break{Kind: BreakEdited, Seq: seq, Detail: fmt.Sprintf("reading the log's tiles: %v", err)}
	}
	stored := map[tlog.Tile][]byte{}
	for i, c := range coords {
		stored[c] = data[i]
	}
	edge, err := NewTreeEdge(leaf, stored)
	if err != nil {
		return &Break{Kind: BreakDeleted, Seq: seq, Detail: fmt.Sprintf("the log before seq %d cannot be rebuilt: %v", seq, err)}
	}
	v.edge = edge
	// Checkpoints of the records retention removed: recomputed from the
	// stored tiles where they still can be.
	for v.next < len(v.cps) && v.cps[v.next].Size < leaf {
		c := v.cps[v.next]
		root, err := tlog.TreeHash(c.Size, StoredHashReader(v.ctx, v.s, v.replica))
		switch {
		case err != nil:
			v.rep.Unchecked++
		case root != c.Root:
			return &Break{Kind: BreakForged, Seq: seq, Detail: fmt.Sprintf("the log's root at size %d is %s; %s says %s",
				c.Size, b64(root), c.from, b64(c.Root))}
		}
		v.next++
	}
	return v.reached(seq-1, "")
}

// reached checks the checkpoints of the rebuilt log's size.
func (v *logVerifier) reached(seq uint64, id string) *Break {
	for v.next < len(v.cps) && v.cps[v.next].Size <= v.edge.Size() {
		c := v.cps[v.next]
		v.next++
		if c.Size < v.edge.Size() {
			continue // before the records retention left (counted by begin)
		}
		root, err := v.edge.Root()
		if err != nil {
			return &Break{Kind: BreakEdited, Seq: seq, ID: id, Detail: err.Error()}
		}
		if root != c.Root {
			return &Break{Kind: BreakForged, Seq: seq, ID: id, Detail: fmt.Sprintf("the log rebuilt from the records has root %s at size %d; %s says %s (history rewritten)",
				b64(root), c.Size, c.from, b64(c.Root))}
		}
	}
	return nil
}

// compareTile compares a tile the rebuilt log completed with the stored one.
func (v *logVerifier) compareTile(t Tile, seq uint64, id string) *Break {
	data, err := v.s.ReadTiles(v.ctx, v.replica, []tlog.Tile{t.Coord()})
	if err != nil {
		return &Break{Kind: BreakEdited, Seq: seq, ID: id, Detail: fmt.Sprintf("reading the log's tile %s: %v", t.Coord().Path(), err)}
	}
	if !bytes.HasPrefix(data[0], t.Data) {
		return &Break{Kind: BreakEdited, Seq: seq, ID: id,
			Detail: fmt.Sprintf("the log's stored tile %s does not match the records' hashes", t.Coord().Path())}
	}
	return nil
}

// finish checks the end of the log: the partial tiles above level 0, and
// that no checkpoint is of a larger log than the records make.
func (v *logVerifier) finish(head Link) *Break {
	if v.edge == nil {
		if b := v.begin(v.th.Leaf(head.Seq+1), head.Seq+1); b != nil {
			return b
		}
	}
	for _, t := range v.edge.tiles {
		if t.L == 0 || t.W() == 0 {
			continue
		}
		if b := v.compareTile(t, head.Seq, ""); b != nil {
			return b
		}
	}
	root, err := v.edge.Root()
	if err != nil {
		return &Break{Kind: BreakEdited, Seq: head.Seq, Detail: err.Error()}
	}
	v.rep.Size, v.rep.Root = v.edge.Size(), b64(root)
	if v.edge.Size() == v.th.Size && root != v.th.Root {
		return &Break{Kind: BreakEdited, Seq: head.Seq, Detail: fmt.Sprintf("the log rebuilt from the records has root %s; the head was written with root %s (records moved or edited with their hashes)",
			b64(root), b64(v.th.Root))}
	}
	if v.next < len(v.cps) {
		c := v.cps[len(v.cps)-1]
		return &Break{Kind: BreakTruncated, Seq: head.Seq + 1, Detail: fmt.Sprintf("%s says the log held %d leaves (to seq %d); the store holds %d (to seq %d): records removed from the end",
			c.from, c.Size, v.th.Base+uint64(c.Size), v.edge.Size(), head.Seq)}
	}
	return nil
}

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }
