package authz

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproof/meshproof/evidence"
)

// Sources of a counted decision: a Check answered here, or an OPA decision
// log event recorded (package decisionlog).
const (
	SourceExtAuthz     = "ext_authz"
	SourceDecisionLogs = "opa_decision_logs"
)

// DefaultNamespaceCap is how many namespaces get a series of their own in
// meshproof_destination_checks_total and meshproof_client_checks_total;
// the rest are counted as namespace="other".
const DefaultNamespaceCap = 50

// Label values of meshproof_destination_checks_total and
// meshproof_client_checks_total beside the namespaces' own names.
const (
	namespaceOther   = "other"   // over the cap
	namespaceUnknown = "unknown" // no Istio-style principal, no workload
	// modeUnknown: the destination's configured PeerAuthentication mode is
	// not known (serve does not watch PeerAuthentications yet).
	modeUnknown = "unknown"
)

// checkMetrics pre-resolves every label combination so that a Check does not
// hash label values.
type checkMetrics struct {
	checks      [2]map[outcomeKey]prometheus.Counter // by source: 0 ext_authz, 1 decision logs
	duration    prometheus.Histogram
	undecodable prometheus.Counter
	refused     map[string]prometheus.Counter // by LimitError.Limit
	dest        *namespaceCounter
	client      *namespaceCounter
}

type outcomeKey struct {
	decision string
	verdict  evidence.Verdict
}

func newCheckMetrics(reg prometheus.Registerer) *checkMetrics {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshproof_checks_total",
		Help: "Decisions counted, by source (ext_authz: Checks answered here; opa_decision_logs: OPA decision log events recorded), decision (allow, deny, error: denied because no decision could be made; dry_run: denied by policy, allowed by --dry-run) and mTLS verdict.",
	}, []string{"source", "decision", "verdict"})
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshproof_check_duration_seconds",
		Help:    "Time to answer a Check, from request to response, evidence hand-off included.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .2},
	})
	undecodable := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshproof_checks_undecodable_total",
		Help: "CheckRequests that could not be decoded as sent (a string field not UTF-8, or not a CheckRequest at all); each is recorded, answered as --on-policy-error says, and counted in meshproof_checks_total as an error.",
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshproof_checks_over_limit_total",
		Help: "Checks denied (431, decision error) before evaluation because the request was over a bound on a Check's work, by limit (max-request-headers, max-request-header-bytes).",
	}, []string{"limit"})
	dest, client := newDestinationCounter(DefaultNamespaceCap), newClientCounter(DefaultNamespaceCap)
	if reg != nil {
		reg.MustRegister(checks, duration, undecodable, refused, dest.vec, client.vec)
	}
	m := &checkMetrics{duration: duration, undecodable: undecodable, refused: map[string]prometheus.Counter{}, dest: dest, client: client}
	for _, l := range []string{"max-request-headers", "max-request-header-bytes"} {
		m.refused[l] = refused.WithLabelValues(l)
	}
	for i, src := range sourceIndex {
		m.checks[i] = map[outcomeKey]prometheus.Counter{}
		for _, d := range []string{"allow", "deny", "error", "dry_run"} {
			for _, v := range evidence.Verdicts {
				m.checks[i][outcomeKey{d, v}] = checks.WithLabelValues(src, d, string(v))
			}
		}
	}
	return m
}

func (m *checkMetrics) observe(outcome string, v evidence.Verdict, d time.Duration) {
	if c := m.checks[0][outcomeKey{outcome, v}]; c != nil {
		c.Inc()
	}
	m.duration.Observe(d.Seconds())
}

func (m *checkMetrics) refuse(limit string) {
	if c := m.refused[limit]; c != nil {
		c.Inc()
	}
}

// namespaceCounter is meshproof_destination_checks_total (by source,
// destination namespace, verdict and the destination's configured mTLS
// mode) or meshproof_client_checks_total (by source, the client's
// namespace and verdict). The first cap namespaces seen get a series of
// their own, the rest share namespace="other", so that a cluster of many
// namespaces (or forged principals) cannot grow the scrape without bound.
type namespaceCounter struct {
	vec      *prometheus.CounterVec
	withMode bool
	cap      int
	// byName is read on every Check without a lock: a new namespace copies
	// it (at most cap times in the life of the process).
	byName atomic.Pointer[map[string]*namespaceCounts]
	mu     sync.Mutex // held to add a namespace
	other  *namespaceCounts
}

// namespaceCounts are one namespace's counters, made on first use (most
// combinations of source, verdict and mode never happen).
type namespaceCounts struct {
	c     *namespaceCounter
	name  string
	cells [2][len(verdictIndex)][len(modeIndex)]atomic.Pointer[prometheus.Counter]
}

// verdictIndex and modeIndex number the label values of a cell.
var (
	verdictIndex = [...]evidence.Verdict{evidence.MTLS, evidence.MTLSMismatch, evidence.TLSServerOnly, evidence.XFCCUnverified, evidence.Plaintext}
	modeIndex    = [...]string{modeUnknown, "STRICT", "PERMISSIVE", "DISABLE"}
	sourceIndex  = [...]string{SourceExtAuthz, SourceDecisionLogs}
)

