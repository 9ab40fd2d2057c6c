package spool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
)

// redialEvery spaces the attempts to open a store that could not be
// opened: every caller would otherwise try it again.
const redialEvery = time.Second

// Dial opens the store dsn names. When it cannot be opened for another
// reason than its schema (PostgreSQL is down), Dial returns a Store that
// opens it on first use instead, trying again at most once a second, so
// that a replica with a spool can start during an outage. A schema that
// needs `meshproof migrate` is an error at once: time will not fix it.
func Dial(ctx context.Context, dsn string, opts evidence.Options) (evidence.Store, error) {
	s, err := evidence.Open(ctx, dsn, opts)
	if err == nil || errors.Is(err, evidence.ErrSchema) {
		return s, err
	}
	return &deferred{dsn: dsn, opts: opts, err: err, tried: time.Now()}, nil
}

// deferred is a store opened on first use.
type deferred struct {
	dsn  string
	opts evidence.Options

	mu     sync.Mutex
	s      evidence.Store
	err    error // the last attempt's
	tried  time.Time
	closed bool
}

// store returns the open store, opening it if it is time to try again.
func (d *deferred) store(ctx context.Context) (evidence.Store, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.s != nil:
		return d.s, nil
	case d.closed:
		return nil, errors.New("evidence store closed")
	case time.Since(d.tried) >= redialEvery:
		d.tried = time.Now()
		ctx, cancel := context.WithTimeout(ctx, primaryTimeout)
		defer cancel()
		// Kept only when it opened: a driver's failed Open may return a
		// nil *Store in a non-nil interface.
		s, err := evidence.Open(ctx, d.dsn, d.opts)
		if err == nil {
			d.s = s
			return s, nil
		}
		d.err = err
	}
	return nil, fmt.Errorf("evidence store not opened yet: %w", d.err)
}

func (d *deferred) Append(ctx context.Context, batch []*evidence.Record) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.Append(ctx, batch)
}

// The store opened may be an evidence.Journaler or evidence.Syncer (the
// spool asks); errNoJournal: it is not a Journaler.
var errNoJournal = errors.New("the evidence store keeps no journal")

// journaler is the store, opened, as an evidence.Journaler.
func (d *deferred) journaler(ctx context.Context) (evidence.Journaler, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	jr, ok := s.(evidence.Journaler)
	if !ok {
		return nil, errNoJournal
	}
	return jr, nil
}

func (d *deferred) OpenJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error {
	jr, err := d.journaler(ctx)
	if err != nil {
		return err
	}
	return jr.OpenJournal(ctx, replica, quarantined)
}

func (d *deferred) Journal(ctx context.Context, batch []*evidence.Record, lines []byte) error {
	jr, err := d.journaler(ctx)
	if err != nil {
		return err
	}
	return jr.Journal(ctx, batch, lines)
}

// Sync is the store's when it is an evidence.Syncer; a store not opened
// yet holds nothing to flush.
func (d *deferred) Sync(ctx context.Context) error {
	d.mu.Lock()
	s := d.s
	d.mu.Unlock()
	if sy, ok := s.(evidence.Syncer); ok {
		return sy.Sync(ctx)
	}
	return nil
}

func (d *deferred) Quarantine(ctx context.Context, rec *evidence.Record, reason string) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.Quarantine(ctx, rec, reason)
}

func (d *deferred) Quarantined(ctx context.Context, replica string) ([]evidence.Quarantined, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.Quarantined(ctx, replica)
}

func (d *deferred) Head(ctx context.Context, replica string) (evidence.Link, error) {
	s, err := d.store(ctx)
	if err != nil {
		return evidence.Link{}, err
	}
	return s.Head(ctx, replica)
}

func (d *deferred) DeleteBefore(ctx context.Context, t, rollupsBefore time.Time, batch int) (int64, error) {
	s, err := d.store(ctx)
	if err != nil {
		return 0, err
	}
	return s.DeleteBefore(ctx, t, rollupsBefore, batch)
}

func (d *deferred) Get(ctx context.Context, id string) (*evidence.Record, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, id)
}

