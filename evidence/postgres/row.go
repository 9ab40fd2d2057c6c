package postgres

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
)

// A record's row (schema 5, migrations/0005_compact.sql): its time, chain
// (its replica's number and its seq, chainKey), shape number, id (idKey),
// request id (requestKey), path, and its rest (compact.SplitStored).
const rowColumns = "time_ns, chain, shape, id, request_id, path, rest"

type row struct {
	timeNS, seq    int64
	shape, replica int32
	id, requestID  []byte
	path           string
	rest           []byte
}

// The chain column: replica << chainBits | seq.
const (
	chainBits  = 44
	maxSeq     = 1<<chainBits - 1
	maxReplica = 1<<(63-chainBits) - 1
	seqMask    = "17592186044415" // maxSeq, in SQL
)

// chainKey is the chain column of replica's record at seq.
func chainKey(replica int32, seq int64) int64 { return int64(replica)<<chainBits | seq }

// chainBase is, in SQL, the least chain column of the replica named by
// the text parameter p (NULL when it has no number).
func chainBase(p string) string {
	return "((SELECT id FROM replicas WHERE name = " + p + ")::bigint << 44)"
}

// scanRow reads rowColumns.
func scanRow(rows pgx.Rows) (row, error) {
	var r row
	var chain int64
	err := rows.Scan(&r.timeNS, &chain, &r.shape, &r.id, &r.requestID, &r.path, &r.rest)
	r.replica, r.seq = int32(chain>>chainBits), chain&maxSeq
	return r, err
}

// values is r in the order of rowColumns.
func (r *row) values(dst []any) []any {
	return append(dst[:0], r.timeNS, chainKey(r.replica, r.seq), r.shape, r.id, r.requestID, r.path, r.rest)
}

// rowOf is the row of r (its shape's number set by the caller).
func rowOf(r *evidence.Record, replica int32) (row, []byte, error) {
	if err := textColumn("request id", r.RequestID); err != nil {
		return row{}, nil, err
	}
	if r.Chain.Seq < 1 || r.Chain.Seq > maxSeq {
		return row{}, nil, fmt.Errorf("seq %d: a chain holds seqs 1 to %d", r.Chain.Seq, maxSeq)
	}
	shape, rest, err := compact.SplitStored(r)
	if err != nil {
		return row{}, nil, err
	}
	return row{timeNS: evidence.Nanos(r.Time), seq: int64(r.Chain.Seq), replica: replica, id: idKey(r.ID),
		requestID: requestKey(r.RequestID), path: r.Request.Path, rest: rest}, shape, nil
}

// textColumn refuses what a text column would (PostgreSQL's error 22021):
// the request id is kept as bytes, but as text it was before schema 5,
// and requestKey needs it without NUL.
func textColumn(what, s string) error {
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return fmt.Errorf("the %s %q is not UTF-8 text without NUL", what, s)
	}
	return nil
}

// idKey is how the id column holds id: compact.IDKey (a canonical ULID as
// its 16 bytes; any other id at or above the least ULID as 16 bytes that
// keep the ids' order, 0x01 and the id), and an id below every ULID,
// which compact.IDKey leaves as text, as 17 zero bytes and the id: bytes
// sort as the ids do, but for such an id against the least ULID itself
// ("000...0") at the same nanosecond, which sorts before it.
func idKey(id string) []byte {
	switch k := compact.IDKey(id).(type) {
	case []byte:
		return k
	default:
		return append(make([]byte, 17, 17+len(id)), id...)
	}
}

// idOf is the id an id column holds (idKey's inverse).
func idOf(k []byte) (string, error) {
	if len(k) >= 17 && k[16] == 0 && bytes.Count(k[:17], []byte{0}) == 17 {
		id := string(k[17:])
		if _, ok := compact.IDKey(id).(string); !ok {
			return "", fmt.Errorf("the id column %x is not one idKey makes", k)
		}
		return id, nil
	}
	return compact.IDOfKey(k)
}

// requestKey is how the request_id column holds a request id: empty for
// none, a canonical UUID as its 16 bytes, any other as its text and a zero
// byte (two when that would make 16 bytes: 16 bytes are always a UUID).
// Request ids hold no NUL (textColumn).
func requestKey(s string) []byte {
	if s == "" {
		return []byte{}
	}
	if k, ok := compact.RequestIDKey(s).([]byte); ok {
		return k
	}
	k := append(make([]byte, 0, len(s)+2), s...)
	k = append(k, 0)
	if len(k) == 16 {
		k = append(k, 0)
	}
	return k
}

