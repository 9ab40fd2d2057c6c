package sqlite

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// The journal is where a writer in sync or fsync durability commits a
// group of records before answering their Checks (evidence.Journaler): a
// file of its own per replica, beside the store's, to which a group is one
// write (a frame: its length, its CRC-32C, its records' JSON one a line).
// A transaction of SQLite writes every page it touches to the WAL: for a
// batch, ten-odd pages of 16 KiB (records, four indexes, the head, the
// log's tiles, rollups), whatever its size. With the sixteen Checks of a
// loaded Envoy sharing a commit, that was most of a Check's cost
// (docs/performance.md); the journal's commit is a few KiB.
//
// The store keeps the journaled records in memory too and moves them into
// the records itself (apply): storekit.ApplyEvery after a group, at once at
// storekit.ApplyMax of them, and before this Store reads or writes otherwise
// (settle), so that the process that journals reads what it journaled, in
// the order it was chained. Each replica's journal is two files: Journal
// writes to one while an apply drains the other, which it writes over
// from the start once what it applied is flushed (the WAL's fsync), so the
// files stay small; they are written ahead with zeros (see write).
//
// A journaled record survives a crash of the process (the write is in the
// operating system's hands), and a power loss once Sync flushed it; another
// process reads it once applied. After a crash, the next writer of the
// replica (OpenJournal) or the next Open that finds the replica's writer
// gone applies it: each replica's writer holds a lock file (flock, let go
// by the kernel with the process) while it writes. A frame cut short by a
// crash (not acknowledged: its Checks were not answered) is ignored, and so
// is everything after it in that file.

// journal is one replica's journal files and lock.
type journal struct {
	replica     string
	lock        *os.File
	quarantined func(n int, why error) // told what the store quarantined as it applied
	head        storekit.JournalHead   // the replica's last seq journaled or stored
	// mu guards the rest; Journal holds it while it writes a frame and
	// queues the frame's records, so that a rotation (apply) sees both or
	// neither.
	mu       sync.Mutex
	files    [2]*os.File
	cur      int       // the file Journal writes to
	draining int       // the file an apply drains, -1 when none
	dirty    [2]bool   // written since the last Sync
	size     [2]int64  // where the next frame of each file goes
	alloc    [2]int64  // how much of each file is written (zeros past size)
	mapped   bool      // written through maps (sync durability: see write)
	maps     [2][]byte // each file mapped, [0, alloc)
	synced   bool      // the directory holding the files was flushed
}

// close closes the files and lets the lock go; with everything applied
// (and so flushed: applyPending), it empties the files first, so that the
// next Open finds no journal to read.
func (j *journal) close(applied bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, f := range j.files {
		j.unmap(i)
		if f != nil {
			if applied {
				f.Truncate(0)
			}
			f.Close()
		}
	}
	j.lock.Close()
}

// journalPaths are the names of a replica's lock and journal files, by a
// hash of its name (any string is a replica's name).
func (s *Store) journalPaths(replica string) (lock string, files [2]string) {
	base := s.journalBase(replica)
	return base + ".lock", [2]string{base + "-a", base + "-b"}
}

// journalBase is what a replica's journal files are named after.
func (s *Store) journalBase(replica string) string {
	sum := sha256.Sum256([]byte(replica))
	return s.path + "-journal-" + hex.EncodeToString(sum[:8])
}

// lockReplica takes replica's writer lock (flock: the kernel lets it go
// when its holder dies).
func (s *Store) lockReplica(replica string) (*os.File, error) {
	path, _ := s.journalPaths(replica)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: the writer lock of replica %s: %w", replica, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("evidence sqlite: replica %s (%s): %w: give every instance its own --replica", replica, path, evidence.ErrWriterLocked)
		}
		return nil, fmt.Errorf("evidence sqlite: the writer lock of replica %s: %w", replica, err)
	}
	return f, nil
}

// OpenJournal takes replica's writer lock, which it holds until Close, and
// applies what replica's journal holds past its head: the records a writer
// journaled and had not applied when it stopped. It fails when another
// writer holds the lock (two processes writing as one replica).
func (s *Store) OpenJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error {
	s.journalsMu.Lock()
	defer s.journalsMu.Unlock()
	if s.journals[replica] != nil {
		return fmt.Errorf("evidence sqlite: replica %s: %w: give every instance its own --replica", replica, evidence.ErrWriterLocked)
	}
	lock, err := s.lockReplica(replica)
	if err != nil {
		return err
	}
	if quarantined == nil {
		quarantined = func(int, error) {}
	}
	j := &journal{replica: replica, lock: lock, draining: -1, quarantined: quarantined, mapped: !s.durable}
	if err := s.recoverJournal(ctx, replica, quarantined); err != nil {
		lock.Close()
		return err
	}
	head, err := s.storedHead(ctx, replica)
	if err != nil {
		lock.Close()
		return err
	}
	j.head.Advance(head.Seq)
	_, paths := s.journalPaths(replica)
	for i, p := range paths {
		if j.files[i], err = os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			j.close(false)
			return fmt.Errorf("evidence sqlite: the journal of replica %s: %w", replica, err)
		}
		if err := j.grow(i, journalChunk); err != nil {
			j.close(false)
			return fmt.Errorf("evidence sqlite: the journal of replica %s: %w", replica, err)
		}
	}
	if s.journals == nil {
		s.journals = map[string]*journal{}
	}
	s.journals[replica] = j
	return nil
}

