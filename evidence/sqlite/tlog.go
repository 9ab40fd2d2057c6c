package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// The transparency log of each replica (see evidence/tlog.go): tlog_logs
// says where its leaves start, tlog_tiles keeps its tiles above level 0,
// complete and partial (level 0 is the records' own leaf hashes, recomputed
// when a proof needs them; since schema 6 no tile of level 0 is stored but
// the part retention keeps of a tile whose first records it removed).
// tlog_checkpoints keeps the signed checkpoints.
var logMigration = []string{
	// The log's root as the last batch left it, beside the head: a record
	// moved or swapped behind the store's back no longer rebuilds it.
	`ALTER TABLE chain_heads ADD COLUMN root BLOB NOT NULL DEFAULT x''`,
	`CREATE TABLE tlog_logs (
		replica   TEXT    NOT NULL PRIMARY KEY,
		base      INTEGER NOT NULL,
		base_hash TEXT    NOT NULL
	) WITHOUT ROWID`,
	`CREATE TABLE tlog_tiles (
		replica TEXT    NOT NULL,
		level   INTEGER NOT NULL,
		n       INTEGER NOT NULL,
		hashes  BLOB    NOT NULL,
		PRIMARY KEY (replica, level, n)
	)`,
	`CREATE TABLE tlog_checkpoints (
		replica TEXT    NOT NULL,
		size    INTEGER NOT NULL,
		time_ns INTEGER NOT NULL,
		note    BLOB    NOT NULL,
		PRIMARY KEY (replica, size)
	)`,
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// logBase reads where replica's log starts; ok is false when it has none.
func logBase(ctx context.Context, q querier, replica string) (base uint64, baseHash string, ok bool, err error) {
	var b int64
	err = q.QueryRowContext(ctx, `SELECT base, base_hash FROM tlog_logs WHERE replica = ?`, replica).Scan(&b, &baseHash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("evidence sqlite: the log of %s: %w", replica, err)
	}
	return uint64(b), baseHash, true, nil
}

// readTiles reads tiles of replica's log whose leaves start after seq
// base (see evidence.ReadLogTilesFrom): level 0 is the leaf hashes of the
// records (recomputed, compact.go) and of the quarantined ones (kept),
// after the part of a tile retention stored when it removed the records
// before.
func (s *Store) readTiles(ctx context.Context, q querier, replica string, base uint64, tiles []tlog.Tile) ([][]byte, error) {
	return evidence.ReadLogTilesFrom(tiles, base, func(t tlog.Tile) ([]byte, error) {
		var data []byte
		err := q.QueryRowContext(ctx, `SELECT hashes FROM tlog_tiles WHERE replica = ? AND level = ? AND n = ?`,
			replica, t.L, t.N).Scan(&data)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("evidence sqlite: the log of %s: %w", replica, err)
		}
		return data, nil
	}, func(from, to int64) ([]tlog.Hash, bool, error) {
		hs, ok, err := s.leafHashes(ctx, q, replica, from, to)
		if err != nil {
			return nil, false, fmt.Errorf("evidence sqlite: the log of %s: %w", replica, err)
		}
		return hs, ok, nil
	})
}

