package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

func TestConformance(t *testing.T) {
	evidencetest.Run(t, factory)
}

// factory makes a store in a fresh file, with raw access for tampering.
func factory(t testing.TB) evidencetest.Backend {
	path := filepath.Join(t.TempDir(), "evidence.db")
	current := open(t, path)
	t.Cleanup(func() { current.Close() })
	raw := rawDB(t, path)
	return evidencetest.Backend{
		Store:  current,
		Tamper: tamperer{raw},
		Reopen: func(t testing.TB) evidence.Store {
			if err := current.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			current = open(t, path)
			return current
		},
	}
}

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, evidence.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

// rawDB is a connection to the file behind the store's back.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// tamperer edits the SQLite file directly, as someone with the file would.
type tamperer struct{ db *sql.DB }

func (tm tamperer) body(ctx context.Context, id string) (*evidence.Record, error) {
	var body []byte
	var seq int64
	var hash string
	if err := tm.db.QueryRowContext(ctx, `SELECT seq, hash, body FROM records WHERE id = ?`, id).Scan(&seq, &hash, &body); err != nil {
		return nil, fmt.Errorf("record %s: %w", id, err)
	}
	return evidence.DecodeStored(id, body, uint64(seq), hash)
}

func (tm tamperer) SetBody(ctx context.Context, id string, body []byte, rehash bool) error {
	if rehash {
		_, err := tm.db.ExecContext(ctx, `UPDATE records SET body = ?, hash = ? WHERE id = ?`, body, evidence.LeafHashHex(body), id)
		return err
	}
	_, err := tm.db.ExecContext(ctx, `UPDATE records SET body = ? WHERE id = ?`, body, id)
	return err
}

func (tm tamperer) Body(ctx context.Context, id string) ([]byte, error) {
	var body []byte
	err := tm.db.QueryRowContext(ctx, `SELECT body FROM records WHERE id = ?`, id).Scan(&body)
	return body, err
}

func (tm tamperer) SetVerdict(ctx context.Context, id string, v evidence.Verdict) error {
	r, err := tm.body(ctx, id)
	if err != nil {
		return err
	}
	r.Verdict = v
	body, _ := evidence.StoredBody(r)
	_, err = tm.db.ExecContext(ctx, `UPDATE records SET body = ? WHERE id = ?`, body, id)
	return err
}

// SetVerdictColumn moves the record to the edge that differs from its own
// by the verdict only, as queries by verdict would then find it.
func (tm tamperer) SetVerdictColumn(ctx context.Context, id string, v evidence.Verdict) error {
	if _, err := tm.db.ExecContext(ctx, `INSERT OR IGNORE INTO edges (replica, src_principal, src_td, src_ns,
			dst_principal, dst_td, dst_ns, host, verdict, allowed)
		SELECT replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, ?, allowed
		FROM edges WHERE id = (SELECT edge FROM records WHERE id = ?)`, string(v), id); err != nil {
		return err
	}
	_, err := tm.db.ExecContext(ctx, `UPDATE records SET edge = (SELECT n.id FROM edges AS e JOIN edges AS n
			ON n.replica = e.replica AND n.src_principal = e.src_principal AND n.src_td = e.src_td
			AND n.src_ns = e.src_ns AND n.dst_principal = e.dst_principal AND n.dst_td = e.dst_td
			AND n.dst_ns = e.dst_ns AND n.host = e.host AND n.allowed = e.allowed AND n.verdict = ?
		WHERE e.id = records.edge) WHERE id = ?`, string(v), id)
	return err
}

