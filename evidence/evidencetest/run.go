package evidencetest

import (
	"context"
	"reflect"
	"testing"

	"github.com/meshproof/meshproof/evidence"
)

// Run runs the conformance suite against the backends f makes: each
// subtest gets a fresh one.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"ReadBackEveryField", testReadBack},
		{"Filters", testFilters},
		{"HostAnyPort", testHostAnyPort},
		{"FilterValidation", testFilterValidation},
		{"Pagination", testPagination},
		{"PaginationUnderConcurrentWrites", testPaginationConcurrent},
		{"BadCursor", testBadCursor},
		{"AppendIdempotent", testIdempotent},
		{"ChainConflict", testChainConflict},
		{"HeadAndReopen", testHeadAndReopen},
		{"Rollups", testRollups},
		{"RollupsWorkloads", testRollupsWorkloads},
		{"RollupSeries", testRollupSeries},
		{"Stats", testStats},
		{"Retention", testRetention},
		{"RetentionAbsurdTimes", testRetentionAbsurdTimes},
		{"VerifyIntact", testVerifyIntact},
		{"VerifyIntactWorkloads", testVerifyIntactWorkloads},
		{"Tamper", testTamper},
		{"ScanStops", testScanStops},
		{"WalkStops", testWalkStops},
		{"JSON", testJSON},
		{"Amendments", testAmendments},
		{"Quarantine", testQuarantine},
		{"RollupTamper", testRollupTamper},
		{"RollupSeals", testRollupSeals},
		{"RecorderQuarantine", testRecorderQuarantine},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}
}

// loaded is a fresh backend holding a Varied fixture of n records.
func loaded(t *testing.T, f Factory, n int) (Backend, *Fixture) {
	t.Helper()
	b := f(t)
	fx := Varied(n, 50, uint64(n))
	write(t, b.Store, fx.Batches...)
	return b, fx
}

// loadedWorkloads is loaded with a VariedWorkloads fixture: records whose
// peers have workloads, for the tests of what depends on them (filters,
// rollup keys, verify).
func loadedWorkloads(t *testing.T, f Factory, n int) (Backend, *Fixture) {
	t.Helper()
	b := f(t)
	fx := VariedWorkloads(n, 50, uint64(n))
	write(t, b.Store, fx.Batches...)
	return b, fx
}

// write appends each batch, failing the test on an error.
func write(t testing.TB, s evidence.Writer, batches ...[]*evidence.Record) {
	t.Helper()
	for _, batch := range batches {
		if err := s.Append(context.Background(), batch); err != nil {
			t.Fatalf("Append(%d records from seq %d of %s): %v", len(batch), batch[0].Chain.Seq, batch[0].Replica, err)
		}
	}
}

// everything reads every page of f's records with the given page size.
func everything(t testing.TB, s evidence.Reader, f evidence.Filter, limit int) []*evidence.Record {
	t.Helper()
	var out []*evidence.Record
	page := evidence.PageRequest{Limit: limit}
	for i := 0; ; i++ {
		res, err := s.Query(context.Background(), f, page)
		if err != nil {
			t.Fatalf("Query(%+v, page %d): %v", f, i, err)
		}
		if len(res.Records) > max(limit, evidence.DefaultLimit) {
			t.Fatalf("Query(limit %d) returned %d records", limit, len(res.Records))
		}
		out = append(out, res.Records...)
		if res.Next == "" {
			return out
		}
		if len(res.Records) == 0 {
			t.Fatalf("Query: an empty page with a next cursor")
		}
		page.Cursor = res.Next
	}
}

// sameRecords fails unless got holds exactly want's records, in order, each
// equal field by field.
func sameRecords(t testing.TB, what string, got, want []*evidence.Record) {
	t.Helper()
	if !reflect.DeepEqual(IDs(got), IDs(want)) {
		t.Fatalf("%s: got %d records %v,\nwant %d %v", what, len(got), short(IDs(got)), len(want), short(IDs(want)))
	}
	for i := range got {
		if g, w := normal(got[i]), normal(want[i]); !reflect.DeepEqual(g, w) {
			t.Fatalf("%s: record %s differs:\n got %+v\nwant %+v", what, w.ID, g, w)
		}
	}
}

func short(ids []string) []string {
	if len(ids) > 12 {
		return append(ids[:12:12], "...")
	}
	return ids
}

// ofReplica is the fixture's records of one replica, in seq order.
func ofReplica(recs []*evidence.Record, replica string) []*evidence.Record {
	var out []*evidence.Record
	for _, r := range recs {
		if r.Replica == replica {
			out = append(out, r)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }
