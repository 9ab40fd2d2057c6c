package evidence

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// Each replica's records are the leaves of a transparency log with RFC 6962
// hashing, kept with golang.org/x/mod/sumdb/tlog (the Go checksum
// database's implementation): leaf i is the record at seq Base+i+1, its hash
// tlog.RecordHash of the record's canonical bytes (version 2). The stores
// keep the log's hashes as tiles of height TileHeight, each tile the hashes
// of one level of a 2^TileHeight-wide subtree, so that a proof reads a
// tile per TileHeight levels. Retention removes records and their level-0
// tiles, never the tiles above, which newer records' proofs need.

// TileHeight is the height of the stored tiles: 256 hashes (8 KiB) a tile.
const TileHeight = 8

const tileWidth = 1 << TileHeight

// Tile is one stored tile: tlog's coordinates (height TileHeight) and its
// hashes, 32 bytes each, W of them.
type Tile struct {
	L    int
	N    int64
	Data []byte
}

// W is how many hashes the tile holds.
func (t Tile) W() int { return len(t.Data) / tlog.HashSize }

// Coord is the tile's tlog coordinate.
func (t Tile) Coord() tlog.Tile {
	return tlog.Tile{H: TileHeight, L: t.L, N: t.N, W: t.W()}
}

// TreeHead is a replica's log as its last write left it.
type TreeHead struct {
	// Base is the seq before the log's first leaf: 0 for a chain begun by
	// this version, or the last seq written with canonical encoding v1 in
	// a store that was upgraded (those records stay on their hash chain,
	// which ends at BaseHash).
	Base     uint64
	BaseHash string
	Size     int64
	Root     tlog.Hash
	// Rollups is where the replica's rollup seals stand (RollupSeal).
	Rollups SealHead
}

// MakeTreeHead checks and assembles a log head as a store reads it.
func MakeTreeHead(replica string, base uint64, baseHash string, headSeq uint64, root []byte) (TreeHead, bool, error) {
	if headSeq < base {
		return TreeHead{}, false, fmt.Errorf("the head of %s (seq %d) is before its log's base (seq %d)", replica, headSeq, base)
	}
	if len(root) != tlog.HashSize {
		return TreeHead{}, false, fmt.Errorf("the head of %s has no log root (%d bytes)", replica, len(root))
	}
	th := TreeHead{Base: base, BaseHash: baseHash, Size: int64(headSeq - base)}
	copy(th.Root[:], root)
	return th, true, nil
}

// Leaf is the leaf index of the record at seq.
func (h TreeHead) Leaf(seq uint64) int64 { return int64(seq - h.Base - 1) }

// LogReader reads a replica's log as a store keeps it.
type LogReader interface {
	// TreeHead returns the replica's log head, with ok false when it has
	// no log (no record written with canonical encoding v2).
	TreeHead(ctx context.Context, replica string) (head TreeHead, ok bool, err error)
	// ReadTiles returns the stored data of each tile at (L, N), as wide as
	// it is stored (at least the width asked for when the log has reached
	// it), nil for a tile not stored (removed with its records).
	ReadTiles(ctx context.Context, replica string, tiles []tlog.Tile) ([][]byte, error)
}

// TreeEdge is the right edge of a log: per level, the tile that the next
// hash of that level goes into. Appending to it gives the tiles to store
// and the new root; it holds at most TileHeight-levels' tiles, 8 KiB each.
type TreeEdge struct {
	size  int64
	tiles []Tile // tiles[L]: N = (size >> (H*L)) >> H, W = (size >> (H*L)) % 2^H hashes
	// levels[l] is the root of the complete subtree of 2^l leaves that
	// the log is made of where bit l of size is set (its compact range):
	// all that adding a leaf and making the root read, so that neither
	// hashes a tile over again.
	levels []tlog.Hash
	// formed are the subtree roots the last leaf completed, by height
	// (formed[0] is the leaf): the root of a tile it completes is one.
	formed []tlog.Hash
}

// EdgeTiles are the tiles a TreeEdge of size is made of (the partial tile
// of each level that has one).
func EdgeTiles(size int64) []tlog.Tile {
	var out []tlog.Tile
	for l := 0; size>>(TileHeight*l) > 0; l++ {
		n := size >> (TileHeight * l)
		if w := int(n % tileWidth); w > 0 {
			out = append(out, tlog.Tile{H: TileHeight, L: l, N: n / tileWidth, W: w})
		}
	}
	return out
}

