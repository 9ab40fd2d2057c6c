package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshproof/meshproof/evidence"
)

// Destination statuses of a namespace readiness report.
const (
	DestinationReady     = "ready"
	DestinationNotReady  = "not_ready"
	DestinationNoTraffic = "no_traffic"
)

// NamespaceReadinessReport answers "can these namespaces' PeerAuthentication
// go to STRICT?", per namespace and per destination.
type NamespaceReadinessReport struct {
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	KnownSince time.Time `json:"known_since"`
	// Summary is one line: "4 of 9 destinations ready in 3 namespaces".
	Summary    string               `json:"summary"`
	Namespaces []NamespaceReadiness `json:"namespaces"` // not ready first, then by name
}

// NamespaceReadiness is one namespace's answer. Namespace "" holds the
// destinations no rule placed (see the package doc).
type NamespaceReadiness struct {
	Namespace string `json:"namespace"`
	// Ready is true only when the namespace has destinations, and every one
	// had traffic in the window, all of it mTLS.
	Ready bool `json:"ready"`
	// Verdict is one line: "not ready: 2 clients still send plaintext to 1
	// of 3 destinations".
	Verdict string `json:"verdict"`
	// BasedOn says what the verdict rests on: requests, clients and
	// destinations seen, the window, and the destinations without traffic.
	BasedOn      string                 `json:"based_on"`
	Destinations int                    `json:"destinations"`
	ReadyCount   int                    `json:"ready_destinations"`
	NoTraffic    int                    `json:"no_traffic_destinations"`
	Total        int64                  `json:"total"`
	Clients      int                    `json:"clients"`
	Counts       Counts                 `json:"counts"`
	FirstSeen    time.Time              `json:"first_seen,omitzero"`
	LastSeen     time.Time              `json:"last_seen,omitzero"`
	Workloads    []DestinationReadiness `json:"workloads"` // not_ready, no_traffic, ready, then by workload
	Blocking     []BlockingClient       `json:"blocking"`  // every blocking client of the namespace, most requests first
}

// DestinationReadiness is one destination of a namespace: a principal, or
// a host that served no mTLS.
type DestinationReadiness struct {
	Destination string `json:"destination"` // principal, or host when it had none
	// Workload is the destination's name: with a Configuration (serve
	// --kubernetes), its Kubernetes workload as reports name one
	// (mtls-pg/deployment/httpbin, WorkloadName) when its example record
	// resolved one; else the short name, the SPIFFE service account or
	// the service part of the host.
	Workload  string           `json:"workload"`
	Principal string           `json:"principal,omitempty"`
	Hosts     []string         `json:"hosts"`
	Status    string           `json:"status"` // DestinationReady, DestinationNotReady or DestinationNoTraffic
	Ready     bool             `json:"ready"`
	Reason    string           `json:"reason"`
	Total     int64            `json:"total"`
	Clients   int              `json:"clients"`
	Counts    Counts           `json:"counts"`
	FirstSeen time.Time        `json:"first_seen,omitzero"`
	LastSeen  time.Time        `json:"last_seen,omitzero"`
	Blocking  []BlockingClient `json:"blocking"`

	example string // the id of the destination's example record (destAcc.example)
}

// NamespaceQuery asks StrictReadinessByNamespace about: one namespace, or
// All of them.
type NamespaceQuery struct {
	Namespace string
	All       bool
	// Since and Until are the window the verdicts judge (Until zero: now).
	Since, Until time.Time
	// KnownSince is how far back destinations are known: one with traffic
	// since KnownSince but none in the window is listed as no_traffic.
	// Zero: DefaultKnown before Until. It may not be after Since.
	KnownSince time.Time
	// Config, when set, names the blocking clients' workloads and says
	// which will break under STRICT (see StrictReadiness); nil for none.
	Config Configuration
}

// DefaultKnown is how far back from until a destination is known when
// NamespaceQuery.KnownSince is zero.
const DefaultKnown = 30 * 24 * time.Hour

// MaxNamespace bounds a namespace asked about, in bytes: a Kubernetes
// namespace is at most 63; SPIFFE IDs of other forms may have longer ones.
const MaxNamespace = 253

// ErrNamespaceQuery is wrapped by the errors of a NamespaceQuery that
// names neither a namespace nor All, or both.
var ErrNamespaceQuery = errors.New("report: give a namespace or all namespaces, not both")

