package evidence

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RollupsReplica names the report Verify adds when the rollups disagree
// with the records: reports (tls-check, strict-readiness) read the
// rollups, so a rollup edited to turn plaintext into mtls would flip them.
const RollupsReplica = "(rollups)"

// rollupGroup is a group as Aggregate answers it, replicas merged.
type rollupGroup struct {
	source, host, principal, verdict string
	allowed                          bool
}

// rollupTally counts the walked records per hour and group, as the stores'
// rollups count them (RollupDeltas: an amendment moves its record's count),
// and remembers each replica's first walked record: the rollups are
// checked from the last of those on, where every replica's records are
// all still stored (retention removes only records older than the first
// it keeps).
type rollupTally struct {
	hours map[int64]map[rollupGroup]int64
	first map[string]time.Time
}

func newRollupTally() *rollupTally {
	return &rollupTally{hours: map[int64]map[rollupGroup]int64{}, first: map[string]time.Time{}}
}

func (t *rollupTally) add(replica string, r *Record) {
	if _, ok := t.first[replica]; !ok {
		t.first[replica] = r.Time
	}
	RollupDeltas(r, func(k RollupKey, delta int64) {
		h := floorDivInt(k.Minute, 60)
		m := t.hours[h]
		if m == nil {
			m = map[rollupGroup]int64{}
			t.hours[h] = m
		}
		m[rollupGroup{k.Source, k.DestinationHost, k.DestinationPrincipal, k.Verdict, k.Allowed}] += delta
	})
}

func floorDivInt(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// check compares the rollups' counts (Aggregate) over the whole hours from
// the last replica's first walked record to the hour before now with the
// records' own: a report of RollupsReplica when they differ, nil when they
// agree or there is no whole hour to compare.
func (t *rollupTally) check(ctx context.Context, s Verifiable, now time.Time) *ChainReport {
	if len(t.first) == 0 {
		return nil
	}
	if now.IsZero() {
		now = time.Now()
	}
	var since time.Time
	for _, f := range t.first {
		if f.After(since) {
			since = f
		}
	}
	from := floorDivInt(since.Unix()+3599, 3600) // the first whole hour
	to := floorDivInt(now.Add(-time.Minute).Unix(), 3600)
	if from >= to {
		return nil
	}
	want := map[rollupGroup]int64{}
	for h := range t.hours {
		if h >= from && h < to {
			for g, n := range t.hours[h] {
				want[g] += n
			}
		}
	}
	groups, err := s.Aggregate(ctx, AggregateQuery{Since: time.Unix(from*3600, 0).UTC(), Until: time.Unix(to*3600, 0).UTC()})
	rep := &ChainReport{Replica: RollupsReplica}
	if err != nil {
		rep.Broken = &Break{Kind: BreakEdited, Detail: "the rollups could not be read: " + err.Error()}
		return rep
	}
	got := map[rollupGroup]int64{}
	for _, g := range groups {
		got[rollupGroup{g.Source, g.DestinationHost, g.DestinationPrincipal, string(g.Verdict), g.Allowed}] += g.Count
	}
	var diffs []string
	for g, n := range want {
		if got[g] != n {
			diffs = append(diffs, fmt.Sprintf("%s -> %s (%s) %s %s: the rollups count %d, the records %d", g.source, g.host, g.principal, g.verdict, outcome(g.allowed), got[g], n))
		}
	}
	for g, n := range got {
		if _, ok := want[g]; !ok && n != 0 {
			diffs = append(diffs, fmt.Sprintf("%s -> %s (%s) %s %s: the rollups count %d, the records 0", g.source, g.host, g.principal, g.verdict, outcome(g.allowed), n))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	rep.Checked = int64(len(want))
	rep.Broken = &Break{Kind: BreakEdited, Detail: fmt.Sprintf("from %s to %s the rollups (what reports read) disagree with the records: %s",
		time.Unix(from*3600, 0).UTC().Format(time.RFC3339), time.Unix(to*3600, 0).UTC().Format(time.RFC3339), strings.Join(diffs, "; "))}
	return rep
}

func outcome(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}