// NewTreeEdge makes the edge of a log of size leaves from its edge tiles
// (EdgeTiles(size), as stored: wider data is cut to size).
func NewTreeEdge(size int64, stored map[tlog.Tile][]byte) (*TreeEdge, error) {
	e := &TreeEdge{size: size}
	for l := 0; size>>(TileHeight*l) > 0; l++ {
		n := size >> (TileHeight * l)
		t := Tile{L: l, N: n / tileWidth}
		if w := int(n % tileWidth); w > 0 {
			c := tlog.Tile{H: TileHeight, L: l, N: t.N, W: w}
			data := stored[c]
			if len(data) < w*tlog.HashSize {
				return nil, fmt.Errorf("%w: tile %s is missing or short (%d bytes)", ErrIncompleteLog, c.Path(), len(data))
			}
			t.Data = append(make([]byte, 0, tileWidth*tlog.HashSize), data[:w*tlog.HashSize]...)
		}
		e.tiles = append(e.tiles, t)
	}
	for l := 0; size>>l > 0; l++ {
		if size>>l&1 == 0 {
			continue
		}
		hs, err := e.hashReader().ReadHashes([]int64{tlog.StoredHashIndex(l, size>>l-1)})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrIncompleteLog, err)
		}
		e.setLevel(l, hs[0])
	}
	return e, nil
}

// frontierReader reads the roots of the log's complete subtrees by their
// stored-hash indexes (tlog.TreeHash asks for those alone).
func (e *TreeEdge) frontierReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
	next:
		for i, x := range indexes {
			for l := range e.levels {
				if e.size>>l&1 == 1 && tlog.StoredHashIndex(l, e.size>>l-1) == x {
					out[i] = e.levels[l]
					continue next
				}
			}
			return nil, fmt.Errorf("evidence: hash %d is not on the log's frontier", x)
		}
		return out, nil
	})
}

// grow adds the leaf h at e.size to the compact range: as tlog's
// StoredHashesForRecordHash, each complete subtree it closes is hashed
// once, with its left sibling.
func (e *TreeEdge) grow(h tlog.Hash) {
	e.formed = append(e.formed[:0], h)
	l := 0
	for ; e.size>>l&1 == 1; l++ {
		h = tlog.NodeHash(e.levels[l], h)
		e.formed = append(e.formed, h)
	}
	e.setLevel(l, h)
}

func (e *TreeEdge) setLevel(l int, h tlog.Hash) {
	for len(e.levels) <= l {
		e.levels = append(e.levels, tlog.Hash{})
	}
	e.levels[l] = h
}

// Size is the number of leaves.
func (e *TreeEdge) Size() int64 { return e.size }

// Growth is an edge grown by a batch's leaves on another goroutine, while
// a store writes the batch's records: hashing the tree's nodes is some 7 %
// of an append's work.
type Growth struct {
	edge  *TreeEdge
	from  int64 // the edge's size before the batch
	tiles []Tile
	err   error
	done  chan struct{}
}

// GrowAhead grows edge by the leaves of batch, which must all be log
// leaves (CanonicalV2), on another goroutine. The edge is the Growth's
// from then on.
func GrowAhead(edge *TreeEdge, batch []*Record) *Growth {
	g := &Growth{edge: edge, from: edge.Size(), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		leaves, err := LeafHashes(batch)
		if err != nil {
			g.err = err
			return
		}
		g.tiles = edge.Append(leaves)
	}()
	return g
}

// Grown waits for the growth and returns the edge and the tiles Append
// returned, when the edge had size from before the batch; nil and no
// tiles otherwise (the batch does not follow it: the edge is spoilt). err
// is LeafHashes's.
func (g *Growth) Grown(from int64) (*TreeEdge, []Tile, error) {
	<-g.done
	if g.err != nil {
		return nil, nil, g.err
	}
	if g.from != from {
		return nil, nil, nil
	}
	return g.edge, g.tiles, nil
}

