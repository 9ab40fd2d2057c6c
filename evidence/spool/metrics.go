package spool

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproof/meshproof/evidence"
)

// Metrics are the spool's metrics. Create them once per registry; a Store
// reports into them.
type Metrics struct {
	drained prometheus.Counter
	// quarantined is evidence.QuarantinedCounter: the Recorder's too.
	quarantined prometheus.Counter
	up          prometheus.Gauge
	depth       atomic.Pointer[func() float64]
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		drained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshproof_evidence_spool_drained_total",
			Help: "Spooled evidence records moved into the evidence store (or found there already).",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshproof_evidence_primary_up",
			Help: "1 when the last write to (or read of the chain head from) the evidence store behind the spool worked, 0 when it failed.",
		}),
	}
	m.quarantined = evidence.QuarantinedCounter(reg)
	m.up.Set(1)
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshproof_evidence_spool_depth",
		Help: "Evidence records waiting in the local spool for the evidence store.",
	}, func() float64 {
		if f := m.depth.Load(); f != nil {
			return (*f)()
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.drained, m.up, depth)
	}
	return m
}

func (m *Metrics) orNew() *Metrics {
	if m == nil {
		return NewMetrics(nil)
	}
	return m
}
