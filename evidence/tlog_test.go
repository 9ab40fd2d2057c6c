package evidence_test

import (
	"math/rand/v2"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
)

// TestTreeEdgeMatchesTlog: the edge's root after any number of leaves,
// added in batches of any size, and after being made again from the tiles
// it gave to store (as a store reloads it), is tlog's root of the same
// leaves computed from all of them; the tiles it gives are tlog's.
func TestTreeEdgeMatchesTlog(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	var leaves []tlog.Hash
	var stored []tlog.Hash // tlog's stored hashes of every leaf so far
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	tiles := map[tlog.Tile][]byte{} // as a store keeps them: by (L, N), the widest
	keep := func(ts []evidence.Tile) {
		for _, tl := range ts {
			c := tl.Coord()
			c.W = 0
			tiles[c] = append([]byte(nil), tl.Data...)
		}
	}
	edge, err := evidence.NewTreeEdge(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for len(leaves) < 70_000 {
		n := 1 + rng.IntN(40)
		if rng.IntN(50) == 0 {
			n = 1 + rng.IntN(3000)
		}
		batch := make([]tlog.Hash, n)
		for i := range batch {
			batch[i] = tlog.RecordHash([]byte{byte(len(leaves) + i), byte((len(leaves) + i) >> 8), byte((len(leaves) + i) >> 16)})
			hs, err := tlog.StoredHashesForRecordHash(int64(len(leaves)+i), batch[i], reader)
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		leaves = append(leaves, batch...)
		keep(edge.Append(batch))
		want, err := tlog.TreeHash(int64(len(leaves)), reader)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := edge.Root(); err != nil || got != want {
			t.Fatalf("%d leaves: root %v, %v; tlog says %v", len(leaves), got, err, want)
		}
		if rng.IntN(10) == 0 { // reload, as a store does after a failure
			size := int64(len(leaves))
			have := map[tlog.Tile][]byte{}
			for _, c := range evidence.EdgeTiles(size) {
				k := c
				k.W = 0
				if c.L == 0 {
					// Level 0's partial tile is the records' own hashes.
					start := c.N << evidence.TileHeight
					var data []byte
					for _, h := range leaves[start : start+int64(c.W)] {
						data = append(data, h[:]...)
					}
					have[c] = data
					continue
				}
				have[c] = tiles[k]
			}
			if edge, err = evidence.NewTreeEdge(size, have); err != nil {
				t.Fatalf("reload at %d leaves: %v", size, err)
			}
			if got, _ := edge.Root(); got != want {
				t.Fatalf("reloaded at %d leaves: root %v, want %v", size, got, want)
			}
		}
	}
	// Every complete tile kept is tlog's own.
	for c, data := range tiles {
		if len(data) != 256*tlog.HashSize {
			continue
		}
		c.W = 256
		want, err := tlog.ReadTileData(c, reader)
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != string(data) {
			t.Fatalf("tile %s differs from tlog's", c.Path())
		}
	}
}

// TestLevelZeroFromLeaves: a log kept as the stores keep it (BuildLog: the
// tiles above level 0 only) and its level 0 from the leaves (as a store
// recomputes them from its records) gives tlog's tiles, and inclusion and
// consistency proofs that check against tlog's root; with retention's
// stored prefix of a tile whose first records are gone, too.
func TestLevelZeroFromLeaves(t *testing.T) {
	const n = 3*256*256 + 700
	const base = 5 // the log starts after seq 5
	leaves := make([]tlog.Hash, n)
	hexes := make([]string, n)
	for i := range leaves {
		leaves[i] = tlog.RecordHash([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		hexes[i] = evidence.HexHash(leaves[i])
	}
	kept, root, err := evidence.BuildLog(hexes)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[[2]int64][]byte{}
	for _, tl := range kept {
		if tl.L == 0 {
			t.Fatalf("BuildLog keeps tile %s of level 0", tl.Coord().Path())
		}
		stored[[2]int64{int64(tl.L), tl.N}] = tl.Data
	}
	gone := int64(0) // seqs up to base+gone are removed (retention)
	calls := 0
	read := func(tiles []tlog.Tile) ([][]byte, error) {
		return evidence.ReadLogTilesFrom(tiles, base, func(c tlog.Tile) ([]byte, error) {
			return stored[[2]int64{int64(c.L), c.N}], nil
		}, func(from, to int64) ([]tlog.Hash, bool, error) {
			calls++
			if from <= base+gone || to > base+n+1 || from > to {
				return nil, false, nil
			}
			return leaves[from-base-1 : to-base-1], true, nil
		})
	}
	reader := tlog.TileHashReader(tlog.Tree{N: n, Hash: root}, tileReader{read})
	if got, err := tlog.TreeHash(n, reader); err != nil || got != root {
		t.Fatalf("root from the tiles = %v, %v; want %v", got, err, root)
	}
	for _, i := range []int64{0, 1, 255, 256, 257, 65535, 65536, n / 2, n - 700, n - 1} {
		p, err := tlog.ProveRecord(n, i, reader)
		if err != nil {
			t.Fatalf("ProveRecord(%d): %v", i, err)
		}
		if err := tlog.CheckRecord(p, n, root, i, leaves[i]); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
	}
	for _, m := range []int64{1, 256, 1000, 65536, n - 1} {
		p, err := tlog.ProveTree(n, m, reader)
		if err != nil {
			t.Fatalf("ProveTree(%d): %v", m, err)
		}
		mroot, err := tlog.TreeHash(m, reader)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, n, root, m, mroot); err != nil {
			t.Fatalf("size %d: %v", m, err)
		}
	}
	if calls == 0 {
		t.Fatal("level 0 never came from the leaves")
	}
	// Retention removes the records up to leaf 300 and keeps the part of
	// their tile they leave (leaves 256..299): that tile is whole again.
	gone = 300
	stored[[2]int64{0, 1}] = flat(leaves[256:300])
	tiles, err := read([]tlog.Tile{{H: 8, L: 0, N: 1, W: 256}, {H: 8, L: 0, N: 0, W: 256}})
	if err != nil {
		t.Fatal(err)
	}
	if string(tiles[0]) != string(flat(leaves[256:512])) {
		t.Error("tile 0/1 is not the stored prefix and the leaves after it")
	}
	if tiles[1] != nil {
		t.Error("tile 0/0, whose records are gone, was made up")
	}
}

type tileReader struct {
	read func([]tlog.Tile) ([][]byte, error)
}

func (r tileReader) Height() int                                { return evidence.TileHeight }
func (r tileReader) ReadTiles(ts []tlog.Tile) ([][]byte, error) { return r.read(ts) }
func (r tileReader) SaveTiles([]tlog.Tile, [][]byte)            {}

func flat(hs []tlog.Hash) []byte {
	var b []byte
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

// BenchmarkTreeEdgeAppend: the cost of growing a log by a leaf, in
// batches of 10,000 as a store appends them (the tiles it returns
// included).
func BenchmarkTreeEdgeAppend(b *testing.B) {
	batch := make([]tlog.Hash, 10_000)
	for i := range batch {
		batch[i] = tlog.RecordHash([]byte{byte(i), byte(i >> 8)})
	}
	edge, err := evidence.NewTreeEdge(0, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		edge.Append(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/leaf")
}
