package postgrestest

import (
	"context"
	"encoding/json"
	"fmt"
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

// SetVerdict rewrites the verdict in the stored record and its column,
// leaving the hash alone.
func (tm *Tamperer) SetVerdict(ctx context.Context, id string, v evidence.Verdict) error {
	var body []byte
	var seq int64
	var hash string
	if err := tm.DB.QueryRow(ctx, "SELECT seq, hash, body FROM records WHERE id = $1", id).Scan(&seq, &hash, &body); err != nil {
		return fmt.Errorf("tamper: %s: %w", id, err)
	}
	r, err := evidence.DecodeStored(id, body, uint64(seq), hash)
	if err != nil {
		return err
	}
	r.Verdict = v
	body, _ = evidence.StoredBody(r)
	return tm.exec(ctx, "UPDATE records SET body = $2, verdict = $3 WHERE id = $1", id, body, string(v))
}

// SetBody replaces the stored bytes, and with rehash the hash column.
func (tm *Tamperer) SetBody(ctx context.Context, id string, body []byte, rehash bool) error {
	if rehash {
		return tm.exec(ctx, "UPDATE records SET body = $2, hash = $3 WHERE id = $1", id, body, evidence.LeafHashHex(body))
	}
	return tm.exec(ctx, "UPDATE records SET body = $2 WHERE id = $1", id, body)
}

// Body returns the stored bytes.
func (tm *Tamperer) Body(ctx context.Context, id string) ([]byte, error) {
	var body []byte
	err := tm.DB.QueryRow(ctx, "SELECT body FROM records WHERE id = $1", id).Scan(&body)
	return body, err
}

// SetVerdictColumn rewrites only the verdict column.
func (tm *Tamperer) SetVerdictColumn(ctx context.Context, id string, v evidence.Verdict) error {
	return tm.exec(ctx, "UPDATE records SET verdict = $2 WHERE id = $1", id, string(v))
}

// Delete deletes the record's row.
func (tm *Tamperer) Delete(ctx context.Context, id string) error {
	return tm.exec(ctx, "DELETE FROM records WHERE id = $1", id)
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

// content is a row's columns other than replica and seq.
const content = `time_ns, id, allowed, source_principal, destination_principal, source_trust_domain,
	destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host,
	path, request_id, prev_hash, hash, body`

// SwapContent exchanges the content of two rows of one chain: each row
// keeps its replica and seq (the seq in its record rewritten to match) and
// takes the other's record, columns, prev_hash and hash.
func (tm *Tamperer) SwapContent(ctx context.Context, idA, idB string) error {
	return pgx.BeginFunc(ctx, tm.DB, func(tx pgx.Tx) error {
		var a, b []any
		var seqA, seqB int64
		for _, x := range []struct {
			id  string
			seq *int64
			row *[]any
		}{{idA, &seqA, &a}, {idB, &seqB, &b}} {
			rows, err := tx.Query(ctx, "SELECT seq, "+content+" FROM records WHERE id = $1", x.id)
			if err != nil {
				return err
			}
			vals, err := pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
			if err != nil {
				return fmt.Errorf("tamper: %s: %w", x.id, err)
			}
			*x.seq, *x.row = vals[0].(int64), vals[1:]
		}
		contentA, err := withSeq(a, seqB)
		if err != nil {
			return err
		}
		contentB, err := withSeq(b, seqA)
		if err != nil {
			return err
		}
		// Through a placeholder id: (id, time_ns) is unique.
		placeholder := "swap~" + idB
		contentB[1] = placeholder
		if err := update(ctx, tx, seqA, a[0], idA, contentB); err != nil {
			return err
		}
		if err := update(ctx, tx, seqB, b[0], idB, contentA); err != nil {
			return err
		}
		contentB[1] = idB
		return update(ctx, tx, seqA, contentB[0], placeholder, contentB)
	})
}

// update sets the content of the row at (seq, timeNS, id).
func update(ctx context.Context, tx pgx.Tx, seq int64, timeNS any, id string, vals []any) error {
	args := append([]any{seq, timeNS, id}, vals...)
	tag, err := tx.Exec(ctx, `UPDATE records SET (`+content+`) =
		($4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		WHERE seq = $1 AND time_ns = $2 AND id = $3`, args...)
	if err != nil {
		return fmt.Errorf("tamper: swap: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("tamper: swap: %d rows changed", tag.RowsAffected())
	}
	return nil
}

// withSeq copies a row's content with the seq in its record set to seq.
func withSeq(vals []any, seq int64) ([]any, error) {
	out := append([]any(nil), vals...)
	body := out[len(out)-1].([]byte)
	if evidence.StoredVersion(body) == evidence.CanonicalV2 {
		return out, nil // the seq is the row's, not the body's
	}
	var r evidence.Record
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	r.Chain.Seq = uint64(seq)
	out[len(out)-1], _ = json.Marshal(&r)
	return out, nil
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
		if _, err := tm.DB.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s (LIKE records INCLUDING DEFAULTS);
			ALTER TABLE records ATTACH PARTITION %[1]s FOR VALUES FROM (%[2]d) TO (%[3]d)`,
			name, day*dayNS, (day+1)*dayNS)); err != nil {
			return fmt.Errorf("tamper: partition for %d: %w", timeNS, err)
		}
	}
	if err := tm.insert(ctx, r, timeNS); err != nil {
		return err
	}
	// The log as the store would have kept it (its base is 0 here).
	rows, err := tm.DB.Query(ctx, "SELECT hash FROM records WHERE replica = $1 ORDER BY seq", r.Replica)
	if err != nil {
		return err
	}
	hexes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	tiles, root, err := evidence.BuildLog(hexes)
	if err != nil {
		return err
	}
	for _, t := range tiles {
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
	c := evidence.ColumnsOf(r)
	c.TimeNS = timeNS
	body, err := evidence.StoredBody(r)
	if err != nil {
		return err
	}
	_, err = tm.DB.Exec(ctx, `INSERT INTO records (replica, seq, `+content+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)`,
		c.Replica, c.Seq, c.TimeNS, c.ID, c.Allowed, c.SourcePrincipal, c.DestinationPrincipal, c.SourceTrustDomain,
		c.DestinationTrustDomain, c.SourceNamespace, c.DestinationNamespace, c.SourceKey, c.Verdict, c.Method, c.Host,
		c.Path, c.RequestID, r.Chain.PrevHash, r.Chain.Hash, body)
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
