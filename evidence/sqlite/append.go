package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// Append writes a batch in one transaction with its rollups and the new
// head (see evidence.Writer). A failed write discards the writer's
// connection, so that the next batch starts on a fresh one: a file made
// read-only and writable again, or an I/O error, does not stick.
func (s *Store) Append(ctx context.Context, batch []*evidence.Record) error {
	s.settle(ctx)
	err := s.appendDirect(ctx, batch)
	if err == nil && len(batch) > 0 {
		s.appended.Store(true) // for Sync
		s.noteStored(batch[0].Replica, batch[len(batch)-1].Chain.Seq)
	}
	return err
}

// appendDirect is Append without settling the journal first.
func (s *Store) appendDirect(ctx context.Context, batch []*evidence.Record) error {
	if len(batch) == 0 {
		return nil
	}
	if err := checkBatch(batch); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	err = s.append(ctx, conn, batch)
	if err != nil && !errors.Is(err, evidence.ErrChainConflict) {
		conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	conn.Close()
	return classify(err)
}

// checkBatch rejects a batch that is not one replica's chain in order (a
// caller's bug, not a conflict with the store) or holds a time no store
// keeps (evidence.CheckTimes).
func checkBatch(batch []*evidence.Record) error {
	if err := checkChain(batch); err != nil {
		return err
	}
	if err := evidence.CheckTimes(batch); err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	return nil
}

func checkChain(batch []*evidence.Record) error {
	replica := batch[0].Replica
	if replica == "" {
		return errors.New("evidence sqlite: a record without a replica")
	}
	for i, r := range batch {
		switch {
		case r.Replica != replica:
			return fmt.Errorf("evidence sqlite: one batch holds replicas %q and %q", replica, r.Replica)
		case r.ID == "" || r.Chain.Hash == "":
			return fmt.Errorf("evidence sqlite: record %d of the batch has no id or is not chained", i)
		case r.Chain.Seq == 0 || r.Chain.Seq > maxSeq:
			return fmt.Errorf("evidence sqlite: record %s: seq %d out of the range the store keeps (1 to %d)", r.ID, r.Chain.Seq, uint64(maxSeq))
		case i > 0 && (r.Chain.Seq != batch[i-1].Chain.Seq+1 || (r.Chain.Version != evidence.CanonicalV2 && r.Chain.PrevHash != batch[i-1].Chain.Hash)):
			return fmt.Errorf("evidence sqlite: record %s (seq %d) does not follow seq %d in its batch", r.ID, r.Chain.Seq, batch[i-1].Chain.Seq)
		}
	}
	return nil
}

func (s *Store) append(ctx context.Context, conn *sql.Conn, batch []*evidence.Record) error {
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return fmt.Errorf("evidence sqlite: %w", err)
	}
	defer tx.Rollback()
	replica := batch[0].Replica
	// sealed: records of hours before it are not counted in the rollups
	// (evidence.RollupSeal).
	var head evidence.Link
	var seq, sealed int64
	err = tx.StmtContext(ctx, s.st.appendHead).QueryRowContext(ctx, replica).Scan(&seq, &head.Hash, &sealed)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("evidence sqlite: reading the head of %s: %w", replica, err)
	}
	head.Seq = uint64(seq)
	first, last := batch[0].Chain, batch[len(batch)-1].Chain
	switch {
	case last.Seq <= head.Seq:
		return s.alreadyStored(ctx, tx, replica, last)
	case first.Seq != head.Seq+1 || (first.Version != evidence.CanonicalV2 && first.PrevHash != head.Hash):
		return fmt.Errorf("%w: replica %s: the batch starts at seq %d after %.12s, the store's head is seq %d (%.12s)",
			evidence.ErrChainConflict, replica, first.Seq, first.PrevHash, head.Seq, head.Hash)
	}
	s.pendingLog, s.pendingEdge = "", nil
	ahead := s.growAhead(batch)
	if ahead != nil {
		defer ahead.Wait() // it reads the batch
	}
	fresh := newFresh()
	if err := s.insertRecords(ctx, tx, batch, fresh); err != nil {
		return err
	}
	if err := s.upsertRollups(ctx, tx, batch, sealed*60, fresh.groups); err != nil {
		return err
	}
	if err := s.appendLog(ctx, tx, head, batch, ahead); err != nil {
		return err
	}
	root, err := s.logRoot()
	if err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, s.st.setHead).ExecContext(ctx, replica, int64(last.Seq), last.Hash, root); err != nil {
		return fmt.Errorf("evidence sqlite: recording the head: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("evidence sqlite: commit: %w", err)
	}
	if s.pendingEdge != nil {
		s.logs[s.pendingLog] = s.pendingEdge
		s.pendingLog, s.pendingEdge = "", nil
	}
	s.kickCheckpoint()
	s.remember(fresh)
	return nil
}