// Validate checks q; errors are *evidence.FilterError naming the API's
// parameter.
func (q NamespaceQuery) Validate() error {
	switch {
	case q.All && q.Namespace != "":
		return &evidence.FilterError{Field: "namespace", Msg: "give namespace or all_namespaces, not both"}
	case !q.All && q.Namespace == "":
		return fmt.Errorf("%w: neither was given", ErrNamespaceQuery)
	}
	if err := checkNamespace(q.Namespace); err != nil {
		return err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return &evidence.FilterError{Field: "until", Msg: "must be after since"}
	}
	if !q.KnownSince.IsZero() && !q.Since.IsZero() && q.KnownSince.After(q.Since) {
		return &evidence.FilterError{Field: "known_since", Msg: "must not be after since: the destinations known include those of the window"}
	}
	return nil
}

// checkNamespace bounds a namespace parameter.
func checkNamespace(ns string) error {
	switch {
	case len(ns) > MaxNamespace:
		return &evidence.FilterError{Field: "namespace", Msg: fmt.Sprintf("longer than %d bytes", MaxNamespace)}
	case strings.ContainsRune(ns, 0):
		return &evidence.FilterError{Field: "namespace", Msg: "contains a NUL byte"}
	case !utf8.ValidString(ns):
		return &evidence.FilterError{Field: "namespace", Msg: "is not valid UTF-8"}
	}
	return nil
}

// StrictReadinessByNamespace reports, per namespace of destinations (see the
// package doc for how a destination is placed), whether every destination
// can go to STRICT: every destination known since q.KnownSince had traffic
// in [q.Since, q.Until), all of it mTLS. A destination without traffic in
// the window makes its namespace not ready: nothing shows that STRICT
// would break no client. Two Aggregates, over every destination.
func StrictReadinessByNamespace(ctx context.Context, r evidence.Reader, q NamespaceQuery) (NamespaceReadinessReport, error) {
	if err := q.Validate(); err != nil {
		return NamespaceReadinessReport{}, err
	}
	since, until := window(q.Since, q.Until)
	known := q.KnownSince
	if known.IsZero() {
		known = until.Add(-DefaultKnown)
	}
	if known = known.UTC(); known.After(since) {
		known = since
	}
	if err := (evidence.AggregateQuery{Since: since, Until: until}).Validate(); err != nil {
		return NamespaceReadinessReport{}, err
	}
	inWindow, err := r.Aggregate(ctx, evidence.AggregateQuery{Since: since, Until: until})
	if err != nil {
		return NamespaceReadinessReport{}, fmt.Errorf("report: %w", err)
	}
	before := inWindow
	if !known.Equal(since) {
		if before, err = r.Aggregate(ctx, evidence.AggregateQuery{Since: known, Until: until}); err != nil {
			return NamespaceReadinessReport{}, fmt.Errorf("report: %w", err)
		}
	}
	rep := buildNamespaces(before, inWindow, q, since, until, known)
	if q.Config != nil {
		if err := configureNamespaces(ctx, &examples{r: r}, q.Config, &rep); err != nil {
			return NamespaceReadinessReport{}, err
		}
	}
	return rep, nil
}

// destAcc accumulates one destination.
type destAcc struct {
	dest
	hosts    map[string]bool
	groups   []evidence.Group // in the window
	lastSeen time.Time        // since known
	// example is the group whose record names the destination's workload:
	// the latest of those addressed to the destination's principal itself
	// (plaintext is only placed there by its host), else the latest.
	example evidence.Group
}

// consider makes g the destination's example when it tells more about
// the destination than the one it has.
func (a *destAcc) consider(g evidence.Group) {
	own := func(g evidence.Group) bool { return a.principal == "" || g.DestinationPrincipal == a.principal }
	if a.example.ExampleID == "" || own(g) && !own(a.example) || own(g) == own(a.example) && g.LastSeen.After(a.example.LastSeen) {
		a.example = g
	}
}

// nsAcc accumulates one namespace.
type nsAcc struct {
	dests  map[string]*destAcc
	groups map[groupKey]evidence.Group // in the window, each once
}