// GrowEdge adds batch (log leaves) to the log of size leaves and returns
// its edge after them with the tiles to store: ahead's when it grew from
// that size (ahead may be nil), else kept grown here when kept has that
// size, else load's. A load error comes back as load returned it.
func GrowEdge(ahead *Growth, kept *TreeEdge, size int64, batch []*Record, load func() (*TreeEdge, error)) (*TreeEdge, []Tile, error) {
	if ahead != nil {
		edge, tiles, err := ahead.Grown(size)
		if err != nil {
			return nil, nil, fmt.Errorf("evidence: %w", err)
		}
		if edge != nil {
			return edge, tiles, nil
		}
	}
	leaves, err := LeafHashes(batch)
	if err != nil {
		return nil, nil, fmt.Errorf("evidence: %w", err)
	}
	edge := kept
	if edge == nil || edge.Size() != size {
		if edge, err = load(); err != nil {
			return nil, nil, err
		}
	}
	return edge, edge.Append(leaves), nil
}

// Wait waits for the growth to end (it reads the batch).
func (g *Growth) Wait() { <-g.done }

// Append adds leaf hashes and returns the tiles to store: every tile that
// changed, complete or partial, in its final state.
func (e *TreeEdge) Append(leaves []tlog.Hash) []Tile {
	touched := map[[2]int64]Tile{}
	var order [][2]int64
	note := func(t Tile) {
		k := [2]int64{int64(t.L), t.N}
		if _, ok := touched[k]; !ok {
			order = append(order, k)
		}
		touched[k] = t
	}
	for _, h := range leaves {
		e.grow(h)
		e.size++
		for l := 0; ; l++ {
			if l == len(e.tiles) {
				e.tiles = append(e.tiles, Tile{L: l, N: 0, Data: make([]byte, 0, tileWidth*tlog.HashSize)})
			}
			t := &e.tiles[l]
			t.Data = append(t.Data, h[:]...)
			if t.W() < tileWidth {
				note(Tile{L: t.L, N: t.N, Data: t.Data})
				break
			}
			// The tile is complete: store it, and its root is the next
			// hash one tile level up.
			note(Tile{L: t.L, N: t.N, Data: t.Data})
			h = e.formed[TileHeight*(l+1)]
			*t = Tile{L: l, N: t.N + 1, Data: make([]byte, 0, tileWidth*tlog.HashSize)}
		}
	}
	out := make([]Tile, len(order))
	for i, k := range order {
		out[i] = touched[k]
	}
	return out
}

// Root is the log's root hash (tlog.TreeHash over the frontier).
func (e *TreeEdge) Root() (tlog.Hash, error) {
	if e.size == 0 {
		return tlog.Hash{}, nil
	}
	return tlog.TreeHash(e.size, e.frontierReader())
}

func (e *TreeEdge) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			c := tlog.TileForIndex(TileHeight, x)
			if c.L >= len(e.tiles) || e.tiles[c.L].N != c.N || e.tiles[c.L].W() < c.W {
				return nil, fmt.Errorf("evidence: hash %d is not on the log's edge", x)
			}
			t := e.tiles[c.L]
			h, err := tlog.HashFromTile(t.Coord(), t.Data, x)
			if err != nil {
				return nil, err
			}
			out[i] = h
		}
		return out, nil
	})
}

// LeafHashes turns a batch's chain hashes (version 2: leaf hashes in hex)
// into tlog hashes.
func LeafHashes(batch []*Record) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(batch))
	for i, r := range batch {
		if r.Chain.Version != CanonicalV2 {
			return nil, fmt.Errorf("record %s (seq %d) is not a log leaf (canonical encoding v%d)", r.ID, r.Chain.Seq, max(r.Chain.Version, 1))
		}
		h, err := parseHexHash(r.Chain.Hash)
		if err != nil {
			return nil, fmt.Errorf("record %s: %w", r.ID, err)
		}
		out[i] = h
	}
	return out, nil
}

func parseHexHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	if n, err := hex.Decode(h[:], []byte(s)); err != nil || n != tlog.HashSize || len(s) != 2*tlog.HashSize || strings.ContainsAny(s, "ABCDEF") {
		return h, fmt.Errorf("hash %q is not 64 lowercase hex digits", s)
	}
	return h, nil
}

