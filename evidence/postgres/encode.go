package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// recordColumns are the columns COPY writes, in the order of row.values.
var recordColumns = []string{"time_ns", "chain", "shape", "id", "request_id", "path", "rest"}

// encodeChunk is how many rows the encoder makes at a time.
const encodeChunk = 256

// encoding is a batch's rows as COPY sends them. baseRows makes what the
// checks before COPY need (time, chain, id, request id, path); a goroutine
// then splits the records into shape and rest (compact.SplitStored, most
// of the work) a chunk at a time, on a second CPU, while the writer locks
// the head and checks the batch and while the server takes the rows COPY
// sent before.
//
// A shape the writer's cache does not number stops COPY at its row:
// copyRows interns the new shapes in the writer's transaction (so a
// connection is never waited for while one is held) and copies on.
type encoding struct {
	recs   []*evidence.Record
	rows   []row
	shapes [][]byte   // the shapes of rows whose shape is not numbered yet
	sums   [][32]byte // their SHA-256
	errs   []error    // a record that does not encode (permanent)
	ready  []chan struct{}
	done   chan struct{}
	stop   atomic.Bool
	// fresh are the shapes this transaction numbered: the cache takes
	// them once it commits.
	fresh map[[32]byte]int32
}

// baseRows makes the rows of a batch but for their shape and rest, and
// refuses what no row can hold (permanent errors).
func baseRows(batch []*evidence.Record, replica int32) ([]row, error) {
	rows := make([]row, len(batch))
	for i, r := range batch {
		if err := textColumn("request id", r.RequestID); err != nil {
			return nil, evidence.Permanent(fmt.Errorf("encoding record %s: %w", r.ID, err))
		}
		if r.Chain.Seq < 1 || r.Chain.Seq > maxSeq {
			return nil, evidence.Permanent(fmt.Errorf("encoding record %s: seq %d: a chain holds seqs 1 to %d", r.ID, r.Chain.Seq, maxSeq))
		}
		rows[i] = row{timeNS: evidence.Nanos(r.Time), seq: int64(r.Chain.Seq), replica: replica, id: idKey(r.ID),
			requestID: requestKey(r.RequestID), path: r.Request.Path}
	}
	return rows, nil
}

// encodeAhead starts splitting rows (baseRows of batch). The caller ends
// it with close.
func (s *Store) encodeAhead(batch []*evidence.Record, rows []row) *encoding {
	n := (len(rows) + encodeChunk - 1) / encodeChunk
	e := &encoding{recs: batch, rows: rows, shapes: make([][]byte, len(rows)), sums: make([][32]byte, len(rows)),
		errs: make([]error, len(rows)), ready: make([]chan struct{}, n), done: make(chan struct{}), fresh: map[[32]byte]int32{}}
	for i := range e.ready {
		e.ready[i] = make(chan struct{})
	}
	go func() {
		defer close(e.done)
		for c := range n {
			if e.stop.Load() {
				for _, r := range e.ready[c:] {
					close(r)
				}
				return
			}
			lo, hi := c*encodeChunk, min((c+1)*encodeChunk, len(rows))
			for i := lo; i < hi; i++ {
				shape, rest, err := compact.SplitStored(batch[i])
				if err != nil {
					e.errs[i] = evidence.Permanent(fmt.Errorf("encoding record %s: %w", batch[i].ID, err))
					continue
				}
				e.rows[i].rest, e.shapes[i], e.sums[i] = rest, shape, sha256.Sum256(shape)
			}
			s.writer.mu.Lock()
			for i := lo; i < hi; i++ {
				if id, ok := s.writer.byDigest[e.sums[i]]; ok && e.errs[i] == nil {
					e.rows[i].shape, e.shapes[i] = id, nil
				}
			}
			s.writer.mu.Unlock()
			close(e.ready[c])
		}
	}()
	return e
}

// close stops the encoder and waits for it (it reads the batch).
func (e *encoding) close() {
	e.stop.Store(true)
	<-e.done
}

// row waits for row i and returns its error, or whether its shape is
// numbered. (close stops the encoder only once the writer is done.)
func (e *encoding) row(i int) (numbered bool, err error) {
	<-e.ready[i/encodeChunk]
	return e.rows[i].shape != 0, e.errs[i]
}

// copySource feeds COPY rows[from:] of an encoding, up to the first whose
// shape has no number.
type copySource struct {
	e    *encoding
	i    int // the current row
	err  error
	vals []any
}

