// Package sqlite is the embedded evidence store: one SQLite file in WAL
// mode (pure Go driver, no cgo), written through one connection while a
// small pool of read connections answers queries beside it. It migrates
// itself when opened.
//
// DSN: sqlite:PATH, e.g. sqlite:meshproof.db or
// sqlite:/var/lib/meshproof/evidence.db.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
	"github.com/meshproof/meshproof/evidence/storekit"
)

func init() {
	evidence.Register("sqlite", evidence.Driver{
		Open: func(ctx context.Context, dsn string, opts evidence.Options) (evidence.Store, error) {
			path, err := PathOf(dsn)
			if err != nil {
				return nil, err
			}
			s, err := Open(ctx, path, opts)
			if err != nil {
				return nil, err // not a nil *Store in a non-nil interface
			}
			return s, nil
		},
		Migrate: func(ctx context.Context, dsn string) (evidence.Migrated, error) {
			path, err := PathOf(dsn)
			if err != nil {
				return evidence.Migrated{}, err
			}
			s, err := Open(ctx, path, evidence.Options{})
			if err != nil {
				return evidence.Migrated{}, err
			}
			return evidence.Migrated{From: s.schemaFrom, To: SchemaVersion}, s.Close()
		},
	})
}

// PathOf returns the file a sqlite:PATH DSN names.
func PathOf(dsn string) (string, error) {
	path, ok := strings.CutPrefix(dsn, "sqlite:")
	if !ok {
		return "", fmt.Errorf("store %q: not a sqlite:PATH DSN", dsn)
	}
	if path == "" {
		return "", errors.New("store sqlite: no file named: want sqlite:PATH, e.g. sqlite:meshproof.db")
	}
	return path, nil
}

// readers is the size of the read pool: WAL lets each read beside the
// writer; more than a few only compete for the CPU.
const readers = 4

// pageSize is the page size of a new file. Records are 1 to 2 KB of JSON:
// 16 KiB pages hold seven or eight, and keep the B-trees a level shallower.
// TestIngest1M (day) gained up to 16 and nothing beyond
// (docs/performance.md has each size's figure). (A file keeps the size it was made with.)
const pageSize = "16384"

// maxCachedShapes bounds the readers' decoded shapes (a few KB each).
const maxCachedShapes = 4096

