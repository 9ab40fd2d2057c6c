// Package evidencetest is the one conformance suite every evidence.Store
// backend runs: Run(t, factory) from the backend's own tests, like
// database/sql drivers and SpiceDB's datastore engines do.
package evidencetest

import (
	"context"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Backend is a fresh, empty store plus the raw access the tamper tests
// need to edit, delete and reorder rows behind the store's back.
type Backend struct {
	Store evidence.Store
	// Tamper changes stored rows directly, as an attacker with database
	// access would.
	Tamper Tamperer
	// Reopen closes the store and opens the same data again (a restart).
	Reopen func(t testing.TB) evidence.Store
}

// Tamperer edits stored evidence directly (SQL), bypassing the store.
type Tamperer interface {
	// SetVerdict rewrites the verdict of the record with id in the stored
	// record itself (the hashed content) and in its index column, leaving
	// its hash as it was.
	SetVerdict(ctx context.Context, id string, v evidence.Verdict) error
	// SetVerdictColumn rewrites only the index column holding the verdict
	// of the record with id, leaving the stored record as it was: queries
	// then mislead while the content still hashes right.
	SetVerdictColumn(ctx context.Context, id string, v evidence.Verdict) error
	// Delete removes the record with id.
	Delete(ctx context.Context, id string) error
	// SwapContent exchanges the stored content (everything but replica and
	// seq) of two records of one chain: the chain order no longer matches
	// the records. Each stored record keeps the seq of its row (its chain
	// seq is rewritten to it) and takes the other's prev_hash and hash, as
	// when rows are reordered.
	SwapContent(ctx context.Context, idA, idB string) error
	// AppendForged stores r (already chained by the caller) as if the
	// replica had written it, without updating the recorded head.
	AppendForged(ctx context.Context, r *evidence.Record) error
	// SetBody replaces the stored bytes of the record with id, and with
	// rehash its hash column too (the leaf hash of the new bytes), as an
	// attacker who knows the format would.
	SetBody(ctx context.Context, id string, body []byte, rehash bool) error
	// Body returns the stored bytes of the record with id.
	Body(ctx context.Context, id string) ([]byte, error)
	// AppendStoredAt stores r (already chained by the caller, after the
	// replica's head) with timeNS in its time column, and moves the
	// recorded head to it: what a meshproof before time bounds wrote for
	// a record stamped beyond 2262 (UnixNano wrapped).
	AppendStoredAt(ctx context.Context, r *evidence.Record, timeNS int64) error
	// FlipRollupVerdict turns one rollup group of verdict from into to
	// (one that does not clash with a group already of to), as an edit
	// making plaintext traffic look like mtls in every report would.
	FlipRollupVerdict(ctx context.Context, from, to evidence.Verdict) error
	// AddToRollup adds delta to the count of the first bucket of span
	// (minutes: 1, 60, 1440, 10080) that begins at or after at.
	AddToRollup(ctx context.Context, span int64, at time.Time, delta int64) error
	// DeleteSeal removes the seal of replica's hour (Unix hours).
	DeleteSeal(ctx context.Context, replica string, hour int64) error
	// CutSeals removes replica's seals and minute buckets from hour on and
	// moves its seal head back to the seal before, consistently: the last
	// hours sealed vanish without a trace in the store.
	CutSeals(ctx context.Context, replica string, hour int64) error
	// MoveRollupHorizon removes every bucket that begins before at, and
	// the seals of those hours, and moves the horizon there, as retention
	// would with a later cutoff.
	MoveRollupHorizon(ctx context.Context, at time.Time) error
}

// Factory makes a Backend for one subtest; it registers its own cleanup.
type Factory func(t testing.TB) Backend
