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

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/meshproof/meshproof/evidence"
)

func init() {
	evidence.Register("sqlite", evidence.Driver{
		Open: func(ctx context.Context, dsn string, opts evidence.Options) (evidence.Store, error) {
			path, err := PathOf(dsn)
			if err != nil {
				return nil, err
			}
			return Open(ctx, path, opts)
		},
		Migrate: func(ctx context.Context, dsn string) error {
			path, err := PathOf(dsn)
			if err != nil {
				return err
			}
			s, err := Open(ctx, path, evidence.Options{})
			if err != nil {
				return err
			}
			return s.Close()
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

// pageSize is the page size of a new file: 8 KiB pages hold three records
// (JSON bodies of 1 to 2 KB) where 4 KiB ones hold one, half empty.
const pageSize = "8192"

// Store is an evidence store in one SQLite file.
type Store struct {
	path string
	// w has one connection: SQLite takes one writer at a time, and a single
	// connection keeps its prepared statements and page cache warm.
	w *sql.DB
	// r holds the readers (query_only: a bug cannot write through them).
	r *sql.DB

	wmu  sync.Mutex // serialises Append and retention on w
	st   statements
	keys map[evidence.RollupKey]int64 // rollup group numbers (Minute zero); guarded by wmu
}

// Open opens (creating it if needed) the evidence file at path and brings
// its schema up to date. A file written by a newer meshproof is refused with
// an error wrapping evidence.ErrSchema.
func Open(ctx context.Context, path string, opts evidence.Options) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("store sqlite:%s: want the path of a file (evidence must outlive the process), e.g. sqlite:meshproof.db", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	if err := CreatePrivate(abs); err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	synchronous := "NORMAL" // WAL: a commit is atomic, and durable at the next checkpoint
	if opts.Durable {
		synchronous = "FULL" // every commit reaches the disk before it returns
	}
	// The driver runs the _pragma list first, in order of name, then
	// _journal_mode and _synchronous: page_size counts in a new file only,
	// and only before WAL is set. temp_store(MEMORY) keeps any statement
	// journal off the disk. The writer checkpoints every 256 MiB of WAL
	// rather than 8, writing a page hot in many batches back once, keeps
	// 64 MiB of pages, and reads the file through a memory map rather than
	// a read call per page missed: 11.4k to 13.8k records/s on TestIngest1M,
	// the three together.
	common := "_pragma=busy_timeout(10000)&_pragma=page_size(" + pageSize + ")&_pragma=temp_store(MEMORY)" +
		"&_journal_mode=WAL&_synchronous=" + synchronous
	w, err := sql.Open("sqlite", uri(abs)+"?"+common+"&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(32768)&_pragma=mmap_size(1073741824)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	r, err := sql.Open("sqlite", uri(abs)+"?"+common+"&_pragma=cache_size(-16384)&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s := &Store{path: abs, w: w, r: r, keys: map[evidence.RollupKey]int64{}}
	if err := s.open(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("store sqlite:%s: %w", path, err)
	}
	return s, nil
}

func (s *Store) open(ctx context.Context) error {
	if err := migrate(ctx, s.w); err != nil {
		return err
	}
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

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the file. It is safe to call more than once.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.st.close()
	return errors.Join(s.r.Close(), s.w.Close())
}

var _ evidence.Store = (*Store)(nil)
