package evidencetest

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Matches is the Filter's meaning, written plainly over one record: the
// oracle every backend's answers are compared with.
func Matches(f evidence.Filter, r *evidence.Record) bool {
	c := evidence.ColumnsOf(r)
	exact := func(want, got string) bool { return want == "" || want == got }
	prefix := func(p, got string) bool { return p == "" || strings.HasPrefix(got, p) }
	// A host without a port (no ':' after its last ']') is the name with
	// none, or on any port.
	host := func(want, got string) bool {
		if want == "" || want == got {
			return true
		}
		wantPort := strings.Contains(want[strings.LastIndex(want, "]")+1:], ":")
		return !wantPort && strings.HasPrefix(got, want+":")
	}
	switch {
	case !f.Since.IsZero() && r.Time.Before(f.Since),
		!f.Until.IsZero() && !r.Time.Before(f.Until),
		!exact(f.Source, c.SourcePrincipal), !prefix(f.SourcePrefix, c.SourcePrincipal),
		!exact(f.Destination, c.DestinationPrincipal), !prefix(f.DestinationPrefix, c.DestinationPrincipal),
		f.TrustDomain != "" && f.TrustDomain != c.SourceTrustDomain && f.TrustDomain != c.DestinationTrustDomain,
		f.Namespace != "" && f.Namespace != c.SourceNamespace && f.Namespace != c.DestinationNamespace,
		!exact(f.SourceNamespace, c.SourceNamespace), !exact(f.DestinationNamespace, c.DestinationNamespace),
		f.SourceWorkload != "" && !workloadIs(r.Source.Workload, f.SourceWorkload),
		f.DestinationWorkload != "" && !workloadIs(r.Destination.Workload, f.DestinationWorkload),
		len(f.Verdicts) > 0 && !slices.Contains(f.Verdicts, r.Verdict),
		slices.Contains(f.NotVerdicts, r.Verdict),
		f.Allowed != nil && *f.Allowed != c.Allowed,
		!exact(f.Method, c.Method), !host(f.Host, c.Host), !prefix(f.PathPrefix, c.Path),
		!exact(f.RequestID, c.RequestID), !exact(f.Replica, c.Replica):
		return false
	}
	return true
}

// workloadIs reports whether w is the workload NAMESPACE/NAME ref names,
// of any kind.
func workloadIs(w *evidence.Workload, ref string) bool {
	ns, name, _ := strings.Cut(ref, "/")
	return w != nil && w.Namespace == ns && w.Name == name
}

// NewestFirst returns the records matching f in the stores' order: newest
// first by (time, id).
func NewestFirst(recs []*evidence.Record, f evidence.Filter) []*evidence.Record {
	var out []*evidence.Record
	for _, r := range recs {
		if Matches(f, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *evidence.Record) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
}

// Count is how many of recs match f: what a store's Count must answer.
func Count(recs []*evidence.Record, f evidence.Filter) int64 {
	var n int64
	for _, r := range recs {
		if Matches(f, r) {
			n++
		}
	}
	return n
}

// IDs lists the records' ids.
func IDs(recs []*evidence.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// normal is r as a store gives it back: the same values, times in UTC. It
// copies what it changes.
func normal(r *evidence.Record) *evidence.Record {
	c := *r
	c.Time = c.Time.UTC()
	for _, p := range []*evidence.Peer{&c.Source, &c.Destination} {
		if p.Certificate != nil {
			cert := *p.Certificate
			cert.NotBefore, cert.NotAfter = cert.NotBefore.UTC(), cert.NotAfter.UTC()
			p.Certificate = &cert
		}
	}
	return &c
}

// groupKey is an evidence.Group's key.
type groupKey struct {
	source, host, principal string
	verdict                 evidence.Verdict
	allowed                 bool
}

func keyOf(g evidence.Group) groupKey {
	return groupKey{g.Source, g.DestinationHost, g.DestinationPrincipal, g.Verdict, g.Allowed}
}

// expectedGroups computes Aggregate's answer from raw records: the records
// whose minute overlaps [since, until), grouped by edge, verdict and
// outcome. ids holds each group's record ids (any may be its example).
func expectedGroups(recs []*evidence.Record, q evidence.AggregateQuery) (groups []evidence.Group, ids map[groupKey]map[string]bool) {
	byKey := map[groupKey]*evidence.Group{}
	ids = map[groupKey]map[string]bool{}
	for _, r := range recs {
		minute := r.Time.Truncate(time.Minute)
		if !q.Since.IsZero() && !minute.Add(time.Minute).After(q.Since) || !q.Until.IsZero() && !minute.Before(q.Until) {
			continue
		}
		if q.Destination != "" && q.Destination != r.Request.Host && q.Destination != r.Destination.Principal {
			continue
		}
		k := groupKey{evidence.SourceKey(r), r.Request.Host, r.Destination.Principal, r.Verdict, r.Decision.Allowed}
		if a := r.Amends; a != nil {
			// An amendment moves its amended record from that record's
			// outcome to its own, or counts nothing.
			if a.Allowed == r.Decision.Allowed {
				continue
			}
			undo := k
			undo.allowed = a.Allowed
			if g := byKey[undo]; g != nil {
				g.Count--
			} else {
				byKey[undo] = &evidence.Group{Source: k.source, DestinationHost: k.host, DestinationPrincipal: k.principal,
					Verdict: k.verdict, Allowed: a.Allowed, Count: -1, FirstSeen: r.Time, LastSeen: r.Time}
				ids[undo] = map[string]bool{}
			}
		}
		g, ok := byKey[k]
		if !ok {
			g = &evidence.Group{Source: k.source, DestinationHost: k.host, DestinationPrincipal: k.principal,
				Verdict: k.verdict, Allowed: k.allowed, FirstSeen: r.Time, LastSeen: r.Time}
			byKey[k] = g
			ids[k] = map[string]bool{}
		}
		g.Count++
		if r.Time.Before(g.FirstSeen) {
			g.FirstSeen = r.Time
		}
		if r.Time.After(g.LastSeen) {
			g.LastSeen = r.Time
		}
		ids[k][r.ID] = true
	}
	for _, g := range byKey {
		if g.Count > 0 {
			groups = append(groups, *g)
		}
	}
	sortGroups(groups)
	return groups, ids
}

func sortGroups(gs []evidence.Group) {
	slices.SortFunc(gs, func(a, b evidence.Group) int {
		return cmp.Or(strings.Compare(a.Source, b.Source), strings.Compare(a.DestinationHost, b.DestinationHost),
			strings.Compare(a.DestinationPrincipal, b.DestinationPrincipal), strings.Compare(string(a.Verdict), string(b.Verdict)),
			boolCmp(a.Allowed, b.Allowed))
	})
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
