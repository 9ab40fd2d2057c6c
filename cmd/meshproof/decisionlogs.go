package main

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshproof/meshproof/decisionlog"
	"github.com/meshproof/meshproof/evidence"
)

// decisionLogConfig sizes the /logs endpoint (OPA's decision log uploads)
// to the recorder: an upload is queued whole, so it holds at most a queue's
// worth of events; ids are remembered while they may still be queued; and
// an event much older than retention keeps would be deleted at once and cut
// the chain after it, so it is skipped; one stamped ahead of the clock
// (more than --max-clock-skew) is refused.
func decisionLogConfig(store evidence.Store, o evidenceOptions, reg prometheus.Registerer) decisionlog.Config {
	return decisionlog.Config{
		Exists: func(ctx context.Context, id string) (bool, error) {
			_, err := store.Get(ctx, id)
			if errors.Is(err, evidence.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		},
		MaxEvents:    min(10_000, o.Recorder.QueueSize),
		Remember:     max(1<<17, o.Recorder.QueueSize+o.Recorder.BatchSize),
		MaxAge:       o.Retention / 10,
		MaxClockSkew: o.MaxClockSkew,
		Registerer:   reg,
	}
}
