package evidence_test

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	_ "github.com/meshproof/meshproof/evidence/sqlite"
)

func openSQLite(t *testing.T) (evidence.Store, string) {
	t.Helper()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "e.db")
	s, err := evidence.Open(context.Background(), dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

func record(id string) *evidence.Record {
	return &evidence.Record{ID: id, Time: time.Now().UTC(), Verdict: evidence.MTLS, Reasons: []string{"r"},
		Source: evidence.Peer{Principal: "spiffe://td/a"}, Request: evidence.Request{Host: "h", Method: "GET"}}
}

// counting is the real store, counting the writes it is asked for.
type counting struct {
	evidence.Store
	appends, quarantines atomic.Int64
}

func (c *counting) Append(ctx context.Context, b []*evidence.Record) error {
	c.appends.Add(1)
	return c.Store.Append(ctx, b)
}

func (c *counting) Quarantine(ctx context.Context, r *evidence.Record, reason string) error {
	c.quarantines.Add(1)
	return c.Store.Quarantine(ctx, r, reason)
}

// TestAppendIsolatingCost: one record the store refuses (an id already
// stored: SQLite refuses it) among 10,000 costs O(log n) writes, not one
// per record, and every other record is written.
func TestAppendIsolatingCost(t *testing.T) {
	ctx := context.Background()
	s, _ := openSQLite(t)
	c := &counting{Store: s}
	var head evidence.Link
	first := record("dup")
	first.Replica = "r1"
	head = head.Link(first)
	if err := s.Append(ctx, []*evidence.Record{first}); err != nil {
		t.Fatal(err)
	}
	const n = 10_000
	batch := make([]*evidence.Record, n)
	for i := range batch {
		batch[i] = record(fmt.Sprintf("rec-%05d", i))
		if i == 6173 {
			batch[i].ID = "dup"
		}
		batch[i].Replica = "r1"
		head = head.Link(batch[i])
	}
	q, err := evidence.AppendIsolating(ctx, c, batch, time.Minute)
	if err != nil || q != 1 {
		t.Fatalf("AppendIsolating = %d, %v; want 1 quarantined", q, err)
	}
	t.Logf("%d appends and %d quarantine for one refused record among %d", c.appends.Load(), c.quarantines.Load(), n)
	if limit := int64(2*bits.Len(n) + 1); c.appends.Load() > limit || c.quarantines.Load() != 1 {
		t.Errorf("%d appends and %d quarantines for one refused record among %d; want at most %d and 1",
			c.appends.Load(), c.quarantines.Load(), n, limit)
	}
	if got, err := s.Head(ctx, "r1"); err != nil || got != head {
		t.Fatalf("Head = %+v, %v; want %+v", got, err, head)
	}
	reps, err := evidence.Verify(ctx, s)
	if err != nil || len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != n || len(reps[0].Quarantined) != 1 {
		t.Fatalf("Verify = %+v, %v; want intact, %d checked, 1 quarantined", reps, err, n)
	}
}

// unreachable is the real store whose writes fail, as in an outage.
type unreachable struct{ evidence.Store }

func (unreachable) Append(context.Context, []*evidence.Record) error {
	return errors.New("store unreachable")
}

// TestAppendIsolatingTransient: an error that is not a refusal of the data
// is returned as is, quarantining nothing: the caller retries.
func TestAppendIsolatingTransient(t *testing.T) {
	s, _ := openSQLite(t)
	g := unreachable{s}
	r := record("a")
	r.Replica = "r1"
	evidence.Link{}.Link(r)
	n, err := evidence.AppendIsolating(context.Background(), g, []*evidence.Record{r}, time.Minute)
	if n != 0 || err == nil || evidence.IsPermanent(err) {
		t.Fatalf("AppendIsolating over a store that is down = %d, %v; want 0 and its error", n, err)
	}
	if q, err := s.Quarantined(context.Background(), ""); err != nil || len(q) != 0 {
		t.Errorf("quarantined %+v, %v; want none", q, err)
	}
}

// TestPermanent: Permanent marks an error, keeps its text and what it wraps;
// a chain conflict is never permanent.
func TestPermanent(t *testing.T) {
	base := errors.New("refused")
	p := evidence.Permanent(fmt.Errorf("store: %w", base))
	if !evidence.IsPermanent(p) || !errors.Is(p, base) || p.Error() != "store: refused" {
		t.Errorf("Permanent: %v (permanent %v)", p, evidence.IsPermanent(p))
	}
	if evidence.IsPermanent(base) || evidence.IsPermanent(nil) || evidence.Permanent(nil) != nil {
		t.Error("an unmarked or nil error is permanent")
	}
	if evidence.IsPermanent(evidence.Permanent(evidence.ErrChainConflict)) {
		t.Error("a chain conflict is permanent")
	}
}
