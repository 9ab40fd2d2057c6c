package recorder

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproof/meshproof/evidence"
)

// Metrics are the evidence write path's metrics. Create them once per
// registry; a Recorder reports into them.
type Metrics struct {
	written  prometheus.Counter
	droppedV *prometheus.CounterVec
	batch    prometheus.Histogram
	latency  prometheus.Histogram
	errors   prometheus.Counter
	up       prometheus.Gauge
	capacity prometheus.Gauge
	depth    atomic.Pointer[func() float64]
	// Quarantined counts the records the store refused (see
	// evidence.ErrPermanent), kept apart in its quarantine.
	Quarantined prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshproof_evidence_written_total", Help: "Evidence records committed to the store.",
		}),
		droppedV: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshproof_evidence_dropped_total",
			Help: "Evidence records not stored, by reason: queue_full (--evidence-overflow drop: request allowed without evidence), denied and block_timeout (request denied), shutdown (stopped before the store took them), time_range (a time no record may have: a broken clock; the request is denied).",
		}, []string{"reason"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshproof_evidence_batch_size", Help: "Records per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshproof_evidence_write_seconds", Help: "Time to commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 10),
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshproof_evidence_store_errors_total", Help: "Failed batch writes (each is retried).",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshproof_evidence_store_up", Help: "1 when the last write to the evidence store worked, 0 when it failed.",
		}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshproof_evidence_queue_capacity", Help: "Evidence records the queue holds at most (--evidence-queue-size): meshproof_evidence_queue_depth against it is how full the queue is.",
		}),
	}
	m.Quarantined = evidence.QuarantinedCounter(reg)
	m.up.Set(1)
	for _, reason := range []string{"queue_full", "denied", "block_timeout", "shutdown", "time_range"} {
		m.droppedV.WithLabelValues(reason)
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshproof_evidence_queue_depth", Help: "Evidence records waiting to be written.",
	}, func() float64 {
		if f := m.depth.Load(); f != nil {
			return (*f)()
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.written, m.droppedV, m.batch, m.latency, m.errors, m.up, m.capacity, depth)
	}
	return m
}

func (m *Metrics) orNew() *Metrics {
	if m == nil {
		return NewMetrics(nil)
	}
	return m
}

func (m *Metrics) dropped(reason string) prometheus.Counter {
	return m.droppedV.WithLabelValues(reason)
}