// Journal commits batch, chained and in order after what the replica
// journaled or stored before, to its journal (see evidence.Journaler and
// OpenJournal, which comes first).
func (s *Store) Journal(ctx context.Context, batch []*evidence.Record, lines []byte) error {
	if len(batch) == 0 {
		return nil
	}
	if err := checkBatch(batch); err != nil {
		return err
	}
	replica := batch[0].Replica
	j := s.journal(replica)
	if j == nil {
		return fmt.Errorf("evidence sqlite: journal of replica %s: not open (OpenJournal first)", replica)
	}
	if err := s.jd.Admit(ctx, s.applyPending); err != nil {
		return fmt.Errorf("evidence sqlite: journal of replica %s: %w", replica, err)
	}
	first, last := batch[0].Chain.Seq, batch[len(batch)-1].Chain.Seq
	if dup, err := j.head.Check(ctx, replica, first, last, func(ctx context.Context) (evidence.Link, error) {
		s.settle(ctx)
		return s.storedHead(ctx, replica)
	}, func() bool { return s.jd.Waits(replica) }); dup || err != nil {
		return err // journaled before (the writer tried the batch again), or a conflict
	}
	frame, err := storekit.Lines(make([]byte, frameHeader, frameHeader+max(len(lines), 2048*len(batch))), batch, lines)
	if err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(frame)-frameHeader))
	binary.LittleEndian.PutUint32(frame[4:8], crc32.Checksum(frame[frameHeader:], castagnoli))
	j.mu.Lock()
	err = j.write(frame)
	var waiting int64
	if err == nil {
		j.dirty[j.cur] = true
		j.head.Advance(last)
		waiting = s.jd.Add(batch)
	}
	j.mu.Unlock()
	if err != nil {
		return fmt.Errorf("evidence sqlite: journal of replica %s: %w", replica, err)
	}
	s.jd.Committed(ctx, waiting, s.applyPending)
	return nil
}

// journal is replica's open journal, nil when none is.
func (s *Store) journal(replica string) *journal {
	s.journalsMu.Lock()
	defer s.journalsMu.Unlock()
	return s.journals[replica]
}

// noteStored says that Append stored replica's records up to seq, so that
// a journal of the replica chains after them.
func (s *Store) noteStored(replica string, seq uint64) {
	if j := s.journal(replica); j != nil {
		j.head.Advance(seq)
	}
}

// write puts frame after the current file's last one. The file is written
// ahead with zeros (grow), so that a frame changes no file size and its
// flush writes the data alone: 77 µs against 126 for an append, for a few
// KiB on this repository's machine.
//
// In sync durability (nothing flushed) the frame is copied into the file's
// shared mapping, which is the operating system's page cache: it outlives
// the process as a write would, without a system call (a pwrite of a
// group's few KiB was a tenth of a sync Check's CPU: docs/performance.md).
// In fsync durability it is written (pwrite): a flush of pages stored
// through a mapping took four times as long and twice the CPU here (the
// file's times change with each store, and ext4 commits its journal for
// them), against one page written.
func (j *journal) write(frame []byte) error {
	i := j.cur
	if j.size[i]+int64(len(frame)) > j.alloc[i] {
		if err := j.grow(i, max(journalChunk, int64(len(frame)))); err != nil {
			return err
		}
	}
	if j.maps[i] != nil {
		copy(j.maps[i][j.size[i]:], frame)
	} else if _, err := j.files[i].WriteAt(frame, j.size[i]); err != nil {
		return err
	}
	j.size[i] += int64(len(frame))
	return nil
}