// leafHashes are the leaf hashes of replica's seqs [from, to): ok is false
// when one is missing.
func (s *Store) leafHashes(ctx context.Context, q querier, replica string, from, to int64) ([]tlog.Hash, bool, error) {
	// A quarantined record keeps its leaf (see Quarantine).
	rows, err := q.QueryContext(ctx, `SELECT `+rowCols+`, NULL FROM records WHERE `+repRange+`
		UNION ALL SELECT seq, 0, 0, NULL, NULL, '', NULL, hash FROM quarantine WHERE replica = ?1 AND seq > ?2 AND seq <= ?3
		ORDER BY 1`, replica, from-1, to-1)
	if err != nil {
		return nil, false, err
	}
	var ws []row
	var kept []sql.NullString
	for rows.Next() {
		var w row
		var hash sql.NullString
		if err := rows.Scan(append(w.dest(), &hash)...); err != nil {
			rows.Close()
			return nil, false, err
		}
		ws, kept = append(ws, w), append(kept, hash)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	// Joined after the rows are closed: a shape missing from the cache is
	// read through q, which may be the writer's one connection.
	out := make([]tlog.Hash, 0, len(ws))
	for i := range ws {
		if ws[i].seq != from+int64(i) {
			return nil, false, nil
		}
		hash := kept[i].String
		if !kept[i].Valid {
			r, err := join(ctx, q, s.shapes, &ws[i])
			if err != nil && !errors.Is(err, compact.ErrCheck) {
				return nil, false, err
			}
			hash = r.Chain.Hash
		}
		h, err := evidence.ParseHexHash(hash)
		if err != nil {
			return nil, false, nil
		}
		out = append(out, h)
	}
	return out, int64(len(out)) == to-from, nil
}

// keepLeafTile stores, before retention removes the records up to seq, the
// part of the level-0 tile they end in, which the log still needs.
func (s *Store) keepLeafTile(ctx context.Context, tx *sql.Tx, replica string, base, seq uint64) error {
	leaves := int64(seq - base)
	n := leaves >> evidence.TileHeight
	w := int(leaves - n<<evidence.TileHeight)
	if w == 0 {
		return nil
	}
	data, err := s.readTiles(ctx, tx, replica, base, []tlog.Tile{{H: evidence.TileHeight, L: 0, N: n, W: w}})
	if err != nil {
		return err
	}
	if data[0] == nil {
		return nil // already gone: Verify will say so
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO tlog_tiles (replica, level, n, hashes) VALUES (?, 0, ?, ?)
		ON CONFLICT (replica, level, n) DO UPDATE SET hashes = excluded.hashes WHERE length(excluded.hashes) > length(hashes)`,
		replica, n, data[0]); err != nil {
		return fmt.Errorf("evidence sqlite: the log of %s: %w", replica, err)
	}
	return nil
}

// appendLog adds the batch's version-2 records to replica's log, in tx: the
// log is made at the first of them (its base the seq before, which may end
// a version-1 chain), and the tiles a batch completes, with the partial
// ones above level 0, are written. The writer keeps each log's edge between
// batches (s.logs); a failed batch drops it, to be read again.
//
// ahead, when not nil, is the edge of the log grown by the batch already
// (growAhead); appendLog takes it when it was the edge of the size the
// batch follows.
func (s *Store) appendLog(ctx context.Context, tx *sql.Tx, head evidence.Link, batch []*evidence.Record, ahead *evidence.Growth) error {
	replica := batch[0].Replica
	k := 0
	for k < len(batch) && batch[k].Chain.Version != evidence.CanonicalV2 {
		k++
	}
	base, _, ok, err := logBase(ctx, tx, replica)
	if err != nil {
		return err
	}
	if k > 0 && ok {
		return fmt.Errorf("evidence sqlite: record %s (seq %d) has canonical encoding v1 after the replica's log began at seq %d",
			batch[0].ID, batch[0].Chain.Seq, base+1)
	}
	if k == len(batch) {
		return nil // a version-1 chain before any log
	}
	if !ok {
		base = batch[k].Chain.Seq - 1
		baseHash := head.Hash
		if k > 0 {
			baseHash = batch[k-1].Chain.Hash
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO tlog_logs (replica, base, base_hash) VALUES (?, ?, ?)`,
			replica, int64(base), baseHash); err != nil {
			return fmt.Errorf("evidence sqlite: starting the log of %s: %w", replica, err)
		}
	}
	size := int64(batch[k].Chain.Seq - base - 1)
	kept := s.logs[replica]
	delete(s.logs, replica)
	edge, tiles, err := evidence.GrowEdge(ahead, kept, size, batch[k:], func() (*evidence.TreeEdge, error) {
		return s.loadEdge(ctx, tx, replica, base, size)
	})
	if err != nil {
		return err
	}
	for _, t := range tiles {
		if t.L == 0 {
			continue // the records' hashes are this tile
		}
		if _, err := tx.StmtContext(ctx, s.st.putTile).ExecContext(ctx, replica, t.L, t.N, t.Data); err != nil {
			return fmt.Errorf("evidence sqlite: the log of %s: %w", replica, err)
		}
	}
	s.pendingLog, s.pendingEdge = replica, edge
	return nil
}

// growAhead grows the replica's edge the writer keeps by the batch, on
// another goroutine; nil when it keeps none or the batch does not start
// with a log leaf. The edge leaves s.logs: appendLog takes it back once
// it knows the batch follows it, and a failed batch drops it.
func (s *Store) growAhead(batch []*evidence.Record) *evidence.Growth {
	replica := batch[0].Replica
	edge := s.logs[replica]
	if edge == nil || batch[0].Chain.Version != evidence.CanonicalV2 {
		return nil
	}
	delete(s.logs, replica)
	return evidence.GrowAhead(edge, batch)
}

