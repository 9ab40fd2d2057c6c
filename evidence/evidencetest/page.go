package evidencetest

import (
	"context"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// testPagination checks page sizes and that pages of any size concatenate
// to the whole newest-first listing.
func testPagination(t *testing.T, f Factory) {
	b, fx := loaded(t, f, filterRecords)
	ctx := context.Background()
	all := NewestFirst(fx.Records, evidence.Filter{})
	for _, tc := range []struct {
		name       string
		limit, len int
	}{
		{"default", 0, evidence.DefaultLimit},
		{"capped", 5000, evidence.MaxLimit},
		{"exact", 42, 42},
	} {
		res, err := b.Store.Query(ctx, evidence.Filter{}, evidence.PageRequest{Limit: tc.limit})
		if err != nil {
			t.Fatalf("%s: Query: %v", tc.name, err)
		}
		if len(res.Records) != tc.len || res.Next == "" {
			t.Errorf("%s: limit %d gave %d records (next %q), want %d and a next cursor", tc.name, tc.limit, len(res.Records), res.Next, tc.len)
		}
		sameRecords(t, tc.name, res.Records, all[:tc.len])
	}
	for _, limit := range []int{13, 100, 999, 1000} {
		sameRecords(t, "pages", everything(t, b.Store, evidence.Filter{}, limit), all)
	}
	one := evidence.Filter{Replica: "replica-a", Verdicts: []evidence.Verdict{evidence.Plaintext}}
	sameRecords(t, "pages of one", everything(t, b.Store, one, 1), NewestFirst(fx.Records, one))

	// A listing that fills its pages exactly ends with Next "", not with an
	// empty page.
	res, err := b.Store.Query(ctx, one, evidence.PageRequest{Limit: len(NewestFirst(fx.Records, one))})
	if err != nil || res.Next != "" {
		t.Errorf("the only page of a listing: next %q, err %v; want no next cursor", res.Next, err)
	}
	res, err = b.Store.Query(ctx, evidence.Filter{Until: Base}, evidence.PageRequest{})
	if err != nil || len(res.Records) != 0 || res.Next != "" {
		t.Errorf("an empty listing: %d records, next %q, err %v", len(res.Records), res.Next, err)
	}
}

// testPaginationConcurrent pages through the records while another
// goroutine appends more, at times older and newer than the page being
// read: no record may show twice, none that existed at the start may be
// missed.
func testPaginationConcurrent(t *testing.T, f Factory) {
	b, fx := loaded(t, f, 600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var batches atomic.Int64
	var wg sync.WaitGroup
	var writeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(7, 7))
		var head evidence.Link
		for ctx.Err() == nil {
			batch := make([]*evidence.Record, 20)
			for i := range batch {
				at := Base.Add(time.Duration(rng.Int64N(int64(5 * 24 * time.Hour))))
				batch[i] = varied(rng, randomID(rng), "replica-late", at, i)
			}
			head = Link(head, batch...)
			if err := b.Store.Append(context.Background(), batch); err != nil {
				writeErr = err
				return
			}
			batches.Add(1)
		}
	}()
	seen := map[string]int{}
	page := evidence.PageRequest{Limit: 29}
	for {
		// Let at least one batch land between two pages.
		for n, deadline := batches.Load(), time.Now().Add(5*time.Second); batches.Load() == n && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		res, err := b.Store.Query(context.Background(), evidence.Filter{}, page)
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		for _, r := range res.Records {
			seen[r.ID]++
		}
		if res.Next == "" {
			break
		}
		page.Cursor = res.Next
	}
	cancel()
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("concurrent Append: %v", writeErr)
	}
	if batches.Load() < 10 {
		t.Fatalf("only %d batches were written while paging: the test did not test", batches.Load())
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("record %s seen %d times", id, n)
		}
	}
	for _, r := range fx.Records {
		if seen[r.ID] == 0 {
			t.Errorf("record %s (%s) existed before paging began and was missed", r.ID, r.Time)
		}
	}
	t.Logf("%d records seen, %d batches written while paging", len(seen), batches.Load())
}

// testBadCursor checks that cursors the store did not issue fail with
// ErrBadCursor.
func testBadCursor(t *testing.T, f Factory) {
	b, _ := loaded(t, f, 30)
	for _, c := range []string{
		"!!!not base64",
		"AAAA", // too short
		base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("x", 8+evidence.MaxFieldBytes+1))), // too long
		"'; DROP TABLE records; --",
		"AAAAAAAAAAA=",
	} {
		if _, err := b.Store.Query(context.Background(), evidence.Filter{}, evidence.PageRequest{Cursor: c}); !errors.Is(err, evidence.ErrBadCursor) {
			t.Errorf("cursor %q: error %v, want one wrapping ErrBadCursor", c, err)
		}
	}
}
