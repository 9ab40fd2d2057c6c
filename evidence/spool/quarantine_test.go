package spool_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
)

// TestPoisonDoesNotStopTheDrain: PostgreSQL refuses a record for its
// content (an id and time already stored). Written while the primary is
// up, the refusal is not spooled (it would block the spool for ever): the
// caller isolates the record and it is quarantined in the primary. Spooled
// while the primary is down, then drained after a restart of the spool, it
// is quarantined in the primary by the drainer, and the drain goes on: the
// spool empties, later writes go to the primary, the chain verifies. A
// record marked refused while the primary is down waits in the spool and
// goes to the primary's quarantine in its turn.
func TestPoisonDoesNotStopTheDrain(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, postgresBackend(t))
	s := f.open(t, true)
	var head evidence.Link
	a := batch(&head, 10)
	appendAll(t, s, a)

	// Primary up: refused, not spooled; AppendIsolating quarantines it.
	b := batch(&head, 9)
	b[4] = evidencetest.Poison(a[2])
	head = relink(a[len(a)-1], b)
	n, err := evidence.AppendIsolating(ctx, s, b, time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("AppendIsolating through the spool = %d, %v; want 1 quarantined", n, err)
	}
	if st := s.Status(); st.Spooled != 0 || st.Degraded {
		t.Fatalf("a refused record was spooled: %+v", st)
	}

	// Primary down: spooled, poison and all.
	f.down(t)
	c := batch(&head, 12)
	c[7] = evidencetest.Poison(a[3])
	head = relink(b[len(b)-1], c)
	d := batch(&head, 5)
	appendAll(t, s, c, d)
	// A record found refused by the Recorder while the primary fails: the
	// spool keeps it, marked for the primary's quarantine.
	refused := batch(&head, 1)
	if err := s.Quarantine(ctx, refused[0], "refused for a test"); err != nil {
		t.Fatalf("Quarantine while the primary is down: %v", err)
	}
	d = append(d, refused[0])
	d = append(d, batch(&head, 2)...)
	appendAll(t, s, d[len(d)-2:])
	if st := s.Status(); st.Spooled != len(c)+len(d) {
		t.Fatalf("status while the primary is down: %+v", st)
	}

	// A restart of the spool, then the primary back: the drain finishes.
	s.Close()
	f.up(t)
	s = f.open(t, true)
	waitDrained(t, s)
	e := batch(&head, 3)
	appendAll(t, s, e)
	if n := spooledRows(t, s.Path()); n != 0 {
		t.Errorf("the spool still holds %d records", n)
	}
	if got := f.metric(t, "meshproof_evidence_quarantined_total"); got != 1 {
		t.Errorf("meshproof_evidence_quarantined_total = %v, want 1 (the drained one)", got)
	}
	s.Close()

	var want []*evidence.Record
	for _, r := range flat(a, b, c, d, e) {
		if r != b[4] && r != c[7] && r != refused[0] {
			want = append(want, r)
		}
	}
	checkPrimary(t, f.dsn, want)
	p, err := evidence.Open(ctx, f.dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	q, err := p.Quarantined(ctx, replica)
	if err != nil || len(q) != 3 || q[0].Seq != b[4].Chain.Seq || q[1].Seq != c[7].Chain.Seq || q[2].Seq != refused[0].Chain.Seq ||
		q[0].Reason == "" || q[1].Reason == "" || q[2].Reason != "refused for a test" {
		t.Fatalf("quarantined %+v, %v; want seqs %d, %d and %d with reasons", q, err, b[4].Chain.Seq, c[7].Chain.Seq, refused[0].Chain.Seq)
	}
	reps, err := evidence.Verify(ctx, p)
	if err != nil || len(reps) != 1 || len(reps[0].Quarantined) != 3 {
		t.Fatalf("Verify = %+v, %v; want 3 quarantined listed", reps, err)
	}
}

// relink chains recs again after prev (one of them was replaced) and
// returns the new head.
func relink(prev *evidence.Record, recs []*evidence.Record) evidence.Link {
	return evidencetest.Link(evidence.Link{Seq: prev.Chain.Seq, Hash: prev.Chain.Hash}, recs...)
}
