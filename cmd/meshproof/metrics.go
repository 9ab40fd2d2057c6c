package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	opaversion "github.com/open-policy-agent/opa/v1/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
)

// registerBuildInfo adds meshproof_build_info: which meshproof, Go and
// OPA a replica runs, for a dashboard's version panel and to tell the
// replicas of a rollout apart.
func registerBuildInfo(reg prometheus.Registerer) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshproof_build_info",
		Help: "meshproof's version and those of Go and OPA it was built with (value 1).",
	}, []string{"version", "go_version", "opa_version"})
	g.WithLabelValues(version, runtime.Version(), opaversion.Version).Set(1)
	reg.MustRegister(g)
}

// oldestRecord is meshproof_evidence_oldest_record_age_seconds: how far
// back the store's records go, read every oldestEvery as the first record
// of each replica's chain (a page of Walk each: the store's statistics
// would count every record). Retention that stopped working shows as an
// age beyond --retention.
type oldestRecord struct {
	store evidence.Store
	log   zerolog.Logger
	// oldest is the oldest record's time in unix nanoseconds; 0: none
	// stored, or not read yet.
	oldest atomic.Int64
}

const oldestEvery = 5 * time.Minute

func newOldestRecord(store evidence.Store, log zerolog.Logger, reg prometheus.Registerer) *oldestRecord {
	o := &oldestRecord{store: store, log: log}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshproof_evidence_oldest_record_age_seconds",
		Help: "Age of the oldest evidence record in the store (the first of each replica's chain), read every 5 minutes; 0 when it holds none (or before the first read). Beyond --retention plus an hour, retention is not removing records.",
	}, func() float64 {
		t := o.oldest.Load()
		if t == 0 {
			return 0
		}
		return time.Since(time.Unix(0, t)).Seconds()
	}))
	return o
}

// run reads the oldest record's time now and every oldestEvery until ctx
// is done.
func (o *oldestRecord) run(ctx context.Context) {
	t := time.NewTicker(oldestEvery)
	defer t.Stop()
	for {
		o.read(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errFirst stops a Walk at its first record.
var errFirst = errors.New("first record read")

func (o *oldestRecord) read(ctx context.Context) {
	oldest, err := o.first(ctx)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			o.log.Warn().Err(err).Msg("the evidence store's oldest record could not be read: meshproof_evidence_oldest_record_age_seconds keeps its last value")
		}
	case oldest.IsZero():
		o.oldest.Store(0)
	default:
		o.oldest.Store(oldest.UnixNano())
	}
}

// first is the time of the oldest of the replicas' first records; zero
// when the store holds none.
func (o *oldestRecord) first(ctx context.Context) (time.Time, error) {
	replicas, err := o.store.Replicas(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var oldest time.Time
	for _, replica := range replicas {
		err := o.store.Walk(ctx, replica, func(r *evidence.Record, _ evidence.Stored) error {
			if r.Time.IsZero() {
				return nil // undecodable: its time is not known, the next one's is
			}
			if oldest.IsZero() || r.Time.Before(oldest) {
				oldest = r.Time
			}
			return errFirst
		})
		if err != nil && !errors.Is(err, errFirst) {
			return time.Time{}, fmt.Errorf("replica %s: %w", replica, err)
		}
	}
	return oldest, nil
}
