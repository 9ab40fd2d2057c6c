package evidencetest

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

var errStop = errors.New("evidencetest: stop here")

// testScanStops checks that Scan visits everything in order, and stops at
// fn's first error and when its context is cancelled halfway, leaving no
// goroutine (and so no query iterator) behind.
func testScanStops(t *testing.T, f Factory) {
	b, fx := loaded(t, f, filterRecords)
	var all []*evidence.Record
	if err := b.Store.Scan(context.Background(), evidence.Filter{}, func(r *evidence.Record) error {
		all = append(all, r)
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	sameRecords(t, "Scan", all, NewestFirst(fx.Records, evidence.Filter{}))
	filter := evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLS, evidence.Plaintext}}
	sameRecords(t, "Scan filtered", scanAll(t, b.Store, filter), NewestFirst(fx.Records, filter))

	before := settledGoroutines(-1)
	calls := 0
	err := b.Store.Scan(context.Background(), evidence.Filter{}, func(*evidence.Record) error {
		calls++
		if calls == 5 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || calls != 5 {
		t.Errorf("Scan with fn failing at the 5th record: %v after %d calls; want fn's error after 5", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = b.Store.Scan(ctx, evidence.Filter{}, func(*evidence.Record) error {
		calls++
		if calls == 700 { // past the first page of most backends
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls >= len(fx.Records) {
		t.Errorf("Scan cancelled after 700 records: %v after %d calls; want context.Canceled before the end", err, calls)
	}
	if err := b.Store.Scan(ctx, evidence.Filter{}, func(*evidence.Record) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan with a cancelled context: %v, want context.Canceled", err)
	}
	if after := settledGoroutines(before); after > before {
		t.Errorf("%d goroutines after the stopped scans, %d before: something was left running", after, before)
	}
	// Nothing is held: the store still writes and reads.
	more := Full("01JQ000000000000000000SCAN", "replica-scan", Base)
	Link(evidence.Link{}, more)
	write(t, b.Store, []*evidence.Record{more})
	if got := everything(t, b.Store, evidence.Filter{}, evidence.MaxLimit); len(got) != len(fx.Records)+1 {
		t.Errorf("%d records after the scans and one more append, want %d", len(got), len(fx.Records)+1)
	}
}

func scanAll(t *testing.T, s evidence.Reader, f evidence.Filter) []*evidence.Record {
	t.Helper()
	var out []*evidence.Record
	if err := s.Scan(context.Background(), f, func(r *evidence.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

// settledGoroutines waits up to two seconds for the number of goroutines to
// come down to target (or, for target -1, to stop changing) and returns it.
func settledGoroutines(target int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if (target >= 0 && m <= target) || (target < 0 && m == n) {
			return m
		}
		n = m
	}
	return n
}

// testWalkStops checks Walk's order and that it returns fn's error as is.
func testWalkStops(t *testing.T, f Factory) {
	b, fx := loaded(t, f, 300)
	ctx := context.Background()
	var walked []*evidence.Record
	if err := b.Store.Walk(ctx, "replica-b", func(r *evidence.Record, _ evidence.Stored) error {
		walked = append(walked, r)
		return nil
	}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	sameRecords(t, "Walk", walked, ofReplica(fx.Records, "replica-b"))
	calls := 0
	err := b.Store.Walk(ctx, "replica-b", func(*evidence.Record, evidence.Stored) error {
		calls++
		if calls == 3 {
			return errStop
		}
		return nil
	})
	if err != errStop || calls != 3 {
		t.Errorf("Walk with fn failing at the 3rd record: %v after %d calls; want fn's error as is after 3", err, calls)
	}
	calls = 0
	if err := b.Store.Walk(ctx, "never-wrote", func(*evidence.Record, evidence.Stored) error {
		calls++
		return nil
	}); err != nil || calls != 0 {
		t.Errorf("Walk of an unknown replica: %v after %d calls; want nothing", err, calls)
	}
}
