package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// TestAppendSummarizesRequestIndex: Append summarizes the request id
// index's new ranges itself (PostgreSQL's autosummarize never summarizes
// the range being filled, and may drop requests under load), so nothing is
// left for brin_summarize_new_values afterwards, and the newest records
// are found by request id.
func TestAppendSummarizesRequestIndex(t *testing.T) {
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	s.SummarizeEvery(0)
	m := traffic.New(t, 1, "r1")
	var head evidence.Link
	at := time.Now().UTC().Truncate(24 * time.Hour).Add(time.Hour)
	var last []*evidence.Record
	for range 3 {
		last = m.Batch(at, time.Millisecond, 2000)
		at = at.Add(2 * time.Second)
		head = evidencetest.Link(head, last...)
		if err := s.Append(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	var left int64
	if err := s.Pool().QueryRow(ctx, `SELECT sum(brin_summarize_new_values(relid))::bigint
		FROM pg_partition_tree('records_request_uuid'::regclass) WHERE isleaf`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d ranges of the request id index left unsummarized after Append", left)
	}
	for _, r := range last[len(last)-5:] {
		res, err := s.Query(ctx, evidence.Filter{RequestID: r.RequestID}, evidence.PageRequest{})
		if err != nil || len(res.Records) != 1 || res.Records[0].ID != r.ID {
			t.Errorf("Query(request id %s) = %v, %v; want %s", r.RequestID, evidencetest.IDs(res.Records), err, r.ID)
		}
	}
}
