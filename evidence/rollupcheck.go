package evidence

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// RollupsReplica names the report Verify adds when the rollups disagree
// with the records or with their seals: reports (tls-check,
// strict-readiness) read the rollups, so a rollup edited to turn plaintext
// into mtls would flip them.
const RollupsReplica = "(rollups)"

// rollupGroup is a group as Aggregate answers it, replicas merged.
type rollupGroup struct {
	source, host, principal, verdict string
	allowed                          bool
}

func groupOf(k RollupKey) rollupGroup {
	return rollupGroup{k.Source, k.DestinationHost, k.DestinationPrincipal, k.Verdict, k.Allowed}
}

func (g rollupGroup) String() string {
	return fmt.Sprintf("%s -> %s (%s) %s %s", g.source, g.host, g.principal, g.verdict, outcome(g.allowed))
}

// rollupTally counts the walked records per replica, hour and group, as the
// stores' rollups count them (RollupDeltas: an amendment moves its record's
// count), and keeps what Verify learnt of each intact chain.
type rollupTally struct {
	hours  map[string]map[int64]map[rollupGroup]int64
	chains map[string]*tallyChain
}

type tallyChain struct {
	start   Link         // the last link retention removed
	first   time.Time    // the first walked record's time
	walked  bool         // a record was walked
	cps     []Checkpoint // the checkpoints the log was checked against
	head    SealHead
	seals   map[int64]RollupSeal
	records int64 // the first hour whose records are all stored
}

func newRollupTally() *rollupTally {
	return &rollupTally{hours: map[string]map[int64]map[rollupGroup]int64{}, chains: map[string]*tallyChain{}}
}

func (t *rollupTally) chain(replica string) *tallyChain {
	c := t.chains[replica]
	if c == nil {
		c = &tallyChain{}
		t.chains[replica] = c
	}
	return c
}

func (t *rollupTally) add(replica string, r *Record) {
	if c := t.chain(replica); !c.walked {
		c.first, c.walked = r.Time, true
	}
	hours := t.hours[replica]
	if hours == nil {
		hours = map[int64]map[rollupGroup]int64{}
		t.hours[replica] = hours
	}
	RollupDeltas(r, func(k RollupKey, delta int64) {
		h := floorDivInt(k.Minute, 60)
		m := hours[h]
		if m == nil {
			m = map[rollupGroup]int64{}
			hours[h] = m
		}
		m[groupOf(k)] += delta
	})
}

// done notes an intact chain: where it starts and the checkpoints its log
// was checked against.
func (t *rollupTally) done(replica string, start Link, cps []checkpointAt) {
	c := t.chain(replica)
	c.start = start
	for _, cp := range cps {
		c.cps = append(c.cps, cp.Checkpoint)
	}
}

func floorDivInt(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// rollupCheck is one run of the rollups' check: the problems found, at
// most a handful spelled out.
type rollupCheck struct {
	t       *rollupTally
	s       Verifiable
	opts    VerifyOptions
	now     time.Time
	from    int64 // the first hour whose buckets are all stored
	end     int64 // the first hour not checked (it may still grow)
	closed  int64 // the first minute the coarser buckets do not count yet
	diffs   []string
	checked int64
}

func (c *rollupCheck) fail(format string, args ...any) {
	c.diffs = append(c.diffs, fmt.Sprintf(format, args...))
}

// check compares the rollups with the records still stored, with the seals
// of the hours whose records are gone, and what reports read of them (the
// hours, days and weeks) with the minutes they sum: a report of
// RollupsReplica when something differs, nil when all agree.
func (t *rollupTally) check(ctx context.Context, s Verifiable, opts VerifyOptions) (*ChainReport, error) {
	c := &rollupCheck{t: t, s: s, opts: opts, now: opts.Now}
	if c.now.IsZero() {
		c.now = time.Now()
	}
	horizon, closed, err := s.RollupBounds(ctx)
	c.closed = closed
	if err != nil {
		return nil, err
	}
	c.from = math.MinInt64
	if horizon != math.MinInt64 {
		c.from = -floorDivInt(-horizon, 60)
		if rr := opts.RollupRetention; rr > 0 && HourStart(c.from).After(c.now.Add(-rr).Add(time.Hour+clockSlack)) {
			c.fail("the rollups before %s were removed, but --rollup-retention (%s) keeps them from %s",
				HourStart(c.from).Format(time.RFC3339), rr, c.now.Add(-rr).UTC().Format(time.RFC3339))
		}
	}
	c.end = floorDivInt(c.now.Add(-time.Minute).Unix(), 3600)
	for _, replica := range slices.Sorted(maps.Keys(t.chains)) {
		if err := c.seals(ctx, replica); err != nil {
			return nil, err
		}
	}
	// The seals' problems first (they explain the buckets'), each part in
	// order.
	slices.Sort(c.diffs)
	n := len(c.diffs)
	if err := c.buckets(ctx); err != nil {
		return nil, err
	}
	if len(c.diffs) == 0 {
		return nil, nil
	}
	slices.Sort(c.diffs[n:])
	if len(c.diffs) > 5 {
		c.diffs = append(c.diffs[:5], fmt.Sprintf("and %d more", len(c.diffs)-5))
	}
	return &ChainReport{Replica: RollupsReplica, Checked: c.checked, Broken: &Break{Kind: BreakEdited,
		Detail: "the rollups (what reports read) do not hold: " + strings.Join(c.diffs, "; ")}}, nil
}

// seals reads and checks replica's seal chain, against its checkpoints,
// and settles from which hour its records are all stored.
func (c *rollupCheck) seals(ctx context.Context, replica string) error {
	ch := c.t.chains[replica]
	ch.seals = map[int64]RollupSeal{}
	var prev *RollupSeal
	var first int64
	head, err := c.s.RollupSeals(ctx, replica, func(s RollupSeal) error {
		switch {
		case SealChain(s.Prev, s.Hour, s.Digest) != s.Chain:
			c.fail("%s: the seal of %s does not hash to its chain value", replica, HourStart(s.Hour).Format(time.RFC3339))
		case prev == nil:
			first = s.Hour
		case s.Hour != prev.Hour+1 || s.Prev != prev.Chain:
			c.fail("%s: the seal of %s does not follow the seal of %s (seals removed or replaced)", replica,
				HourStart(s.Hour).Format(time.RFC3339), HourStart(prev.Hour).Format(time.RFC3339))
		}
		ch.seals[s.Hour] = s
		prev = &s
		return nil
	})
	if err != nil {
		return err
	}
	ch.head = head
	if head.Through > 0 {
		// Every hour from the first still whole to the head is sealed.
		want := max(head.First, c.from)
		switch {
		case prev == nil && want < head.Through:
			c.fail("%s: the seals of %s to %s are gone while their rollups are kept", replica, HourStart(want).Format(time.RFC3339), HourStart(head.Through).Format(time.RFC3339))
		case prev != nil && (prev.Hour+1 != head.Through || prev.Chain != head.Chain):
			c.fail("%s: the seals end at %s (%s), the seal head says %s (%s)", replica, HourStart(prev.Hour+1).Format(time.RFC3339),
				shortSeal(prev.Chain), HourStart(head.Through).Format(time.RFC3339), shortSeal(head.Chain))
		case prev != nil && first > want:
			c.fail("%s: the seals of %s to %s are gone while their rollups are kept", replica, HourStart(want).Format(time.RFC3339), HourStart(first).Format(time.RFC3339))
		case prev != nil && first == head.First && ch.seals[first].Prev != [32]byte{}:
			c.fail("%s: the first seal ever (%s) follows another", replica, HourStart(first).Format(time.RFC3339))
		}
		if r := c.opts.Retention; r > 0 && HourStart(head.Through).After(c.now.Add(-r).Add(time.Hour+clockSlack)) {
			c.fail("%s: seals reach %s, but retention (--retention %s) seals only hours older than %s", replica,
				HourStart(head.Through).Format(time.RFC3339), r, c.now.Add(-r).UTC().Format(time.RFC3339))
		}
	}
	for _, cp := range ch.cps {
		signed, ok, err := cp.Rollups()
		switch {
		case err != nil:
			c.fail("%s: checkpoint of size %d: %v", replica, cp.Size, err)
		case !ok:
		case signed.First != head.First:
			c.fail("%s: the checkpoint of size %d says sealing began at %s, the store says %s", replica, cp.Size,
				HourStart(signed.First).Format(time.RFC3339), HourStart(head.First).Format(time.RFC3339))
		case signed.Through > head.Through:
			c.fail("%s: the checkpoint of size %d says hours up to %s were sealed, the store's seals end at %s", replica, cp.Size,
				HourStart(signed.Through).Format(time.RFC3339), HourStart(head.Through).Format(time.RFC3339))
		default:
			if s, ok := ch.seals[signed.Through-1]; ok && s.Chain != signed.Chain {
				c.fail("%s: the seal of %s is %s, the checkpoint of size %d says %s", replica,
					HourStart(s.Hour).Format(time.RFC3339), shortSeal(s.Chain), cp.Size, shortSeal(signed.Chain))
			}
		}
	}
	// The records of every hour from records on are all stored.
	switch {
	case head.Through > 0:
		ch.records = head.Through
	case ch.start.Seq == 0:
		ch.records = math.MinInt64
	case ch.walked:
		// Removed by a version that did not seal: from the first whole
		// hour after the oldest record kept.
		ch.records = floorDivInt(ch.first.Unix()+3599, 3600)
	default:
		ch.records = math.MaxInt64
	}
	return nil
}

// buckets walks the stored buckets hour by hour: each replica's minutes of
// an hour against its seal or its records, and every hour, day and week
// bucket (what reports read for whole spans) against the minutes it sums.
func (c *rollupCheck) buckets(ctx context.Context) error {
	lo := int64(math.MaxInt64)
	for replica, ch := range c.t.chains {
		for h := range c.t.hours[replica] {
			lo = min(lo, h)
		}
		for h := range ch.seals {
			lo = min(lo, h)
		}
	}
	w := &walk{c: c, hour: math.MinInt64, minutes: map[string][]RollupBucket{}, coarse: map[coarseKey]RollupBucket{},
		sums: map[int64]map[RollupKey]*RollupBucket{}}
	err := c.s.RollupBuckets(ctx, c.from, c.end, func(b RollupBucket) error {
		w.to(floorDivInt(b.Minute, 60), lo)
		if b.Span == 1 {
			w.minutes[b.Replica] = append(w.minutes[b.Replica], b)
			return nil
		}
		k := b.RollupKey
		k.Minute = 0
		w.coarse[coarseKey{b.Span, b.Minute, k}] = b
		return nil
	})
	if err != nil {
		return err
	}
	if lo != math.MaxInt64 || w.hour != math.MinInt64 {
		w.to(c.end, lo)
	}
	return nil
}

// walk is the state of buckets: the hour being gathered, its minutes per
// replica, the coarser buckets read and not checked yet, and the minutes'
// sums per span (60, 1440, 10080) of the buckets under way.
type walk struct {
	c       *rollupCheck
	start   int64 // the first hour walked
	hour    int64
	minutes map[string][]RollupBucket
	coarse  map[coarseKey]RollupBucket
	sums    map[int64]map[RollupKey]*RollupBucket
}

type coarseKey struct {
	span, minute int64
	key          RollupKey // Minute 0
}

// to checks every hour before next (and before the end).
func (w *walk) to(next, lo int64) {
	if w.hour == math.MinInt64 {
		w.hour = max(min(lo, next), w.c.from)
		w.start = w.hour
	}
	for ; w.hour < next && w.hour < w.c.end; w.hour++ {
		w.check(w.hour)
		clear(w.minutes)
	}
}

// check checks one hour of every replica, then each coarser bucket that
// ends with it.
func (w *walk) check(hour int64) {
	c := w.c
	for replica, bs := range w.minutes {
		if _, ok := c.t.chains[replica]; !ok {
			c.fail("%s: rollups of a replica with no chain in %s", replica, HourStart(hour).Format(time.RFC3339))
		}
		for _, b := range bs {
			if b.Minute >= c.closed {
				continue
			}
			k := b.RollupKey
			k.Minute = 0
			for _, span := range coarseSpans {
				m := w.sums[span]
				if m == nil {
					m = map[RollupKey]*RollupBucket{}
					w.sums[span] = m
				}
				if sum := m[k]; sum != nil {
					sum.Count += b.Count
					sum.FirstNS, sum.LastNS = min(sum.FirstNS, b.FirstNS), max(sum.LastNS, b.LastNS)
				} else {
					sum := b
					m[k] = &sum
				}
			}
		}
	}
	for replica, ch := range c.t.chains {
		bs := w.minutes[replica]
		switch {
		case hour >= ch.head.First && hour < ch.head.Through:
			c.checked++
			s, ok := ch.seals[hour]
			switch {
			case !ok:
				c.fail("%s: %s is not sealed (its seal is gone)", replica, HourStart(hour).Format(time.RFC3339))
			case SealDigest(bs) != s.Digest:
				c.fail("%s: the rollups of %s differ from their seal (%d minute buckets now)", replica, HourStart(hour).Format(time.RFC3339), len(bs))
			}
		case hour >= ch.records:
			c.checked++
			got := map[rollupGroup]int64{}
			for _, b := range bs {
				got[groupOf(b.RollupKey)] += b.Count
			}
			c.compare(replica+": "+HourStart(hour).Format(time.RFC3339), got, c.t.hours[replica][hour], "the records")
		}
	}
	end := (hour + 1) * 60
	for _, span := range coarseSpans {
		if end%span != 0 {
			continue
		}
		first := end - span
		if first >= w.start*60 {
			w.coarseCheck(span, first)
		}
		clear(w.sums[span])
		for k := range w.coarse {
			if k.span == span && k.minute <= first {
				delete(w.coarse, k)
			}
		}
	}
}

// coarseSpans are the spans summed from minutes, in minutes.
var coarseSpans = [...]int64{60, 1440, 10080}

// coarseCheck compares the stored buckets of span that begin at first with
// the sums of their minutes.
func (w *walk) coarseCheck(span, first int64) {
	c := w.c
	what := map[int64]string{60: "hour", 1440: "day", 10080: "week"}[span]
	sums := w.sums[span]
	for k, sum := range sums {
		b, ok := w.coarse[coarseKey{span, first, k}]
		switch {
		case !ok && sum.Count != 0:
			c.fail("%s: the %s of %s: %s: no bucket, its minutes count %d", k.Replica, what, time.Unix(first*60, 0).UTC().Format(time.RFC3339), groupOf(k), sum.Count)
		case ok && (b.Count != sum.Count || b.FirstNS != sum.FirstNS || b.LastNS != sum.LastNS):
			c.fail("%s: the %s of %s: %s: the bucket counts %d, its minutes %d", k.Replica, what, time.Unix(first*60, 0).UTC().Format(time.RFC3339), groupOf(k), b.Count, sum.Count)
		}
	}
	for k, b := range w.coarse {
		if k.span == span && k.minute == first && sums[k.key] == nil && b.Count != 0 {
			c.fail("%s: the %s of %s: %s: the bucket counts %d, its minutes 0", k.key.Replica, what, time.Unix(first*60, 0).UTC().Format(time.RFC3339), groupOf(k.key), b.Count)
		}
	}
}

// compare adds a problem for each group whose count in got (the rollups)
// differs from want.
func (c *rollupCheck) compare(what string, got, want map[rollupGroup]int64, wantName string) {
	for g, n := range want {
		if got[g] != n {
			c.fail("%s: %s: the rollups count %d, %s %d", what, g, got[g], wantName, n)
		}
	}
	for g, n := range got {
		if _, ok := want[g]; !ok && n != 0 {
			c.fail("%s: %s: the rollups count %d, %s 0", what, g, n, wantName)
		}
	}
}

func outcome(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}