// grow writes n more bytes of zeros at the end of file i, and maps the
// file whole unless it is flushed (see write). The zeros are written, not
// a hole left, so that the file's blocks exist: a store into the mapping
// never faults for want of disk.
func (j *journal) grow(i int, n int64) error {
	zeros := make([]byte, n)
	if _, err := j.files[i].WriteAt(zeros, j.alloc[i]); err != nil {
		return err
	}
	if j.mapped {
		m, err := syscall.Mmap(int(j.files[i].Fd()), 0, int(j.alloc[i]+n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mapping the journal: %w", err)
		}
		j.unmap(i)
		j.maps[i] = m
	}
	j.alloc[i] += n
	j.dirty[i] = true // its size: the next Sync flushes it
	return nil
}

// unmap lets file i's mapping go.
func (j *journal) unmap(i int) {
	if j.maps[i] != nil {
		syscall.Munmap(j.maps[i])
		j.maps[i] = nil
	}
}

// journalChunk is how much a journal file is written ahead.
const journalChunk = 4 << 20

// A frame: its payload's length and CRC-32C (Castagnoli), little-endian,
// then the payload.
const frameHeader = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openJournals are the journals this store writes (OpenJournal).
func (s *Store) openJournals() []*journal {
	s.journalsMu.Lock()
	defer s.journalsMu.Unlock()
	return slices.Collect(maps.Values(s.journals))
}

// syncJournals flushes the journals written since the last call (Sync),
// and each one's directory the first time.
func (s *Store) syncJournals() error {
	for _, j := range s.openJournals() {
		j.mu.Lock()
		dirty, files, synced := j.dirty, j.files, j.synced
		j.dirty = [2]bool{}
		j.mu.Unlock()
		for i, f := range files {
			if !dirty[i] {
				continue
			}
			if err := f.Sync(); err != nil {
				j.mu.Lock()
				j.dirty[i] = true
				j.mu.Unlock()
				return fmt.Errorf("evidence sqlite: sync of the journal of replica %s: %w", j.replica, err)
			}
		}
		if !synced {
			if err := syncPath(filepath.Dir(s.path)); err != nil {
				return err
			}
			j.mu.Lock()
			j.synced = true
			j.mu.Unlock()
		}
	}
	return nil
}

// settle applies what is journaled before this Store reads or writes
// otherwise. A failure leaves the records journaled (the applier tries
// again), and the read sees what is applied.
func (s *Store) settle(ctx context.Context) {
	if s.jd.Len() > 0 {
		_ = s.applyPending(ctx)
	}
}

// applyPending moves the journaled records into the records, replica by
// replica in journal order, quarantining what the store refuses; then,
// once the WAL is flushed, it writes the journal files it drained over
// from the start.
func (s *Store) applyPending(ctx context.Context) error {
	s.jd.ApplyMu.Lock()
	defer s.jd.ApplyMu.Unlock()
	js := s.openJournals()
	// Rotate: what the files being drained hold waits, and ApplyTaken
	// takes it (with what a Journal adds meanwhile, in the other file:
	// applied too, it is at or before the head there).
	for _, j := range js {
		j.mu.Lock()
		if j.draining < 0 {
			j.draining, j.cur = j.cur, 1-j.cur
		}
		j.mu.Unlock()
	}
	quarantined := map[string]func(int, error){} // Journal takes only replicas with an open journal
	for _, j := range js {
		quarantined[j.replica] = j.quarantined
	}
	failed, replicas, firstErr := s.jd.ApplyTaken(func(replica string, run []*evidence.Record) error {
		return s.applyRun(ctx, run, quarantined[replica])
	})
	if len(failed) < replicas {
		if err := s.syncWAL(); err != nil {
			return err
		}
	}
	for _, j := range js {
		j.mu.Lock()
		if j.draining >= 0 && !failed[j.replica] {
			// Written over from the start from now on: what it holds is
			// applied, and what the next frames leave of it is at or
			// before the head, which a recovery skips.
			j.size[j.draining] = 0
			j.draining = -1
		}
		j.mu.Unlock()
	}
	return firstErr
}

// applyRun appends one replica's journaled records, those not stored yet,
// quarantining what the store refuses and saying so to quarantined.
func (s *Store) applyRun(ctx context.Context, recs []*evidence.Record, quarantined func(n int, why error)) error {
	head, err := s.storedHead(ctx, recs[0].Replica)
	if err != nil {
		return err
	}
	return storekit.ApplyRun(ctx, direct{s}, head, recs, quarantined, time.Minute)
}

// storedHead is replica's head as stored; not Head, which settles.
func (s *Store) storedHead(ctx context.Context, replica string) (evidence.Link, error) {
	head, err := link(s.r.QueryRowContext(ctx, `SELECT seq, hash FROM chain_heads WHERE replica = ?`, replica))
	if err != nil {
		return head, fmt.Errorf("evidence sqlite: head of %s: %w", replica, err)
	}
	return head, nil
}

// direct is the store without settle, for applyPending's own writes.
type direct struct{ *Store }

func (d direct) Append(ctx context.Context, batch []*evidence.Record) error {
	return d.appendDirect(ctx, batch)
}

func (d direct) Quarantine(ctx context.Context, rec *evidence.Record, reason string) error {
	return d.quarantineDirect(ctx, rec, reason)
}

// recoverOrphans applies the journal of every replica whose writer is gone
// (its lock is free), so that a reader opening the store after a crash
// finds every record that was committed.
func (s *Store) recoverOrphans(ctx context.Context) error {
	files, err := filepath.Glob(s.path + "-journal-*-[ab]")
	if err != nil {
		return err
	}
	replicas := map[string]bool{}
	for _, f := range files {
		recs, err := readJournal(f, 1) // whose it is: its first record says
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			replicas[recs[0].Replica] = true
		}
	}
	for _, r := range slices.Sorted(maps.Keys(replicas)) {
		lock, err := s.lockReplica(r)
		if errors.Is(err, evidence.ErrWriterLocked) {
			continue // its writer is alive, and applies it
		}
		if err != nil {
			return err
		}
		err = s.recoverJournal(ctx, r, func(int, error) {})
		lock.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// recoverJournal applies replica's journaled records past its head
// (quarantining those the store refuses) and empties its journal files
// once the WAL is flushed. The caller holds the replica's lock.
func (s *Store) recoverJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error {
	_, paths := s.journalPaths(replica)
	var recs []*evidence.Record
	for _, p := range paths {
		rs, err := readJournal(p, 0)
		if err != nil {
			return err
		}
		recs = append(recs, rs...)
	}
	if len(recs) == 0 {
		return emptyJournal(replica, paths) // a frame cut short, alone
	}
	// Not Head, which settles: the caller may hold journalsMu.
	head, err := s.storedHead(ctx, replica)
	if err != nil {
		return err
	}
	// What follows the head without a gap. A gap means the journal lost
	// frames: a power loss in sync durability, which flushes neither the
	// journal nor, before an apply, the WAL. What is after it cannot be
	// chained there; it is kept in a file of its own, not dropped.
	keep := func(missing uint64, after []*evidence.Record) (error, error) {
		return s.keepUnchained(replica, missing, after)
	}
	apply := func(ctx context.Context, run []*evidence.Record) error { return s.applyRun(ctx, run, quarantined) }
	if err := storekit.Recover(ctx, replica, head, recs, quarantined, keep, apply); err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	if err := s.syncWAL(); err != nil {
		return err
	}
	return emptyJournal(replica, paths)
}

// keepUnchained writes the journaled records that follow a gap in the
// chain (seq missing) to a JSON-lines file beside the store, so that an
// auditor has them, and returns what to say about it; they were never in
// the chain the store holds, and are not quarantined.
func (s *Store) keepUnchained(replica string, missing uint64, recs []*evidence.Record) (why, err error) {
	path := fmt.Sprintf("%s-unchained-%d.jsonl", s.journalBase(replica), time.Now().UnixNano())
	var b []byte
	for _, r := range recs {
		j, err := evidence.RecordJSON(r)
		if err != nil {
			return nil, fmt.Errorf("keeping the journal of replica %s: %w", replica, err)
		}
		b = append(append(b, j...), '\n')
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("keeping the journal of replica %s: %w", replica, err)
	}
	return storekit.Unchained(replica, recs, missing, path), nil
}

// emptyJournal empties a replica's journal files: a writer appends after
// nothing that a reader would stop at.
func emptyJournal(replica string, paths [2]string) error {
	for _, p := range paths {
		if err := os.Truncate(p, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("evidence sqlite: emptying the journal of replica %s: %w", replica, err)
		}
	}
	return nil
}

// readJournal reads a journal file's records, frame by frame, up to its
// first frame cut short or damaged (a crash's: never acknowledged), or
// once it has limit of them (0: no limit); a file that does not exist
// holds none.
func readJournal(path string, limit int) ([]*evidence.Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: reading the journal %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: reading the journal %s: %w", path, err)
	}
	left := fi.Size() // bounds a damaged length
	br := bufio.NewReader(f)
	var out []*evidence.Record
	var header [frameHeader]byte
	for limit <= 0 || len(out) < limit {
		if _, err := io.ReadFull(br, header[:]); err != nil {
			break // the end, or a frame cut short
		}
		n := int64(binary.LittleEndian.Uint32(header[0:4]))
		left -= frameHeader
		if n == 0 || n > left {
			break // the zeros written ahead, or a frame cut short
		}
		left -= n
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			break
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(header[4:8]) {
			break
		}
		recs, err := storekit.ReadLines(payload)
		if err != nil {
			return nil, fmt.Errorf("evidence sqlite: the journal %s: %w", path, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

var _ evidence.Journaler = (*Store)(nil)
