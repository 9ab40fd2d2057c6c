package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
)

// The transparency log of each replica, as in the SQLite store (see
// migrations/0003_tlog.sql and 0005_compact.sql): the tiles above level 0
// are stored, complete or partial; level 0, the records' leaf hashes, is
// recomputed from the records (and a tile retention cut is stored, see
// keepLeafTile).

// rowsQuerier reads rows as a pool, a connection or a transaction does.
type rowsQuerier interface {
	querier
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// edges keeps each replica's log edge as this process's last batch left
// it. A batch holds its chain's head row locked, so one batch of a replica
// runs at a time; another process writing as the same replica only makes
// the edge stale, which its size shows.
type edges struct {
	mu sync.Mutex
	m  map[string]*evidence.TreeEdge
}

func (e *edges) take(replica string) *evidence.TreeEdge {
	e.mu.Lock()
	defer e.mu.Unlock()
	edge := e.m[replica]
	delete(e.m, replica)
	return edge
}

func (e *edges) put(replica string, edge *evidence.TreeEdge) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]*evidence.TreeEdge{}
	}
	e.m[replica] = edge
}

func logBase(ctx context.Context, q querier, replica string) (base uint64, baseHash string, ok bool, err error) {
	var b int64
	err = q.QueryRow(ctx, `SELECT base, base_hash FROM tlog_logs WHERE replica = $1`, replica).Scan(&b, &baseHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("postgres: the log of %s: %w", replica, err)
	}
	return uint64(b), baseHash, true, nil
}

// readTiles reads tiles of replica's log (see evidence.ReadLogTiles).
func (s *Store) readTiles(ctx context.Context, q rowsQuerier, replica string, base uint64, tiles []tlog.Tile) ([][]byte, error) {
	return evidence.ReadLogTiles(tiles, base, func(t tlog.Tile) ([]byte, error) {
		var data []byte
		err := q.QueryRow(ctx, `SELECT hashes FROM tlog_tiles WHERE replica = $1 AND level = $2 AND n = $3`,
			replica, t.L, t.N).Scan(&data)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("postgres: the log of %s: %w", replica, err)
		}
		return data, nil
	}, func(from, to int64) ([]string, bool, error) {
		hashes, ok, err := s.leafHashes(ctx, q, replica, from, to)
		if err != nil {
			return nil, false, fmt.Errorf("postgres: the log of %s: %w", replica, err)
		}
		return hashes, ok, nil
	})
}

// leafHashes are the chain hashes of replica's records of seqs [from, to),
// in seq order, recomputed from the records, and ok false when one is
// missing or does not decode. A quarantined record keeps its leaf (see
// Quarantine).
func (s *Store) leafHashes(ctx context.Context, q rowsQuerier, replica string, from, to int64) ([]string, bool, error) {
	rs, err := q.Query(ctx, "SELECT "+rowColumns+" FROM records WHERE chain >= "+chainBase("$1")+" | $2 AND chain < "+
		chainBase("$1")+" | $3 ORDER BY chain", replica, from, to)
	if err != nil {
		return nil, false, err
	}
	rows, err := collectRows(rs)
	if err == nil {
		err = s.read.resolve(ctx, q, rows)
	}
	if err != nil {
		return nil, false, err
	}
	bySeq := make(map[int64]string, len(rows))
	for _, r := range rows {
		rec, st := s.read.decodeRow(r)
		if st.Err != nil {
			return nil, false, nil
		}
		bySeq[r.seq] = leafHex(rec)
	}
	if int64(len(bySeq)) < to-from {
		qs, err := q.Query(ctx, `SELECT seq, hash FROM quarantine WHERE replica = $1 AND seq >= $2 AND seq < $3`, replica, from, to)
		if err != nil {
			return nil, false, err
		}
		var seq int64
		var hash string
		if _, err := pgx.ForEachRow(qs, []any{&seq, &hash}, func() error {
			bySeq[seq] = hash
			return nil
		}); err != nil {
			return nil, false, err
		}
	}
	out := make([]string, 0, to-from)
	for seq := from; seq < to; seq++ {
		h, ok := bySeq[seq]
		if !ok {
			return out, false, nil
		}
		out = append(out, h)
	}
	return out, true, nil
}