func buildNamespaces(known, inWindow []evidence.Group, q NamespaceQuery, since, until, knownSince time.Time) NamespaceReadinessReport {
	// Attribution sees every group since knownSince: a host that served
	// mTLS in that period belongs to its principal even when it saw only
	// plaintext in the window.
	attr := newAttribution(known)
	spaces := map[string]*nsAcc{}
	space := func(ns string) *nsAcc {
		a, ok := spaces[ns]
		if !ok {
			a = &nsAcc{dests: map[string]*destAcc{}, groups: map[groupKey]evidence.Group{}}
			spaces[ns] = a
		}
		return a
	}
	if !q.All {
		space(q.Namespace)
	}
	destOf := func(d dest) *destAcc {
		n := space(d.namespace)
		a, ok := n.dests[d.key]
		if !ok {
			a = &destAcc{dest: d, hosts: map[string]bool{}}
			n.dests[d.key] = a
		}
		return a
	}
	place := func(g evidence.Group, inWindow bool) {
		for _, d := range attr.of(g) {
			if !q.All && d.namespace != q.Namespace {
				continue
			}
			a := destOf(d)
			if g.DestinationHost != "" {
				a.hosts[g.DestinationHost] = true
			}
			if g.LastSeen.After(a.lastSeen) {
				a.lastSeen = g.LastSeen
			}
			if g.ExampleID != "" {
				a.consider(g)
			}
			if inWindow {
				a.groups = append(a.groups, g)
				spaces[d.namespace].groups[keyOf(g)] = g
			}
		}
	}
	for _, g := range known {
		place(g, false)
	}
	for _, g := range inWindow {
		place(g, true)
	}
	rep := NamespaceReadinessReport{Since: since, Until: until, KnownSince: knownSince, Namespaces: []NamespaceReadiness{}}
	var ready, total int
	for name, n := range spaces {
		ns := namespaceOf(name, n, since, until, knownSince)
		ready += ns.ReadyCount
		total += ns.Destinations
		rep.Namespaces = append(rep.Namespaces, ns)
	}
	slices.SortFunc(rep.Namespaces, func(a, b NamespaceReadiness) int {
		return cmp.Or(cmp.Compare(rank(a.Ready), rank(b.Ready)), strings.Compare(a.Namespace, b.Namespace))
	})
	rep.Summary = fmt.Sprintf("%d of %s ready in %s", ready, plural(total, "destination", "destinations"),
		plural(len(rep.Namespaces), "namespace", "namespaces"))
	return rep
}

// rank puts not ready before ready.
func rank(ready bool) int {
	if ready {
		return 1
	}
	return 0
}

// judged is the traffic of some groups: counts, clients, blocking clients.
type judged struct {
	total               int64
	counts              Counts
	clients             int
	blocking            []BlockingClient
	firstSeen, lastSeen time.Time
}

// judge sums groups as StrictReadiness does: a client that sent anything
// but mtls blocks.
func judgeGroups(groups []evidence.Group) judged {
	j := judged{counts: newCounts(), blocking: []BlockingClient{}}
	all, blocking := clients{}, clients{}
	for _, g := range groups {
		j.counts[g.Verdict] += g.Count
		j.total += g.Count
		all.add(g)
		if g.Verdict != evidence.MTLS {
			blocking.add(g)
		}
		if j.firstSeen.IsZero() || g.FirstSeen.Before(j.firstSeen) {
			j.firstSeen = g.FirstSeen
		}
		if g.LastSeen.After(j.lastSeen) {
			j.lastSeen = g.LastSeen
		}
	}
	for _, c := range all.sorted() {
		if b, ok := blocking[c.Client]; ok {
			c.FirstSeen, c.LastSeen, c.ExampleID = b.FirstSeen, b.LastSeen, b.ExampleID
			j.blocking = append(j.blocking, BlockingClient{Client: c, Count: b.Total})
		}
	}
	slices.SortFunc(j.blocking, byCountDesc)
	j.clients = len(all)
	return j
}

var statusOrder = map[string]int{DestinationNotReady: 0, DestinationNoTraffic: 1, DestinationReady: 2}

func namespaceOf(name string, n *nsAcc, since, until, knownSince time.Time) NamespaceReadiness {
	ns := NamespaceReadiness{Namespace: name, Workloads: []DestinationReadiness{}}
	notReady := 0
	for _, a := range n.dests {
		d := destinationOf(a, since)
		switch d.Status {
		case DestinationReady:
			ns.ReadyCount++
		case DestinationNoTraffic:
			ns.NoTraffic++
		default:
			notReady++
		}
		ns.Workloads = append(ns.Workloads, d)
	}
	sortDestinations(ns.Workloads)
	groups := make([]evidence.Group, 0, len(n.groups))
	for _, g := range n.groups {
		groups = append(groups, g)
	}
	j := judgeGroups(groups)
	ns.Destinations = len(n.dests)
	ns.Total, ns.Counts, ns.Clients, ns.Blocking, ns.FirstSeen, ns.LastSeen = j.total, j.counts, j.clients, j.blocking, j.firstSeen, j.lastSeen
	ns.Ready = ns.Destinations > 0 && ns.ReadyCount == ns.Destinations
	ns.Verdict = namespaceVerdict(ns, notReady, knownSince)
	ns.BasedOn = basedOn(ns, since, until)
	return ns
}

