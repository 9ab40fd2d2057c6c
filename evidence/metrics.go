package evidence

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// QuarantinedCounter is meshproof_evidence_quarantined_total, registered
// with reg (nil: not registered). The Recorder (evidence/recorder) and the
// spool's drainer both count into it: a second call with the same
// registry returns the counter already registered.
func QuarantinedCounter(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshproof_evidence_quarantined_total",
		Help: "Evidence records the store refused for their content, kept apart in its quarantine with the reason (meshproof verify lists them).",
	})
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if errors.As(err, &dup) {
			return dup.ExistingCollector.(prometheus.Counter)
		}
		panic(err)
	}
	return c
}
