package sqlite_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// journalChild, set in a child process of TestJournalSurvivesACrash, is
// the store it journals into before it kills itself.
const journalChild = "MESHPROOF_TEST_JOURNAL_CHILD"

// journalDurable, set too, has the child open the store Durable (fsync
// durability), whose journal is written rather than mapped.
const journalDurable = "MESHPROOF_TEST_JOURNAL_DURABLE"

// crashAfterJournal runs the child on the store at path and waits for its
// kill -9.
func crashAfterJournal(t *testing.T, path string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), journalChild+"="+path), env...)
	out, err := cmd.Output()
	if !strings.Contains(string(out), "journaled 400") {
		t.Fatalf("the child: %v\n%s", err, out)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, not kill -9", cmd.ProcessState)
	}
}

func init() {
	path := os.Getenv(journalChild)
	if path == "" {
		return
	}
	// The child: journal 50 batches of 8 and die (kill -9) before any is
	// applied.
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, evidence.Options{Durable: os.Getenv(journalDurable) != ""})
	if err != nil {
		panic(err)
	}
	s.HoldApply()
	if err := s.OpenJournal(ctx, "r1", nil); err != nil {
		panic(err)
	}
	m := newMesh(7)
	t0 := time.Now().Add(-time.Hour)
	for i := range 50 {
		batch := m.batch("r1", t0.Add(time.Duration(i)*time.Second), time.Millisecond, 8)
		if err := s.Journal(ctx, batch, nil); err != nil {
			panic(err)
		}
	}
	os.Stdout.WriteString("journaled 400\n")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// TestJournalSurvivesACrash: records a writer journaled and never applied
// before kill -9 are there for the next Open of the store (the writer's
// lock went with it), in chain order, and the chain verifies; a frame cut
// short at the end of a journal (a crash during its write: never
// acknowledged) is ignored; the journal is empty afterwards.
func TestJournalSurvivesACrash(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			var env []string
			if durable {
				env = append(env, journalDurable+"=1")
			}
			journalSurvivesACrash(t, env...)
		})
	}
}