// requestOf is the request id a request_id column holds.
func requestOf(k []byte) (string, error) {
	switch len(k) {
	case 0:
		return "", nil
	case 16:
		return compact.RequestIDOfKey(k)
	}
	s := strings.TrimRight(string(k), "\x00")
	if n := len(k) - len(s); n != 1 && (n != 2 || len(k) != 17) {
		return "", fmt.Errorf("the request_id column %x is not one requestKey makes", k)
	}
	return s, nil
}

// shape is a shapes row.
type shape struct {
	body []byte           // the shape's bytes, unpacked
	err  error            // why they did not unpack
	cols evidence.Columns // the shape's index columns (replica, principals, ...)
}

// shapeCacheSize bounds each of the caches below: a store has a few
// thousand shapes (edges x methods x outcomes); past the bound a cache
// starts afresh.
const shapeCacheSize = 1 << 14

// shapeSet holds the shapes and replica names rows name, as read from the
// database: the store keeps one for its readers (numbers are never reused,
// so an entry never goes stale unless the database is edited behind its
// back), Walk a fresh one per walk (Verify must see what is stored now).
type shapeSet struct {
	mu      sync.Mutex
	byID    map[int32]*shape
	names   map[int32]string
	decoded *compact.Shapes
}

func newShapeSet() *shapeSet {
	return &shapeSet{byID: map[int32]*shape{}, names: map[int32]string{}, decoded: compact.NewShapes(shapeCacheSize)}
}

// writerCache is what writers know: shape numbers by digest, replica
// numbers by name.
type writerCache struct {
	mu       sync.Mutex
	byDigest map[[32]byte]int32
	replicas map[string]int32
}

func newWriterCache() *writerCache {
	return &writerCache{byDigest: map[[32]byte]int32{}, replicas: map[string]int32{}}
}

// replicaID is replica's number, made on its first write.
func (s *Store) replicaID(ctx context.Context, replica string) (int32, error) {
	c := s.writer
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
	if id < 1 || id > maxReplica {
		return 0, fmt.Errorf("replica %s: number %d, a store holds 1 to %d", replica, id, maxReplica)
	}
	c.mu.Lock()
	if len(c.replicas) >= shapeCacheSize {
		clear(c.replicas)
	}
	c.replicas[replica] = id
	c.mu.Unlock()
	return id, nil
}

