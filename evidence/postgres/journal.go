package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// The journal is where a writer in sync or fsync durability commits a
// group of records before answering their Checks (evidence.Journaler): a
// row of table journal holding the group's records as JSON lines, in one
// INSERT on a connection of the writer's own. Appending the same group
// (Append) is a transaction of five round trips that updates the records'
// indexes, the rollups, the head and the log's tiles: for the two or three
// records a loaded writer groups, that was most of a Check's cost
// (docs/performance.md).
//
// The store keeps the journaled records in memory too and moves them into
// the records itself (apply), in batches as an async writer does:
// storekit.ApplyEvery after a group, at once at storekit.ApplyMax, and
// before this Store reads or writes otherwise (settle), so that the
// process that journals reads what it journaled. An apply deletes the rows
// it applied; a row left by an apply that failed half way is at or before
// the head, which a recovery skips.
//
// A journaled row is committed as any transaction of the server is: it
// survives a crash of meshproof, and a crash of PostgreSQL or of its
// machine when synchronous_commit is on (fsync durability sets it for the
// writer's connection). Each replica's writer holds a session advisory
// lock on its connection, which the server lets go when the connection
// ends. After a crash, the next writer of the replica (OpenJournal), or
// the next Open that finds the replica's lock free, applies its rows.

// journal is one replica's journal: the writer's connection, which holds
// the replica's advisory lock.
type journal struct {
	replica     string
	quarantined func(n int, why error) // told what the store quarantined as it applied

	mu   sync.Mutex // serialises Journal
	conn *pgx.Conn  // nil or closed: reconnect (and lock again) first
	head storekit.JournalHead
}

// lockKey is replica's advisory lock key (any string is a replica's name).
func lockKey(replica string) int64 {
	sum := sha256.Sum256([]byte("meshproof journal\x00" + replica))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// lockReplica opens a connection of its own that holds replica's advisory
// lock: the server lets it go when the connection ends, however it ends.
// The lock's holder may be a writer that is gone but whose end the server
// has not seen yet (a crash of its machine): with wait, it tries again
// until wait has passed. The connection asks the server to probe it when
// idle (TCP keepalives), so that a lock of its own that is left this way
// is let go in seconds, not the hours of the system's defaults.
func (s *Store) lockReplica(ctx context.Context, replica string, wait time.Duration) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	// One statement, the INSERT, prepared once: not parsed and planned
	// again for each group as the pool's mode would.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	for k, v := range lockKeepalives {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: the writer lock of replica %s: %w", replica, err)
	}
	deadline := time.Now().Add(wait)
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey(replica)).Scan(&got); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("postgres: the writer lock of replica %s: %w", replica, err)
		}
		if got {
			return conn, nil
		}
		held := func(cause error) error {
			conn.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("postgres: replica %s: %w (its lock was still held %s): give every instance its own --replica", replica, evidence.ErrWriterLocked, cause)
		}
		if !time.Now().Before(deadline) {
			return nil, held(fmt.Errorf("after %v", wait))
		}
		select {
		case <-ctx.Done():
			return nil, held(fmt.Errorf("when the wait ended: %w", ctx.Err()))
		case <-time.After(lockRetry):
		}
	}
}

// How long OpenJournal waits for a replica's lock that another connection
// holds, and how often it asks.
const (
	lockWait  = 45 * time.Second
	lockRetry = 250 * time.Millisecond
)

// lockKeepalives have the server probe an idle writer connection after
// 10 s, every 5 s, and end it after 3 probes unanswered: the lock of a
// writer whose machine died is free 25 s later.
var lockKeepalives = map[string]string{
	"tcp_keepalives_idle":     "10",
	"tcp_keepalives_interval": "5",
	"tcp_keepalives_count":    "3",
}

// OpenJournal takes replica's writer lock, which it holds until Close, and
// applies what replica's journal holds past its head: the records a writer
// journaled and had not applied when it stopped. It fails when another
// writer holds the lock (two processes writing as one replica).
func (s *Store) OpenJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error {
	s.journalsMu.Lock()
	defer s.journalsMu.Unlock()
	if s.journals[replica] != nil {
		return fmt.Errorf("postgres: replica %s: %w: give every instance its own --replica", replica, evidence.ErrWriterLocked)
	}
	if quarantined == nil {
		quarantined = func(int, error) {}
	}
	j := &journal{replica: replica, quarantined: quarantined}
	if err := s.connect(ctx, j); err != nil {
		return err
	}
	if s.journals == nil {
		s.journals = map[string]*journal{}
	}
	s.journals[replica] = j
	s.jd.Start(s.applyPending)
	return nil
}

