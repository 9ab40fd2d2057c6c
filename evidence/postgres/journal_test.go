package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// journalChild, set in a child process of crashAfterJournal, is the DSN
// of the store it journals into before it kills itself.
const journalChild = "MESHPROOF_TEST_PG_JOURNAL_CHILD"

func init() {
	dsn := os.Getenv(journalChild)
	if dsn == "" {
		return
	}
	// The child: journal 50 batches of 8 and die (kill -9) before any is
	// applied.
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		panic(err)
	}
	s.HoldApply()
	if err := s.OpenJournal(ctx, "r1", nil); err != nil {
		panic(err)
	}
	g := newBenchGen(7, time.Now().Add(-time.Hour), time.Millisecond)
	for range 50 {
		if err := s.Journal(ctx, g.batch("r1", &g.head, 8), nil); err != nil {
			panic(err)
		}
	}
	os.Stdout.WriteString("journaled 400\n")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// crashAfterJournal runs the child on the store dsn names, waits for its
// kill -9 and then for the server to see its connections end (the
// replica's lock is let go with the writer's).
func crashAfterJournal(t *testing.T, dsn string) {
	t.Helper()
	cmd := osexec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), journalChild+"="+dsn)
	out, err := cmd.Output()
	if !strings.Contains(string(out), "journaled 400") {
		t.Fatalf("the child: %v\n%s", err, out)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, not kill -9", cmd.ProcessState)
	}
	awaitLockFree(t, dsn, "r1")
}

