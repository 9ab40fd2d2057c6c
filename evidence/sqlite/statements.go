package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/meshproof/meshproof/evidence"
)

// statements are the writer's prepared statements, reused by every batch:
// inserts of a full chunk of rows and of one row (for the rest of a batch).
type statements struct {
	head, setHead           *sql.Stmt
	shape, newShape         *sql.Stmt
	rollupKey, newRollupKey *sql.Stmt
	edge, newEdge           *sql.Stmt
	closed, setClosed       *sql.Stmt
	closeHours              *sql.Stmt
	insertOne               *sql.Stmt
	storedIDs, storedID     *sql.Stmt
	idRange                 *sql.Stmt
	upsertChunk, upsertOne  *sql.Stmt
	putTile                 *sql.Stmt
	appendHead              *sql.Stmt
}

// The inserts are OR FAIL rather than the default OR ABORT: a multi-row
// ABORT statement keeps a statement journal so that it can undo its own
// earlier rows, which cost an eighth of the write path's CPU; FAIL keeps
// none, and an error rolls the whole transaction back anyway.
const upsertSQL = `INSERT OR FAIL INTO rollups (span, minute, key, count, first_ns, last_ns, example_id) VALUES %s
	ON CONFLICT DO UPDATE SET count = count + excluded.count,
		first_ns = min(first_ns, excluded.first_ns), last_ns = max(last_ns, excluded.last_ns)`

// closeHoursSQL adds the rows of span ?4 in [?2, ?3) to the buckets of span
// ?1 (the bucket of a minute m is m - (m mod span), the modulo taken
// non-negative as floorDiv does).
const closeHoursSQL = `INSERT OR FAIL INTO rollups (span, minute, key, count, first_ns, last_ns, example_id)
	SELECT ?1, minute - ((minute % ?1) + ?1) % ?1 AS bucket, key, sum(count), min(first_ns), max(last_ns), min(example_id)
	FROM rollups WHERE span = ?4 AND minute >= ?2 AND minute < ?3 GROUP BY bucket, key
	ON CONFLICT DO UPDATE SET count = count + excluded.count,
		first_ns = min(first_ns, excluded.first_ns), last_ns = max(last_ns, excluded.last_ns)`

func (st *statements) prepare(ctx context.Context, db *sql.DB) error {
	insert := `INSERT OR FAIL INTO records (` + recordColumns + `) VALUES `
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.head, `SELECT seq, hash FROM chain_heads WHERE replica = ?`},
		{&st.shape, `SELECT id FROM shapes WHERE hash = ?`},
		{&st.newShape, `INSERT OR FAIL INTO shapes (hash, method, body) VALUES (?, ?, ?) RETURNING id`},
		{&st.setHead, `INSERT INTO chain_heads (replica, seq, hash, root) VALUES (?, ?, ?, ?)
			ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, root = excluded.root`},
		{&st.rollupKey, `SELECT id FROM rollup_keys WHERE replica = ? AND source = ? AND dst_host = ?
			AND dst_principal = ? AND verdict = ? AND allowed = ?`},
		{&st.newRollupKey, `INSERT INTO rollup_keys (replica, source, dst_host, dst_principal, verdict, allowed)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`},
		{&st.edge, findEdgeSQL},
		{&st.newEdge, newEdgeSQL},
		{&st.closed, `SELECT minute FROM rollup_closed`},
		{&st.setClosed, `UPDATE rollup_closed SET minute = ?`},
		{&st.closeHours, closeHoursSQL},
		{&st.storedIDs, `SELECT id FROM records WHERE ` + idsWhere(idsChunk) + ` LIMIT 1`},
		{&st.storedID, `SELECT id FROM records WHERE ` + idsWhere(1)},
		{&st.idRange, idRangeSQL},
		{&st.insertOne, insert + rows(1, recordParams)},
		{&st.upsertChunk, fmt.Sprintf(upsertSQL, rows(rollupChunk, rollupParams))},
		{&st.upsertOne, fmt.Sprintf(upsertSQL, rows(1, rollupParams))},
		{&st.appendHead, `SELECT seq, hash, seal_through FROM chain_heads WHERE replica = ?`},
		{&st.putTile, `INSERT INTO tlog_tiles (replica, level, n, hashes) VALUES (?, ?, ?, ?)
			ON CONFLICT (replica, level, n) DO UPDATE SET hashes = excluded.hashes`},
	} {
		var err error
		if *p.stmt, err = db.PrepareContext(ctx, p.sql); err != nil {
			return fmt.Errorf("preparing statements: %w", err)
		}
	}
	return nil
}

// rows is n placeholder tuples of width params: "(?, ?), (?, ?)".
func rows(n, params int) string {
	tuple := "(" + strings.Repeat("?, ", params-1) + "?)"
	return strings.Repeat(tuple+", ", n-1) + tuple
}

func (st *statements) close() {
	for _, s := range []**sql.Stmt{&st.head, &st.shape, &st.newShape, &st.setHead, &st.rollupKey, &st.newRollupKey,
		&st.edge, &st.newEdge, &st.closed, &st.setClosed, &st.closeHours, &st.storedIDs, &st.storedID, &st.idRange, &st.insertOne, &st.upsertChunk, &st.upsertOne, &st.putTile, &st.appendHead} {
		if *s != nil {
			(*s).Close()
			*s = nil
		}
	}
}

// link reads a (seq, hash) row; no row is the zero Link.
func link(row *sql.Row) (evidence.Link, error) {
	var seq int64
	var hash string
	err := row.Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return evidence.Link{}, nil
	}
	if err != nil {
		return evidence.Link{}, err
	}
	return evidence.Link{Seq: uint64(seq), Hash: hash}, nil
}
