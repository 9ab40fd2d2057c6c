package authz

import (
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

// DefaultNamespaceCap is how many destination namespaces get a series of
// their own in meshproof_destination_checks_total; the rest are counted
// as namespace="other".
const DefaultNamespaceCap = 50

// Label values of meshproof_destination_checks_total beside the
// namespaces' own names.
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
	dest        *destinationCounts
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
	dest := newDestinationCounts(DefaultNamespaceCap)
	if reg != nil {
		reg.MustRegister(checks, duration, undecodable, refused, dest.vec)
	}
	m := &checkMetrics{duration: duration, undecodable: undecodable, refused: map[string]prometheus.Counter{}, dest: dest}
	for _, l := range []string{"max-request-headers", "max-request-header-bytes"} {
		m.refused[l] = refused.WithLabelValues(l)
	}
	for i, src := range []string{SourceExtAuthz, SourceDecisionLogs} {
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

// destinationCounts is meshproof_destination_checks_total: decisions by
// source, destination namespace, verdict and the destination's configured
// mTLS mode. The first cap namespaces seen get a series of their own, the
// rest share namespace="other", so that a cluster of many namespaces (or
// forged principals) cannot grow the scrape without bound.
type destinationCounts struct {
	vec *prometheus.CounterVec
	cap int
	// byName is read on every Check without a lock: a new namespace copies
	// it (at most cap times in the life of the process).
	byName atomic.Pointer[map[string]*namespaceCounts]
	mu     sync.Mutex // held to add a namespace
	other  *namespaceCounts
}

// namespaceCounts are one namespace's counters, made on first use (most
// combinations of source, verdict and mode never happen).
type namespaceCounts struct {
	name  string
	cells [2][len(verdictIndex)][len(modeIndex)]atomic.Pointer[prometheus.Counter]
}

// verdictIndex and modeIndex number the label values of a cell.
var (
	verdictIndex = [...]evidence.Verdict{evidence.MTLS, evidence.MTLSMismatch, evidence.TLSServerOnly, evidence.XFCCUnverified, evidence.Plaintext}
	modeIndex    = [...]string{modeUnknown, "STRICT", "PERMISSIVE", "DISABLE"}
)

func newDestinationCounts(cap int) *destinationCounts {
	d := &destinationCounts{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshproof_destination_checks_total",
			Help: "Decisions counted (as meshproof_checks_total), by source, destination namespace (from the destination's Istio-style SPIFFE principal, else its workload's; unknown when neither; the first 50 namespaces seen have their own series, later ones are counted as other), verdict and the destination's configured PeerAuthentication mode (STRICT, PERMISSIVE, DISABLE; unknown when not known).",
		}, []string{"source", "namespace", "verdict", "mode"}),
		cap: cap,
	}
	d.byName.Store(&map[string]*namespaceCounts{})
	d.other = &namespaceCounts{name: namespaceOther}
	// Present from start-up, so that absent() and rate() see the series.
	for s, src := range []string{SourceExtAuthz, SourceDecisionLogs} {
		for v := range verdictIndex {
			d.other.counter(d.vec, s, v, 0, src)
		}
	}
	return d
}

// count counts one decision of source s (0 ext_authz, 1 decision logs) to
// r's destination.
func (d *destinationCounts) count(s int, r *evidence.Record) {
	v := verdictOf(r.Verdict)
	if v < 0 {
		return
	}
	ns := d.namespace(destinationNamespace(&r.Destination))
	ns.counter(d.vec, s, v, 0, "").Inc()
}

// destinationNamespace is the namespace of p: its Istio-style principal's,
// else its workload's.
func destinationNamespace(p *evidence.Peer) string {
	if p.SPIFFE != nil && p.SPIFFE.Namespace != "" {
		return p.SPIFFE.Namespace
	}
	if p.Workload != nil && p.Workload.Namespace != "" {
		return p.Workload.Namespace
	}
	return namespaceUnknown
}

func (d *destinationCounts) namespace(name string) *namespaceCounts {
	if ns := (*d.byName.Load())[name]; ns != nil {
		return ns
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.byName.Load()
	if ns := old[name]; ns != nil {
		return ns
	}
	if len(old) >= d.cap {
		return d.other
	}
	m := make(map[string]*namespaceCounts, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	ns := &namespaceCounts{name: name}
	m[name] = ns
	d.byName.Store(&m)
	return ns
}

// counter is the cell's counter, made on first use; src names source s
// ("" when the caller does not have it at hand).
func (ns *namespaceCounts) counter(vec *prometheus.CounterVec, s, v, mode int, src string) prometheus.Counter {
	cell := &ns.cells[s][v][mode]
	if c := cell.Load(); c != nil {
		return *c
	}
	if src == "" {
		src = [...]string{SourceExtAuthz, SourceDecisionLogs}[s]
	}
	// Two Checks racing here get the same child of vec.
	c := vec.WithLabelValues(src, ns.name, string(verdictIndex[v]), modeIndex[mode])
	cell.Store(&c)
	return c
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
	ns      *namespaceCounts
}

// TallyOf is what CountDecisionLogs counts of rec, a record made by
// RecordOf with its decision filled in.
func (s *Server) TallyOf(rec *evidence.Record) Tally {
	outcome := outcomeOf(rec.Decision)
	if outcome == "deny" && rec.Decision.DryRun {
		outcome = "dry_run"
	}
	return Tally{outcome: outcome, verdict: rec.Verdict, ns: s.metrics.dest.namespace(destinationNamespace(&rec.Destination))}
}

// CountDecisionLogs counts recorded OPA decision log events with the
// Checks, as source opa_decision_logs.
func (s *Server) CountDecisionLogs(ts []Tally) {
	m := s.metrics
	for _, t := range ts {
		if c := m.checks[1][outcomeKey{t.outcome, t.verdict}]; c != nil {
			c.Inc()
		}
		if v := verdictOf(t.verdict); v >= 0 {
			t.ns.counter(m.dest.vec, 1, v, 0, "").Inc()
		}
	}
}