// awaitLockFree waits until no session holds replica's writer lock.
func awaitLockFree(t *testing.T, dsn, replica string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	key := postgres.LockKey(replica)
	for deadline := time.Now().Add(time.Minute); ; {
		var held bool
		if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND (classid::bigint << 32) | objid::bigint = $1)`, key).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("replica's lock still held a minute after its writer died")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// journalRows is how many rows the journal table holds, and of how many
// records.
func journalRows(t *testing.T, s *postgres.Store, table string) (rows, records int) {
	t.Helper()
	rs, err := s.Pool().Query(context.Background(), "SELECT records FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	if _, err := pgx.ForEachRow(rs, []any{&b}, func() error {
		rows++
		recs, err := storekit.ReadLines(b)
		records += len(recs)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return rows, records
}

// TestJournalSurvivesACrash: records a writer journaled and never applied
// before kill -9 are there for the next Open of the store (the writer's
// lock went with its connections), in chain order, and the chain
// verifies; the journal is empty afterwards.
func TestJournalSurvivesACrash(t *testing.T) {
	dsn := postgrestest.DSN(t)
	open(t, dsn).Close() // migrated
	crashAfterJournal(t, dsn)
	s := open(t, dsn)
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Head.Seq != 400 || reps[0].Checked != 400 {
		t.Fatalf("after the crash: %+v", reps)
	}
	if rows, _ := journalRows(t, s, "journal"); rows != 0 {
		t.Errorf("the journal holds %d rows after it was applied", rows)
	}
}

// TestJournalGapKept: a journal that lost rows is applied up to the gap;
// the rows after it, which the chain cannot take, are moved to
// journal_unchained, and the store opens.
func TestJournalGapKept(t *testing.T) {
	dsn := postgrestest.DSN(t)
	open(t, dsn).Close()
	crashAfterJournal(t, dsn)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := conn.Exec(context.Background(), `DELETE FROM journal WHERE first_seq = 161`) // seq 161-168
	conn.Close(context.Background())
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("deleting a row of the journal: %v, %v", tag, err)
	}
	s := open(t, dsn)
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Head.Seq != 160 {
		t.Fatalf("after the gap: %+v", reps)
	}
	if rows, records := journalRows(t, s, "journal_unchained"); rows != 29 || records != 232 { // seq 169-400
		t.Fatalf("journal_unchained holds %d rows of %d records, want 29 of 232", rows, records)
	}
	if rows, _ := journalRows(t, s, "journal"); rows != 0 {
		t.Errorf("the journal holds %d rows after the recovery", rows)
	}
}

// TestJournalOneWriter: a replica has one journaling writer: a second
// OpenJournal of it, by this store or another, is refused, and another
// store opened meanwhile does not apply the live writer's journal; the
// writer reads at once what it journaled, and once it closes, everything
// is applied and the replica's lock is free.
func TestJournalOneWriter(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	w := open(t, dsn)
	if err := w.OpenJournal(ctx, "r1", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.OpenJournal(ctx, "r1", nil); err == nil || !strings.Contains(err.Error(), "--replica") {
		t.Fatalf("a second OpenJournal by the same store: %v", err)
	}
	release := w.HoldApply() // nothing applied behind the test's back
	g := newBenchGen(3, time.Now().Add(-time.Minute), time.Millisecond)
	batch := g.batch("r1", &g.head, 20)
	if err := w.Journal(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	// The same batch again (a commit in doubt, tried again) is taken once.
	if err := w.Journal(ctx, batch, nil); err != nil {
		t.Fatalf("a batch journaled twice: %v", err)
	}
	other := open(t, dsn)
	short, cancel := context.WithTimeout(ctx, time.Second)
	err := other.OpenJournal(short, "r1", nil)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "another process writes evidence as this replica") {
		t.Fatalf("a second writer of replica r1: %v", err)
	}
	if h, err := other.Head(ctx, "r1"); err != nil || h.Seq != 0 {
		t.Fatalf("another store applied the live writer's journal: head %+v, %v", h, err)
	}
	got, err := w.Get(ctx, batch[7].ID)
	if err != nil {
		t.Fatalf("the writer's Get of a journaled record: %v", err)
	}
	want, _ := evidence.RecordJSON(batch[7])
	if gotJSON, _ := evidence.RecordJSON(got); !bytes.Equal(gotJSON, want) {
		t.Fatalf("journaled record read back:\n%s\nwant\n%s", gotJSON, want)
	}
	release()
	// The writer's own read applies first.
	if h, err := w.Head(ctx, "r1"); err != nil || h.Seq != 20 {
		t.Fatalf("the writer's head after its read: %+v, %v", h, err)
	}
	if rows, _ := journalRows(t, w, "journal"); rows != 0 {
		t.Errorf("the journal holds %d rows after the apply", rows)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.OpenJournal(ctx, "r1", nil); err != nil {
		t.Fatalf("OpenJournal once the writer closed: %v", err)
	}
	if err := other.Journal(ctx, g.batch("r1", &g.head, 5), nil); err != nil {
		t.Fatalf("the next writer journals after the head: %v", err)
	}
	if h, err := other.Head(ctx, "r1"); err != nil || h.Seq != 25 {
		t.Fatalf("head after the second writer: %+v, %v", h, err)
	}
}

// TestJournalReconnects: a writer whose connection the server ended (a
// restart, an administrator) connects again, takes its lock again and
// journals on; a batch that does not follow the journal's head is a chain
// conflict, as Append's would be.
func TestJournalReconnects(t *testing.T) {
	ctx := context.Background()
	dsn := postgrestest.DSN(t)
	w := open(t, dsn)
	if err := w.OpenJournal(ctx, "r1", nil); err != nil {
		t.Fatal(err)
	}
	g := newBenchGen(5, time.Now().Add(-time.Minute), time.Millisecond)
	if err := w.Journal(ctx, g.batch("r1", &g.head, 10), nil); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ended bool
	if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND (classid::bigint << 32) | objid::bigint = $1`, postgres.LockKey("r1")).Scan(&ended); err != nil || !ended {
		t.Fatalf("ending the writer's connection: %v, %v", ended, err)
	}
	awaitLockFree(t, dsn, "r1")
	next := g.batch("r1", &g.head, 10)
	// The first try may find the connection ended; the recorder tries a
	// failed batch again, and so does this test, once.
	if err := w.Journal(ctx, next, nil); err != nil {
		if err := w.Journal(ctx, next, nil); err != nil {
			t.Fatalf("journaling after the connection ended: %v", err)
		}
	}
	skip := newBenchGen(6, time.Now().Add(-time.Minute), time.Millisecond)
	skip.head = evidence.Link{Seq: 40}
	if err := w.Journal(ctx, skip.batch("r1", &skip.head, 3), nil); !errors.Is(err, evidence.ErrChainConflict) {
		t.Fatalf("a batch after a gap: %v, want a chain conflict", err)
	}
	reps, err := evidence.Verify(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Head.Seq != 20 {
		t.Fatalf("after the reconnection: %+v", reps)
	}
}
