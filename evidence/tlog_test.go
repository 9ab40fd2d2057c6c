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
