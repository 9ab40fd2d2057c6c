package evidence

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
)

// Checkpointer signs a checkpoint of every replica's log that grew, at an
// interval and once more when it stops, and keeps them in the store, where
// the API serves them and Verify checks the logs against them. Signing
// runs beside the Checks, never in their path: a few milliseconds per
// replica per interval.
type Checkpointer struct {
	store    Store
	signer   note.Signer
	interval time.Duration
	log      zerolog.Logger
	signed   map[string]int64 // the size last signed, per replica
	m        checkpointMetrics
	// current is when every log was last known signed up to its size: the
	// end of the last SignAll that succeeded, or the Checkpointer's
	// creation (unix nanoseconds).
	current atomic.Int64
}

type checkpointMetrics struct {
	signed   prometheus.Counter
	failures prometheus.Counter
}

// NewCheckpointer signs store's logs with signer every interval. reg may
// be nil.
func NewCheckpointer(store Store, signer note.Signer, interval time.Duration, log zerolog.Logger, reg prometheus.Registerer) *Checkpointer {
	c := &Checkpointer{store: store, signer: signer, interval: interval, log: log, signed: map[string]int64{},
		m: checkpointMetrics{
			signed: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshproof_checkpoints_signed_total",
				Help: "Signed checkpoints of the replicas' transparency logs kept in the evidence store."}),
			failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshproof_checkpoint_failures_total",
				Help: "Rounds of checkpoint signing that failed (the store could not be read or written)."}),
		}}
	c.current.Store(time.Now().UnixNano())
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshproof_checkpoint_age_seconds",
		Help: "Seconds since every replica's log was last known covered by a signed checkpoint: since the last signing round that succeeded (a round with no log grown counts), or since start-up before the first; it grows by the interval and falls back when a round succeeds."},
		func() float64 { return time.Since(time.Unix(0, c.current.Load())).Seconds() })
	every := prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshproof_checkpoint_interval_seconds",
		Help: "How often checkpoints are signed (--checkpoint-interval): an alert compares meshproof_checkpoint_age_seconds with a few of them."})
	every.Set(interval.Seconds())
	if reg != nil {
		reg.MustRegister(c.m.signed, c.m.failures, age, every)
	}
	return c
}

// logInterval: a failing round is logged once per interval, not once per
// round.
const logInterval = 30 * time.Second

// Run signs every interval until ctx is done.
func (c *Checkpointer) Run(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	var lastLog time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.SignAll(ctx); err != nil && ctx.Err() == nil {
			c.m.failures.Inc()
			if time.Since(lastLog) > logInterval {
				lastLog = time.Now()
				c.log.Error().Err(err).Msg("signing checkpoints failed; trying again next interval (logged once per 30s)")
			}
		}
	}
}

// SignAll signs a checkpoint of each replica's log that grew since the last
// one this Checkpointer signed (or that has none of its size stored).
func (c *Checkpointer) SignAll(ctx context.Context) error {
	replicas, err := c.store.Replicas(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, replica := range replicas {
		if _, err := c.Sign(ctx, replica); err != nil {
			errs = append(errs, fmt.Errorf("replica %s: %w", replica, err))
		}
	}
	if len(errs) == 0 {
		c.current.Store(time.Now().UnixNano())
	}
	return errors.Join(errs...)
}

// Sign signs a checkpoint of replica's log at its current size, unless one
// of that size was signed already; it returns the checkpoint, nil when none
// was needed.
func (c *Checkpointer) Sign(ctx context.Context, replica string) (*SignedCheckpoint, error) {
	th, ok, err := c.store.TreeHead(ctx, replica)
	if err != nil || !ok || th.Size == 0 || th.Size == c.signed[replica] {
		return nil, err
	}
	now := time.Now().UTC()
	signed, err := SignCheckpoint(c.signer, replica, th, now)
	if err != nil {
		return nil, err
	}
	sc := SignedCheckpoint{Replica: replica, Size: th.Size, Time: now, Note: signed}
	if err := c.store.SaveCheckpoint(ctx, sc); err != nil {
		return nil, err
	}
	c.signed[replica] = th.Size
	c.m.signed.Inc()
	return &sc, nil
}

// GenerateSigningKey makes an Ed25519 note key pair named name: the signer
// key (secret) and the verifier key (public), in note's text forms.
func GenerateSigningKey(name string) (signer, verifier string, err error) {
	if name == "" || strings.ContainsAny(name, "+ \t\n") {
		return "", "", fmt.Errorf("key name %q: want a non-empty name without '+' or spaces (such as meshproof.example.com)", name)
	}
	return note.GenerateKey(rand.Reader, name)
}

// LoadSigner reads a signer key file (meshproof keygen). Its content is a
// secret: errors never quote it.
func LoadSigner(path string) (note.Signer, error) {
	b, err := readSmallFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	s, err := note.NewSigner(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: not a note signer key (made by meshproof keygen)", path)
	}
	return s, nil
}

// LoadVerifiers reads verifier key files (FILE.pub of meshproof keygen).
func LoadVerifiers(paths []string) (note.Verifiers, error) {
	var vs []note.Verifier
	for _, p := range paths {
		b, err := readSmallFile(p)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		v, err := note.NewVerifier(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("public key %s: not a note verifier key (FILE.pub of meshproof keygen): %w", p, err)
		}
		vs = append(vs, v)
	}
	return note.VerifierList(vs...), nil
}

// readSmallFile reads a key or checkpoint file, refusing one over 64 KiB.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("%s: over 64 KiB", path)
	}
	return b, nil
}

// ReadCheckpointFile reads a signed checkpoint kept in a file.
func ReadCheckpointFile(path string) ([]byte, error) { return readSmallFile(path) }