// knownReplica is replica's number if it has one (ok false when it never
// wrote), without making one.
func knownReplica(ctx context.Context, q querier, replica string) (int32, bool, error) {
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

// resolve loads into set the shapes and replica names rows use that it
// does not hold.
func (set *shapeSet) resolve(ctx context.Context, q rowsQuerier, rows []row) error {
	var shapeIDs, replicaIDs []int32
	set.mu.Lock()
	for _, r := range rows {
		if _, ok := set.byID[r.shape]; !ok && !containsID(shapeIDs, r.shape) {
			shapeIDs = append(shapeIDs, r.shape)
		}
		if _, ok := set.names[r.replica]; !ok && !containsID(replicaIDs, r.replica) {
			replicaIDs = append(replicaIDs, r.replica)
		}
	}
	set.mu.Unlock()
	if len(shapeIDs) > 0 {
		rs, err := q.Query(ctx, `SELECT id, allowed, replica, source_principal, destination_principal, source_trust_domain,
			destination_trust_domain, source_namespace, destination_namespace, source_key, verdict, method, host,
			source_workload, destination_workload, body
			FROM shapes WHERE id = ANY($1)`, shapeIDs)
		if err != nil {
			return fmt.Errorf("shapes: %w", err)
		}
		got := map[int32]*shape{}
		for rs.Next() {
			var id int32
			sh := &shape{}
			k := &sh.cols
			if err := rs.Scan(&id, &k.Allowed, &k.Replica, &k.SourcePrincipal, &k.DestinationPrincipal, &k.SourceTrustDomain,
				&k.DestinationTrustDomain, &k.SourceNamespace, &k.DestinationNamespace, &k.SourceKey, &k.Verdict, &k.Method, &k.Host,
				&k.SourceWorkload, &k.DestinationWorkload, &sh.body); err != nil {
				rs.Close()
				return fmt.Errorf("shapes: %w", err)
			}
			sh.body, sh.err = unpackShape(sh.body)
			got[id] = sh
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return fmt.Errorf("shapes: %w", err)
		}
		set.mu.Lock()
		if len(set.byID)+len(got) > shapeCacheSize {
			clear(set.byID)
		}
		for id, sh := range got {
			set.byID[id] = sh
		}
		set.mu.Unlock()
	}
	if len(replicaIDs) > 0 {
		rs, err := q.Query(ctx, `SELECT id, name FROM replicas WHERE id = ANY($1)`, replicaIDs)
		if err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		var id int32
		var name string
		set.mu.Lock()
		defer set.mu.Unlock()
		if len(set.names)+len(replicaIDs) > shapeCacheSize {
			clear(set.names)
		}
		if _, err := pgx.ForEachRow(rs, []any{&id, &name}, func() error {
			set.names[id] = name
			return nil
		}); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
	}
	return nil
}

func containsID(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// decodeRow is the record a row holds (set.resolve has loaded its shape
// and replica), with what it was stored as: the index columns (the
// shape's and the row's) and the stored bytes (evidence.StoredBody of the
// record). A row that does not decode, or whose record no longer hashes to
// its rest's check (compact.ErrCheck), has st.Err set; the record is then
// the one joined when there is one, else one holding only its id and seq.
func (set *shapeSet) decodeRow(r row) (*evidence.Record, evidence.Stored) {
	var st evidence.Stored
	st.TimeNS, st.Seq = r.timeNS, r.seq
	id, err := idOf(r.id)
	if err != nil {
		id = fmt.Sprintf("%x", r.id)
	}
	st.ID = id
	set.mu.Lock()
	sh, name := set.byID[r.shape], set.names[r.replica]
	set.mu.Unlock()
	fail := func(err error) (*evidence.Record, evidence.Stored) {
		st.Err = fmt.Errorf("record %s: %w", id, err)
		return &evidence.Record{ID: id, Chain: evidence.Chain{Seq: uint64(r.seq)}}, st
	}
	if err != nil {
		return fail(err)
	}
	if sh == nil {
		return fail(fmt.Errorf("its shape %d is missing", r.shape))
	}
	if sh.err != nil {
		return fail(fmt.Errorf("its shape %d: %w", r.shape, sh.err))
	}
	if name == "" {
		return fail(fmt.Errorf("its replica %d is missing", r.replica))
	}
	reqID, err := requestOf(r.requestID)
	if err != nil {
		return fail(err)
	}
	out := compact.Outside{ID: id, TimeNS: r.timeNS, RequestID: reqID, Path: r.path, Seq: uint64(r.seq)}
	rec, err := set.decoded.Join(int64(r.shape), r.rest, out, func(int64) ([]byte, error) { return sh.body, nil })
	if err != nil && !errors.Is(err, compact.ErrCheck) {
		return fail(err)
	}
	if err != nil {
		st.Err = fmt.Errorf("record %s: %w", id, err)
	}
	body, berr := evidence.StoredBody(rec)
	if berr != nil {
		return fail(berr)
	}
	st.Body = body
	c := sh.cols
	c.TimeNS, c.ID, c.Seq, c.Replica = r.timeNS, id, r.seq, name
	c.Path, c.RequestID = r.path, reqID
	st.Columns = c
	return rec, st
}

// decodeRows decodes rows for a query (see decodeRow): the first that does
// not decode fails them all; a record that no longer matches its check is
// served as it reads (Verify names it).
func (s *Store) decodeRows(ctx context.Context, q rowsQuerier, rows []row) ([]*evidence.Record, error) {
	if err := s.read.resolve(ctx, q, rows); err != nil {
		return nil, err
	}
	out := make([]*evidence.Record, len(rows))
	for i, r := range rows {
		rec, st := s.read.decodeRow(r)
		if st.Err != nil && !errors.Is(st.Err, compact.ErrCheck) {
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
// canonical bytes (compact.JoinStored recomputes it).
func leafHex(r *evidence.Record) string {
	if r.Chain.Version == evidence.CanonicalV2 && r.Chain.Hash == "" {
		return evidence.LeafHashHex(r.CanonicalJSON())
	}
	return r.Chain.Hash
}

// shapes.body holds a shape DEFLATE-compressed (compress/flate, level 6:
// level 9 packs them no smaller, more slowly):
// shapes are the same JSON keys and the same names over and over, and
// 1.6 KB each, below the size at which PostgreSQL compresses a row itself.

// packers are DEFLATE writers, reused: a new one allocates its tables (a
// megabyte), many times the work of compressing a shape.
var packers = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.DefaultCompression) // the level is valid
	return w
}}

// packShape is the shapes.body of a shape.
func packShape(shape []byte) []byte {
	var b bytes.Buffer
	w := packers.Get().(*flate.Writer)
	w.Reset(&b)
	w.Write(shape) // a bytes.Buffer takes everything
	w.Close()
	packers.Put(w)
	return b.Bytes()
}

// unpackShape is the shape a shapes.body holds, at most
// compact.MaxShapeBytes of it.
func unpackShape(body []byte) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(body))
	defer r.Close()
	shape, err := io.ReadAll(io.LimitReader(r, compact.MaxShapeBytes+1))
	if err != nil {
		return nil, fmt.Errorf("the shape does not inflate: %w", err)
	}
	if len(shape) > compact.MaxShapeBytes {
		return nil, fmt.Errorf("the shape inflates to more than %d bytes", compact.MaxShapeBytes)
	}
	return shape, nil
}
