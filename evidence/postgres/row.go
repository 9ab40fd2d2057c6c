package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
)

// A record's row (schema 5, migrations/0005_compact.sql): its time, seq,
// shape and replica numbers, its id (idKey) and its rest.
const rowColumns = "time_ns, seq, shape, replica, id, rest"

type row struct {
	timeNS, seq    int64
	shape, replica int32
	id, rest       []byte
}

// scanRow reads rowColumns.
func scanRow(rows pgx.Rows) (row, error) {
	var r row
	err := rows.Scan(&r.timeNS, &r.seq, &r.shape, &r.replica, &r.id, &r.rest)
	return r, err
}

// idKey is how the id column holds id: a canonical ULID as its 16 bytes;
// any other id as its text and a zero byte, two when that would make 16
// bytes (so that a length of 16 always means a ULID). Zero sorts below
// every byte of an id (no stored id holds one), so meshproof_id_text orders
// keys as their ids.
func idKey(id string) []byte {
	if len(id) == ulid.EncodedSize {
		if u, err := ulid.ParseStrict(id); err == nil && u.String() == id {
			return u[:]
		}
	}
	k := append(make([]byte, 0, len(id)+2), id...)
	k = append(k, 0)
	if len(k) == len(ulid.ULID{}) {
		k = append(k, 0)
	}
	return k
}

// idOf is the id an id column holds (idKey's inverse).
func idOf(k []byte) (string, error) {
	if len(k) == len(ulid.ULID{}) {
		var u ulid.ULID
		copy(u[:], k)
		return u.String(), nil
	}
	s := strings.TrimRight(string(k), "\x00")
	switch {
	case len(k)-len(s) != 1 && len(k)-len(s) != 2, len(k)-len(s) == 2 && len(k) != 17:
		return "", fmt.Errorf("the id column %x is not an id's form", k)
	case !utf8.ValidString(s):
		return "", fmt.Errorf("the id column %x is not UTF-8", k)
	}
	return s, nil
}

// shapeDigest is the shapes.digest of a shape.
func shapeDigest(shape []byte) []byte {
	d := sha256.Sum256(shape)
	return d[:]
}

// shape is a shapes row as readers use it.
type shape struct {
	body []byte
	cols evidence.Columns // the shape's index columns (replica, principals, ...)
	err  error            // why body is not a shape's canonical bytes
}

// shapeCacheSize bounds each of the caches below: a store has a few
// thousand shapes (edges x methods x outcomes); past the bound a cache
// starts afresh.
const shapeCacheSize = 1 << 16

// shapeCache keeps the shapes and replicas this process has read or
// written, by number and (for writers) by digest or name. Numbers are never
// reused (identity columns), so an entry never goes stale; a row deleted
// behind the store's back is still named by the records that use it.
type shapeCache struct {
	mu       sync.Mutex
	byDigest map[[32]byte]int32
	byID     map[int32]*shape
	replicas map[string]int32
	names    map[int32]string
}

func newShapeCache() *shapeCache {
	return &shapeCache{byDigest: map[[32]byte]int32{}, byID: map[int32]*shape{}, replicas: map[string]int32{}, names: map[int32]string{}}
}

