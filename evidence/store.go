package evidence

import (
	"context"
	"errors"
	"time"
)

// Store is where evidence lives: an embedded SQLite file by default, or a
// PostgreSQL database shared by a fleet of replicas. Every backend passes
// the one conformance suite in evidence/evidencetest.
type Store interface {
	Writer
	Reader
	// Close releases the store's resources.
	Close() error
}

// Writer is the write side, used by the Recorder.
type Writer interface {
	// Append writes a batch of records in one transaction, together with
	// their rollups and the replica's new head. The records are already
	// chained (Chain set), belong to one replica, and follow in seq order
	// from the replica's head. Append is idempotent per record id: a batch
	// already stored entirely is a no-op (its commit was in doubt and it is
	// written again). A batch that does not follow the head fails with an
	// error wrapping ErrChainConflict: another process writes as this
	// replica.
	Append(ctx context.Context, batch []*Record) error
	// Head returns the last link of replica's chain as recorded with its
	// last write (kept apart from the records, so that removing or adding
	// records at the end of a chain shows): seq and hash, or 0 and "" when
	// the replica has written nothing. Retention does not change it.
	Head(ctx context.Context, replica string) (Link, error)
	// DeleteBefore removes records older than the start of the hour t
	// falls in (and rollup buckets that begin before rollupsBefore), after
	// sealing each replica's rollups of the hours before that start
	// (RollupSeal: their records are gone, the seal stands for them), in batches of at most batch records per transaction so
	// that writers are never stalled for long; it returns how many records
	// it removed. Chains are cut, never holed: per replica it removes every
	// seq before its first record that must stay, one whose time is at or
	// after the cut or whose stored time is before MinTime (wrapped by an older
	// meshproof, or edited: its age is unknown), or all of them when none
	// must. A record a little older than the cut may stay with the newer
	// ones when times are out of order; a record's time never takes the
	// records after it along. The transaction that removes records saves
	// the last removed link as the chain's checkpoint, so that Verify knows
	// where the remaining chain starts. A zero t or rollupsBefore removes
	// nothing of that kind.
	DeleteBefore(ctx context.Context, t, rollupsBefore time.Time, batch int) (int64, error)
	CheckpointStore
	// Quarantine keeps rec, which the store refused for reason (see
	// ErrPermanent), apart from the records, at its place in the chain: in
	// one transaction it stores storekit.QuarantineEntry(rec, ...) and moves
	// the replica's head to rec's link, so that the chain goes on after it. rec
	// must follow the head (an error wrapping ErrChainConflict otherwise); a
	// record already quarantined with the same hash is a no-op.
	Quarantine(ctx context.Context, rec *Record, reason string) error
}

// Syncer is a Writer whose commits reach the operating system but not
// stable storage by themselves (SQLite's WAL without synchronous=FULL):
// a commit survives a crash of the process, not a power loss. Sync makes
// everything Append has returned for before Sync was called durable on
// stable storage; a caller that promises more than a process crash (the
// fsync durability) calls it before it counts a record written. A Writer
// that is not a Syncer either flushes with every commit when opened
// Durable (PostgreSQL) or never does.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Journaler is a Writer with a cheaper commit for a writer whose Checks
// wait (sync and fsync durability): Journal commits a chained batch, in
// order after what the replica stored or journaled before, as it is, and
// the store moves journaled records into its records itself, in batches
// of many (and before anything of the same store object reads, so that a
// process reads what it wrote). A journaled record is committed: it
// survives the writer's crash. OpenJournal, before the first Journal,
// makes the caller the replica's only writer and stores what a writer
// that stopped left journaled; opening the store does the same for every
// replica whose writer is gone.
type Journaler interface {
	Writer
	// quarantined is called with the number of replica's records the
	// store quarantined as it applied them (see AppendIsolating), and why;
	// with 0 for what it has to say about records it could not chain (a
	// journal that lost frames) and kept beside itself.
	OpenJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error
	// lines, when not nil, is the batch's journal lines as the writer made
	// them when it linked the records (Link.LinkLine, the bytes
	// storekit.AppendLines makes); nil: the store makes them.
	Journal(ctx context.Context, batch []*Record, lines []byte) error
}