// edgeOf is the number of r's edge, made if new, as the store would.
func edgeOf(ctx context.Context, tx interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, c evidence.Columns) (int64, error) {
	args := []any{c.Replica, c.SourcePrincipal, c.SourceTrustDomain, c.SourceNamespace, c.DestinationPrincipal,
		c.DestinationTrustDomain, c.DestinationNamespace, c.Host, c.Verdict, c.Allowed}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO edges (replica, src_principal, src_td, src_ns,
		dst_principal, dst_td, dst_ns, host, verdict, allowed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...); err != nil {
		return 0, err
	}
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM edges WHERE replica = ? AND src_principal = ? AND src_td = ?
		AND src_ns = ? AND dst_principal = ? AND dst_td = ? AND dst_ns = ? AND host = ? AND verdict = ? AND allowed = ?`,
		args...).Scan(&id)
	return id, err
}

func (tm tamperer) Delete(ctx context.Context, id string) error {
	res, err := tm.db.ExecContext(ctx, `DELETE FROM records WHERE id = ?`, id)
	if n, _ := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("record %s: %d rows deleted", id, n)
	}
	return err
}

// SwapContent puts each record in the other's row: the rows keep their
// replica and seq, and so does each record's chain seq.
func (tm tamperer) SwapContent(ctx context.Context, idA, idB string) error {
	a, err := tm.body(ctx, idA)
	if err != nil {
		return err
	}
	b, err := tm.body(ctx, idB)
	if err != nil {
		return err
	}
	a.Chain.Seq, b.Chain.Seq = b.Chain.Seq, a.Chain.Seq
	tx, err := tm.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Park A's row under a free id, so the unique id index never sees two.
	if _, err := tx.ExecContext(ctx, `UPDATE records SET id = 'swapping' WHERE id = ?`, idA); err != nil {
		return err
	}
	if err := rewrite(ctx, tx, idB, a); err != nil {
		return err
	}
	if err := rewrite(ctx, tx, "swapping", b); err != nil {
		return err
	}
	return tx.Commit()
}

// rewrite stores r, content and columns, in the row now holding id.
func rewrite(ctx context.Context, tx *sql.Tx, id string, r *evidence.Record) error {
	body, _ := evidence.StoredBody(r)
	c := evidence.ColumnsOf(r)
	edge, err := edgeOf(ctx, tx, c)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE records SET id = ?, time_ns = ?, edge = ?, method = ?, path = ?,
		request_id = ?, hash = ?, body = ? WHERE id = ?`,
		c.ID, c.TimeNS, edge, c.Method, c.Path, c.RequestID, r.Chain.Hash, body, id)
	return err
}

func (tm tamperer) AppendForged(ctx context.Context, r *evidence.Record) error {
	return tm.insert(ctx, r, evidence.ColumnsOf(r).TimeNS)
}

func (tm tamperer) AppendStoredAt(ctx context.Context, r *evidence.Record, timeNS int64) error {
	if err := tm.insert(ctx, r, timeNS); err != nil {
		return err
	}
	// The log as the store would have kept it (its base is 0 here).
	rows, err := tm.db.QueryContext(ctx, `SELECT hash FROM records WHERE replica = ? ORDER BY seq`, r.Replica)
	if err != nil {
		return err
	}
	var hexes []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return err
		}
		hexes = append(hexes, h)
	}
	rows.Close()
	tiles, root, err := evidence.BuildLog(hexes)
	if err != nil {
		return err
	}
	for _, t := range tiles {
		if _, err := tm.db.ExecContext(ctx, `INSERT INTO tlog_tiles (replica, level, n, hashes) VALUES (?, ?, ?, ?)
			ON CONFLICT (replica, level, n) DO UPDATE SET hashes = excluded.hashes`, r.Replica, t.L, t.N, t.Data); err != nil {
			return err
		}
	}
	_, err = tm.db.ExecContext(ctx, `UPDATE chain_heads SET seq = ?, hash = ?, root = ? WHERE replica = ?`,
		int64(r.Chain.Seq), r.Chain.Hash, root[:], r.Replica)
	return err
}