func newDestinationCounter(cap int) *namespaceCounter {
	return newNamespaceCounter(prometheus.CounterOpts{
		Name: "meshproof_destination_checks_total",
		Help: fmt.Sprintf("Decisions counted (as meshproof_checks_total), by source, destination namespace (from the destination's Istio-style SPIFFE principal, else its workload's; unknown when neither; the first %d namespaces seen have their own series, later ones are counted as other), verdict and the destination's configured PeerAuthentication mode (STRICT, PERMISSIVE, DISABLE; unknown when not known).", cap),
	}, true, cap)
}

func newClientCounter(cap int) *namespaceCounter {
	return newNamespaceCounter(prometheus.CounterOpts{
		Name: "meshproof_client_checks_total",
		Help: fmt.Sprintf("Decisions counted (as meshproof_checks_total), by source, the client's namespace (from its Istio-style SPIFFE principal, else its workload's; unknown when neither; the first %d namespaces seen have their own series, later ones are counted as other) and verdict.", cap),
	}, false, cap)
}

func newNamespaceCounter(opts prometheus.CounterOpts, withMode bool, cap int) *namespaceCounter {
	labels := []string{"source", "namespace", "verdict"}
	if withMode {
		labels = append(labels, "mode")
	}
	c := &namespaceCounter{vec: prometheus.NewCounterVec(opts, labels), withMode: withMode, cap: cap}
	c.byName.Store(&map[string]*namespaceCounts{})
	c.other = &namespaceCounts{c: c, name: namespaceOther}
	// Present from start-up, so that absent() and rate() see the series.
	for s := range sourceIndex {
		for v := range verdictIndex {
			c.other.counter(s, v, 0)
		}
	}
	return c
}

// namespaceOf is the namespace of p: its Istio-style principal's, else
// its workload's.
func namespaceOf(p *evidence.Peer) string {
	if p.SPIFFE != nil && p.SPIFFE.Namespace != "" {
		return p.SPIFFE.Namespace
	}
	if p.Workload != nil && p.Workload.Namespace != "" {
		return p.Workload.Namespace
	}
	return namespaceUnknown
}

func (c *namespaceCounter) namespace(name string) *namespaceCounts {
	if ns := (*c.byName.Load())[name]; ns != nil {
		return ns
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.byName.Load()
	if ns := old[name]; ns != nil {
		return ns
	}
	if len(old) >= c.cap {
		return c.other
	}
	m := make(map[string]*namespaceCounts, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	ns := &namespaceCounts{c: c, name: name}
	m[name] = ns
	c.byName.Store(&m)
	return ns
}

// counter is the counter of source s, verdict v and mode (indexes of
// sourceIndex, verdictIndex, modeIndex), made on first use.
func (ns *namespaceCounts) counter(s, v, mode int) prometheus.Counter {
	cell := &ns.cells[s][v][mode]
	if c := cell.Load(); c != nil {
		return *c
	}
	values := []string{sourceIndex[s], ns.name, string(verdictIndex[v])}
	if ns.c.withMode {
		values = append(values, modeIndex[mode])
	}
	// Two Checks racing here get the same child of the vec.
	c := ns.c.vec.WithLabelValues(values...)
	cell.Store(&c)
	return c
}

// peerCounts are the counters of one decision's destination and client
// namespaces, and the destination's configured mode (an index of
// modeIndex), resolved before its record is handed over.
type peerCounts struct {
	dest, client *namespaceCounts
	mode         int
}

// peersOf resolves r's counters; modes (nil without serve --kubernetes)
// gives the destination workload's configured mode.
func (m *checkMetrics) peersOf(r *evidence.Record, modes PeerModes) peerCounts {
	p := peerCounts{dest: m.dest.namespace(namespaceOf(&r.Destination)), client: m.client.namespace(namespaceOf(&r.Source))}
	if w := r.Destination.Workload; modes != nil && w != nil {
		p.mode = modeOf(modes.PeerMode(w, uint32(r.Destination.Port)))
	}
	return p
}

// count counts a decision of source s and verdict v.
func (p peerCounts) count(s int, v evidence.Verdict) {
	if i := verdictOf(v); i >= 0 {
		p.dest.counter(s, i, p.mode).Inc()
		p.client.counter(s, i, 0).Inc()
	}
}

// modeOf is mode's index in modeIndex, 0 (unknown) for any other.
func modeOf(mode string) int {
	for i, m := range modeIndex {
		if m == mode {
			return i
		}
	}
	return 0
}

func verdictOf(v evidence.Verdict) int {
	for i, w := range verdictIndex {
		if w == v {
			return i
		}
	}
	return -1
}

// Tally is what the metrics count of one decision log record, taken before
// the record is handed to the recorder (whose it is from then on).
type Tally struct {
	outcome string
	verdict evidence.Verdict
	peers   peerCounts
}

// TallyOf is what CountDecisionLogs counts of rec, a record made by
// RecordOf with its decision filled in.
func (s *Server) TallyOf(rec *evidence.Record) Tally {
	outcome := outcomeOf(rec.Decision)
	if outcome == "deny" && rec.Decision.DryRun {
		outcome = "dry_run"
	}
	return Tally{outcome: outcome, verdict: rec.Verdict, peers: s.metrics.peersOf(rec, s.peerModes)}
}

// CountDecisionLogs counts recorded OPA decision log events with the
// Checks, as source opa_decision_logs.
func (s *Server) CountDecisionLogs(ts []Tally) {
	m := s.metrics
	for _, t := range ts {
		if c := m.checks[1][outcomeKey{t.outcome, t.verdict}]; c != nil {
			c.Inc()
		}
		t.peers.count(1, t.verdict)
	}
}
