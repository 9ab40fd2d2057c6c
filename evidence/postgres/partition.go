package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// Records live in one partition per UTC day, records_YYYYMMDD, so that
// retention drops whole days instead of deleting rows one by one.

const dayNS = int64(24 * time.Hour)

// dayOf is the day (days since the Unix epoch) holding the time in ns.
func dayOf(ns int64) int64 {
	d := ns / dayNS
	if ns%dayNS < 0 {
		d--
	}
	return d
}

func partitionName(day int64) string {
	return "records_" + time.Unix(day*86400, 0).UTC().Format("20060102")
}

// dayOfPartition reads the day from a partition's name.
func dayOfPartition(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, "records_")
	if !ok {
		return 0, false
	}
	t, err := time.Parse("20060102", s)
	if err != nil {
		return 0, false
	}
	return t.Unix() / 86400, true
}

// partitions remembers which days have a partition, so that a batch only
// asks PostgreSQL when it holds a day not seen before.
type partitions struct {
	db   beginner
	mu   sync.Mutex
	days map[int64]bool
}

type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func newPartitions(db beginner) *partitions {
	return &partitions{db: db, days: map[int64]bool{}}
}

// load reads the partitions that exist.
func (p *partitions) load(ctx context.Context) error {
	days, err := listPartitions(ctx, p.db)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.days = map[int64]bool{}
	for _, d := range days {
		p.days[d] = true
	}
	return nil
}

// ensure creates the partitions of the given days that do not exist yet,
// and of the day after each (created ahead, so that midnight rarely finds
// a writer creating one).
func (p *partitions) ensure(ctx context.Context, days []int64) error {
	var missing []int64
	p.mu.Lock()
	for _, d := range days {
		for _, d := range []int64{d, d + 1} {
			if !p.days[d] && !slices.Contains(missing, d) {
				missing = append(missing, d)
			}
		}
	}
	p.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	if err := createPartitions(ctx, p.db, missing...); err != nil {
		return err
	}
	p.mu.Lock()
	for _, d := range missing {
		p.days[d] = true
	}
	p.mu.Unlock()
	return nil
}

// within returns the days with a known partition that [since, until)
// overlaps, oldest first (a zero time leaves that end open).
func (p *partitions) within(since, until time.Time) []int64 {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !since.IsZero() {
		lo = dayOf(evidence.Nanos(since))
	}
	if !until.IsZero() {
		hi = dayOf(evidence.Nanos(until) - 1)
	}
	p.mu.Lock()
	var days []int64
	for d := range p.days {
		if d >= lo && d <= hi {
			days = append(days, d)
		}
	}
	p.mu.Unlock()
	slices.Sort(days)
	return days
}

// forget drops what p knows (another process may have dropped a
// partition); the next ensure asks PostgreSQL again.
func (p *partitions) forget() {
	p.mu.Lock()
	p.days = map[int64]bool{}
	p.mu.Unlock()
}

// partitionLock is the advisory lock key that serialises partition
// creation: replicas racing to create the same day create it once.
const partitionLock = 0x6d70706172746974 // "mppartit"

// createPartitions creates the partitions of days that do not exist, one
// short transaction each. A new table is attached rather than created
// with PARTITION OF: attaching locks the parent only against other schema
// changes, never against writers and readers.
func createPartitions(ctx context.Context, db beginner, days ...int64) error {
	for _, day := range days {
		name := partitionName(day)
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '10s'"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(partitionLock)); err != nil {
				return err
			}
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil || exists {
				return err
			}
			// Names and bounds come from integers, never from input.
			_, err := tx.Exec(ctx, fmt.Sprintf(`
				CREATE TABLE %[1]s (LIKE records INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION);
				ALTER TABLE records ATTACH PARTITION %[1]s FOR VALUES FROM (%[2]d) TO (%[3]d)`,
				name, day*dayNS, (day+1)*dayNS))
			return err
		})
		if err != nil {
			return fmt.Errorf("creating partition %s: %w", name, err)
		}
	}
	return nil
}

// listPartitions returns the days that have a partition, oldest first.
func listPartitions(ctx context.Context, db beginner) ([]int64, error) {
	rows, err := db.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'records'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("listing partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing partitions: %w", err)
	}
	var days []int64
	for _, n := range names {
		if d, ok := dayOfPartition(n); ok {
			days = append(days, d)
		}
	}
	slices.Sort(days)
	return days, nil
}

// forgetDay records that day's partition was dropped.
func (p *partitions) forgetDay(day int64) {
	p.mu.Lock()
	delete(p.days, day)
	p.mu.Unlock()
}
