package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// Head returns the last link of replica's chain as recorded with its last
// write.
func (s *Store) Head(ctx context.Context, replica string) (evidence.Link, error) {
	s.settle(ctx)
	return s.storedHead(ctx, replica)
}

// Checkpoint is where replica's stored chain starts.
func (s *Store) Checkpoint(ctx context.Context, replica string) (evidence.Link, error) {
	s.settle(ctx)
	l, err := link(s.r.QueryRowContext(ctx, `SELECT seq, hash FROM chain_checkpoints WHERE replica = ?`, replica))
	if err != nil {
		return l, fmt.Errorf("evidence sqlite: checkpoint of %s: %w", replica, err)
	}
	return l, nil
}

// Replicas lists every replica with a head, a checkpoint or records: a
// chain whose head row was deleted must still be walked (and then shows as
// forged).
func (s *Store) Replicas(ctx context.Context) ([]string, error) {
	s.settle(ctx)
	rows, err := s.r.QueryContext(ctx, `
		SELECT name FROM replicas WHERE EXISTS (SELECT 1 FROM records WHERE key > (num - 1) << 40 AND key <= ((num - 1) << 40) + 1099511627775)
		UNION SELECT replica FROM chain_heads
		UNION SELECT replica FROM chain_checkpoints
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: replicas: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("evidence sqlite: replicas: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// walkPage is how many records Walk holds at a time.
const walkPage = 1000

// Walk calls fn for each record of replica's chain in seq order, joined
// from its stored row and shape (read afresh, never from the readers'
// cache: an edited shape shows), with the index columns stored beside it.
func (s *Store) Walk(ctx context.Context, replica string, fn func(*evidence.Record, evidence.Stored) error) error {
	s.settle(ctx)
	shapes := compact.NewShapes(maxCachedShapes)
	after := int64(-1) << 62
	for {
		recs, cols, err := s.walkPage(ctx, replica, after, shapes)
		if err != nil {
			return err
		}
		for i, r := range recs {
			if err := fn(r, cols[i]); err != nil {
				return err
			}
		}
		if len(recs) < walkPage {
			return nil
		}
		after = cols[len(cols)-1].Seq
	}
}

func (s *Store) walkPage(ctx context.Context, replica string, after int64, shapes *compact.Shapes) ([]*evidence.Record, []evidence.Stored, error) {
	// The identity columns are the edge's, as queries read them: a record
	// moved to another edge, or an edge edited, shows as a mismatch (a
	// missing edge as empty columns); the method is its shape's.
	rows, err := s.r.QueryContext(ctx, `SELECT r.seq, r.time_ns, r.shape, r.id, r.rid, r.path, r.rest,
			coalesce(e.replica, ''), coalesce(e.src_principal, ''), coalesce(e.dst_principal, ''), coalesce(e.src_td, ''),
			coalesce(e.dst_td, ''), coalesce(e.src_ns, ''), coalesce(e.dst_ns, ''), coalesce(e.verdict, ''),
			coalesce(e.allowed, 0), coalesce(e.host, ''), coalesce((SELECT method FROM shapes WHERE id = r.shape), ''),
			coalesce(e.src_wl, ''), coalesce(e.dst_wl, '')
		FROM records AS r LEFT JOIN edges AS e ON e.id = r.edge
		WHERE r.`+repRange+` ORDER BY r.key LIMIT ?4`, replica, max(after, 0), maxSeq, walkPage)
	if err != nil {
		return nil, nil, fmt.Errorf("evidence sqlite: walk %s: %w", replica, err)
	}
	var ws []row
	var stored []evidence.Stored
	for rows.Next() {
		var w row
		var st evidence.Stored
		c := &st.Columns
		if err := rows.Scan(append(w.dest(), &c.Replica, &c.SourcePrincipal, &c.DestinationPrincipal, &c.SourceTrustDomain,
			&c.DestinationTrustDomain, &c.SourceNamespace, &c.DestinationNamespace, &c.Verdict, &c.Allowed, &c.Host, &c.Method,
			&c.SourceWorkload, &c.DestinationWorkload)...); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("evidence sqlite: walk %s: %w", replica, err)
		}
		c.Seq, c.TimeNS, c.Path = w.seq, w.timeNS, w.path
		ws, stored = append(ws, w), append(stored, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("evidence sqlite: walk %s: %w", replica, err)
	}
	recs := make([]*evidence.Record, len(ws))
	for i := range ws {
		st, c := &stored[i], &stored[i].Columns
		if out, err := ws[i].outside(); err == nil {
			c.ID, c.RequestID = out.ID, out.RequestID
		} else {
			c.ID = fmt.Sprint(ws[i].id)
		}
		r, err := join(ctx, s.r, shapes, &ws[i])
		if err != nil {
			st.Err = err
			if r == nil {
				r = &evidence.Record{ID: c.ID, Chain: evidence.Chain{Seq: uint64(c.Seq)}}
			}
		} else {
			st.Body, err = evidence.StoredBody(r)
			if err != nil {
				st.Err = err
			}
		}
		// No column holds the source key (the rollups keep their own), so
		// nothing a query reads can disagree with the record there.
		c.SourceKey = evidence.SourceKey(r)
		recs[i] = r
	}
	return recs, stored, nil
}

// Stats summarises the store. Records counts the chains' links between
// checkpoint and head, without reading every row (Verify checks that the
// rows agree).
func (s *Store) Stats(ctx context.Context, since time.Time) (evidence.Stats, error) {
	s.settle(ctx)
	st := evidence.Stats{
		ByVerdict: map[evidence.Verdict]int64{}, ByDecision: map[string]int64{}, Replicas: map[string]evidence.Link{},
	}
	rows, err := s.r.QueryContext(ctx, `SELECT h.replica, h.seq, h.hash, coalesce(c.seq, 0)
		FROM chain_heads h LEFT JOIN chain_checkpoints c ON c.replica = h.replica`)
	if err != nil {
		return st, fmt.Errorf("evidence sqlite: stats: %w", err)
	}
	for rows.Next() {
		var replica string
		var head, start int64
		var hash string
		if err := rows.Scan(&replica, &head, &hash, &start); err != nil {
			rows.Close()
			return st, fmt.Errorf("evidence sqlite: stats: %w", err)
		}
		st.Replicas[replica] = evidence.Link{Seq: uint64(head), Hash: hash}
		st.Records += head - start
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("evidence sqlite: stats: %w", err)
	}
	// Quarantined records hold seqs of the chains without being records.
	var above int64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(q.seq > coalesce(c.seq, 0)), 0)
		FROM quarantine q LEFT JOIN chain_checkpoints c ON c.replica = q.replica`).Scan(&st.Quarantined, &above); err != nil {
		return st, fmt.Errorf("evidence sqlite: stats: %w", err)
	}
	st.Records -= above
	var oldest, newest sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT min(time_ns), max(time_ns) FROM records`).Scan(&oldest, &newest); err != nil {
		return st, fmt.Errorf("evidence sqlite: stats: %w", err)
	}
	if oldest.Valid {
		st.Oldest, st.Newest = time.Unix(0, oldest.Int64).UTC(), time.Unix(0, newest.Int64).UTC()
	}
	horizon, closed, err := s.RollupBounds(ctx)
	if err != nil {
		return st, err
	}
	u := rollupUnion(max(firstMinute(since), horizon), endOfTime, closed, "")
	rows, err = s.r.QueryContext(ctx, `SELECT k.verdict, k.allowed, sum(b.count)
		FROM (`+u.sql+`) AS b JOIN rollup_keys AS k ON k.id = b.key GROUP BY k.verdict, k.allowed`, u.args...)
	if err != nil {
		return st, fmt.Errorf("evidence sqlite: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		var allowed bool
		var n int64
		if err := rows.Scan(&v, &allowed, &n); err != nil {
			return st, fmt.Errorf("evidence sqlite: stats: %w", err)
		}
		st.ByVerdict[evidence.Verdict(v)] += n
		st.ByDecision[decision(allowed)] += n
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("evidence sqlite: stats: %w", err)
	}
	st.SizeBytes = fileSize(s.path) + fileSize(s.path+"-wal")
	journals, _ := filepath.Glob(s.path + "-journal-*-[ab]") // sync and fsync durability (journal.go)
	for _, j := range journals {
		st.SizeBytes += fileSize(j)
	}
	return st, nil
}

func decision(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