// keepLeafTile stores, before retention removes the records up to seq, the
// part of the level-0 tile they end in.
func (s *Store) keepLeafTile(ctx context.Context, tx pgx.Tx, replica string, seq int64) error {
	base, _, ok, err := logBase(ctx, tx, replica)
	if err != nil || !ok || uint64(seq) <= base {
		return err
	}
	leaves := int64(uint64(seq) - base)
	n := leaves >> evidence.TileHeight
	if w := int(leaves - n<<evidence.TileHeight); w > 0 {
		data, err := s.readTiles(ctx, tx, replica, base, []tlog.Tile{{H: evidence.TileHeight, L: 0, N: n, W: w}})
		if err != nil {
			return err
		}
		if data[0] != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO tlog_tiles AS t (replica, level, n, hashes) VALUES ($1, 0, $2, $3)
				ON CONFLICT (replica, level, n) DO UPDATE SET hashes = excluded.hashes
				WHERE length(excluded.hashes) > length(t.hashes)`, replica, n, data[0]); err != nil {
				return fmt.Errorf("postgres: the log of %s: %w", replica, err)
			}
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tlog_tiles WHERE replica = $1 AND level = 0 AND n < $2`, replica, n); err != nil {
		return fmt.Errorf("postgres: the log of %s: %w", replica, err)
	}
	return nil
}

