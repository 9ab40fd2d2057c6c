package postgres_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/evidencetest/traffic"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
)

// trafficStore is a store of n records of package traffic's mesh over the
// last span, analyzed (the partitions' row counts are what a page's
// choice weighs), and the records.
func trafficStore(t *testing.T, n int, span time.Duration) (*postgres.Store, []*evidence.Record) {
	t.Helper()
	ctx := context.Background()
	s := open(t, postgrestest.DSN(t))
	m := traffic.New(t, 7, "replica-a")
	step := span / time.Duration(n)
	at := time.Now().Add(-span).UTC()
	var head evidence.Link
	var all []*evidence.Record
	for done := 0; done < n; done += 5000 {
		batch := m.Batch(at, step, min(5000, n-done))
		at = at.Add(time.Duration(len(batch)) * step)
		head = evidencetest.Link(head, batch...)
		if err := s.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
		all = append(all, batch...)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	return s, all
}

// rarest is the source principal with the fewest records of verdict v
// (at least one), and that count.
func rarest(recs []*evidence.Record, v evidence.Verdict) (string, int) {
	n := map[string]int{}
	for _, r := range recs {
		if r.Verdict == v && r.Source.Principal != "" {
			n[r.Source.Principal]++
		}
	}
	best, fewest := "", 0
	for p, c := range n {
		if best == "" || c < fewest || c == fewest && p < best {
			best, fewest = p, c
		}
	}
	return best, fewest
}

// TestPageFormChoice: a page of a source's rare verdict is read through
// the shapes' index, where the planner left alone scans the day in time
// order for the few records; a page of the common verdict is read in time
// order, which stops at the hundredth.
func TestPageFormChoice(t *testing.T) {
	ctx := context.Background()
	s, recs := trafficStore(t, 30_000, 40*time.Hour)
	src, n := rarest(recs, evidence.MTLSMismatch)
	if src == "" {
		t.Fatal("the mesh has no mtls_mismatch source")
	}
	since := time.Now().Add(-48 * time.Hour)
	rare := evidence.Filter{Source: src, Verdicts: []evidence.Verdict{evidence.MTLSMismatch}, Since: since}
	by, plan, err := s.PageReadsByShape(ctx, rare, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !by || !strings.Contains(plan, "Bitmap Index Scan on records_") || !strings.Contains(plan, "shape") || strings.Contains(plan, "Index Scan Backward") {
		t.Errorf("the page of %d rare records (of %d) is not read through the shapes' index (by shape: %v):\n%s", n, len(recs), by, plan)
	}
	common := evidence.Filter{Verdicts: []evidence.Verdict{evidence.MTLS}, Since: since}
	by, plan, err = s.PageReadsByShape(ctx, common, 100)
	if err != nil {
		t.Fatal(err)
	}
	if by || !strings.Contains(plan, "Index Scan Backward using records_") {
		t.Errorf("the page of the common verdict is not read in time order (by shape: %v):\n%s", by, plan)
	}
}

// TestPageFormsAgree: both ways of reading a filtered page return the same
// records in the same order, page after page, for filters on every kind of
// condition.
func TestPageFormsAgree(t *testing.T) {
	s, recs := trafficStore(t, 6_000, 30*time.Hour)
	src, _ := rarest(recs, evidence.MTLSMismatch)
	mid := recs[len(recs)/2].Time
	r := recs[len(recs)/3]
	for i := len(recs) / 3; r.Source.SPIFFE == nil; i++ {
		r = recs[i]
	}
	filters := []evidence.Filter{
		{Source: src, Verdicts: []evidence.Verdict{evidence.MTLSMismatch}},
		{Source: src, Since: mid},
		{Verdicts: []evidence.Verdict{evidence.Plaintext}, Until: mid},
		{NotVerdicts: []evidence.Verdict{evidence.MTLS}, Since: mid.Add(-6 * time.Hour), Until: mid.Add(6 * time.Hour)},
		{Namespace: r.Source.SPIFFE.Namespace},
		{Destination: r.Destination.Principal, PathPrefix: "/api"},
		{Host: r.Request.Host, Allowed: new(bool)},
	}
	for _, f := range filters {
		s.ReadPagesByTime()
		byTime := pages(t, s, f)
		s.ReadPagesByShape()
		byShape := pages(t, s, f)
		s.ReadPagesByChoice()
		chosen := pages(t, s, f)
		if !slices.Equal(byTime, byShape) || !slices.Equal(byTime, chosen) {
			t.Errorf("%+v: %d records in time order, %d by shape, %d as chosen; they differ", f, len(byTime), len(byShape), len(chosen))
		}
		if len(byTime) == 0 {
			t.Errorf("%+v: no records; the filter tests nothing", f)
		}
	}
}

// pages reads every page of f, 37 records at a time, and returns the ids
// in order.
func pages(t *testing.T, s *postgres.Store, f evidence.Filter) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		p, err := s.Query(context.Background(), f, evidence.PageRequest{Limit: 37, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Records {
			ids = append(ids, r.ID)
		}
		if p.Next == "" {
			return ids
		}
		cursor = p.Next
	}
}