// remember puts the numbers a committed transaction made in the writer's
// caches.
func (s *Store) remember(fresh *freshNames) {
	if len(s.keys)+len(fresh.groups) > maxCachedGroups {
		clear(s.keys) // plaintext clients by address can be many; the table keeps them all
	}
	maps.Copy(s.keys, fresh.groups)
	if len(s.edges)+len(fresh.edges) > maxCachedGroups {
		clear(s.edges)
	}
	maps.Copy(s.edges, fresh.edges)
	if len(s.shapeIDs)+len(fresh.shapes) > maxCachedGroups {
		clear(s.shapeIDs)
	}
	maps.Copy(s.shapeIDs, fresh.shapes)
	maps.Copy(s.reps, fresh.replicas)
}

// maxCachedGroups bounds the writer's memory of rollup group numbers.
const maxCachedGroups = 100_000

// alreadyStored accepts a batch written before (its commit was in doubt)
// when the store holds its last record with the same hash.
func (s *Store) alreadyStored(ctx context.Context, tx *sql.Tx, replica string, last evidence.Chain) error {
	hash, found, err := s.storedHash(ctx, tx, replica, last.Seq)
	switch {
	case err != nil:
		return fmt.Errorf("evidence sqlite: %w", err)
	case found && hash == last.Hash:
		return nil
	case found:
		return fmt.Errorf("%w: replica %s: seq %d is stored with hash %.12s, the batch has %.12s",
			evidence.ErrChainConflict, replica, last.Seq, hash, last.Hash)
	default:
		return fmt.Errorf("%w: replica %s: the batch ends at seq %d, before the head, but the store does not hold it",
			evidence.ErrChainConflict, replica, last.Seq)
	}
}

// Rows per statement, within SQLite's limit of bound parameters: the
// records split ahead at a time (recordChunk), the ids one lookup checks,
// the rollup rows one upsert writes.
const (
	recordChunk = 32
	idsChunk    = 32
	rollupChunk = 32
)

// recordColumns are the columns Append writes (schema version 6).
const recordColumns = `key, time_ns, edge, shape, id, rid, path, rest`

// Parameters per row.
const (
	recordParams = 8
	rollupParams = 7
)

