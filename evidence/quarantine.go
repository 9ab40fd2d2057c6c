package evidence

import (
	"context"
	"errors"
	"time"
)

// ErrPermanent marks a store's refusal of the data itself: the same records
// would be refused however often they were written again. The stores wrap
// it around such errors, and only those:
//
//   - PostgreSQL: SQLSTATE class 22 (data exception: a value the column
//     refuses, such as a NUL byte in text), class 23 (integrity: a record id
//     already stored; not 23514, a row with no partition, which the store
//     mends by making the partition) and class 54 (program limit: a row or
//     index entry too large); a record that cannot be encoded or whose time
//     is outside what the store keeps.
//   - SQLite: SQLITE_CONSTRAINT (a record id already stored), SQLITE_MISMATCH
//     and SQLITE_TOOBIG.
//
// Everything else is transient and retried: a lost connection, a timeout, a
// serialization failure or deadlock, SQLITE_BUSY, a full disk (space can be
// freed), a missing table or privilege (class 42: a person fixes the schema or
// the grants, and the same records then go in), the server shutting down.
// Chain conflicts are neither: they wrap ErrChainConflict and have their own
// handling.
var ErrPermanent = errors.New("the store refuses the record")

// permanent is an error the store will give again for the same data.
type permanent struct{ err error }

func (p permanent) Error() string        { return p.err.Error() }
func (p permanent) Unwrap() error        { return p.err }
func (p permanent) Is(target error) bool { return target == ErrPermanent }

// Permanent wraps err as a refusal of the data (see ErrPermanent); nil stays
// nil.
func Permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	return permanent{err}
}

// IsPermanent reports whether err is the store refusing the data itself:
// writing the same records again would fail the same way.
func IsPermanent(err error) bool {
	return err != nil && errors.Is(err, ErrPermanent) && !errors.Is(err, ErrChainConflict)
}

// Quarantined is a record the store refused (see ErrPermanent), kept apart
// from the records with the reason, at its place in its replica's chain:
// nothing is erased, and Verify walks the records and the quarantined ones
// together as one unbroken chain.
type Quarantined struct {
	Replica string `json:"replica"`
	Seq     uint64 `json:"seq"`
	ID      string `json:"id"`
	// PrevHash and Hash are the record's chain links, as it was chained.
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
	// Reason is the store's error.
	Reason string    `json:"reason"`
	At     time.Time `json:"quarantined_at"`
	// Record is the record's JSON (MarshalJSON, chain included), empty when
	// it could not be encoded: Verify then checks its links only.
	Record []byte `json:"record,omitempty"`
}

// AppendIsolating appends batch to w. When w refuses it for its data
// (IsPermanent), it writes the batch by halves, recursively, to find the
// records refused, quarantines each of them at its place in the chain
// (Writer.Quarantine), and writes the rest: one refused record among n costs
// about 2·log2(n) more transactions, and later batches are never held up.
// Each call to w gets its own timeout. It returns how many records it
// quarantined, and the first other error (the caller retries the whole
// batch: what is already stored, or quarantined, is skipped, as Append and
// Quarantine are idempotent).
func AppendIsolating(ctx context.Context, w Writer, batch []*Record, timeout time.Duration) (int, error) {
	var n int
	err := isolate(ctx, w, batch, timeout, &n)
	return n, err
}

func isolate(ctx context.Context, w Writer, batch []*Record, timeout time.Duration, n *int) error {
	if len(batch) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := w.Append(cctx, batch)
	cancel()
	if !IsPermanent(err) {
		return err
	}
	if len(batch) == 1 {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if qerr := w.Quarantine(cctx, batch[0], err.Error()); qerr != nil {
			return qerr
		}
		*n++
		return nil
	}
	h := len(batch) / 2
	if err := isolate(ctx, w, batch[:h], timeout, n); err != nil {
		return err
	}
	return isolate(ctx, w, batch[h:], timeout, n)
}