// StoredHashReader reads a replica's log hashes from the stored tiles,
// without authenticating them: Verify checks the tiles against one another
// and the root, and a proof is checked against a signed root by whoever
// receives it.
func StoredHashReader(ctx context.Context, s LogReader, replica string) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		var coords []tlog.Tile
		seen := map[[2]int64]int{}
		where := make([]int, len(indexes))
		for i, x := range indexes {
			c := tlog.TileForIndex(TileHeight, x)
			k := [2]int64{int64(c.L), c.N}
			j, ok := seen[k]
			if !ok {
				j = len(coords)
				seen[k] = j
				coords = append(coords, c)
			} else if c.W > coords[j].W {
				coords[j].W = c.W
			}
			where[i] = j
		}
		data, err := s.ReadTiles(ctx, replica, coords)
		if err != nil {
			return nil, err
		}
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			c, d := coords[where[i]], data[where[i]]
			if len(d) < c.W*tlog.HashSize {
				return nil, fmt.Errorf("%w: the log's tile %s of %s is not stored (removed with its records?)", ErrNotFound, c.Path(), replica)
			}
			c.W = len(d) / tlog.HashSize
			h, err := tlog.HashFromTile(c, d, x)
			if err != nil {
				return nil, err
			}
			out[i] = h
		}
		return out, nil
	})
}

var (
	// ErrNoLog: the record or replica has no transparency log (written
	// before it, with canonical encoding v1).
	ErrNoLog = errors.New("no transparency log")
	// ErrIncompleteLog: a hash the log needs is neither in a stored tile
	// nor in a stored record (removed behind the store's back?).
	ErrIncompleteLog = errors.New("the log's hashes are incomplete")
)

// ReadLogTiles is ReadLogTilesFrom with the leaf hashes of seqs [from, to)
// given in hex (as Chain.Hash holds them), for a store that keeps them.
func ReadLogTiles(tiles []tlog.Tile, base uint64, stored func(tlog.Tile) ([]byte, error),
	hashes func(from, to int64) (hexes []string, ok bool, err error)) ([][]byte, error) {
	return ReadLogTilesFrom(tiles, base, stored, func(from, to int64) ([]tlog.Hash, bool, error) {
		hexes, ok, err := hashes(from, to)
		if err != nil || !ok {
			return nil, ok, err
		}
		out := make([]tlog.Hash, len(hexes))
		for i, x := range hexes {
			h, err := ParseHexHash(x)
			if err != nil {
				return nil, false, nil
			}
			out[i] = h
		}
		return out, true, nil
	})
}

// ReadLogTilesFrom reads tiles of a log whose leaves start after seq base,
// as the stores keep them: tiles above level 0 are stored (stored gives a
// tile's data, nil when not stored); a tile of level 0 is the leaf hashes
// of its records, leaves(from, to) giving those of seqs [from, to) in
// order, with ok false when one is missing (a store recomputes them from
// the records, or reads the hashes it keeps). Only retention stores data
// of level 0: the hashes of the records it removed from a tile whose other
// records stay, which leaves then completes. A tile that cannot be made
// whole is nil.
func ReadLogTilesFrom(tiles []tlog.Tile, base uint64, stored func(tlog.Tile) ([]byte, error),
	leaves func(from, to int64) (hashes []tlog.Hash, ok bool, err error)) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := stored(t)
		if err != nil {
			return nil, err
		}
		if len(data) < t.W*tlog.HashSize && t.L == 0 {
			tileStart := int64(base) + t.N<<TileHeight + 1
			have := len(data) / tlog.HashSize
			hs, ok, err := leaves(tileStart+int64(have), tileStart+int64(t.W))
			if err != nil {
				return nil, err
			}
			data = append(make([]byte, 0, t.W*tlog.HashSize), data[:have*tlog.HashSize]...)
			for _, h := range hs {
				data = append(data, h[:]...)
			}
			if !ok || len(data) != t.W*tlog.HashSize {
				data = nil
			}
		}
		out[i] = data
	}
	return out, nil
}

// BuildLog makes a whole log from its leaf hashes (in hex, as Chain.Hash
// holds them): the tiles a store keeps of it (those above level 0,
// complete and partial: level 0 is the records' own hashes, see
// ReadLogTilesFrom) and its root. Tests that write a store behind its
// back, as an older meshproof or an attacker would, use it.
func BuildLog(hexes []string) ([]Tile, tlog.Hash, error) {
	leaves := make([]tlog.Hash, len(hexes))
	for i, x := range hexes {
		h, err := ParseHexHash(x)
		if err != nil {
			return nil, tlog.Hash{}, err
		}
		leaves[i] = h
	}
	e := &TreeEdge{}
	var kept []Tile
	for _, t := range e.Append(leaves) {
		if t.L > 0 {
			kept = append(kept, t)
		}
	}
	root, err := e.Root()
	return kept, root, err
}