// sortDestinations orders a namespace's destinations: not_ready, then
// no_traffic, then ready, then by workload.
func sortDestinations(ds []DestinationReadiness) {
	slices.SortFunc(ds, func(a, b DestinationReadiness) int {
		return cmp.Or(cmp.Compare(statusOrder[a.Status], statusOrder[b.Status]), strings.Compare(a.Workload, b.Workload),
			strings.Compare(a.Destination, b.Destination))
	})
}

func destinationOf(a *destAcc, since time.Time) DestinationReadiness {
	d := DestinationReadiness{Destination: a.key, Workload: a.workload, Principal: a.principal, Hosts: []string{}, example: a.example.ExampleID}
	for h := range a.hosts {
		d.Hosts = append(d.Hosts, h)
	}
	slices.Sort(d.Hosts)
	j := judgeGroups(a.groups)
	d.Total, d.Counts, d.Clients, d.Blocking, d.FirstSeen, d.LastSeen = j.total, j.counts, j.clients, j.blocking, j.firstSeen, j.lastSeen
	switch {
	case d.Total == 0:
		d.Status = DestinationNoTraffic
		d.Reason = fmt.Sprintf("no traffic since %s (last request %s): nothing shows that STRICT would break no client",
			since.Format(time.RFC3339), a.lastSeen.UTC().Format(time.RFC3339))
	case len(d.Blocking) > 0:
		d.Status = DestinationNotReady
		d.Reason = reason(StrictReadinessReport{Destination: a.key, Since: since, Total: d.Total, Blocking: d.Blocking}, d.Clients)
	default:
		d.Status, d.Ready = DestinationReady, true
		d.Reason = reason(StrictReadinessReport{Destination: a.key, Since: since, Total: d.Total, Blocking: d.Blocking}, d.Clients)
	}
	return d
}

// namespaceVerdict is the namespace's one line.
func namespaceVerdict(ns NamespaceReadiness, notReady int, knownSince time.Time) string {
	if ns.Destinations == 0 {
		return fmt.Sprintf("not ready: no traffic seen to a destination of this namespace since %s", knownSince.Format(time.RFC3339))
	}
	if ns.Ready {
		return "ready: every request to " + theDestinations(ns.Destinations) + " was mTLS"
	}
	var parts []string
	if notReady > 0 {
		why := reason(StrictReadinessReport{Total: ns.Total, Blocking: ns.Blocking}, ns.Clients)
		parts = append(parts, fmt.Sprintf("%s to %d of %s", why, notReady, plural(ns.Destinations, "destination", "destinations")))
	}
	if ns.NoTraffic > 0 {
		verb := "have"
		if ns.NoTraffic == 1 {
			verb = "has"
		}
		parts = append(parts, fmt.Sprintf("%d of %s %s no traffic in the window (unknown is not ready)",
			ns.NoTraffic, plural(ns.Destinations, "destination", "destinations"), verb))
	}
	return "not ready: " + strings.Join(parts, "; ")
}

func theDestinations(n int) string {
	if n == 1 {
		return "its destination"
	}
	return fmt.Sprintf("its %d destinations", n)
}

// basedOn says what the namespace's verdict rests on.
func basedOn(ns NamespaceReadiness, since, until time.Time) string {
	s := fmt.Sprintf("%s %s from %s to %s, %s to %s", thousands(ns.Total), pluralWord(ns.Total, "request", "requests"),
		plural(ns.Clients, "client", "clients"), plural(ns.Destinations-ns.NoTraffic, "destination", "destinations"),
		since.Format(time.RFC3339), until.Format(time.RFC3339))
	switch ns.NoTraffic {
	case 0:
	case 1:
		s += "; 1 destination had no traffic"
	default:
		s += fmt.Sprintf("; %d destinations had no traffic", ns.NoTraffic)
	}
	return s
}

func pluralWord(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// thousands writes n with commas: 1,204.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
