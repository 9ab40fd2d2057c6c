package storekit

import (
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Groups sums rollup counts into Aggregate's groups, per point of a series
// (0 for Aggregate): the counts of one edge's replicas add up.
type Groups struct {
	m map[groupKey]*evidence.PointGroup
}

type groupKey struct {
	point int
	key   evidence.RollupKey // Replica and Minute cleared
}

// Add counts a rollup key's sums over a range of point: count requests
// from firstNS to lastNS, example one of them.
func (gs *Groups) Add(point int, k evidence.RollupKey, count, firstNS, lastNS int64, example string) {
	if gs.m == nil {
		gs.m = map[groupKey]*evidence.PointGroup{}
	}
	k.Replica, k.Minute = "", 0
	first, last := time.Unix(0, firstNS).UTC(), time.Unix(0, lastNS).UTC()
	g := gs.m[groupKey{point, k}]
	if g == nil {
		g = &evidence.PointGroup{Point: point, Group: evidence.Group{Source: k.Source, DestinationHost: k.DestinationHost,
			DestinationPrincipal: k.DestinationPrincipal, Verdict: evidence.Verdict(k.Verdict), Allowed: k.Allowed,
			FirstSeen: first, LastSeen: last, ExampleID: example}}
		gs.m[groupKey{point, k}] = g
	}
	g.Count += count
	if first.Before(g.FirstSeen) {
		g.FirstSeen = first
	}
	if last.After(g.LastSeen) {
		g.LastSeen = last
	}
	g.ExampleID = min(g.ExampleID, example)
}

// Points are the groups with a count above 0 (an edge whose only record
// was amended away has none), in no particular order.
func (gs *Groups) Points() []evidence.PointGroup {
	out := make([]evidence.PointGroup, 0, len(gs.m))
	for _, g := range gs.m {
		if g.Count > 0 {
			out = append(out, *g)
		}
	}
	return out
}