func (tm tamperer) insert(ctx context.Context, r *evidence.Record, timeNS int64) error {
	body, _ := evidence.StoredBody(r)
	c := evidence.ColumnsOf(r)
	c.TimeNS = timeNS
	edge, err := edgeOf(ctx, tm.db, c)
	if err != nil {
		return err
	}
	_, err = tm.db.ExecContext(ctx, `INSERT INTO records (replica, seq, id, time_ns, edge, method, path, request_id, hash, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Replica, c.Seq, c.ID, c.TimeNS, edge, c.Method, c.Path, c.RequestID, r.Chain.Hash, body)
	return err
}

// TestOpenFailureIsNil: a store that fails to open is a nil
// evidence.Store, not a nil *Store in a non-nil interface, which a caller
// (the spool's deferred store) would take for an open one and crash on.
func TestOpenFailureIsNil(t *testing.T) {
	s, err := evidence.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "missing", "dir", "x.db"), evidence.Options{})
	if err == nil || s != nil {
		t.Fatalf("Open of a file in a missing directory = %v, %v; want a nil store and an error", s, err)
	}
}

func (tm tamperer) FlipRollupVerdict(ctx context.Context, from, to evidence.Verdict) error {
	res, err := tm.db.ExecContext(ctx, `UPDATE rollup_keys SET verdict = ?2 WHERE id = (SELECT k.id FROM rollup_keys AS k
		WHERE k.verdict = ?1 AND NOT EXISTS (SELECT 1 FROM rollup_keys AS o WHERE o.replica = k.replica AND o.source = k.source
			AND o.dst_host = k.dst_host AND o.dst_principal = k.dst_principal AND o.allowed = k.allowed AND o.verdict = ?2)
		LIMIT 1)`, string(from), string(to))
	if n, _ := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("no rollup group of %s to flip", from)
	}
	return err
}

func (tm tamperer) exactlyOne(res sql.Result, err error, what string) error {
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%s: %d rows changed, want 1", what, n)
	}
	return nil
}

func (tm tamperer) AddToRollup(ctx context.Context, span int64, at time.Time, delta int64) error {
	res, err := tm.db.ExecContext(ctx, `UPDATE rollups SET count = count + ?3 WHERE (span, minute, key) =
		(SELECT span, minute, key FROM rollups WHERE span = ?1 AND minute >= ?2 ORDER BY minute, key LIMIT 1)`,
		span, at.Unix()/60, delta)
	return tm.exactlyOne(res, err, "no bucket to edit")
}

func (tm tamperer) DeleteSeal(ctx context.Context, replica string, hour int64) error {
	res, err := tm.db.ExecContext(ctx, `DELETE FROM rollup_seals WHERE replica = ? AND hour = ?`, replica, hour)
	return tm.exactlyOne(res, err, "no seal to remove")
}

func (tm tamperer) CutSeals(ctx context.Context, replica string, hour int64) error {
	var chain []byte
	if err := tm.db.QueryRowContext(ctx, `SELECT chain FROM rollup_seals WHERE replica = ? AND hour = ?`, replica, hour-1).Scan(&chain); err != nil {
		return err
	}
	for _, q := range []string{
		`DELETE FROM rollup_seals WHERE replica = ?1 AND hour >= ?2`,
		`DELETE FROM rollups WHERE span = 1 AND minute >= ?2 * 60 AND key IN (SELECT id FROM rollup_keys WHERE replica = ?1)`,
		`UPDATE chain_heads SET seal_through = ?2, seal_chain = ?3 WHERE replica = ?1`,
	} {
		if _, err := tm.db.ExecContext(ctx, q, replica, hour, chain); err != nil {
			return err
		}
	}
	return nil
}

func (tm tamperer) MoveRollupHorizon(ctx context.Context, at time.Time) error {
	m := at.Unix() / 60
	for _, q := range []string{
		`DELETE FROM rollups WHERE minute < ?1`,
		`DELETE FROM rollup_seals WHERE hour * 60 < ?1`,
		`INSERT INTO rollup_horizon (one, minute) VALUES (1, ?1) ON CONFLICT (one) DO UPDATE SET minute = excluded.minute`,
	} {
		if _, err := tm.db.ExecContext(ctx, q, m); err != nil {
			return err
		}
	}
	return nil
}
