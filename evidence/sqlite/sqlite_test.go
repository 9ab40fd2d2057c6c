package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

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
	if err := tm.db.QueryRowContext(ctx, `SELECT body FROM records WHERE id = ?`, id).Scan(&body); err != nil {
		return nil, fmt.Errorf("record %s: %w", id, err)
	}
	r := new(evidence.Record)
	return r, json.Unmarshal(body, r)
}

func (tm tamperer) SetVerdict(ctx context.Context, id string, v evidence.Verdict) error {
	r, err := tm.body(ctx, id)
	if err != nil {
		return err
	}
	r.Verdict = v
	body, _ := json.Marshal(r)
	_, err = tm.db.ExecContext(ctx, `UPDATE records SET body = ?, verdict = ? WHERE id = ?`, body, string(v), id)
	return err
}

func (tm tamperer) SetVerdictColumn(ctx context.Context, id string, v evidence.Verdict) error {
	_, err := tm.db.ExecContext(ctx, `UPDATE records SET verdict = ? WHERE id = ?`, string(v), id)
	return err
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
	body, _ := json.Marshal(r)
	c := evidence.ColumnsOf(r)
	_, err := tx.ExecContext(ctx, `UPDATE records SET id = ?, time_ns = ?, src_principal = ?, dst_principal = ?,
		src_td = ?, dst_td = ?, src_ns = ?, dst_ns = ?, source_key = ?, verdict = ?, allowed = ?, method = ?,
		host = ?, path = ?, request_id = ?, hash = ?, body = ? WHERE id = ?`,
		c.ID, c.TimeNS, c.SourcePrincipal, c.DestinationPrincipal, c.SourceTrustDomain, c.DestTD, c.SourceNamespace,
		c.DestNamespace, c.SourceKey, c.Verdict, c.Allowed, c.Method, c.Host, c.Path, c.RequestID, r.Chain.Hash, body, id)
	return err
}

func (tm tamperer) AppendForged(ctx context.Context, r *evidence.Record) error {
	body, _ := json.Marshal(r)
	c := evidence.ColumnsOf(r)
	_, err := tm.db.ExecContext(ctx, `INSERT INTO records (replica, seq, id, time_ns, src_principal, dst_principal,
		src_td, dst_td, src_ns, dst_ns, source_key, verdict, allowed, method, host, path, request_id, hash, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Replica, c.Seq, c.ID, c.TimeNS, c.SourcePrincipal, c.DestinationPrincipal, c.SourceTrustDomain, c.DestTD,
		c.SourceNamespace, c.DestNamespace, c.SourceKey, c.Verdict, c.Allowed, c.Method, c.Host, c.Path, c.RequestID,
		r.Chain.Hash, body)
	return err
}