// Store is an evidence store in one SQLite file.
type Store struct {
	path string
	// w has one connection: SQLite takes one writer at a time, and a single
	// connection keeps its prepared statements and page cache warm.
	w *sql.DB
	// r holds the readers (query_only: a bug cannot write through them).
	r *sql.DB
	// schemaFrom is the schema version the file had when opened (0: a new
	// file), for meshproof migrate to say what it did.
	schemaFrom int

	wmu      sync.Mutex // serialises Append and retention on w
	rs       readStmts  // the readers' page queries, prepared
	st       statements
	keys     map[evidence.RollupKey]int64 // rollup group numbers (Minute zero); guarded by wmu
	edges    map[edgeKey]int64            // edge numbers; guarded by wmu
	shapeIDs map[[32]byte]int64           // shape numbers by the shape's SHA-256; guarded by wmu
	reps     map[string]int64             // replica numbers; guarded by wmu
	// shapes are the decoded shapes the readers join records with.
	shapes *compact.Shapes
	// logs are the edges of the replicas' logs as the last batch left
	// them; a batch takes its replica's out, and puts the new one back
	// (pendingEdge) once committed. Guarded by wmu.
	logs        map[string]*evidence.TreeEdge
	pendingLog  string
	pendingEdge *evidence.TreeEdge

	// The checkpointer copies the WAL back into the file from a connection
	// of its own (see checkpoints).
	ck     *sql.DB
	ckKick chan struct{}
	ckStop chan struct{}
	ckDone chan struct{}

	// The replicas this store journals for (OpenJournal), by name.
	journalsMu sync.Mutex
	journals   map[string]*journal
	// appended: a record was written by Append since the last Sync (Sync
	// then flushes the WAL too).
	appended atomic.Bool

	// The journaled records not yet applied, in journal order (journal.go).
	jd *storekit.Journaled
	// durable: opened for fsync durability (opts.Durable): the journals
	// are written with pwrite, not through a mapping (see journal.write).
	durable bool

	syncMu    sync.Mutex  // serialises Sync
	walSeen   os.FileInfo // the WAL file whose name Sync made durable
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating it if needed) the evidence file at path and brings
// its schema up to date. A file written by a newer meshproof is refused with
// an error wrapping evidence.ErrSchema. With opts.Existing a missing file is
// an error wrapping fs.ErrNotExist, and nothing is created: SQLite opens
// the file with mode=rw, which never creates it.
func Open(ctx context.Context, path string, opts evidence.Options) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("store sqlite:%s: want the path of a file (evidence must outlive the process), e.g. sqlite:meshproof.db", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	file := uri(abs) + "?"
	if opts.Existing {
		file += "mode=rw&"
	} else if err := CreatePrivate(abs); err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	// WAL with synchronous NORMAL: a commit is atomic, in the WAL and so in
	// the operating system's hands when it returns (a crash of the process
	// loses nothing), and on the disk at the next checkpoint or Sync. For
	// the fsync durability (opts.Durable) the writer calls Sync after its
	// commits rather than SQLite syncing inside each (FULL): one flush then
	// covers every commit made while the last one ran.
	const synchronous = "NORMAL"
	// The driver runs the _pragma list first, in order of name, then
	// _journal_mode and _synchronous: page_size counts in a new file only,
	// and only before WAL is set. temp_store(MEMORY) keeps any statement
	// journal off the disk. The writer checkpoints every 256 MiB of WAL
	// rather than 8, writing a page hot in many batches back once, keeps
	// 64 MiB of pages, and reads the file through a memory map rather than
	// a read call per page missed: the three together sped TestIngest1M up
	// by a fifth (docs/performance.md).
	common := "_pragma=busy_timeout(10000)&_pragma=page_size(" + pageSize + ")&_pragma=temp_store(MEMORY)" +
		"&_journal_mode=WAL&_synchronous=" + synchronous
	w, err := sql.Open("sqlite", file+common+"&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(32768)&_pragma=mmap_size(1073741824)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	r, err := sql.Open("sqlite", file+common+"&_pragma=cache_size(-16384)&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	ck, err := sql.Open("sqlite", file+common+"&_pragma=cache_size(-2048)")
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	ck.SetMaxOpenConns(1)
	s := &Store{path: abs, w: w, r: r, ck: ck, keys: map[evidence.RollupKey]int64{}, edges: map[edgeKey]int64{}, logs: map[string]*evidence.TreeEdge{},
		shapeIDs: map[[32]byte]int64{}, reps: map[string]int64{}, shapes: compact.NewShapes(maxCachedShapes),
		ckKick: make(chan struct{}, 1), ckStop: make(chan struct{}), ckDone: make(chan struct{}),
		jd: storekit.NewJournaled(), durable: opts.Durable}
	if err := s.open(ctx); err != nil {
		close(s.ckDone)
		s.Close()
		if _, serr := os.Stat(abs); opts.Existing && errors.Is(serr, fs.ErrNotExist) {
			return nil, fmt.Errorf("store sqlite:%s: %w: %s (a store that is only read is never created: check the path)", path, fs.ErrNotExist, abs)
		}
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	go s.checkpoints()
	s.jd.Start(s.applyPending)
	if err := s.recoverOrphans(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	return s, nil
}

// checkpoints runs a passive checkpoint after writes, at most every
// checkpointEvery, on its own connection: the copying of new WAL frames
// into the file (a tenth of the write path's CPU when the writer did it
// itself) runs on another CPU while the writer goes on. The writer's own
// automatic checkpoint stays as a backstop, should this one fall behind.
func (s *Store) checkpoints() {
	defer close(s.ckDone)
	for {
		select {
		case <-s.ckStop:
			return
		case <-s.ckKick:
		}
		// Errors (a read-only file, a busy lock) leave the work to the
		// next round or to the writer's backstop.
		s.ck.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		select {
		case <-s.ckStop:
			return
		case <-time.After(checkpointEvery):
		}
	}
}

// checkpointEvery spaces the checkpoints: each copies what the writer added
// since the last, and one write of a page serves several batches.
const checkpointEvery = 200 * time.Millisecond

// kickCheckpoint tells the checkpointer that there is something to copy.
func (s *Store) kickCheckpoint() {
	select {
	case s.ckKick <- struct{}{}:
	default:
	}
}

// Sync makes every record Append or Journal has returned for durable on
// stable storage (see evidence.Syncer): it flushes the journals written
// since the last Sync, and the WAL when Append wrote since.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.syncJournals(); err != nil {
		return err
	}
	if !s.appended.Swap(false) {
		return nil
	}
	return s.syncWAL()
}

// syncWAL makes every commit durable. Those not yet checkpointed are in
// the WAL, which it flushes; those checkpointed are in the file, flushed
// by the checkpoint before the WAL is written over. A WAL file new since
// the last flush has its directory flushed too, so that its name survives.
// When every connection closed, SQLite checkpointed and removed the WAL:
// the file is flushed instead.
func (s *Store) syncWAL() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	wal, err := os.Open(s.path + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		s.walSeen = nil
		return syncPath(s.path)
	}
	if err != nil {
		return fmt.Errorf("evidence sqlite: sync: %w", err)
	}
	defer wal.Close()
	if err := wal.Sync(); err != nil {
		return fmt.Errorf("evidence sqlite: sync: %w", err)
	}
	fi, err := wal.Stat()
	if err != nil {
		return fmt.Errorf("evidence sqlite: sync: %w", err)
	}
	if s.walSeen == nil || !os.SameFile(s.walSeen, fi) {
		if err := syncPath(filepath.Dir(s.path)); err != nil {
			return err
		}
		s.walSeen = fi
	}
	return nil
}

