package authz

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproof/meshproof/evidence"
)

// checkMetrics pre-resolves every label combination so that a Check does not
// hash label values.
type checkMetrics struct {
	checks      map[outcomeKey]prometheus.Counter
	duration    prometheus.Histogram
	undecodable prometheus.Counter
	refused     map[string]prometheus.Counter // by LimitError.Limit
}

type outcomeKey struct {
	decision string
	verdict  evidence.Verdict
}

func newCheckMetrics(reg prometheus.Registerer) *checkMetrics {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshproof_checks_total",
		Help: "Checks answered, by decision (allow, deny, error: denied because no decision could be made; dry_run: denied by policy, allowed by --dry-run) and mTLS verdict.",
	}, []string{"decision", "verdict"})
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
	if reg != nil {
		reg.MustRegister(checks, duration, undecodable, refused)
	}
	m := &checkMetrics{checks: map[outcomeKey]prometheus.Counter{}, duration: duration, undecodable: undecodable, refused: map[string]prometheus.Counter{}}
	for _, l := range []string{"max-request-headers", "max-request-header-bytes"} {
		m.refused[l] = refused.WithLabelValues(l)
	}
	for _, d := range []string{"allow", "deny", "error", "dry_run"} {
		for _, v := range evidence.Verdicts {
			m.checks[outcomeKey{d, v}] = checks.WithLabelValues(d, string(v))
		}
	}
	return m
}

func (m *checkMetrics) observe(outcome string, v evidence.Verdict, d time.Duration) {
	if c := m.checks[outcomeKey{outcome, v}]; c != nil {
		c.Inc()
	}
	m.duration.Observe(d.Seconds())
}

func (m *checkMetrics) refuse(limit string) {
	if c := m.refused[limit]; c != nil {
		c.Inc()
	}
}
