package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// Append writes a batch in one transaction: the records (COPY), their
// rollups and the replica's new head. See evidence.Writer for what it
// accepts. A batch that overlaps the head (its first records stored, the
// rest not) is written from the head on: records are written once per id
// however a retried batch is cut.
func (s *Store) Append(ctx context.Context, batch []*evidence.Record) error {
	s.settle(ctx)
	err := s.appendDirect(ctx, batch)
	if err == nil && len(batch) > 0 {
		s.noteStored(batch[0].Replica, batch[len(batch)-1].Chain.Seq)
	}
	return err
}

// appendDirect is Append without settle (applyPending's own).
func (s *Store) appendDirect(ctx context.Context, batch []*evidence.Record) error {
	if len(batch) == 0 {
		return nil
	}
	if err := checkWrite(batch); err != nil {
		return err
	}
	days := make([]int64, 0, 1)
	for _, r := range batch {
		if d := dayOf(evidence.Nanos(r.Time)); len(days) == 0 || days[len(days)-1] != d {
			days = append(days, d)
		}
	}
	// The log's edge grown by the batch, on another goroutine, while the
	// rows are made and written; the same for a second attempt.
	var ahead *evidence.Growth
	if edge := s.edges.take(batch[0].Replica); edge != nil && batch[0].Chain.Version == evidence.CanonicalV2 {
		ahead = evidence.GrowAhead(edge, batch)
		defer ahead.Wait() // it reads the batch
	}
	// A batch of one day (most are) is copied into its day's partition:
	// the parent would route every row to it (some 0.2 µs a row).
	table := "records"
	if len(days) == 1 {
		table = partitionName(days[0])
	}
	for attempt := 0; ; attempt++ {
		if err := s.parts.ensure(ctx, days); err != nil {
			return fmt.Errorf("postgres: append: %w", err)
		}
		err := s.appendTx(ctx, batch, table, ahead)
		if err == nil {
			s.summarizeRequests(ctx)
		}
		switch {
		case err == nil || attempt > 0 || ctx.Err() != nil:
			return classify(err)
		case isCode(err, "23514"), isCode(err, "42P01"):
			// No partition for a row (or no table of the day): another
			// process dropped one this store thought was there.
			s.parts.forget()
		case !isServerError(err) && !errors.Is(err, evidence.ErrChainConflict):
			// A connection that died while idle (the server restarted):
			// once more on a fresh one. Safe even if the commit went
			// through unseen: the batch is then found stored.
		default:
			return classify(err)
		}
	}
}

// checkWrite rejects a batch that cannot be a piece of one chain
// (checkBatch), and one the store would refuse for its times (or keep
// wrapped): a refusal, to quarantine (evidence.ErrPermanent).
func checkWrite(batch []*evidence.Record) error {
	if err := checkBatch(batch); err != nil {
		return err
	}
	if err := evidence.CheckTimes(batch); err != nil {
		return evidence.Permanent(fmt.Errorf("postgres: %w", err))
	}
	return nil
}

// checkBatch rejects a batch that cannot be a piece of one chain.
func checkBatch(batch []*evidence.Record) error {
	replica := batch[0].Replica
	if replica == "" {
		return errors.New("postgres: append: records without a replica")
	}
	for i, r := range batch {
		if r.Replica != replica {
			return fmt.Errorf("postgres: append: one batch holds replicas %q and %q", replica, r.Replica)
		}
		if i > 0 {
			p := batch[i-1].Chain
			if r.Chain.Seq != p.Seq+1 || (r.Chain.Version != evidence.CanonicalV2 && r.Chain.PrevHash != p.Hash) {
				return fmt.Errorf("%w: replica %s: seq %d does not follow seq %d within the batch", evidence.ErrChainConflict, replica, r.Chain.Seq, p.Seq)
			}
		}
	}
	return nil
}

