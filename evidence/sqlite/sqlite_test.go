package sqlite_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
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

// tamperer edits the SQLite file directly, as someone with the file would
// (schema 6: the record's shape in the shapes table, its columns and rest
// in its row).
type tamperer struct{ db *sql.DB }

type execQuerier interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// record joins the stored record with id, as the store reads it.
func (tm tamperer) record(ctx context.Context, id string) (*evidence.Record, error) {
	return joinRow(ctx, tm.db, `WHERE r.id = ?`, compact.IDKey(id))
}

func joinRow(ctx context.Context, q execQuerier, where string, args ...any) (*evidence.Record, error) {
	var seq, tns int64
	var idKey, rid any
	var path string
	var shape, rest []byte
	if err := q.QueryRowContext(ctx, `SELECT r.seq, r.time_ns, r.id, r.rid, r.path, s.body, r.rest
		FROM records AS r JOIN shapes AS s ON s.id = r.shape `+where, args...).Scan(&seq, &tns, &idKey, &rid, &path, &shape, &rest); err != nil {
		return nil, fmt.Errorf("record %v: %w", args, err)
	}
	shape, err := sqlite.UnpackShape(shape)
	if err != nil {
		return nil, err
	}
	id, err := compact.IDOfKey(idKey)
	if err != nil {
		return nil, err
	}
	reqID, err := compact.RequestIDOfKey(rid)
	if err != nil {
		return nil, err
	}
	return compact.JoinStored(shape, rest, compact.Outside{ID: id, TimeNS: tns, RequestID: reqID, Path: path, Seq: uint64(seq)})
}

// shapeOf is the number of a shape's bytes, stored if new.
func shapeOf(ctx context.Context, q execQuerier, shape []byte, method string) (int64, error) {
	sum := sha256.Sum256(shape)
	if _, err := q.ExecContext(ctx, `INSERT OR IGNORE INTO shapes (hash, method, body) VALUES (?, ?, ?)`, sum[:], method, sqlite.PackShape(shape)); err != nil {
		return 0, err
	}
	var id int64
	err := q.QueryRowContext(ctx, `SELECT id FROM shapes WHERE hash = ?`, sum[:]).Scan(&id)
	return id, err
}

// SetBody stores body as the record's shape (a shape row of its own), as
// an edit of the stored JSON would be; with rehash its rest's check is
// made to match the record the edited shape decodes to, leniently.
func (tm tamperer) SetBody(ctx context.Context, id string, body []byte, rehash bool) error {
	r, err := tm.record(ctx, id)
	if err != nil {
		return err
	}
	if rehash {
		var edited evidence.Record
		if err := json.Unmarshal(body, &edited); err != nil {
			return err
		}
		edited.ID, edited.Time, edited.RequestID, edited.StreamID, edited.TraceID = r.ID, r.Time, r.RequestID, r.StreamID, r.TraceID
		edited.Source.Port, edited.Decision.DecisionID, edited.Request.Path, edited.Amends = r.Source.Port, r.Decision.DecisionID, r.Request.Path, r.Amends
		r.Chain.Hash = evidence.LeafHashHex(edited.CanonicalJSON())
	}
	rest, err := compact.StoredRest(r)
	if err != nil {
		return err
	}
	shape, err := shapeOf(ctx, tm.db, body, r.Request.Method)
	if err != nil {
		return err
	}
	_, err = tm.db.ExecContext(ctx, `UPDATE records SET shape = ?, rest = ? WHERE id = ?`, shape, rest, compact.IDKey(id))
	return err
}

// Body is the record's shape: the stored JSON of what the record holds
// but for its per-request fields.
func (tm tamperer) Body(ctx context.Context, id string) ([]byte, error) {
	var body []byte
	err := tm.db.QueryRowContext(ctx, `SELECT s.body FROM records AS r JOIN shapes AS s ON s.id = r.shape WHERE r.id = ?`,
		compact.IDKey(id)).Scan(&body)
	if err != nil {
		return nil, err
	}
	return sqlite.UnpackShape(body)
}

func (tm tamperer) SetVerdict(ctx context.Context, id string, v evidence.Verdict) error {
	r, err := tm.record(ctx, id)
	if err != nil {
		return err
	}
	r.Verdict = v
	shape, rest, err := compact.SplitStored(r) // the check of the hash as it was
	if err != nil {
		return err
	}
	n, err := shapeOf(ctx, tm.db, shape, r.Request.Method)
	if err != nil {
		return err
	}
	_, err = tm.db.ExecContext(ctx, `UPDATE records SET shape = ?, rest = ? WHERE id = ?`, n, rest, compact.IDKey(id))
	return err
}