// chunked calls exec with the rows [start, end) of n, a full chunk at a time
// through the chunk statement and the rest one by one.
func chunked(n, chunk int, exec func(start, end int, st *sql.Stmt) error, full, one *sql.Stmt) error {
	for start := 0; start < n; {
		end, st := start+chunk, full
		if end > n {
			end, st = start+1, one
		}
		if err := exec(start, end, st); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (s *Store) insertRecords(ctx context.Context, tx *sql.Tx, batch []*evidence.Record, fresh *freshNames) error {
	split := encodeAhead(batch, recordChunk)
	rep, err := s.replicaNum(ctx, tx, batch[0].Replica, fresh)
	if err != nil {
		return err
	}
	// The statements bound to tx once for the batch, not once a row:
	// Tx.StmtContext registers and releases each (a tenth of the insert's
	// cost when it was per row).
	insert := tx.StmtContext(ctx, s.st.insertOne)
	defer insert.Close()
	probe, err := s.idsProbe(ctx, tx, split)
	if err != nil {
		return err
	}
	if probe != nil {
		defer probe.Close()
	}
	keys := make([]any, 0, idsChunk)
	// The rows are inserted with a context that never ends: with one that
	// can, the driver starts a goroutine a statement to watch it
	// (modernc.org/sqlite's interruptOnDone), 2-3 % of the server's CPU
	// under load. ctx is checked once a chunk instead.
	rowCtx := context.WithoutCancel(ctx)
	for start := 0; start < len(batch); start += recordChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(start+recordChunk, len(batch))
		if probe != nil {
			// A chunk's ids are checked as the chunk is inserted, so
			// that the inserts start as soon as the first chunk is split.
			if err := chunked(end-start, idsChunk, func(from, to int, st *sql.Stmt) error {
				keys = keys[:0]
				for i := start + from; i < start+to; i++ {
					keys = append(keys, split.split[i].id)
				}
				return s.idsFree(ctx, st, keys)
			}, probe.chunk, probe.one); err != nil {
				return err
			}
		}
		for i := start; i < end; i++ {
			sp, err := split.get(i)
			if err != nil {
				return evidence.Permanent(fmt.Errorf("evidence sqlite: encoding record %s: %w", batch[i].ID, err))
			}
			edge, err := s.edgeID(ctx, tx, sp.edge, fresh.edges)
			if err != nil {
				return err
			}
			shape, err := s.shapeID(ctx, tx, sp, batch[i].Request.Method, fresh)
			if err != nil {
				return err
			}
			if _, err := insert.ExecContext(rowCtx, keyOf(rep, sp.seq), sp.timeNS, edge, shape, sp.id, sp.rid, sp.path, sp.rest); err != nil {
				if strings.Contains(err.Error(), "UNIQUE constraint failed: records.key") {
					return fmt.Errorf("%w: a seq of the batch is stored already: %v", evidence.ErrChainConflict, err)
				}
				return fmt.Errorf("evidence sqlite: inserting records: %w", err)
			}
		}
	}
	return nil
}

// idProbes are the statements that look a chunk's ids up, bound to a tx.
type idProbes struct{ chunk, one *sql.Stmt }

func (p *idProbes) Close() {
	p.chunk.Close()
	p.one.Close()
}

// idsProbe refuses a batch holding an id twice, and returns the statements
// to look its ids up chunk by chunk, or nil when that is not needed: no
// stored id has a records_id key in the range of the batch's (one probe of
// the index; a live replica's ids are later than all it stored).
func (s *Store) idsProbe(ctx context.Context, tx *sql.Tx, split *encoded) (*idProbes, error) {
	<-split.ids
	if split.twice != nil {
		return nil, split.twice
	}
	if split.low != nil {
		var one int
		err := tx.StmtContext(ctx, s.st.idRange).QueryRowContext(ctx, string(split.low), string(split.top)).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("evidence sqlite: looking up the batch's ids: %w", err)
		}
	}
	return &idProbes{tx.StmtContext(ctx, s.st.storedIDs), tx.StmtContext(ctx, s.st.storedID)}, nil
}

// idsFree refuses ids (compact.IDKey) of which one is stored already (a
// permanent error: the record itself is refused, see evidence.ErrPermanent).
// records_id is by the ids' first 6 and last 4 bytes, not unique: this is
// the check a unique index made. Ids twice in one batch are refused before.
func (s *Store) idsFree(ctx context.Context, st *sql.Stmt, keys []any) error {
	var key any
	err := st.QueryRowContext(ctx, keys...).Scan(&key)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("evidence sqlite: looking up the batch's ids: %w", err)
	}
	id, _ := compact.IDOfKey(key)
	return evidence.Permanent(fmt.Errorf("evidence sqlite: a record of the batch has an id already stored (%s)", id))
}

// freshNames are the numbers a batch's transaction made (edges, rollup
// groups, shapes, replicas): the writer's caches take them once it has
// committed.
type freshNames struct {
	edges    map[edgeKey]int64
	groups   map[groupKey]int64
	shapes   map[[32]byte]int64
	replicas map[string]int64
}

