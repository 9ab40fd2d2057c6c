package postgrestest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/evidencetest"
	"github.com/meshproof/meshproof/evidence/postgres"
)

// Backend is an evidencetest.Factory: a migrated store on a fresh
// database, with a Tamperer on its own connections.
func Backend(t testing.TB) evidencetest.Backend {
	t.Helper()
	dsn := DSN(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	open := func(t testing.TB) evidence.Store {
		t.Helper()
		s, err := postgres.Open(ctx, dsn, evidence.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s := open(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return evidencetest.Backend{
		Store:  s,
		Tamper: &Tamperer{DB: pool},
		Reopen: func(t testing.TB) evidence.Store {
			s.Close()
			s = open(t)
			return s
		},
	}
}

// Tamperer edits the stored evidence with SQL, as someone with write access
// to the database would.
type Tamperer struct {
	DB *pgxpool.Pool
}

var _ evidencetest.Tamperer = (*Tamperer)(nil)

// The records of schema 5 (evidence/postgres, migrations/0005): a row
// holds its time, chain (its replica's number << 44 | its seq), id
// (postgres.IDKey), request id (postgres.RequestKey), path, the number of
// its shape and its rest; the shape's row holds the filters' columns.

// stored is a record's row and its shape's bytes.
type stored struct {
	timeNS, chain             int64
	shape                     int32
	id, requestID, rest, body []byte
	path                      string
}

func (r stored) seq() int64 { return r.chain & (1<<44 - 1) }

func (tm *Tamperer) row(ctx context.Context, q pgx.Tx, id string) (stored, error) {
	var r stored
	var err error
	query := `SELECT r.time_ns, r.chain, r.shape, r.id, r.request_id, r.path, r.rest, s.body FROM records r
		JOIN shapes s ON s.id = r.shape WHERE r.id = $1`
	args := []any{postgres.IDKey(id)}
	dest := []any{&r.timeNS, &r.chain, &r.shape, &r.id, &r.requestID, &r.path, &r.rest, &r.body}
	if q != nil {
		err = q.QueryRow(ctx, query, args...).Scan(dest...)
	} else {
		err = tm.DB.QueryRow(ctx, query, args...).Scan(dest...)
	}
	if err != nil {
		return r, fmt.Errorf("tamper: %s: %w", id, err)
	}
	return r, nil
}

func (tm *Tamperer) record(ctx context.Context, id string) (stored, *evidence.Record, error) {
	st, err := tm.row(ctx, nil, id)
	if err != nil {
		return st, nil, err
	}
	if st.body, err = postgres.UnpackShape(st.body); err != nil {
		return st, nil, err
	}
	r, err := postgres.JoinRecord(st.body, st.rest, st.id, st.requestID, st.path, st.timeNS, st.seq())
	return st, r, err
}

// newShape stores body as a shape with the index columns of c (the
// verdict's replaced by verdict unless empty) under a digest no honest
// shape has, and returns its number.
func (tm *Tamperer) newShape(ctx context.Context, body []byte, c evidence.Columns, verdict string) (int32, error) {
	if verdict == "" {
		verdict = c.Verdict
	}
	digest := sha256.Sum256(append([]byte("tampered "+strconv.FormatInt(time.Now().UnixNano(), 10)), body...))
	var id int32
	err := tm.DB.QueryRow(ctx, `INSERT INTO shapes (digest, allowed, replica, source_principal, destination_principal,
			source_trust_domain, destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host,
			source_workload, destination_workload, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id`,
		digest[:], c.Allowed, c.Replica, c.SourcePrincipal, c.DestinationPrincipal, c.SourceTrustDomain, c.DestinationTrustDomain,
		c.SourceNamespace, c.DestinationNamespace, c.SourceKey, verdict, c.Method, c.Host, c.SourceWorkload, c.DestinationWorkload,
		postgres.PackShape(body)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("tamper: shape: %w", err)
	}
	return id, nil
}

// SetVerdict rewrites the verdict in the stored record (its shape, a new
// one, and its rest) and in the shape's verdict column.
func (tm *Tamperer) SetVerdict(ctx context.Context, id string, v evidence.Verdict) error {
	_, r, err := tm.record(ctx, id)
	if err != nil {
		return err
	}
	r.Verdict = v
	shape, rest, err := postgres.SplitRecord(r)
	if err != nil {
		return err
	}
	sid, err := tm.newShape(ctx, shape, evidence.ColumnsOf(r), "")
	if err != nil {
		return err
	}
	return tm.exec(ctx, "UPDATE records SET shape = $2, rest = $3 WHERE id = $1", postgres.IDKey(id), sid, rest)
}

// SetBody replaces the stored bytes: bytes that are a record's canonical
// form are split into a new shape and rest, as the store would write that
// record; any other bytes become the record's shape as they are, as an
// attacker editing the shape would leave them. There is no hash column:
// rehash changes nothing (a reader recomputes the hash anyway).
func (tm *Tamperer) SetBody(ctx context.Context, id string, body []byte, rehash bool) error {
	st, r, err := tm.record(ctx, id)
	if err != nil {
		return err
	}
	var edited evidence.Record
	if json.Unmarshal(body, &edited) == nil {
		edited.Chain = r.Chain
		if again, err := evidence.StoredBody(&edited); err == nil && string(again) == string(body) {
			shape, rest, err := postgres.SplitRecord(&edited)
			if err != nil {
				return err
			}
			sid, err := tm.newShape(ctx, shape, evidence.ColumnsOf(&edited), "")
			if err != nil {
				return err
			}
			return tm.exec(ctx, "UPDATE records SET shape = $2, rest = $3, request_id = $4, path = $5 WHERE id = $1",
				st.id, sid, rest, postgres.RequestKey(edited.RequestID), edited.Request.Path)
		}
	}
	sid, err := tm.newShape(ctx, body, evidence.ColumnsOf(r), "")
	if err != nil {
		return err
	}
	return tm.exec(ctx, "UPDATE records SET shape = $2 WHERE id = $1", st.id, sid)
}

// Body returns the stored bytes: the record's canonical bytes joined from
// its shape and rest (evidence.StoredBody).
func (tm *Tamperer) Body(ctx context.Context, id string) ([]byte, error) {
	_, r, err := tm.record(ctx, id)
	if err != nil {
		return nil, err
	}
	return evidence.StoredBody(r)
}

// SetVerdictColumn gives the record a shape of its own whose verdict
// column says v, its bytes left as they were.
func (tm *Tamperer) SetVerdictColumn(ctx context.Context, id string, v evidence.Verdict) error {
	st, r, err := tm.record(ctx, id)
	if err != nil {
		return err
	}
	sid, err := tm.newShape(ctx, st.body, evidence.ColumnsOf(r), string(v))
	if err != nil {
		return err
	}
	return tm.exec(ctx, "UPDATE records SET shape = $2 WHERE id = $1", st.id, sid)
}

// Delete deletes the record's row.
func (tm *Tamperer) Delete(ctx context.Context, id string) error {
	return tm.exec(ctx, "DELETE FROM records WHERE id = $1", postgres.IDKey(id))
}

func (tm *Tamperer) exec(ctx context.Context, sql string, args ...any) error {
	tag, err := tm.DB.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("tamper: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("tamper: %s %v: %d rows changed, want 1", sql, args[0], tag.RowsAffected())
	}
	return nil
}

// SwapContent exchanges the content of two rows of one chain: each row
// keeps its chain column (replica and seq) and takes the other's time, id, request id,
// path, shape and rest (a v1 record's prev_hash and hash are in its rest:
// they go with it).
func (tm *Tamperer) SwapContent(ctx context.Context, idA, idB string) error {
	return pgx.BeginFunc(ctx, tm.DB, func(tx pgx.Tx) error {
		a, err := tm.row(ctx, tx, idA)
		if err != nil {
			return err
		}
		b, err := tm.row(ctx, tx, idB)
		if err != nil {
			return err
		}
		for _, x := range []struct {
			chain   int64
			timeNS  int64
			id      []byte
			content stored
		}{{a.chain, a.timeNS, a.id, b}, {b.chain, b.timeNS, b.id, a}} {
			// Through a placeholder id first: no two rows share one here.
			tag, err := tx.Exec(ctx, `UPDATE records SET time_ns = $3, id = $4, shape = $5, rest = $6, request_id = $8, path = $9
				WHERE chain = $1 AND time_ns = $2 AND id = $7`,
				x.chain, x.timeNS, x.content.timeNS, append([]byte("swap~"), x.content.id...), x.content.shape, x.content.rest, x.id,
				x.content.requestID, x.content.path)
			if err != nil {
				return fmt.Errorf("tamper: swap: %w", err)
			}
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("tamper: swap: %d rows changed", tag.RowsAffected())
			}
		}
		for _, k := range [][]byte{a.id, b.id} {
			if _, err := tx.Exec(ctx, `UPDATE records SET id = $2 WHERE id = $1`, append([]byte("swap~"), k...), k); err != nil {
				return fmt.Errorf("tamper: swap: %w", err)
			}
		}
		return nil
	})
}

// AppendForged inserts r's row without touching the chain's head or the
// rollups.
func (tm *Tamperer) AppendForged(ctx context.Context, r *evidence.Record) error {
	return tm.insert(ctx, r, evidence.ColumnsOf(r).TimeNS)
}

// AppendStoredAt inserts r's row with timeNS as its time, in a partition
// made for that day if there is none, and moves the replica's head to it.
func (tm *Tamperer) AppendStoredAt(ctx context.Context, r *evidence.Record, timeNS int64) error {
	const dayNS = int64(24 * time.Hour)
	day := timeNS / dayNS
	if timeNS%dayNS < 0 {
		day--
	}
	// Named as the store names its days, as the store would have made it.
	name := "records_" + time.Unix(day*86400, 0).UTC().Format("20060102")
	var exists bool
	if err := tm.DB.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := tm.DB.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s (LIKE records INCLUDING DEFAULTS INCLUDING STORAGE);
			ALTER TABLE records ATTACH PARTITION %[1]s FOR VALUES FROM (%[2]d) TO (%[3]d)`,
			name, day*dayNS, (day+1)*dayNS)); err != nil {
			return fmt.Errorf("tamper: partition for %d: %w", timeNS, err)
		}
	}
	if err := tm.insert(ctx, r, timeNS); err != nil {
		return err
	}
	// The log as the store would have kept it (its base is 0 here): the
	// leaf hashes recomputed from the records.
	rows, err := tm.DB.Query(ctx, `SELECT r.time_ns, r.chain, r.shape, r.id, r.request_id, r.path, r.rest, s.body FROM records r
		JOIN shapes s ON s.id = r.shape WHERE r.chain >> 44 = (SELECT id FROM replicas WHERE name = $1) ORDER BY r.chain`, r.Replica)
	if err != nil {
		return err
	}
	var hexes []string
	var st stored
	if _, err := pgx.ForEachRow(rows, []any{&st.timeNS, &st.chain, &st.shape, &st.id, &st.requestID, &st.path, &st.rest, &st.body}, func() error {
		shape, err := postgres.UnpackShape(st.body)
		if err != nil {
			return err
		}
		rec, err := postgres.JoinRecord(shape, st.rest, st.id, st.requestID, st.path, st.timeNS, st.seq())
		if err != nil {
			return err
		}
		hexes = append(hexes, postgres.LeafHex(rec))
		return nil
	}); err != nil {
		return err
	}
	tiles, root, err := evidence.BuildLog(hexes)
	if err != nil {
		return err
	}
	for _, t := range tiles {
		if t.L == 0 {
			continue // recomputed from the records
		}
		if _, err := tm.DB.Exec(ctx, `INSERT INTO tlog_tiles (replica, level, n, hashes) VALUES ($1, $2, $3, $4)
			ON CONFLICT (replica, level, n) DO UPDATE SET hashes = excluded.hashes`, r.Replica, t.L, t.N, t.Data); err != nil {
			return err
		}
	}
	_, err = tm.DB.Exec(ctx, "UPDATE chain_heads SET seq = $2, hash = $3, root = $4 WHERE replica = $1",
		r.Replica, int64(r.Chain.Seq), r.Chain.Hash, root[:])
	return err
}

func (tm *Tamperer) insert(ctx context.Context, r *evidence.Record, timeNS int64) error {
	shape, rest, err := postgres.SplitRecord(r)
	if err != nil {
		return err
	}
	var sid int32
	digest := sha256.Sum256(shape)
	c := evidence.ColumnsOf(r)
	if err := tm.DB.QueryRow(ctx, `WITH n AS (INSERT INTO shapes (digest, allowed, replica, source_principal, destination_principal,
			source_trust_domain, destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host,
			source_workload, destination_workload, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT (digest) DO NOTHING RETURNING id)
		SELECT id FROM n UNION ALL SELECT id FROM shapes WHERE digest = $1`,
		digest[:], c.Allowed, c.Replica, c.SourcePrincipal, c.DestinationPrincipal, c.SourceTrustDomain, c.DestinationTrustDomain,
		c.SourceNamespace, c.DestinationNamespace, c.SourceKey, c.Verdict, c.Method, c.Host, c.SourceWorkload, c.DestinationWorkload,
		postgres.PackShape(shape)).Scan(&sid); err != nil {
		return fmt.Errorf("tamper: forge %s: %w", r.ID, err)
	}
	_, err = tm.DB.Exec(ctx, `WITH n AS (INSERT INTO replicas (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id),
			p AS (SELECT id FROM n UNION ALL SELECT id FROM replicas WHERE name = $1)
		INSERT INTO records (time_ns, chain, shape, id, request_id, path, rest) SELECT $2, p.id::bigint << 44 | $3, $4, $5, $7, $8, $6 FROM p`,
		r.Replica, timeNS, int64(r.Chain.Seq), sid, postgres.IDKey(r.ID), rest, postgres.RequestKey(r.RequestID), r.Request.Path)
	if err != nil {
		return fmt.Errorf("tamper: forge %s: %w", r.ID, err)
	}
	return nil
}

// FlipRollupVerdict turns one rollup group of verdict from into to.
func (tm *Tamperer) FlipRollupVerdict(ctx context.Context, from, to evidence.Verdict) error {
	return tm.exec(ctx, `UPDATE rollup_keys SET verdict = $2 WHERE id = (SELECT k.id FROM rollup_keys AS k
		WHERE k.verdict = $1 AND NOT EXISTS (SELECT 1 FROM rollup_keys AS o WHERE o.replica = k.replica AND o.source = k.source
			AND o.destination_host = k.destination_host AND o.destination_principal = k.destination_principal
			AND o.allowed = k.allowed AND o.verdict = $2)
		LIMIT 1)`, string(from), string(to))
}

// levelTables are the rollup tables by span, and their unit columns.
var levelTables = map[int64][2]string{1: {"rollups", "minute"}, 60: {"rollups_hourly", "hour"},
	1440: {"rollups_daily", "day"}, 10080: {"rollups_weekly", "week"}}

func (tm *Tamperer) AddToRollup(ctx context.Context, span int64, at time.Time, delta int64) error {
	l, ok := levelTables[span]
	if !ok {
		return fmt.Errorf("tamper: no span of %d minutes", span)
	}
	unit := at.Unix() / 60 / span
	// Table and column names are constants.
	return tm.exec(ctx, `UPDATE `+l[0]+` SET count = count + $2 WHERE (`+l[1]+`, key) =
		(SELECT `+l[1]+`, key FROM `+l[0]+` WHERE `+l[1]+` >= $1 ORDER BY `+l[1]+`, key LIMIT 1)`, unit, delta)
}

func (tm *Tamperer) DeleteSeal(ctx context.Context, replica string, hour int64) error {
	return tm.exec(ctx, `DELETE FROM rollup_seals WHERE replica = $1 AND hour = $2`, replica, hour)
}

func (tm *Tamperer) CutSeals(ctx context.Context, replica string, hour int64) error {
	var chain []byte
	if err := tm.DB.QueryRow(ctx, `SELECT chain FROM rollup_seals WHERE replica = $1 AND hour = $2`, replica, hour-1).Scan(&chain); err != nil {
		return fmt.Errorf("tamper: %w", err)
	}
	for _, q := range []string{
		`DELETE FROM rollup_seals WHERE replica = $1 AND hour >= $2`,
		`DELETE FROM rollups WHERE minute >= $2 * 60 AND key IN (SELECT id FROM rollup_keys WHERE replica = $1)`,
		`UPDATE chain_heads SET seal_through = $2, seal_chain = $3 WHERE replica = $1`,
	} {
		args := []any{replica, hour}
		if len(q) > 0 && q[0] == 'U' {
			args = append(args, chain)
		}
		if _, err := tm.DB.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("tamper: %w", err)
		}
	}
	return nil
}

func (tm *Tamperer) MoveRollupHorizon(ctx context.Context, at time.Time) error {
	m := at.Unix() / 60
	for _, q := range []string{
		`DELETE FROM rollups WHERE minute < $1`,
		`DELETE FROM rollups_hourly WHERE hour * 60 < $1`,
		`DELETE FROM rollups_daily WHERE day * 1440 < $1`,
		`DELETE FROM rollups_weekly WHERE week * 10080 < $1`,
		`DELETE FROM rollup_seals WHERE hour * 60 < $1`,
		`INSERT INTO rollup_horizon (minute) VALUES ($1) ON CONFLICT (one) DO UPDATE SET minute = excluded.minute`,
	} {
		if _, err := tm.DB.Exec(ctx, q, m); err != nil {
			return fmt.Errorf("tamper: %w", err)
		}
	}
	return nil
}
