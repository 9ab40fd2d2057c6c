package evidencetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// Poison is a record every store refuses for its content: it has the id
// and the time of a stored record (SQLite keeps ids unique, PostgreSQL ids
// per time), chained onto nothing yet.
func Poison(stored *evidence.Record) *evidence.Record {
	return Full(stored.ID, stored.Replica, stored.Time)
}

// testQuarantine: a batch with a record the store refuses in its middle
// fails as a whole with a permanent error; AppendIsolating writes the rest
// and quarantines that record at its place in the chain, which verifies
// whole, walking records and quarantine together. Later batches follow.
func testQuarantine(t *testing.T, f Factory) {
	ctx := context.Background()
	b, fx := loaded(t, f, 120)
	const replica = "replica-a"
	stored := ofReplica(fx.Records, replica)
	later := Base.Add(8 * 24 * time.Hour)
	batch := make([]*evidence.Record, 9)
	for i := range batch {
		batch[i] = Full(fmt.Sprintf("01JQ0000000000000000QUAR%02d", i), replica, later.Add(time.Duration(i)*time.Second))
	}
	poison := Poison(stored[3])
	batch[4] = poison
	head := Link(fx.Heads[replica], batch...)

	err := b.Store.Append(ctx, batch)
	if !evidence.IsPermanent(err) {
		t.Fatalf("Append of a batch holding a record with a stored id and time = %v, want an error IsPermanent says is permanent", err)
	}
	n, err := evidence.AppendIsolating(ctx, b.Store, batch, time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("AppendIsolating = %d, %v; want 1 record quarantined", n, err)
	}
	if got, err := b.Store.Head(ctx, replica); err != nil || got != head {
		t.Fatalf("Head = %+v, %v after the batch; want %+v (past the quarantined record)", got, err, head)
	}
	for _, r := range batch {
		got, err := b.Store.Get(ctx, r.ID)
		if err != nil {
			t.Fatalf("Get(%s): %v", r.ID, err)
		}
		if r == poison && got.Chain.Seq != stored[3].Chain.Seq {
			t.Errorf("Get(%s) found seq %d, want the record stored first (seq %d)", r.ID, got.Chain.Seq, stored[3].Chain.Seq)
		}
	}
	q, err := b.Store.Quarantined(ctx, replica)
	if err != nil || len(q) != 1 {
		t.Fatalf("Quarantined(%s) = %+v, %v; want the one refused record", replica, q, err)
	}
	e := q[0]
	if e.Replica != replica || e.Seq != poison.Chain.Seq || e.ID != poison.ID || e.Hash != poison.Chain.Hash ||
		e.PrevHash != poison.Chain.PrevHash || e.Reason == "" || e.At.IsZero() || time.Since(e.At) > time.Hour {
		t.Errorf("quarantined %+v, want seq %d id %s with its links, a reason and the time", e, poison.Chain.Seq, poison.ID)
	}
	var back evidence.Record
	if err := json.Unmarshal(e.Record, &back); err != nil {
		t.Fatalf("the quarantined record's JSON: %v", err)
	}
	if !reflect.DeepEqual(normal(&back), normal(poison)) {
		t.Errorf("quarantined record:\n got %+v\nwant %+v", back, poison)
	}
	if all, err := b.Store.Quarantined(ctx, ""); err != nil || len(all) != 1 {
		t.Errorf(`Quarantined("") = %d entries, %v; want 1`, len(all), err)
	}
	if other, err := b.Store.Quarantined(ctx, "replica-b"); err != nil || len(other) != 0 {
		t.Errorf("Quarantined(replica-b) = %+v, %v; want none", other, err)
	}

	// Written again (a commit in doubt): nothing changes.
	if n, err := evidence.AppendIsolating(ctx, b.Store, batch, time.Minute); err != nil || n != 0 {
		t.Errorf("AppendIsolating of the same batch again = %d, %v; want 0, nil", n, err)
	}
	if err := b.Store.Quarantine(ctx, poison, "again"); err != nil {
		t.Errorf("Quarantine of a quarantined record again = %v, want nil", err)
	}
	stray := Full("01JQ0000000000000000STRAY1", replica, later)
	Link(evidence.Link{Seq: head.Seq + 5, Hash: strings.Repeat("f", 64)}, stray)
	if err := b.Store.Quarantine(ctx, stray, "test"); !errors.Is(err, evidence.ErrChainConflict) {
		t.Errorf("Quarantine of a record not following the head = %v, want ErrChainConflict", err)
	}

	// A refused record at the end of a batch: the batch written again
	// (its commit in doubt) is found stored, not taken for a conflict.
	tail := []*evidence.Record{
		Full("01JQ0000000000000000TAIL01", replica, later.Add(30*time.Second)),
		Poison(stored[4]),
	}
	head = Link(head, tail...)
	if n, err := evidence.AppendIsolating(ctx, b.Store, tail, time.Minute); err != nil || n != 1 {
		t.Fatalf("AppendIsolating of a batch ending with a refused record = %d, %v; want 1 quarantined", n, err)
	}
	for _, batch := range [][]*evidence.Record{tail, tail[1:]} {
		if err := b.Store.Append(ctx, batch); err != nil {
			t.Errorf("Append of %d stored records ending with a quarantined one = %v, want nil", len(batch), err)
		}
	}

	// Later batches flow.
	next := []*evidence.Record{
		Full("01JQ0000000000000000NEXT01", replica, later.Add(time.Minute)),
		Full("01JQ0000000000000000NEXT02", replica, later.Add(2*time.Minute)),
	}
	Link(head, next...)
	write(t, b.Store, next)

	counts := map[string]int64{}
	for _, r := range fx.Records {
		counts[r.Replica]++
	}
	written := len(batch) - 1 + 1 + len(next) // the batch but its poison, the tail's first, next
	counts[replica] += int64(written)
	check := func(s evidence.Store) {
		t.Helper()
		for _, rep := range verifyIntact(t, s, counts) {
			var want []uint64
			if rep.Replica == replica {
				want = []uint64{poison.Chain.Seq, tail[1].Chain.Seq}
			}
			var got []uint64
			for _, e := range rep.Quarantined {
				got = append(got, e.Seq)
				if e.Record != nil {
					t.Errorf("Verify lists quarantined seq %d with its JSON", e.Seq)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Verify of %s lists quarantined seqs %v, want %v", rep.Replica, got, want)
			}
		}
		st, err := s.Stats(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Quarantined != 2 || st.Records != int64(len(fx.Records)+written) {
			t.Errorf("Stats: %d records, %d quarantined; want %d and 2", st.Records, st.Quarantined, len(fx.Records)+written)
		}
	}
	check(b.Store)
	check(b.Reopen(t))
}

// testRecorderQuarantine: a Recorder whose store refuses one record of a
// batch writes the rest and goes on writing (no outage): the record is
// quarantined and counted, and the chain verifies.
func testRecorderQuarantine(t *testing.T, f Factory) {
	b := f(t)
	const replica = "replica-r"
	reg := prometheus.NewRegistry()
	m := recorder.NewMetrics(reg)
	cfg := recorder.DefaultConfig()
	cfg.Durability = recorder.Sync
	// A bound on a hang, not on speed: before quarantine the batch was
	// retried for ever and no Check after it was answered.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := recorder.New(ctx, cfg, replica, b.Store, zerolog.Nop(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx) // bounded: before quarantine it never returned
	now := time.Now().UTC()
	first := Full("01JQ00000000000000000REC000", replica, now)
	if err := r.Record(ctx, first); err != nil {
		t.Fatal(err)
	}
	batch := make([]*evidence.Record, 7)
	for i := range batch {
		batch[i] = Full(fmt.Sprintf("01JQ0000000000000000REC1%02d", i), replica, now.Add(time.Duration(i+1)*time.Millisecond))
	}
	batch[3] = Full(first.ID, replica, first.Time)
	if err := r.RecordBatch(ctx, batch); err != nil {
		t.Fatalf("RecordBatch with a record the store refuses: %v", err)
	}
	for i := range 5 {
		if err := r.Record(ctx, Full(fmt.Sprintf("01JQ0000000000000000REC2%02d", i), replica, now.Add(time.Second))); err != nil {
			t.Fatalf("Record after the refused one: %v", err)
		}
	}
	// Read first: a store that journals quarantines as it applies, which
	// a read of the same store waits for.
	reps := verifyIntact(t, b.Store, map[string]int64{replica: 1 + 6 + 5})
	var pb dto.Metric
	if err := m.Quarantined.Write(&pb); err != nil {
		t.Fatal(err)
	}
	if got := pb.GetCounter().GetValue(); got != 1 {
		t.Errorf("meshproof_evidence_quarantined_total = %v, want 1", got)
	}
	if len(reps) == 1 && (len(reps[0].Quarantined) != 1 || reps[0].Quarantined[0].Seq != 5) {
		t.Errorf("Verify lists quarantined %+v, want seq 5", reps[0].Quarantined)
	}
}