// Reader is the query side. It never returns records in an order that
// changes while it pages: newest first, by (time, id).
type Reader interface {
	// Get returns one record, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (*Record, error)
	// Query returns one page of the records matching f, newest first.
	Query(ctx context.Context, f Filter, page PageRequest) (RecordPage, error)
	// Scan calls fn for every record matching f, newest first, holding at
	// most one page in memory. It stops at fn's first error (returned) or
	// when ctx is done, releasing everything it held.
	Scan(ctx context.Context, f Filter, fn func(*Record) error) error
	// QueryJSON returns the page Query returns, each record as its JSON
	// form (RecordJSON) read from the stored bytes without decoding them,
	// and the next cursor.
	QueryJSON(ctx context.Context, f Filter, page PageRequest) (records [][]byte, next string, err error)
	// Count returns how many records match f, as Scan would give them,
	// counted in the store (no record is read out). f is validated as
	// Query validates it.
	Count(ctx context.Context, f Filter) (int64, error)
	// ScanJSON calls fn with the JSON form of every record Scan gives, in
	// its order, one line each, read from the stored bytes without
	// decoding them: the API's pages and export send them as they are,
	// sparing a decode and an encode per record (most of Scan's cost). fn
	// must not keep body after it returns.
	ScanJSON(ctx context.Context, f Filter, fn func(body []byte) error) error
	// Amendments returns the amendment records (see Amends) of the records
	// with ids, keyed by the amended record's id; records without one are
	// left out. An amendment has its record's time: since and until
	// (inclusive) bound the times of the records asked about. The API uses
	// it to show a page's effective outcomes.
	Amendments(ctx context.Context, ids []string, since, until time.Time) (map[string]*Record, error)
	// Aggregate answers counts grouped by edge and verdict from the
	// rollups, never from raw records. A minute counts when it overlaps
	// [Since, Until): counts are exact to the minute.
	Aggregate(ctx context.Context, q AggregateQuery) ([]Group, error)
	// AggregateSeries answers what Aggregate answers of each point of q
	// (see SeriesQuery.Boundaries), in one read of the rollups: the
	// coarsest buckets that fit in a step. Groups of every point come
	// together, in no particular order.
	AggregateSeries(ctx context.Context, q SeriesQuery) ([]PointGroup, error)
	// Replicas lists the replicas that have a chain in the store: a head,
	// or records (a chain whose head row was removed still shows).
	Replicas(ctx context.Context) ([]string, error)
	// Checkpoint is where replica's stored chain starts: seq 0 and no hash,
	// or the last link retention removed (see DeleteBefore).
	Checkpoint(ctx context.Context, replica string) (Link, error)
	// Walk calls fn for each record of replica's chain in seq order, with
	// the index columns stored beside it, holding at most one page in
	// memory, and stops at fn's first error (returned as is). Verify uses
	// it: it must give each record exactly as stored (decoded from the
	// stored record, chain fields included), never a cached or rebuilt copy.
	Walk(ctx context.Context, replica string, fn func(r *Record, stored Stored) error) error
	// Quarantined lists replica's quarantined records in seq order ("":
	// every replica's, by replica then seq).
	Quarantined(ctx context.Context, replica string) ([]Quarantined, error)
	// Stats summarises the store.
	Stats(ctx context.Context, since time.Time) (Stats, error)
	// The replica's transparency log and its signed checkpoints.
	LogReader
	CheckpointReader
	// The rollups as stored, and their seals.
	RollupAuditor
}

// Stored is a record as a store holds it: the index columns beside it and
// the stored bytes themselves (for a record of canonical encoding v2, its
// canonical bytes; for v1, its JSON).
type Stored struct {
	Columns
	Body []byte
	// Err says why Body did not decode (strictly, to its canonical form):
	// the record passed beside it then holds only its chain fields.
	Err error
}

// Link is a position in a replica's hash chain.
type Link struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Errors stores wrap.
var (
	// ErrNotFound: an unknown record id.
	ErrNotFound = errors.New("not found")
	// ErrChainConflict: a batch that does not continue its replica's chain.
	ErrChainConflict = errors.New("chain conflict: the batch does not follow the replica's head (is another process writing as this replica?)")
	// ErrSchema: the store's schema is missing, older or newer than this
	// meshproof's.
	ErrSchema = errors.New("schema version mismatch")
	// ErrWriterLocked: OpenJournal of a replica another writer holds.
	ErrWriterLocked = errors.New("another process writes evidence as this replica")
)

// PageRequest asks for one page of records (Reader.Query, QueryJSON).
type PageRequest struct {
	// Limit is the page size: DefaultLimit when 0 or less, at most MaxLimit.
	Limit int
	// Cursor continues after the previous page (its RecordPage.Next); ""
	// starts at the newest record.
	Cursor string
}

// Size is the page's size: Limit, DefaultLimit when 0 or less, at most
// MaxLimit.
func (p PageRequest) Size() int {
	if p.Limit <= 0 {
		return DefaultLimit
	}
	return min(p.Limit, MaxLimit)
}

// Page sizes.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// RecordPage is one page of records, newest first: Reader.Query's answer,
// and GET /v1/evidence's.
type RecordPage struct {
	Records []*Record `json:"records"`
	// Next is the cursor of the following page, "" on the last one.
	Next string `json:"next_cursor"`
}

// AggregateQuery asks for counts over a time range.
type AggregateQuery struct {
	Since, Until time.Time // Until zero: now
	// Destination narrows to one destination: a host (as in :authority)
	// or a destination principal.
	Destination string
}

// Group is the traffic of one edge with one verdict and outcome.
type Group struct {
	// Source is the source principal, or its address when it has none.
	Source               string    `json:"source"`
	DestinationHost      string    `json:"destination_host"`
	DestinationPrincipal string    `json:"destination_principal,omitempty"`
	Verdict              Verdict   `json:"verdict"`
	Allowed              bool      `json:"allowed"`
	Count                int64     `json:"count"`
	FirstSeen            time.Time `json:"first_seen"`
	LastSeen             time.Time `json:"last_seen"`
	// ExampleID is the id of one record of the group.
	ExampleID string `json:"example_id"`
}

// Stats summarises a store.
type Stats struct {
	Records int64     `json:"records"`
	Oldest  time.Time `json:"oldest,omitzero"`
	Newest  time.Time `json:"newest,omitzero"`
	// ByVerdict and ByDecision count the records since the time asked for
	// (from the rollups); ByDecision's keys are "allowed" and "denied".
	ByVerdict  map[Verdict]int64 `json:"by_verdict"`
	ByDecision map[string]int64  `json:"by_decision"`
	SizeBytes  int64             `json:"size_bytes"`
	// Quarantined counts the records the store refused, kept apart (see
	// Writer.Quarantine); they are not in Records.
	Quarantined int64           `json:"quarantined"`
	Replicas    map[string]Link `json:"replicas"`
}
