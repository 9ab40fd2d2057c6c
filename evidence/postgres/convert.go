package postgres

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
)

// convertChunk is how many records convertV4 holds at a time.
const convertChunk = 10_000

// convertV4 moves the records of schema 4 (renamed records_v4 by
// migrations/0005_compact.sql, partitions v4_records_YYYYMMDD) into the
// compact records of schema 5, partition by partition in heap order, in
// the migration's transaction, and drops them. Every record must decode
// strictly from its stored bytes (evidence.DecodeStored) and match its
// hash column: a record edited behind the store's back stops the
// migration, naming it (meshproof verify says more), rather than being
// rewritten into a form whose hash would then be recomputed from it.
func convertV4(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'records_v4'::regclass ORDER BY c.relname`)
	if err != nil {
		return fmt.Errorf("listing partitions: %w", err)
	}
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing partitions: %w", err)
	}
	c := &converter{tx: tx, shapes: map[[32]byte]int32{}, replicas: map[string]int32{}}
	for _, part := range parts {
		day, ok := dayOfPartition(part[len("v4_"):])
		if !ok {
			return fmt.Errorf("partition %s: not a day's", part)
		}
		if err := createPartitions(ctx, tx, day); err != nil {
			return err
		}
		if err := c.partition(ctx, part); err != nil {
			return fmt.Errorf("converting %s: %w", part, err)
		}
	}
	if _, err := tx.Exec(ctx, "DROP TABLE records_v4"); err != nil {
		return fmt.Errorf("dropping the records of schema 4: %w", err)
	}
	return nil
}

type converter struct {
	tx       pgx.Tx
	shapes   map[[32]byte]int32
	replicas map[string]int32
}

// partition converts the rows of one schema-4 partition.
func (c *converter) partition(ctx context.Context, part string) error {
	// part comes from the catalogue, quoted.
	if _, err := c.tx.Exec(ctx, "DECLARE convert_v4 NO SCROLL CURSOR FOR SELECT time_ns, seq, replica, id, prev_hash, hash, body FROM "+
		pgx.Identifier{part}.Sanitize()); err != nil {
		return err
	}
	for {
		rs, err := c.tx.Query(ctx, fmt.Sprintf("FETCH %d FROM convert_v4", convertChunk))
		if err != nil {
			return err
		}
		var recs []*evidence.Record
		var times []int64
		var timeNS, seq int64
		var replica, id, prev, hash string
		var body []byte
		_, err = pgx.ForEachRow(rs, []any{&timeNS, &seq, &replica, &id, &prev, &hash, &body}, func() error {
			r, err := evidence.DecodeStored(id, body, uint64(seq), hash)
			if err != nil {
				return err
			}
			switch {
			case r.Chain.Version == evidence.CanonicalV2 && evidence.LeafHashHex(body) != hash:
				return fmt.Errorf("record %s (seq %d of %s): its hash column is not its leaf hash (edited?)", id, seq, replica)
			case r.Chain.Version != evidence.CanonicalV2 && r.Chain != (evidence.Chain{Seq: uint64(seq), PrevHash: prev, Hash: hash}):
				return fmt.Errorf("record %s (seq %d of %s): the chain columns no longer match the record", id, seq, replica)
			case r.Replica != replica:
				return fmt.Errorf("record %s (seq %d of %s): the replica column no longer matches the record", id, seq, replica)
			}
			recs, times = append(recs, r), append(times, timeNS)
			return nil
		})
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		if err := c.write(ctx, recs, times); err != nil {
			return err
		}
	}
	_, err := c.tx.Exec(ctx, "CLOSE convert_v4")
	return err
}

// write COPYs recs (stored with the times of their time column) as rows
// of schema 5.
func (c *converter) write(ctx context.Context, recs []*evidence.Record, times []int64) error {
	rows := make([]row, len(recs))
	for i, r := range recs {
		row, shape, err := rowOf(r, 0)
		if err != nil {
			return fmt.Errorf("record %s: %w", r.ID, err)
		}
		d := sha256.Sum256(shape)
		id, ok := c.shapes[d]
		if !ok {
			k := evidence.ColumnsOf(r)
			if err := c.tx.QueryRow(ctx, `WITH n AS (INSERT INTO shapes (digest, allowed, replica, source_principal, destination_principal,
					source_trust_domain, destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host, body)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (digest) DO NOTHING RETURNING id)
				SELECT id FROM n UNION ALL SELECT id FROM shapes WHERE digest = $1`,
				d[:], k.Allowed, k.Replica, k.SourcePrincipal, k.DestinationPrincipal, k.SourceTrustDomain, k.DestinationTrustDomain,
				k.SourceNamespace, k.DestinationNamespace, k.SourceKey, k.Verdict, k.Method, k.Host, packShape(shape)).Scan(&id); err != nil {
				return fmt.Errorf("shape of record %s: %w", r.ID, err)
			}
			c.shapes[d] = id
		}
		rep, ok := c.replicas[r.Replica]
		if !ok {
			if err := c.tx.QueryRow(ctx, `WITH n AS (INSERT INTO replicas (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id)
				SELECT id FROM n UNION ALL SELECT id FROM replicas WHERE name = $1`, r.Replica).Scan(&rep); err != nil {
				return fmt.Errorf("replica %s: %w", r.Replica, err)
			}
			c.replicas[r.Replica] = rep
		}
		row.timeNS, row.shape, row.replica = times[i], id, rep
		rows[i] = row
	}
	if _, err := c.tx.CopyFrom(ctx, pgx.Identifier{"records"}, recordColumns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		return rows[i].values(nil), nil
	})); err != nil {
		return fmt.Errorf("writing %d records: %w", len(rows), err)
	}
	return nil
}