func (s *Store) appendTx(ctx context.Context, batch []*evidence.Record, table string, ahead *evidence.Growth) error {
	replica := batch[0].Replica
	places, err := s.keyIDs(ctx, batch)
	if err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	rep, err := s.replicaID(ctx, replica)
	if err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	rows, err := baseRows(batch, rep)
	if err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	enc := s.encodeAhead(batch, rows)
	defer enc.close()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if s.forceSync {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
			return fmt.Errorf("postgres: append: %w", err)
		}
	}
	// The head row, locked: one writer per chain at a time.
	// sealed: records of hours before it are not counted in the rollups
	// (evidence.RollupSeal); sealing takes this lock too.
	var head evidence.Link
	var seq, sealed int64
	err = tx.QueryRow(ctx, `INSERT INTO chain_heads AS h (replica, seq, hash) VALUES ($1, 0, '')
		ON CONFLICT (replica) DO UPDATE SET seq = h.seq RETURNING seq, hash, seal_through`, replica).Scan(&seq, &head.Hash, &sealed)
	if err != nil {
		return fmt.Errorf("postgres: append: locking the head of %s: %w", replica, err)
	}
	head.Seq = uint64(seq)
	skip, err := s.stored(ctx, tx, batch, head)
	if err != nil || skip == len(batch) {
		return err
	}
	if err := unique(ctx, tx, batch[skip:], rows[skip:]); err != nil {
		return err
	}
	if skip > 0 {
		ahead = nil // grown from before the head
	}
	// The log's tiles, the rollups and the new head go first, in one
	// round trip: while the server writes them the encoder runs ahead,
	// and COPY then takes rows as fast as the server does. (A transaction
	// makes them all or none whatever their order.)
	b := &pgx.Batch{}
	root, edge, err := s.appendLog(ctx, tx, head, batch[skip:], ahead, b)
	if err != nil {
		return err
	}
	last := batch[len(batch)-1].Chain
	queueRollups(b, batch[skip:], sealed*60, places[skip:])
	b.Queue("UPDATE chain_heads SET seq = $2, hash = $3, root = $4, updated_at = now() WHERE replica = $1", replica, int64(last.Seq), last.Hash, root)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: append: rollups and head of %s: %w", replica, err)
	}
	if err := s.copyRows(ctx, tx, table, enc, skip); err != nil {
		if evidence.IsPermanent(err) {
			return fmt.Errorf("postgres: append: %w", err)
		}
		return fmt.Errorf("postgres: append: writing %d records of %s: %w", len(batch)-skip, replica, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: append: commit: %w", err)
	}
	if edge != nil {
		s.edges.put(replica, edge)
	}
	s.remember(enc)
	return nil
}

// stored is how many records at the start of batch the chain already
// holds (all of them: a batch written again after an unsure commit), or an
// error wrapping ErrChainConflict when batch does not continue the chain.
func (s *Store) stored(ctx context.Context, tx pgx.Tx, batch []*evidence.Record, head evidence.Link) (int, error) {
	first, last := batch[0].Chain, batch[len(batch)-1]
	switch {
	case first.Seq == head.Seq+1 && (first.Version == evidence.CanonicalV2 || first.PrevHash == head.Hash):
		return 0, nil
	case first.Seq <= head.Seq && last.Chain.Seq > head.Seq:
		if k := int(head.Seq - first.Seq); batch[k].Chain.Hash == head.Hash {
			return k + 1, nil
		}
	case first.Seq <= head.Seq:
		// A quarantined record holds its seq too.
		at := evidence.Nanos(last.Time)
		hash, err := s.hashAt(ctx, tx, last.Replica, int64(last.Chain.Seq), &at)
		if err != nil {
			return 0, fmt.Errorf("postgres: append: %w", err)
		}
		if hash == last.Chain.Hash {
			return len(batch), nil
		}
	}
	return 0, fmt.Errorf("%w: replica %s: the batch holds seq %d to %d (prev_hash %s), the chain's head is seq %d (%s)",
		evidence.ErrChainConflict, last.Replica, first.Seq, last.Chain.Seq, short(first.PrevHash), head.Seq, short(head.Hash))
}

