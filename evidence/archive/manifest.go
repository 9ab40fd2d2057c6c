package archive

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Format names the archive format in every manifest.
const Format = "meshproof-archive-v1"

// File names in a day's directory.
const (
	RecordsFile    = "records.parquet"
	ManifestFile   = "manifest.json"
	CheckpointFile = "checkpoint"
)

// maxManifestBytes bounds a manifest read back.
const maxManifestBytes = 16 << 20

// Manifest says what a day's directory holds and how to prove it.
type Manifest struct {
	Format  string `json:"format"`
	Replica string `json:"replica"`
	// Date is the UTC day (YYYY-MM-DD): the records from the first of the
	// replica's chain whose time is at or after its midnight to the one
	// before the first at or after the next midnight (a record written a
	// little out of time order stays in its place in the chain).
	Date     string    `json:"date"`
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Records  int64     `json:"records"` // rows in RecordsFile
	First    time.Time `json:"first_time"`
	Last     time.Time `json:"last_time"`
	// Quarantined are the records of the range the store refused (kept
	// apart, at their place in the chain): their leaf hashes complete the
	// range.
	Quarantined []Quarantined `json:"quarantined,omitempty"`
	// The log: leaves [LeafStart, LeafEnd) (leaf = seq - LogBase - 1) of
	// the replica's transparency log. StartFrontier are the hashes of the
	// complete subtrees of the log of LeafStart leaves, largest first (one
	// per bit of LeafStart): with the range's leaves they give the root of
	// the log of LeafEnd leaves, and Consistency proves that log a prefix
	// of the checkpoint's (RFC 6962, tlog.CheckTree). EndFrontier is the
	// same for LeafEnd (the next day's StartFrontier).
	LogBase        uint64   `json:"log_base"`
	LeafStart      int64    `json:"leaf_start"`
	LeafEnd        int64    `json:"leaf_end"`
	StartFrontier  []string `json:"start_frontier"`
	EndFrontier    []string `json:"end_frontier"`
	CheckpointSize int64    `json:"checkpoint_size"`
	Consistency    []string `json:"consistency"`
	// Files are the day's other files and their SHA-256.
	Files []File `json:"files"`
}

// File is one file of a day and its digest.
type File struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Quarantined is a refused record of the range.
type Quarantined struct {
	Seq    uint64 `json:"seq"`
	ID     string `json:"id"`
	Hash   string `json:"hash"`
	Reason string `json:"reason"`
	// Record is its JSON as the store kept it (empty when it could not
	// be encoded).
	Record []byte `json:"record,omitempty"`
}

// PathEscape makes a replica name one path element (url.PathEscape, and
// dots escaped so that no name is "." or "..").
func PathEscape(replica string) string {
	s := url.PathEscape(replica)
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, "%2E"...)
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

// DayDir is the directory of replica's day date in dir.
func DayDir(dir, replica, date string) string {
	return filepath.Join(dir, "replica="+PathEscape(replica), "date="+date)
}

// ReadManifest reads a day's manifest.
func ReadManifest(dayDir string) (*Manifest, error) {
	f, err := os.Open(filepath.Join(dayDir, ManifestFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxManifestBytes {
		return nil, fmt.Errorf("%s: over %d bytes", filepath.Join(dayDir, ManifestFile), maxManifestBytes)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dayDir, ManifestFile), err)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%s: format %q, want %q", filepath.Join(dayDir, ManifestFile), m.Format, Format)
	}
	return &m, nil
}

// frontier is the right edge of a log: the hashes of its complete
// subtrees, largest first, and its size.
type frontier struct {
	size   int64
	hashes []tlog.Hash
	levels []int
}

// newFrontier checks hashes as the frontier of a log of size leaves.
func newFrontier(size int64, hexes []string) (*frontier, error) {
	if size < 0 {
		return nil, fmt.Errorf("frontier of a log of %d leaves", size)
	}
	if len(hexes) != bits.OnesCount64(uint64(size)) {
		return nil, fmt.Errorf("frontier of a log of %d leaves: %d hashes, want %d", size, len(hexes), bits.OnesCount64(uint64(size)))
	}
	f := &frontier{size: size}
	i := 0
	for l := 62; l >= 0; l-- {
		if size>>l&1 == 1 {
			h, err := parseHash(hexes[i])
			if err != nil {
				return nil, err
			}
			f.hashes = append(f.hashes, h)
			f.levels = append(f.levels, l)
			i++
		}
	}
	return f, nil
}

// frontierIndexes are the stored-hash indexes (tlog) of the frontier of a
// log of size leaves, largest subtree first.
func frontierIndexes(size int64) []int64 {
	var out []int64
	for l := 62; l >= 0; l-- {
		if size>>l&1 == 1 {
			out = append(out, tlog.StoredHashIndex(l, size>>l-1))
		}
	}
	return out
}

// add appends a leaf hash.
func (f *frontier) add(h tlog.Hash) {
	f.size++
	l := 0
	for n := len(f.hashes); n > 0 && f.levels[n-1] == l; n = len(f.hashes) {
		h = tlog.NodeHash(f.hashes[n-1], h)
		f.hashes, f.levels = f.hashes[:n-1], f.levels[:n-1]
		l++
	}
	f.hashes = append(f.hashes, h)
	f.levels = append(f.levels, l)
}

// root is the log's root hash (RFC 6962).
func (f *frontier) root() tlog.Hash {
	if len(f.hashes) == 0 {
		return tlog.Hash{}
	}
	h := f.hashes[len(f.hashes)-1]
	for i := len(f.hashes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(f.hashes[i], h)
	}
	return h
}

func (f *frontier) clone() *frontier {
	return &frontier{size: f.size, hashes: append([]tlog.Hash(nil), f.hashes...), levels: append([]int(nil), f.levels...)}
}

func (f *frontier) hex() []string {
	out := make([]string, len(f.hashes))
	for i, h := range f.hashes {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, fmt.Errorf("hash %q is not 64 hex digits", s)
	}
	copy(h[:], b)
	return h, nil
}

func hexHashes(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

func parseHashes(ss []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ss))
	for i, s := range ss {
		h, err := parseHash(s)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

var errNoFrontier = errors.New("the log's hashes before the day are gone from the store and no archived day ends there")

func marshalManifest(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