// syncPath flushes a file or directory.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("evidence sqlite: sync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("evidence sqlite: sync %s: %w", path, err)
	}
	return nil
}

var _ evidence.Syncer = (*Store)(nil)

func (s *Store) open(ctx context.Context) error {
	from, err := migrate(ctx, s.w)
	if err != nil {
		return err
	}
	s.schemaFrom = from
	return s.st.prepare(ctx, s.w)
}

// CreatePrivate makes a new file readable by its owner only (evidence
// names every client of the mesh), for SQLite to open; SQLite gives the
// -wal and -shm files the same mode. An existing file is left as it is. The
// error says what to do when the directory is missing.
func CreatePrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		return f.Close()
	case errors.Is(err, fs.ErrExist):
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist: create it first", filepath.Dir(path))
	default:
		return err
	}
}

// uri is path as an SQLite file: URI, so that no character of it is taken
// for a parameter.
func uri(abs string) string {
	return "file:" + (&url.URL{Path: abs}).EscapedPath()
}

// ReadersInUse is how many read connections are busy, held by a query or a
// read transaction: zero once every reader is done.
func (s *Store) ReadersInUse() int { return s.r.Stats().InUse }

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the file. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// What is journaled is applied now; what cannot be stays in the
		// journal, for the next writer of its replica.
		s.settle(context.Background())
		close(s.ckStop)
		<-s.ckDone
		s.jd.Stop()
		s.wmu.Lock()
		defer s.wmu.Unlock()
		s.st.close()
		s.rs.close()
		s.closeErr = errors.Join(s.ck.Close(), s.r.Close(), s.w.Close())
		s.journalsMu.Lock()
		applied := s.jd.Len() == 0
		for _, j := range s.journals {
			j.close(applied) // lets the lock go
		}
		s.journals = nil
		s.journalsMu.Unlock()
	})
	return s.closeErr
}

var _ evidence.Store = (*Store)(nil)