// shapeIDs interns the shapes of recs (written by the caller: shapes[i] is
// the shape of recs[i]) and returns their numbers. New shapes are inserted
// in their own transaction: a shape nobody uses costs a row, never a
// wrong answer.
func (s *Store) shapeIDs(ctx context.Context, recs []*evidence.Record, shapes [][]byte) ([]int32, error) {
	ids := make([]int32, len(recs))
	var missing []int
	seen := map[[32]byte]bool{}
	c := s.shapes
	c.mu.Lock()
	for i, sh := range shapes {
		d := sha256.Sum256(sh)
		if id, ok := c.byDigest[d]; ok {
			ids[i] = id
		} else if !seen[d] {
			seen[d] = true
			missing = append(missing, i)
		}
	}
	c.mu.Unlock()
	if len(missing) > 0 {
		var cols [11][]string
		digests := make([][]byte, len(missing))
		bodies := make([][]byte, len(missing))
		allowed := make([]bool, len(missing))
		for j, i := range missing {
			k := evidence.ColumnsOf(recs[i])
			for n, v := range []string{k.Replica, k.SourcePrincipal, k.DestinationPrincipal, k.SourceTrustDomain, k.DestinationTrustDomain,
				k.SourceNamespace, k.DestinationNamespace, k.SourceKey, k.Verdict, k.Method, k.Host} {
				cols[n] = append(cols[n], v)
			}
			digests[j], bodies[j], allowed[j] = shapeDigest(shapes[i]), shapes[i], k.Allowed
		}
		if _, err := s.pool.Exec(ctx, `INSERT INTO shapes (digest, allowed, replica, source_principal, destination_principal,
				source_trust_domain, destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host, body)
			SELECT * FROM unnest($1::bytea[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
				$9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[])
			ON CONFLICT (digest) DO NOTHING`, digests, allowed, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6],
			cols[7], cols[8], cols[9], cols[10], bodies); err != nil {
			return nil, fmt.Errorf("shapes: %w", err)
		}
		rows, err := s.pool.Query(ctx, `SELECT id, digest FROM shapes WHERE digest = ANY($1)`, digests)
		if err != nil {
			return nil, fmt.Errorf("shapes: %w", err)
		}
		var id int32
		var digest []byte
		c.mu.Lock()
		if len(c.byDigest)+len(missing) > shapeCacheSize {
			c.byDigest = map[[32]byte]int32{}
		}
		_, err = pgx.ForEachRow(rows, []any{&id, &digest}, func() error {
			c.byDigest[[32]byte(digest)] = id
			return nil
		})
		if err == nil {
			for i, sh := range shapes {
				if ids[i] == 0 {
					if ids[i] = c.byDigest[sha256.Sum256(sh)]; ids[i] == 0 {
						err = errors.New("a new shape was not stored")
					}
				}
			}
		}
		c.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("shapes: %w", err)
		}
	}
	return ids, nil
}

// replicaID is replica's number, made on its first write.
func (s *Store) replicaID(ctx context.Context, replica string) (int32, error) {
	c := s.shapes
	c.mu.Lock()
	id, ok := c.replicas[replica]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	err := s.pool.QueryRow(ctx, `WITH n AS (INSERT INTO replicas (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id)
		SELECT id FROM n UNION ALL SELECT id FROM replicas WHERE name = $1`, replica).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("replica %s: %w", replica, err)
	}
	c.mu.Lock()
	if len(c.replicas) >= shapeCacheSize {
		c.replicas, c.names = map[string]int32{}, map[int32]string{}
	}
	c.replicas[replica], c.names[id] = id, replica
	c.mu.Unlock()
	return id, nil
}

// knownReplica is replica's number if it has one (ok false when it never
// wrote), without making one.
func (s *Store) knownReplica(ctx context.Context, q querier, replica string) (int32, bool, error) {
	var id int32
	err := q.QueryRow(ctx, `SELECT id FROM replicas WHERE name = $1`, replica).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("replica %s: %w", replica, err)
	}
	return id, true, nil
}

// resolve loads into the cache the shapes and replica names rows use that
// it does not hold.
func (s *Store) resolve(ctx context.Context, q rowsQuerier, rows []row) error {
	c := s.shapes
	var shapeIDs, replicaIDs []int32
	c.mu.Lock()
	for _, r := range rows {
		if _, ok := c.byID[r.shape]; !ok {
			shapeIDs = append(shapeIDs, r.shape)
		}
		if _, ok := c.names[r.replica]; !ok {
			replicaIDs = append(replicaIDs, r.replica)
		}
	}
	c.mu.Unlock()
	if len(shapeIDs) > 0 {
		rs, err := q.Query(ctx, `SELECT id, allowed, replica, source_principal, destination_principal, source_trust_domain,
			destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host, body
			FROM shapes WHERE id = ANY($1)`, shapeIDs)
		if err != nil {
			return fmt.Errorf("shapes: %w", err)
		}
		var got []*shape
		var ids []int32
		for rs.Next() {
			var id int32
			sh := &shape{}
			k := &sh.cols
			if err := rs.Scan(&id, &k.Allowed, &k.Replica, &k.SourcePrincipal, &k.DestinationPrincipal, &k.SourceTrustDomain,
				&k.DestinationTrustDomain, &k.SourceNamespace, &k.DestinationNamespace, &k.SourceKey, &k.Verdict, &k.Method, &k.Host,
				&sh.body); err != nil {
				rs.Close()
				return fmt.Errorf("shapes: %w", err)
			}
			sh.err = checkShape(sh.body)
			got, ids = append(got, sh), append(ids, id)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return fmt.Errorf("shapes: %w", err)
		}
		c.mu.Lock()
		if len(c.byID)+len(got) > shapeCacheSize {
			c.byID = map[int32]*shape{}
		}
		for i, sh := range got {
			c.byID[ids[i]] = sh
		}
		c.mu.Unlock()
	}
	if len(replicaIDs) > 0 {
		rs, err := q.Query(ctx, `SELECT id, name FROM replicas WHERE id = ANY($1)`, replicaIDs)
		if err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		var id int32
		var name string
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.names)+len(replicaIDs) > shapeCacheSize {
			c.replicas, c.names = map[string]int32{}, map[int32]string{}
		}
		if _, err := pgx.ForEachRow(rs, []any{&id, &name}, func() error {
			c.names[id], c.replicas[name] = name, id
			return nil
		}); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
	}
	return nil
}