func journalSurvivesACrash(t *testing.T, env ...string) {
	path := filepath.Join(t.TempDir(), "e.db")
	crashAfterJournal(t, path, env...)
	journals, _ := filepath.Glob(path + "-journal-*-[ab]")
	var size int64
	for _, j := range journals {
		if fi, err := os.Stat(j); err == nil {
			size += fi.Size()
		}
	}
	if size == 0 {
		t.Fatalf("no journal left by the child (%v): the test proves nothing", journals)
	}
	// A frame cut short right after the last one, as a crash during its
	// write leaves it (frames: a 4-byte length, a 4-byte CRC, the payload;
	// zeros after the last).
	torn := 0
	for _, j := range journals {
		b, err := os.ReadFile(j)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for off+8 <= len(b) && binary.LittleEndian.Uint32(b[off:]) != 0 {
			off += 8 + int(binary.LittleEndian.Uint32(b[off:]))
		}
		if off == 0 {
			continue
		}
		f, err := os.OpenFile(j, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{200, 0, 0, 0, 1, 2, 3, 4, '{', '"'}, int64(off)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		torn++
	}
	if torn == 0 {
		t.Fatal("no frame found in the journal files")
	}

	s, err := sqlite.Open(context.Background(), path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Head.Seq != 400 || reps[0].Checked != 400 {
		t.Fatalf("after the crash: %+v", reps)
	}
	for _, j := range journals {
		if fi, err := os.Stat(j); err == nil && fi.Size() != 0 {
			t.Errorf("%s holds %d bytes after it was applied", j, fi.Size())
		}
	}
}

// TestJournalOneWriter: a replica has one journaling writer: a second
// OpenJournal of it, by this store or another, is refused, and another
// store opened meanwhile does not apply the live writer's journal (which
// that writer would apply again); the writer reads at once what it
// journaled, and once it closes, everything is applied.
func TestJournalOneWriter(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "e.db")
	w, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.OpenJournal(ctx, "r1", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.OpenJournal(ctx, "r1", nil); err == nil || !strings.Contains(err.Error(), "--replica") {
		t.Fatalf("a second OpenJournal by the same store: %v", err)
	}
	release := w.HoldApply() // nothing applied behind the test's back
	m := newMesh(3)
	batch := m.batch("r1", time.Now().Add(-time.Minute), time.Millisecond, 20)
	if err := w.Journal(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	other, err := sqlite.Open(ctx, path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.OpenJournal(ctx, "r1", nil); err == nil || !strings.Contains(err.Error(), "another process writes evidence as this replica") {
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
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.OpenJournal(ctx, "r1", nil); err != nil {
		t.Fatalf("OpenJournal once the writer closed: %v", err)
	}
	if h, err := other.Head(ctx, "r1"); err != nil || h.Seq != 20 {
		t.Fatalf("head after the writer closed: %+v, %v", h, err)
	}
}

// TestJournalGapKept: a journal that lost frames (a power loss in sync
// durability) is applied up to the gap; the records after it, which the
// chain cannot take, are kept in a file beside the store, and the store
// opens.
func TestJournalGapKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.db")
	crashAfterJournal(t, path)
	dropFrame(t, path, 20) // frames lost: a gap in the chain (seq 161-168)
	s, err := sqlite.Open(context.Background(), path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reps, err := evidence.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Head.Seq != 160 {
		t.Fatalf("after the gap: %+v", reps)
	}
	kept, _ := filepath.Glob(path + "-journal-*-unchained-*.jsonl")
	if len(kept) != 1 {
		t.Fatalf("files kept: %v", kept)
	}
	b, err := os.ReadFile(kept[0])
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(lines) != 232 { // seq 169-400
		t.Fatalf("%d records kept, want 232", len(lines))
	}
	first := new(evidence.Record)
	if err := jsonv2.Unmarshal(lines[0], first); err != nil || first.Chain.Seq != 169 {
		t.Fatalf("the first record kept: seq %d, %v", first.Chain.Seq, err)
	}
}

// TestJournalRefusesAGap: a batch that does not follow what its replica
// journaled or stored is refused at once with ErrChainConflict (the
// recorder chains it again after the head), nothing of it journaled, and
// the other replicas go on.
func TestJournalRefusesAGap(t *testing.T) {
	ctx := context.Background()
	s := journaling(t, filepath.Join(t.TempDir(), "e.db"), "r1", "r2")
	m1, m2 := newMesh(1), newMesh(2)
	t0 := time.Now().Add(-time.Minute)
	if err := s.Journal(ctx, m1.batch("r1", t0, time.Millisecond, 5), nil); err != nil {
		t.Fatal(err)
	}
	m2.batch("r2", t0, time.Millisecond, 2) // r2's batch starts at seq 3: a gap after its head
	if err := s.Journal(ctx, m2.batch("r2", t0, time.Millisecond, 3), nil); !errors.Is(err, evidence.ErrChainConflict) {
		t.Fatalf("a batch after a gap: %v, want a chain conflict", err)
	}
	if err := s.Journal(ctx, m1.batch("r1", t0.Add(time.Second), time.Millisecond, 3), nil); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Head(ctx, "r1"); h.Seq != 8 {
		t.Fatalf("r1's head %d, want 8", h.Seq)
	}
	if h, _ := s.Head(ctx, "r2"); h.Seq != 0 {
		t.Fatalf("r2's head %d, want 0: nothing of the refused batch", h.Seq)
	}
}

// TestJournalRetriedBatch: a batch journaled again (its commit said to
// have failed, and the writer tries it again) is taken once: journaled
// twice, its records would stop every later apply of the replica.
func TestJournalRetriedBatch(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "e.db")
	s := journaling(t, path, "r1")
	m := newMesh(4)
	t0 := time.Now().Add(-time.Hour)
	batch := m.batch("r1", t0, time.Millisecond, 20)
	for range 2 {
		if err := s.Journal(ctx, batch, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := s.Head(ctx, "r1"); err != nil || h.Seq != 20 {
		t.Fatalf("head after a batch journaled twice: %+v, %v; want seq 20", h, err)
	}
}

// TestJournalApplyFailing: while the store cannot apply (its files made
// immutable, as a disk gone read-only), the journal still takes batches,
// up to storekit.PendingMax records waiting, and a Journal whose batch is
// committed reports no error of the apply it runs inline (the writer would
// journal the batch a second time); past PendingMax it refuses, nothing
// committed. Once the store is writable again, everything is applied, in
// order.
func TestJournalApplyFailing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes the database files immutable (chattr +i)")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "e.db")
	s := journaling(t, path, "r1")
	m := newMesh(4)
	t0 := time.Now().Add(-time.Hour)
	if err := s.Journal(ctx, m.batch("r1", t0, time.Millisecond, 10), nil); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx, "r1"); err != nil || h.Seq != 10 {
		t.Fatalf("head: %+v, %v", h, err)
	}
	var locked []string
	unlock := func() {
		for _, p := range locked {
			if out, err := exec.Command("chattr", "-i", p).CombinedOutput(); err != nil {
				t.Errorf("chattr -i %s: %v %s", p, err, out)
			}
		}
		locked = nil
	}
	defer unlock()
	for _, p := range []string{path, path + "-wal"} {
		if out, err := exec.Command("chattr", "+i", p).CombinedOutput(); err != nil {
			t.Fatalf("chattr +i %s: %v %s", p, err, out)
		}
		locked = append(locked, p)
	}
	journaled := 10
	for ; journaled < 10+storekit.PendingMax; journaled += 500 {
		if err := s.Journal(ctx, m.batch("r1", t0.Add(time.Duration(journaled)*time.Millisecond), time.Microsecond, 500), nil); err != nil {
			t.Fatalf("Journal of seq %d with the store unwritable: %v", journaled+1, err)
		}
	}
	refused := m.batch("r1", t0.Add(time.Minute), time.Microsecond, 5)
	if err := s.Journal(ctx, refused, nil); err == nil || !strings.Contains(err.Error(), "wait to be applied") {
		t.Fatalf("Journal past PendingMax: %v, want a refusal", err)
	}
	unlock()
	if err := s.Journal(ctx, refused, nil); err != nil {
		t.Fatalf("the refused batch once the store is writable: %v", err)
	}
	reps, err := evidence.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Head.Seq != uint64(journaled+5) {
		t.Fatalf("after the store came back: %+v, want head %d", reps, journaled+5)
	}
}

// dropFrame takes the nth frame (from 0) out of the journal file that
// holds frames, as a power loss that kept the frames after it would.
func dropFrame(t *testing.T, path string, n int) {
	t.Helper()
	journals, _ := filepath.Glob(path + "-journal-*-[ab]")
	for _, j := range journals {
		b, err := os.ReadFile(j)
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		for off := 0; off+8 <= len(b) && binary.LittleEndian.Uint32(b[off:]) != 0; {
			end := off + 8 + int(binary.LittleEndian.Uint32(b[off:]))
			frames = append(frames, b[off:end])
			off = end
		}
		if len(frames) <= n {
			continue
		}
		out := bytes.Join(append(frames[:n:n], frames[n+1:]...), nil)
		if err := os.WriteFile(j, out, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no journal file of %s holds frame %d", path, n)
}

// journaling opens the store at path and the journals of replicas, closed
// when the test ends.
func journaling(t *testing.T, path string, replicas ...string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, r := range replicas {
		if err := s.OpenJournal(context.Background(), r, nil); err != nil {
			t.Fatal(err)
		}
	}
	return s
}