// SetVerdictColumn moves the record to the edge that differs from its own
// by the verdict only, as queries by verdict would then find it.
func (tm tamperer) SetVerdictColumn(ctx context.Context, id string, v evidence.Verdict) error {
	if _, err := tm.db.ExecContext(ctx, `INSERT OR IGNORE INTO edges (replica, src_principal, src_td, src_ns,
			dst_principal, dst_td, dst_ns, host, verdict, allowed, src_wl, dst_wl)
		SELECT replica, src_principal, src_td, src_ns, dst_principal, dst_td, dst_ns, host, ?, allowed, src_wl, dst_wl
		FROM edges WHERE id = (SELECT edge FROM records WHERE id = ?)`, string(v), compact.IDKey(id)); err != nil {
		return err
	}
	_, err := tm.db.ExecContext(ctx, `UPDATE records SET edge = (SELECT n.id FROM edges AS e JOIN edges AS n
			ON n.replica = e.replica AND n.src_principal = e.src_principal AND n.src_td = e.src_td
			AND n.src_ns = e.src_ns AND n.dst_principal = e.dst_principal AND n.dst_td = e.dst_td
			AND n.dst_ns = e.dst_ns AND n.host = e.host AND n.allowed = e.allowed AND n.verdict = ?
			AND n.src_wl = e.src_wl AND n.dst_wl = e.dst_wl
		WHERE e.id = records.edge) WHERE id = ?`, string(v), compact.IDKey(id))
	return err
}

// edgeOf is the number of r's edge, made if new, as the store would.
func edgeOf(ctx context.Context, tx execQuerier, c evidence.Columns) (int64, error) {
	args := []any{c.Replica, c.SourcePrincipal, c.SourceTrustDomain, c.SourceNamespace, c.DestinationPrincipal,
		c.DestinationTrustDomain, c.DestinationNamespace, c.Host, c.Verdict, c.Allowed, c.SourceWorkload, c.DestinationWorkload}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO edges (replica, src_principal, src_td, src_ns,
		dst_principal, dst_td, dst_ns, host, verdict, allowed, src_wl, dst_wl) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...); err != nil {
		return 0, err
	}
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM edges WHERE replica = ? AND src_principal = ? AND src_td = ?
		AND src_ns = ? AND dst_principal = ? AND dst_td = ? AND dst_ns = ? AND host = ? AND verdict = ? AND allowed = ?
		AND src_wl = ? AND dst_wl = ?`,
		args...).Scan(&id)
	return id, err
}

func (tm tamperer) Delete(ctx context.Context, id string) error {
	res, err := tm.db.ExecContext(ctx, `DELETE FROM records WHERE id = ?`, compact.IDKey(id))
	if n, _ := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("record %s: %d rows deleted", id, n)
	}
	return err
}

// SwapContent puts each record in the other's row: the rows keep their
// replica and seq, and so does each record's chain seq.
func (tm tamperer) SwapContent(ctx context.Context, idA, idB string) error {
	a, err := tm.record(ctx, idA)
	if err != nil {
		return err
	}
	b, err := tm.record(ctx, idB)
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
	if _, err := tx.ExecContext(ctx, `UPDATE records SET id = 'swapping' WHERE id = ?`, compact.IDKey(idA)); err != nil {
		return err
	}
	if err := rewrite(ctx, tx, compact.IDKey(idB), a); err != nil {
		return err
	}
	if err := rewrite(ctx, tx, "swapping", b); err != nil {
		return err
	}
	return tx.Commit()
}

// rewrite stores r, content and columns, in the row now holding the id key.
func rewrite(ctx context.Context, tx *sql.Tx, key any, r *evidence.Record) error {
	shape, rest, err := compact.SplitStored(r)
	if err != nil {
		return err
	}
	n, err := shapeOf(ctx, tx, shape, r.Request.Method)
	if err != nil {
		return err
	}
	c := evidence.ColumnsOf(r)
	edge, err := edgeOf(ctx, tx, c)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE records SET id = ?, time_ns = ?, edge = ?, shape = ?, rid = ?, path = ?, rest = ?
		WHERE id = ?`, compact.IDKey(c.ID), c.TimeNS, edge, n, compact.RequestIDKey(c.RequestID), c.Path, rest, key)
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
	rows, err := tm.db.QueryContext(ctx, `SELECT seq FROM records WHERE rep = (SELECT num FROM replicas WHERE name = ?) ORDER BY seq`, r.Replica)
	if err != nil {
		return err
	}
	var seqs []int64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return err
		}
		seqs = append(seqs, seq)
	}
	rows.Close()
	var hexes []string
	for _, seq := range seqs {
		rec, err := joinRow(ctx, tm.db, `WHERE r.rep = (SELECT num FROM replicas WHERE name = ?) AND r.seq = ?`, r.Replica, seq)
		if err != nil {
			return err
		}
		hexes = append(hexes, rec.Chain.Hash)
	}
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
	shape, rest, err := compact.SplitStored(r)
	if err != nil {
		return err
	}
	n, err := shapeOf(ctx, tm.db, shape, r.Request.Method)
	if err != nil {
		return err
	}
	c := evidence.ColumnsOf(r)
	c.TimeNS = timeNS
	edge, err := edgeOf(ctx, tm.db, c)
	if err != nil {
		return err
	}
	if _, err := tm.db.ExecContext(ctx, `INSERT OR IGNORE INTO replicas (name) VALUES (?)`, c.Replica); err != nil {
		return err
	}
	_, err = tm.db.ExecContext(ctx, `INSERT INTO records (key, time_ns, edge, shape, id, rid, path, rest)
		VALUES ((((SELECT num FROM replicas WHERE name = ?) - 1) << 40) + ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Replica, c.Seq, c.TimeNS, edge, n, compact.IDKey(c.ID), compact.RequestIDKey(c.RequestID), c.Path, rest)
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