func newFresh() *freshNames {
	return &freshNames{edges: map[edgeKey]int64{}, groups: map[groupKey]int64{}, shapes: map[[32]byte]int64{}, replicas: map[string]int64{}}
}

// shapeID is the number of a record's shape, stored when new. The writer
// remembers shapes by their SHA-256 (the shapes table's key, hashed by
// encodeAhead on another CPU): a mesh of a few hundred workloads has tens
// of thousands of shapes, which their bytes would make megabytes.
func (s *Store) shapeID(ctx context.Context, tx *sql.Tx, sp splitRecord, method string, fresh *freshNames) (int64, error) {
	if id, ok := s.shapeIDs[sp.sum]; ok {
		return id, nil
	}
	if id, ok := fresh.shapes[sp.sum]; ok {
		return id, nil
	}
	sum := sp.sum
	var id int64
	err := tx.StmtContext(ctx, s.st.shape).QueryRowContext(ctx, sum[:]).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.StmtContext(ctx, s.st.newShape).QueryRowContext(ctx, sum[:], method, packShape(sp.shape)).Scan(&id)
	}
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: shape: %w", err)
	}
	fresh.shapes[sum] = id
	return id, nil
}

// replicaNum is the number of a replica, made when new.
func (s *Store) replicaNum(ctx context.Context, tx *sql.Tx, replica string, fresh *freshNames) (int64, error) {
	if n, ok := s.reps[replica]; ok {
		return n, nil
	}
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT num FROM replicas WHERE name = ?`, replica).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRowContext(ctx, `INSERT INTO replicas (name) VALUES (?) RETURNING num`, replica).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: replica %s: %w", replica, err)
	}
	fresh.replicas[replica] = n
	return n, nil
}

// edgeKey is an edge: the identity columns of a record that filters select
// on (see migration 2).
type edgeKey struct {
	replica                                   string
	srcPrincipal, srcTD, srcNS                string
	dstPrincipal, dstTD, dstNS, host, verdict string
	allowed                                   bool
	srcWorkload, dstWorkload                  string // evidence.WorkloadRef (schema 7)
}

func edgeOf(c evidence.Columns) edgeKey {
	return edgeKey{c.Replica, c.SourcePrincipal, c.SourceTrustDomain, c.SourceNamespace,
		c.DestinationPrincipal, c.DestinationTrustDomain, c.DestinationNamespace, c.Host, c.Verdict, c.Allowed,
		c.SourceWorkload, c.DestinationWorkload}
}

// args are the edge's columns in the order of findEdgeSQL and newEdgeSQL.
func (e edgeKey) args() []any {
	return []any{e.replica, e.srcPrincipal, e.srcTD, e.srcNS, e.dstPrincipal, e.dstTD, e.dstNS, e.host, e.verdict, e.allowed,
		e.srcWorkload, e.dstWorkload}
}

// findEdgeSQL and newEdgeSQL find and make an edge from edgeKey.args.
const (
	findEdgeSQL = `SELECT id FROM edges WHERE replica = ? AND src_principal = ? AND src_td = ? AND src_ns = ?
			AND dst_principal = ? AND dst_td = ? AND dst_ns = ? AND host = ? AND verdict = ? AND allowed = ?
			AND src_wl = ? AND dst_wl = ?`
	newEdgeSQL = `INSERT INTO edges (replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, verdict, allowed,
			src_wl, dst_wl) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`
)

// edgeID is the number of an edge, creating it when new.
func (s *Store) edgeID(ctx context.Context, tx *sql.Tx, e edgeKey, fresh map[edgeKey]int64) (int64, error) {
	return numberOf(ctx, tx, e, s.edges, fresh, s.st.edge, s.st.newEdge, "edge", e.args()...)
}

// numberOf is key's number in a table of names (edges, rollup groups): from
// the writer's cache, from those tx made, or found (find) or made (create) in
// tx from args. A new number goes into fresh, which the caller merges into
// the cache once tx has committed.
func numberOf[K comparable](ctx context.Context, tx *sql.Tx, key K, cache, fresh map[K]int64,
	find, create *sql.Stmt, what string, args ...any) (int64, error) {
	if id, ok := cache[key]; ok {
		return id, nil
	}
	if id, ok := fresh[key]; ok {
		return id, nil
	}
	var id int64
	err := tx.StmtContext(ctx, find).QueryRowContext(ctx, args...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.StmtContext(ctx, create).QueryRowContext(ctx, args...).Scan(&id)
	}
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: %s: %w", what, err)
	}
	fresh[key] = id
	return id, nil
}

// splitRecord is a record as Append stores it: its shape, the shape's
// SHA-256, its stored rest, and its columns.
type splitRecord struct {
	shape, rest []byte
	sum         [32]byte
	edge        edgeKey
	id, rid     any // compact.IDKey, compact.RequestIDKey
	seq, timeNS int64
	path        string
}

// encoded is a batch's records split (compact.SplitStored) and their
// columns and keys made, by another goroutine a chunk ahead of the
// inserts: this runs on a second CPU while SQLite writes the chunks
// before.
type encoded struct {
	split []splitRecord
	errs  []error
	ready []chan struct{} // closed when chunk i is split
	chunk int
	// Made first, before any chunk: every record's id key (in split), the
	// range of their records_id keys (nil bounds when one is text), and
	// the refusal of an id twice in the batch.
	ids      chan struct{}
	low, top []byte
	twice    error
}

func encodeAhead(batch []*evidence.Record, chunk int) *encoded {
	n := (len(batch) + chunk - 1) / chunk
	e := &encoded{split: make([]splitRecord, len(batch)), errs: make([]error, len(batch)), ready: make([]chan struct{}, n), chunk: chunk,
		ids: make(chan struct{})}
	for i := range e.ready {
		e.ready[i] = make(chan struct{})
	}
	go func() {
		seen := make(map[string]struct{}, len(batch))
		bounded := true
		for i, r := range batch {
			if _, ok := seen[r.ID]; ok && e.twice == nil {
				e.twice = evidence.Permanent(fmt.Errorf("evidence sqlite: record %s is twice in the batch", r.ID))
			}
			seen[r.ID] = struct{}{}
			e.split[i].id = compact.IDKey(r.ID)
			k := idIndexKey(e.split[i].id)
			switch {
			case k == nil:
				bounded = false
			case e.low == nil:
				e.low, e.top = k, k
			case bytes.Compare(k, e.low) < 0:
				e.low = k
			case bytes.Compare(k, e.top) > 0:
				e.top = k
			}
		}
		if !bounded {
			e.low, e.top = nil, nil
		}
		close(e.ids)
		for c := range n {
			for i := c * chunk; i < min((c+1)*chunk, len(batch)); i++ {
				sp := &e.split[i]
				if sp.shape, sp.rest, e.errs[i] = compact.SplitStored(batch[i]); e.errs[i] == nil {
					sp.sum = sha256.Sum256(sp.shape)
					c := evidence.ColumnsOf(batch[i])
					sp.edge, sp.seq, sp.timeNS, sp.path = edgeOf(c), c.Seq, c.TimeNS, c.Path
					sp.rid = compact.RequestIDKey(c.RequestID)
				}
			}
			close(e.ready[c])
		}
	}()
	return e
}

func (e *encoded) get(i int) (splitRecord, error) {
	<-e.ready[i/e.chunk]
	return e.split[i], e.errs[i]
}

// groupKey is a rollup group: a RollupKey without its minute.
type groupKey = evidence.RollupKey

// rollupRow is one bucket of one span of one group.
type rollupRow struct {
	span, minute int64
	key          int64 // rollup_keys.id
}

type rollupSum struct {
	count, first, last int64
	example            string
}

// spans are the rollup bucket widths, in minutes.
var spans = [...]int64{1, 60, 1440, 10080}

// upsertRollups adds the batch to its groups' buckets. New groups get their
// number inside tx; they are remembered in fresh, which the caller merges
// into s.keys only once tx has committed.
//
// Minutes are written for every record; hours, days and weeks only for
// records of closed hours (see migration 2). A batch holding a later hour
// than the closed mark first closes the hours before it, summing their
// minutes as stored, then counts its own records of those hours in every
// span directly.
//
// Minutes before sealed belong to sealed hours, closed for good: their
// records are stored but not counted.
func (s *Store) upsertRollups(ctx context.Context, tx *sql.Tx, batch []*evidence.Record, sealed int64, fresh map[groupKey]int64) error {
	var closed int64
	if err := tx.StmtContext(ctx, s.st.closed).QueryRowContext(ctx).Scan(&closed); err != nil {
		return fmt.Errorf("evidence sqlite: reading the closed rollups mark: %w", err)
	}
	// Hours up to the batch's last are closed, but none from the current
	// hour on: a record stamped far ahead (a skewed clock, an uploaded
	// decision log) would otherwise close every hour until its own, and
	// every later record would count in all four spans again.
	mark := closed
	now := floorDiv(floorDiv(time.Now().Unix(), 60), 60) * 60
	for _, r := range batch {
		mark = max(mark, min(floorDiv(floorDiv(r.Time.Unix(), 60), 60)*60, now))
	}
	if mark > closed {
		// The hours from their minutes, then the days and weeks from those
		// hours (a sixtieth of the rows to read): before this, no record of
		// these hours had an hour row, so the new ones hold them all.
		for _, c := range [...]struct{ span, from int64 }{{60, 1}, {1440, 60}, {10080, 60}} {
			if _, err := tx.StmtContext(ctx, s.st.closeHours).ExecContext(ctx, c.span, closed, mark, c.from); err != nil {
				return fmt.Errorf("evidence sqlite: closing the rollups of an hour: %w", err)
			}
		}
		if _, err := tx.StmtContext(ctx, s.st.setClosed).ExecContext(ctx, mark); err != nil {
			return fmt.Errorf("evidence sqlite: closing the rollups of an hour: %w", err)
		}
	}
	sums := make(map[rollupRow]*rollupSum)
	var order []rollupRow
	var err error
	for _, r := range batch {
		// One delta a record; two for an amendment (evidence.RollupDeltas).
		evidence.RollupDeltas(r, func(g evidence.RollupKey, delta int64) {
			if err != nil || g.Minute < sealed {
				return
			}
			g.Minute = 0
			var id int64
			if id, err = s.groupID(ctx, tx, g, fresh); err != nil {
				return
			}
			minute := floorDiv(r.Time.Unix(), 60)
			ns := evidence.Nanos(r.Time)
			of := spans[:1]
			if minute < mark {
				of = spans[:]
			}
			for _, span := range of {
				row := rollupRow{span, floorDiv(minute, span) * span, id}
				if sum, ok := sums[row]; ok {
					sum.count += delta
					sum.first, sum.last = min(sum.first, ns), max(sum.last, ns)
					continue
				}
				sums[row] = &rollupSum{count: delta, first: ns, last: ns, example: r.ID}
				order = append(order, row)
			}
		})
		if err != nil {
			return err
		}
	}
	args := make([]any, 0, rollupParams*rollupChunk)
	return chunked(len(order), rollupChunk, func(start, end int, st *sql.Stmt) error {
		args = args[:0]
		for _, row := range order[start:end] {
			sum := sums[row]
			args = append(args, row.span, row.minute, row.key, sum.count, sum.first, sum.last, sum.example)
		}
		if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("evidence sqlite: updating rollups: %w", err)
		}
		return nil
	}, s.st.upsertChunk, s.st.upsertOne)
}

// groupID is the number of a rollup group, creating it when new.
func (s *Store) groupID(ctx context.Context, tx *sql.Tx, g groupKey, fresh map[groupKey]int64) (int64, error) {
	return numberOf(ctx, tx, g, s.keys, fresh, s.st.rollupKey, s.st.newRollupKey, "rollup group",
		g.Replica, g.Source, g.DestinationHost, g.DestinationPrincipal, g.Verdict, g.Allowed)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