// connect gives j a connection that holds its replica's lock, applying
// what the journal holds past the head first (a writer that stopped, or
// this one's rows another Open applied while its connection was down):
// Journal then chains after the head.
func (s *Store) connect(ctx context.Context, j *journal) error {
	conn, err := s.lockReplica(ctx, j.replica, lockWait)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		conn.Close(context.WithoutCancel(ctx))
		return err
	}
	if err := s.recoverJournal(ctx, j.replica, j.quarantined); err != nil {
		return fail(err)
	}
	head, err := s.link(ctx, "chain_heads", j.replica)
	if err != nil {
		return fail(err)
	}
	// In fsync durability a journaled row is flushed before its Checks
	// are answered (on, whatever the server's default). In sync
	// durability its commit does not wait for the flush (off): the row
	// survives a crash of meshproof once committed, and the writer keeps
	// its records until they are applied, so a crash of the server alone
	// loses none of them either: an apply after it stores them from
	// memory. Only both at once, before the server's flush (a fraction of
	// a second), would.
	sc := "off"
	if s.durable {
		sc = "on"
	}
	if _, err := conn.Exec(ctx, "SET synchronous_commit = "+sc); err != nil {
		return fail(fmt.Errorf("postgres: the journal of replica %s: %w", j.replica, err))
	}
	j.conn = conn
	j.head.Advance(head.Seq)
	return nil
}

// Journal commits batch, chained and in order after what the replica
// journaled or stored before, to its journal (see evidence.Journaler and
// OpenJournal, which comes first).
func (s *Store) Journal(ctx context.Context, batch []*evidence.Record, lines []byte) error {
	if len(batch) == 0 {
		return nil
	}
	if err := checkWrite(batch); err != nil {
		return err // the apply would refuse it: quarantined now, by the caller
	}
	replica := batch[0].Replica
	j := s.journal(replica)
	if j == nil {
		return fmt.Errorf("postgres: journal of replica %s: not open (OpenJournal first)", replica)
	}
	if err := s.jd.Admit(ctx, s.applyPending); err != nil {
		return fmt.Errorf("postgres: journal of replica %s: %w", replica, err)
	}
	lines, err := storekit.Lines(nil, batch, lines)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	first, last := batch[0].Chain.Seq, batch[len(batch)-1].Chain.Seq
	if dup, err := j.head.Check(ctx, replica, first, last, func(ctx context.Context) (evidence.Link, error) {
		s.settle(ctx)
		return s.link(ctx, "chain_heads", replica)
	}, func() bool { return s.jd.Waits(replica) }); dup || err != nil {
		return err // journaled before (the writer tried the batch again), or a conflict
	}
	j.mu.Lock()
	waiting, err := s.journalLocked(ctx, j, batch, first, last, lines)
	j.mu.Unlock()
	if err != nil {
		return err
	}
	s.jd.Committed(ctx, waiting, s.applyPending)
	return nil
}