// checkShape says why body is not a shape's canonical bytes (nil when it
// is): a shape row edited behind the store's back is refused as a whole,
// as a record's stored bytes are (evidence.DecodeStored).
func checkShape(body []byte) error {
	if evidence.StoredVersion(body) != evidence.CanonicalV2 {
		return errors.New("the shape is not canonical JSON (edited?)")
	}
	if _, err := evidence.DecodeStored("(shape)", body, 0, ""); err != nil {
		return err
	}
	return nil
}

// decodeRow is the record a row holds (resolve has loaded its shape and
// replica), with what it was stored as: the index columns (the shape's,
// the row's, and the record's own path and request id) and the stored
// bytes (evidence.StoredBody of the record). A row that does not decode
// gives a record holding only its id and seq, and the error in st.Err.
func (s *Store) decodeRow(r row) (*evidence.Record, evidence.Stored) {
	var st evidence.Stored
	st.TimeNS, st.Seq = r.timeNS, r.seq
	id, err := idOf(r.id)
	if err != nil {
		id = fmt.Sprintf("%x", r.id)
	}
	st.ID = id
	s.shapes.mu.Lock()
	sh, name := s.shapes.byID[r.shape], s.shapes.names[r.replica]
	s.shapes.mu.Unlock()
	fail := func(err error) (*evidence.Record, evidence.Stored) {
		st.Err = fmt.Errorf("record %s: %w", id, err)
		return &evidence.Record{ID: id, Chain: evidence.Chain{Seq: uint64(r.seq)}}, st
	}
	switch {
	case err != nil:
		return fail(err)
	case sh == nil:
		return fail(fmt.Errorf("its shape %d is missing", r.shape))
	case sh.err != nil:
		return fail(fmt.Errorf("its shape %d: %w", r.shape, sh.err))
	case name == "":
		return fail(fmt.Errorf("its replica %d is missing", r.replica))
	}
	rec, err := joinRow(sh.body, r.rest, id, r.timeNS, uint64(r.seq))
	if err != nil {
		return fail(err)
	}
	body, err := evidence.StoredBody(rec)
	if err != nil {
		return fail(err)
	}
	st.Body = body
	c := sh.cols
	c.TimeNS, c.ID, c.Seq, c.Replica = r.timeNS, id, r.seq, name
	c.Path, c.RequestID = rec.Request.Path, rec.RequestID
	st.Columns = c
	return rec, st
}

// decodeRows decodes rows (see decodeRow), refusing the first that does
// not decode: what queries answer.
func (s *Store) decodeRows(ctx context.Context, q rowsQuerier, rows []row) ([]*evidence.Record, error) {
	if err := s.resolve(ctx, q, rows); err != nil {
		return nil, err
	}
	out := make([]*evidence.Record, len(rows))
	for i, r := range rows {
		rec, st := s.decodeRow(r)
		if st.Err != nil {
			return nil, st.Err
		}
		out[i] = rec
	}
	return out, nil
}

// collectRows reads every row of rowColumns.
func collectRows(rs pgx.Rows) ([]row, error) {
	defer rs.Close()
	var out []row
	for rs.Next() {
		r, err := scanRow(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// leafHex is the hash a record's chain holds: for v2 the leaf hash of its
// canonical bytes.
func leafHex(r *evidence.Record) string {
	if r.Chain.Version == evidence.CanonicalV2 {
		return evidence.LeafHashHex(r.CanonicalJSON())
	}
	return r.Chain.Hash
}