// appendLog adds the batch's version-2 records to replica's log in tx, the
// tiles they change queued in b, and returns the root to write with the
// head (empty for a chain without a log), and the edge to keep once tx
// commits. ahead, when not nil, is the edge the writer kept, grown by the
// batch already (evidence.GrowAhead): it is taken when the batch follows
// it.
func (s *Store) appendLog(ctx context.Context, tx pgx.Tx, head evidence.Link, batch []*evidence.Record, ahead *evidence.Growth, b *pgx.Batch) ([]byte, *evidence.TreeEdge, error) {
	replica := batch[0].Replica
	k := 0
	for k < len(batch) && batch[k].Chain.Version != evidence.CanonicalV2 {
		k++
	}
	base, _, ok, err := logBase(ctx, tx, replica)
	if err != nil {
		return nil, nil, err
	}
	if k > 0 && ok {
		return nil, nil, fmt.Errorf("postgres: append: record %s (seq %d) has canonical encoding v1 after the replica's log began at seq %d",
			batch[0].ID, batch[0].Chain.Seq, base+1)
	}
	if k == len(batch) {
		return []byte{}, nil, nil
	}
	if !ok {
		base = batch[k].Chain.Seq - 1
		baseHash := head.Hash
		if k > 0 {
			baseHash = batch[k-1].Chain.Hash
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tlog_logs (replica, base, base_hash) VALUES ($1, $2, $3)`,
			replica, int64(base), baseHash); err != nil {
			return nil, nil, fmt.Errorf("postgres: starting the log of %s: %w", replica, err)
		}
	}
	size := int64(batch[k].Chain.Seq - base - 1)
	edge, tiles, err := evidence.GrowEdge(ahead, s.edges.take(replica), size, batch[k:], func() (*evidence.TreeEdge, error) {
		return s.loadEdge(ctx, tx, replica, base, size)
	})
	if err != nil {
		return nil, nil, err
	}
	for _, t := range tiles {
		if t.L == 0 {
			continue // the records' hashes are this tile
		}
		b.Queue(`INSERT INTO tlog_tiles (replica, level, n, hashes) VALUES ($1, $2, $3, $4)
			ON CONFLICT (replica, level, n) DO UPDATE SET hashes = excluded.hashes`, replica, t.L, t.N, t.Data)
	}
	root, err := edge.Root()
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: the root of %s: %w", replica, err)
	}
	return root[:], edge, nil
}

func (s *Store) loadEdge(ctx context.Context, q rowsQuerier, replica string, base uint64, size int64) (*evidence.TreeEdge, error) {
	coords := evidence.EdgeTiles(size)
	data, err := s.readTiles(ctx, q, replica, base, coords)
	if err != nil {
		return nil, err
	}
	stored := make(map[tlog.Tile][]byte, len(coords))
	for i, c := range coords {
		stored[c] = data[i]
	}
	edge, err := evidence.NewTreeEdge(size, stored)
	if err != nil {
		return nil, fmt.Errorf("postgres: the log of %s: %w", replica, err)
	}
	return edge, nil
}

// readTx runs fn in a read-only repeatable-read transaction: one snapshot.
func (s *Store) readTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return fn(tx)
}

// TreeHead returns replica's log as its last write left it.
func (s *Store) TreeHead(ctx context.Context, replica string) (th evidence.TreeHead, ok bool, err error) {
	s.settle(ctx)
	err = s.readTx(ctx, func(tx pgx.Tx) error {
		base, baseHash, has, err := logBase(ctx, tx, replica)
		if err != nil || !has {
			return err
		}
		var seq int64
		var root []byte
		err = tx.QueryRow(ctx, `SELECT seq, root FROM chain_heads WHERE replica = $1`, replica).Scan(&seq, &root)
		if errors.Is(err, pgx.ErrNoRows) {
			seq, root = int64(base), make([]byte, tlog.HashSize)
		} else if err != nil {
			return fmt.Errorf("postgres: the head of %s: %w", replica, err)
		}
		if th, ok, err = evidence.MakeTreeHead(replica, base, baseHash, uint64(seq), root); err != nil || !ok {
			return err
		}
		if th.Rollups, err = sealHead(ctx, tx, replica, ""); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("postgres: the head of %s: %w", replica, err)
		}
		return nil
	})
	return th, ok, err
}

// ReadTiles returns stored tiles of replica's log (see evidence.LogReader).
func (s *Store) ReadTiles(ctx context.Context, replica string, tiles []tlog.Tile) (out [][]byte, err error) {
	s.settle(ctx)
	err = s.readTx(ctx, func(tx pgx.Tx) error {
		base, _, ok, err := logBase(ctx, tx, replica)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("replica %s: %w", replica, evidence.ErrNoLog)
		}
		out, err = s.readTiles(ctx, tx, replica, base, tiles)
		return err
	})
	return out, err
}

// SaveCheckpoint keeps a signed checkpoint; one of a size already kept is
// a no-op.
func (s *Store) SaveCheckpoint(ctx context.Context, c evidence.SignedCheckpoint) error {
	s.settle(ctx)
	if _, err := s.pool.Exec(ctx, `INSERT INTO tlog_checkpoints (replica, size, time_ns, note) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`, c.Replica, c.Size, c.Time.UnixNano(), c.Note); err != nil {
		return fmt.Errorf("postgres: saving a checkpoint of %s: %w", c.Replica, err)
	}
	return nil
}

// Checkpoints returns replica's signed checkpoints, largest first.
func (s *Store) Checkpoints(ctx context.Context, replica string, size int64, limit int) ([]evidence.SignedCheckpoint, error) {
	s.settle(ctx)
	if size <= 0 {
		size = 1 << 62
	}
	rows, err := s.pool.Query(ctx, `SELECT size, time_ns, note FROM tlog_checkpoints WHERE replica = $1 AND size <= $2
		ORDER BY size DESC LIMIT $3`, replica, size, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: checkpoints of %s: %w", replica, err)
	}
	var out []evidence.SignedCheckpoint
	var c evidence.SignedCheckpoint
	var tns int64
	if _, err := pgx.ForEachRow(rows, []any{&c.Size, &tns, &c.Note}, func() error {
		out = append(out, evidence.SignedCheckpoint{Replica: replica, Size: c.Size, Time: time.Unix(0, tns).UTC(), Note: c.Note})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("postgres: checkpoints of %s: %w", replica, err)
	}
	return out, nil
}