// logRoot is the root to write with the head: the edge's after appendLog,
// none for a chain without a log.
func (s *Store) logRoot() ([]byte, error) {
	if s.pendingEdge == nil {
		return []byte{}, nil
	}
	root, err := s.pendingEdge.Root()
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: the root of %s: %w", s.pendingLog, err)
	}
	return root[:], nil
}

// loadEdge reads the edge of replica's log of size leaves.
func (s *Store) loadEdge(ctx context.Context, q querier, replica string, base uint64, size int64) (*evidence.TreeEdge, error) {
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
		return nil, fmt.Errorf("evidence sqlite: the log of %s: %w", replica, err)
	}
	return edge, nil
}

// TreeHead returns replica's log as its last write left it: its size is the
// head's seq past the base, its root the one written with the head.
func (s *Store) TreeHead(ctx context.Context, replica string) (evidence.TreeHead, bool, error) {
	s.settle(ctx)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return evidence.TreeHead{}, false, fmt.Errorf("evidence sqlite: %w", err)
	}
	defer tx.Rollback()
	base, baseHash, ok, err := logBase(ctx, tx, replica)
	if err != nil || !ok {
		return evidence.TreeHead{}, false, err
	}
	var seq int64
	var root []byte
	err = tx.QueryRowContext(ctx, `SELECT seq, root FROM chain_heads WHERE replica = ?`, replica).Scan(&seq, &root)
	if errors.Is(err, sql.ErrNoRows) {
		seq, root = int64(base), make([]byte, tlog.HashSize)
	} else if err != nil {
		return evidence.TreeHead{}, false, fmt.Errorf("evidence sqlite: the head of %s: %w", replica, err)
	}
	th, ok, err := evidence.MakeTreeHead(replica, base, baseHash, uint64(seq), root)
	if err != nil || !ok {
		return th, ok, err
	}
	if th.Rollups, err = sealHead(ctx, tx, replica); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return th, false, fmt.Errorf("evidence sqlite: the head of %s: %w", replica, err)
	}
	return th, true, nil
}

// ReadTiles returns stored tiles of replica's log (see evidence.LogReader).
func (s *Store) ReadTiles(ctx context.Context, replica string, tiles []tlog.Tile) ([][]byte, error) {
	s.settle(ctx)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: %w", err)
	}
	defer tx.Rollback()
	base, _, ok, err := logBase(ctx, tx, replica)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("replica %s: %w", replica, evidence.ErrNoLog)
	}
	return s.readTiles(ctx, tx, replica, base, tiles)
}

// SaveCheckpoint keeps a signed checkpoint of replica's log (see
// evidence.CheckpointStore). Saving one of a size already kept is a no-op.
func (s *Store) SaveCheckpoint(ctx context.Context, c evidence.SignedCheckpoint) error {
	s.settle(ctx)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.ExecContext(ctx, `INSERT INTO tlog_checkpoints (replica, size, time_ns, note) VALUES (?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, c.Replica, c.Size, c.Time.UnixNano(), c.Note); err != nil {
		return fmt.Errorf("evidence sqlite: saving a checkpoint of %s: %w", c.Replica, err)
	}
	return nil
}

// Checkpoints returns replica's signed checkpoints, newest (largest) first,
// at most limit; at most size leaves when size > 0.
func (s *Store) Checkpoints(ctx context.Context, replica string, size int64, limit int) ([]evidence.SignedCheckpoint, error) {
	s.settle(ctx)
	if size <= 0 {
		size = 1 << 62
	}
	rows, err := s.r.QueryContext(ctx, `SELECT size, time_ns, note FROM tlog_checkpoints WHERE replica = ? AND size <= ?
		ORDER BY size DESC LIMIT ?`, replica, size, limit)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: checkpoints of %s: %w", replica, err)
	}
	defer rows.Close()
	var out []evidence.SignedCheckpoint
	for rows.Next() {
		c := evidence.SignedCheckpoint{Replica: replica}
		var tns int64
		if err := rows.Scan(&c.Size, &tns, &c.Note); err != nil {
			return nil, fmt.Errorf("evidence sqlite: checkpoints of %s: %w", replica, err)
		}
		c.Time = time.Unix(0, tns).UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}