// unique refuses, as a permanent error, a batch holding a record with the
// id and time of a stored record or of another in the batch: ids are
// unique per time (Get finds one record), as schema 4's unique constraint
// on (id, time_ns) kept them. One range of records_time, the batch's: a
// batch that follows its chain in time finds only the records other
// replicas wrote meanwhile there, and most often none.
func unique(ctx context.Context, tx pgx.Tx, batch []*evidence.Record, rows []row) error {
	ids := make([][]byte, len(rows))
	seen := make(map[string]bool, len(rows))
	lo, hi := rows[0].timeNS, rows[0].timeNS
	key := func(timeNS int64, id []byte) string { return string(id) + "@" + strconv.FormatInt(timeNS, 10) }
	for i := range rows {
		r := &rows[i] // not a copy: the encoder writes the row's shape and rest meanwhile
		ids[i], lo, hi = r.id, min(lo, r.timeNS), max(hi, r.timeNS)
		k := key(r.timeNS, r.id)
		if seen[k] {
			return evidence.Permanent(fmt.Errorf("postgres: append: record %s: two records of the batch have its id and time", batch[i].ID))
		}
		seen[k] = true
	}
	// Most often the range holds no record at all (a live replica's
	// batch is later than all the store holds): one look at records_time
	// says so, without sending the batch's ids.
	var some bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM records WHERE time_ns >= $1 AND time_ns <= $2)`, lo, hi).Scan(&some); err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	if !some {
		return nil
	}
	rs, err := tx.Query(ctx, `SELECT time_ns, id FROM records WHERE time_ns >= $1 AND time_ns <= $2 AND id = ANY($3::bytea[])`, lo, hi, ids)
	if err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	var timeNS int64
	var id []byte
	var dup string
	if _, err := pgx.ForEachRow(rs, []any{&timeNS, &id}, func() error {
		if seen[key(timeNS, id)] && dup == "" {
			dup, _ = idOf(id)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("postgres: append: %w", err)
	}
	if dup != "" {
		return evidence.Permanent(fmt.Errorf("postgres: append: record %s: a record with its id and time is stored already", dup))
	}
	return nil
}

// hashAt is the chain hash of replica's record at seq (stored with time
// timeNS unless nil: the time narrows the lookup to one partition, and a
// record with the same seq but another time is another record), or of its
// quarantined record at seq; "" when there is none.
func (s *Store) hashAt(ctx context.Context, tx pgx.Tx, replica string, seq int64, timeNS *int64) (string, error) {
	q := "SELECT " + rowColumns + " FROM records WHERE chain = " + chainBase("$1") + " | $2"
	args := []any{replica, seq}
	if timeNS != nil {
		q, args = q+" AND time_ns = $3", append(args, *timeNS)
	}
	rs, err := tx.Query(ctx, q+" LIMIT 1", args...)
	if err != nil {
		return "", err
	}
	rows, err := collectRows(rs)
	if err != nil {
		return "", err
	}
	if len(rows) == 1 {
		recs, err := s.decodeRows(ctx, tx, rows)
		if err != nil {
			return "", err
		}
		return leafHex(recs[0]), nil
	}
	var hash string
	err = tx.QueryRow(ctx, `SELECT hash FROM quarantine WHERE replica = $1 AND seq = $2`, replica, seq).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return hash, err
}

func short(h string) string {
	if h == "" {
		return "none"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Head is the last link of replica's chain, as written with its last batch.
func (s *Store) Head(ctx context.Context, replica string) (evidence.Link, error) {
	s.settle(ctx)
	return s.link(ctx, "chain_heads", replica)
}

// Checkpoint is the last link retention removed from replica's chain.
func (s *Store) Checkpoint(ctx context.Context, replica string) (evidence.Link, error) {
	s.settle(ctx)
	return s.link(ctx, "chain_checkpoints", replica)
}

func (s *Store) link(ctx context.Context, table, replica string) (evidence.Link, error) {
	var seq int64
	var l evidence.Link
	// table is one of two constants.
	err := s.pool.QueryRow(ctx, "SELECT seq, hash FROM "+table+" WHERE replica = $1", replica).Scan(&seq, &l.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return evidence.Link{}, nil
	}
	if err != nil {
		return l, fmt.Errorf("postgres: %s of %s: %w", strings.TrimPrefix(table, "chain_"), replica, err)
	}
	l.Seq = uint64(seq)
	return l, nil
}