func (c *copySource) Next() bool {
	c.i++
	if c.i >= len(c.e.rows) {
		return false
	}
	numbered, err := c.e.row(c.i)
	if err != nil {
		c.err = err
		return false
	}
	return numbered
}

func (c *copySource) Err() error { return c.err }

// Values is the current row; the slice is reused (COPY encodes it before
// asking for the next).
func (c *copySource) Values() ([]any, error) {
	c.vals = c.e.rows[c.i].values(c.vals)
	return c.vals, nil
}

// copyRows writes rows[from:] of the encoding into table in tx, interning
// new shapes as COPY meets them.
func (s *Store) copyRows(ctx context.Context, tx pgx.Tx, table string, e *encoding, from int) error {
	for from < len(e.rows) {
		src := &copySource{e: e, i: from - 1}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, recordColumns, src)
		if src.err != nil {
			return src.err
		}
		if err != nil {
			return err
		}
		if from += int(n); from < len(e.rows) {
			if err := s.internShapes(ctx, tx, e, from); err != nil {
				return err
			}
		}
	}
	return nil
}

// internShapes numbers the new shapes of rows[from:], once they are all
// split, in tx: in digest order, so that two writers inserting the same
// new shapes wait for each other in one order, never in a cycle.
func (s *Store) internShapes(ctx context.Context, tx pgx.Tx, e *encoding, from int) error {
	for c := from / encodeChunk; c < len(e.ready); c++ {
		<-e.ready[c]
	}
	var missing []int
	seen := map[[32]byte]bool{}
	for i := from; i < len(e.rows); i++ {
		if e.errs[i] != nil {
			return e.errs[i]
		}
		if e.rows[i].shape != 0 {
			continue
		}
		if id, ok := e.fresh[e.sums[i]]; ok {
			e.rows[i].shape = id
		} else if !seen[e.sums[i]] {
			seen[e.sums[i]] = true
			missing = append(missing, i)
		}
	}
	slices.SortFunc(missing, func(a, b int) int { return bytes.Compare(e.sums[a][:], e.sums[b][:]) })
	var cols [13][]string
	ds := make([][]byte, len(missing))
	bodies := make([][]byte, len(missing))
	allowed := make([]bool, len(missing))
	for j, i := range missing {
		k := evidence.ColumnsOf(e.recs[i])
		for n, v := range []string{k.Replica, k.SourcePrincipal, k.DestinationPrincipal, k.SourceTrustDomain, k.DestinationTrustDomain,
			k.SourceNamespace, k.DestinationNamespace, k.SourceKey, k.Verdict, k.Method, k.Host, k.SourceWorkload, k.DestinationWorkload} {
			cols[n] = append(cols[n], v)
		}
		ds[j], bodies[j], allowed[j] = e.sums[i][:], packShape(e.shapes[i]), k.Allowed
	}
	// Two statements: the second's snapshot sees the shapes another
	// writer committed while the first waited for them.
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO shapes (digest, allowed, replica, source_principal, destination_principal,
			source_trust_domain, destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host,
			source_workload, destination_workload, body)
		SELECT * FROM unnest($1::bytea[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
			$9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bytea[])
		ON CONFLICT (digest) DO NOTHING`,
		ds, allowed, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8], cols[9], cols[10],
		cols[11], cols[12], bodies)
	var id int32
	var digest []byte
	b.Queue(`SELECT id, digest FROM shapes WHERE digest = ANY($1)`, ds).Query(func(rs pgx.Rows) error {
		_, err := pgx.ForEachRow(rs, []any{&id, &digest}, func() error {
			e.fresh[[32]byte(digest)] = id
			return nil
		})
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("shapes: %w", err)
	}
	for i := from; i < len(e.rows); i++ {
		if e.rows[i].shape == 0 {
			if e.rows[i].shape = e.fresh[e.sums[i]]; e.rows[i].shape == 0 {
				return errors.New("shapes: a new shape was not stored")
			}
		}
	}
	return nil
}

// remember puts the shapes a committed transaction numbered in the
// writer's cache.
func (s *Store) remember(e *encoding) {
	if len(e.fresh) == 0 {
		return
	}
	c := s.writer
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byDigest)+len(e.fresh) > shapeCacheSize {
		clear(c.byDigest)
	}
	for d, id := range e.fresh {
		c.byDigest[d] = id
	}
}