func (d *deferred) Query(ctx context.Context, f evidence.Filter, page evidence.PageRequest) (evidence.RecordPage, error) {
	s, err := d.store(ctx)
	if err != nil {
		return evidence.RecordPage{}, err
	}
	return s.Query(ctx, f, page)
}

func (d *deferred) Scan(ctx context.Context, f evidence.Filter, fn func(*evidence.Record) error) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.Scan(ctx, f, fn)
}

func (d *deferred) QueryJSON(ctx context.Context, f evidence.Filter, page evidence.PageRequest) ([][]byte, string, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, "", err
	}
	return s.QueryJSON(ctx, f, page)
}

func (d *deferred) Count(ctx context.Context, f evidence.Filter) (int64, error) {
	s, err := d.store(ctx)
	if err != nil {
		return 0, err
	}
	return s.Count(ctx, f)
}

func (d *deferred) ScanJSON(ctx context.Context, f evidence.Filter, fn func([]byte) error) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.ScanJSON(ctx, f, fn)
}

func (d *deferred) Amendments(ctx context.Context, ids []string, since, until time.Time) (map[string]*evidence.Record, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.Amendments(ctx, ids, since, until)
}

func (d *deferred) Aggregate(ctx context.Context, q evidence.AggregateQuery) ([]evidence.Group, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.Aggregate(ctx, q)
}

func (d *deferred) AggregateSeries(ctx context.Context, q evidence.SeriesQuery) ([]evidence.PointGroup, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.AggregateSeries(ctx, q)
}

func (d *deferred) Replicas(ctx context.Context) ([]string, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.Replicas(ctx)
}

func (d *deferred) Checkpoint(ctx context.Context, replica string) (evidence.Link, error) {
	s, err := d.store(ctx)
	if err != nil {
		return evidence.Link{}, err
	}
	return s.Checkpoint(ctx, replica)
}

func (d *deferred) Walk(ctx context.Context, replica string, fn func(*evidence.Record, evidence.Stored) error) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.Walk(ctx, replica, fn)
}

func (d *deferred) Stats(ctx context.Context, since time.Time) (evidence.Stats, error) {
	s, err := d.store(ctx)
	if err != nil {
		return evidence.Stats{}, err
	}
	return s.Stats(ctx, since)
}

// Close closes the store if it was opened; it is never opened after.
func (d *deferred) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.s == nil {
		return nil
	}
	return d.s.Close()
}

func (d *deferred) TreeHead(ctx context.Context, replica string) (evidence.TreeHead, bool, error) {
	s, err := d.store(ctx)
	if err != nil {
		return evidence.TreeHead{}, false, err
	}
	return s.TreeHead(ctx, replica)
}

func (d *deferred) ReadTiles(ctx context.Context, replica string, tiles []tlog.Tile) ([][]byte, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.ReadTiles(ctx, replica, tiles)
}

func (d *deferred) Checkpoints(ctx context.Context, replica string, size int64, limit int) ([]evidence.SignedCheckpoint, error) {
	s, err := d.store(ctx)
	if err != nil {
		return nil, err
	}
	return s.Checkpoints(ctx, replica, size, limit)
}

func (d *deferred) SaveCheckpoint(ctx context.Context, c evidence.SignedCheckpoint) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.SaveCheckpoint(ctx, c)
}

func (d *deferred) RollupBuckets(ctx context.Context, fromHour, toHour int64, fn func(evidence.RollupBucket) error) error {
	s, err := d.store(ctx)
	if err != nil {
		return err
	}
	return s.RollupBuckets(ctx, fromHour, toHour, fn)
}

func (d *deferred) RollupSeals(ctx context.Context, replica string, fn func(evidence.RollupSeal) error) (evidence.SealHead, error) {
	s, err := d.store(ctx)
	if err != nil {
		return evidence.SealHead{}, err
	}
	return s.RollupSeals(ctx, replica, fn)
}

func (d *deferred) RollupBounds(ctx context.Context) (int64, int64, error) {
	s, err := d.store(ctx)
	if err != nil {
		return 0, 0, err
	}
	return s.RollupBounds(ctx)
}