// journalLocked is Journal's commit, with j.mu held.
func (s *Store) journalLocked(ctx context.Context, j *journal, batch []*evidence.Record, first, last uint64, lines []byte) (int64, error) {
	if j.conn == nil || j.conn.IsClosed() {
		// The connection ended (a restart of the server): the lock with it.
		if j.conn != nil {
			j.conn.Close(context.WithoutCancel(ctx))
			j.conn = nil
		}
		if err := s.connect(ctx, j); err != nil {
			return 0, err
		}
	}
	switch head := j.head.Last(); {
	case last <= head:
		// Applied by the recovery of the reconnection.
		return s.jd.Len(), nil
	case first != head+1:
		// The head moved while this one reconnected.
		return 0, fmt.Errorf("%w: replica %s: the batch starts at seq %d, the journal's head is seq %d",
			evidence.ErrChainConflict, j.replica, first, head)
	}
	_, err := j.conn.Exec(ctx, `INSERT INTO journal (replica, first_seq, last_seq, records) VALUES ($1, $2, $3, $4)`,
		j.replica, int64(first), int64(last), lines)
	if isCode(err, "23505") {
		// A commit in doubt that went through: the row is the batch's.
		err = nil
	}
	if err != nil {
		return 0, classify(fmt.Errorf("postgres: journal of replica %s: %w", j.replica, err))
	}
	j.head.Advance(last)
	return s.jd.Add(batch), nil
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

// settle applies what is journaled before this Store reads or writes
// otherwise. A failure leaves the records journaled (the applier tries
// again), and the read sees what is applied.
func (s *Store) settle(ctx context.Context) {
	if s.jd.Len() > 0 {
		_ = s.applyPending(ctx)
	}
}

// applyPending moves the journaled records into the records, replica by
// replica in journal order, quarantining what the store refuses, and
// deletes the rows it applied.
func (s *Store) applyPending(ctx context.Context) error {
	s.jd.ApplyMu.Lock()
	defer s.jd.ApplyMu.Unlock()
	_, _, err := s.jd.ApplyTaken(func(replica string, run []*evidence.Record) error {
		quarantined := func(int, error) {}
		if j := s.journal(replica); j != nil {
			quarantined = j.quarantined
		}
		if err := s.applyRun(ctx, run, quarantined); err != nil {
			return err
		}
		// Left behind when this fails: the next apply's deletes it, and a
		// recovery skips it (it is at or before the head).
		s.pool.Exec(ctx, `DELETE FROM journal WHERE replica = $1 AND last_seq <= $2`, replica, int64(run[len(run)-1].Chain.Seq))
		return nil
	})
	return err
}

// applyRun appends one replica's journaled records, those not stored yet,
// quarantining what the store refuses and saying so to quarantined.
func (s *Store) applyRun(ctx context.Context, recs []*evidence.Record, quarantined func(n int, why error)) error {
	head, err := s.link(ctx, "chain_heads", recs[0].Replica)
	if err != nil {
		return err
	}
	return storekit.ApplyRun(ctx, direct{s}, head, recs, quarantined, isolateTimeout)
}

// isolateTimeout bounds each write of an apply's isolating of a refused
// record (evidence.AppendIsolating).
const isolateTimeout = 30 * time.Second

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
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT replica FROM journal`)
	if err != nil {
		return fmt.Errorf("postgres: reading the journal: %w", err)
	}
	replicas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("postgres: reading the journal: %w", err)
	}
	for _, r := range replicas {
		conn, err := s.lockReplica(ctx, r, 0)
		if errors.Is(err, evidence.ErrWriterLocked) {
			continue // its writer is alive, and applies it
		}
		if err != nil {
			return err
		}
		err = s.recoverJournal(ctx, r, func(int, error) {})
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
	}
	return nil
}

// recoverJournal applies replica's journaled records past its head
// (quarantining those the store refuses) and deletes its journal's rows.
// The caller holds the replica's lock.
func (s *Store) recoverJournal(ctx context.Context, replica string, quarantined func(n int, why error)) error {
	rows, err := s.pool.Query(ctx, `SELECT records FROM journal WHERE replica = $1 ORDER BY first_seq`, replica)
	if err != nil {
		return fmt.Errorf("postgres: reading the journal of replica %s: %w", replica, err)
	}
	var recs []*evidence.Record
	var lines []byte
	_, err = pgx.ForEachRow(rows, []any{&lines}, func() error {
		rs, err := storekit.ReadLines(lines)
		recs = append(recs, rs...)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: reading the journal of replica %s: %w", replica, err)
	}
	if len(recs) == 0 {
		return nil
	}
	head, err := s.link(ctx, "chain_heads", replica)
	if err != nil {
		return err
	}
	// Rows hold runs of the chain: a gap is between rows.
	keep := func(missing uint64, after []*evidence.Record) (error, error) {
		if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO journal_unchained (replica, first_seq, last_seq, records)
				SELECT replica, first_seq, last_seq, records FROM journal WHERE replica = $1 AND first_seq > $2`, replica, int64(missing)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM journal WHERE replica = $1 AND first_seq > $2`, replica, int64(missing))
			return err
		}); err != nil {
			return nil, fmt.Errorf("keeping the journal of replica %s: %w", replica, err)
		}
		return storekit.Unchained(replica, after, missing, "table journal_unchained"), nil
	}
	apply := func(ctx context.Context, run []*evidence.Record) error { return s.applyRun(ctx, run, quarantined) }
	if err := storekit.Recover(ctx, replica, head, recs, quarantined, keep, apply); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	head, err = s.link(ctx, "chain_heads", replica)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM journal WHERE replica = $1 AND last_seq <= $2`, replica, int64(head.Seq)); err != nil {
		return fmt.Errorf("postgres: emptying the journal of replica %s: %w", replica, err)
	}
	return nil
}

// closeJournals lets every journal's lock go (their connections end).
func (s *Store) closeJournals() {
	s.journalsMu.Lock()
	defer s.journalsMu.Unlock()
	for _, j := range s.journals {
		j.mu.Lock()
		if j.conn != nil {
			j.conn.Close(context.Background())
		}
		j.mu.Unlock()
	}
	s.journals = nil
}

var _ evidence.Journaler = (*Store)(nil)
