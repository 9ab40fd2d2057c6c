package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// args collects a statement's bound parameters: every value a filter
// carries is one, never SQL text.
type args []any

// add binds v and returns its placeholder.
func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// shapeWhere is the WHERE clause on shapes of f's conditions on the
// columns a shape holds (every filter but time, path and request id), ""
// when f has none.
func shapeWhere(f evidence.Filter, a *args) string {
	var conds []string
	cond := func(c string) { conds = append(conds, c) }
	eq := func(col, v string) {
		if v != "" {
			cond(col + " = " + a.add(v))
		}
	}
	prefix := func(col, p string) {
		if p == "" {
			return
		}
		cond(col + " >= " + a.add(p))
		if hi, ok := prefixEnd(p); ok {
			cond(col + " < " + a.add(hi))
		}
	}
	either := func(c1, c2, v string) {
		if v != "" {
			p := a.add(v)
			cond("(" + c1 + " = " + p + " OR " + c2 + " = " + p + ")")
		}
	}
	eq("source_principal", f.Source)
	prefix("source_principal", f.SourcePrefix)
	eq("destination_principal", f.Destination)
	prefix("destination_principal", f.DestinationPrefix)
	either("source_trust_domain", "destination_trust_domain", f.TrustDomain)
	either("source_namespace", "destination_namespace", f.Namespace)
	eq("source_namespace", f.SourceNamespace)
	eq("destination_namespace", f.DestinationNamespace)
	eq("source_workload", f.SourceWorkload)
	eq("destination_workload", f.DestinationWorkload)
	if len(f.Verdicts) > 0 {
		cond("verdict = ANY(" + a.add(verdictStrings(f.Verdicts)) + ")")
	}
	if len(f.NotVerdicts) > 0 {
		cond("verdict <> ALL(" + a.add(verdictStrings(f.NotVerdicts)) + ")")
	}
	if f.Allowed != nil {
		cond("allowed = " + a.add(*f.Allowed))
	}
	eq("method", f.Method)
	if f.Host != "" && evidence.HostAnyPort(f.Host) {
		lo, hi := a.add(f.Host), a.add(f.Host+";")
		cond("host >= " + lo + " AND host < " + hi + " AND (host = " + lo + " OR host >= " + a.add(f.Host+":") + ")")
	} else {
		eq("host", f.Host)
	}
	eq("replica", f.Replica)
	return strings.Join(conds, " AND ")
}

// plan is how the records a filter matches are read: a WHERE clause on
// records (its arguments in args). none: no record can match. When the
// filter names shapes, est is what the store knows of their records, for
// choosing how a page reads them (see byShape).
type plan struct {
	where string
	args  args
	none  bool
	est   *shapeEstimate
}

// shapeEstimate is a filter's shapes as a page's choice of reading sees
// them: how many (shapes), how many day partitions the time range
// overlaps (days), how many records those days hold of the shapes' rollup
// keys (matches: the daily rollups, an upper bound, since a key may hold
// shapes the filter leaves out) and in all (total: the partitions'
// reltuples, as of their last ANALYZE).
type shapeEstimate struct {
	shapes, days   int
	matches, total float64
}

// The costs, in µs on the machine of docs/performance.md ("The filtered
// page's tail at 10M"), that byShape weighs: a row the time-ordered scan
// of records_time reads and filters (the heap in time order), a row a
// bitmap scan of records_shape fetches (scattered over the day), and a
// shape looked up in one partition's records_shape.
const (
	costTimeRow  = 0.25
	costShapeRow = 1.3
	costProbe    = 0.6
)

// byShape reports whether a page of limit records is cheaper read through
// its shapes' index (a bitmap of every record of the shapes in the days,
// then sorted) than in time order, filtering as it goes (which stops at
// the limit-th match, after about limit * total / matches rows). The
// planner cannot tell: it prices a shape = ANY of rare shapes at the
// partition's average rows a shape, hundreds of times too many, and so
// always scans in time order, reading tens of thousands of rows for a
// rare verdict's page.
func (e *shapeEstimate) byShape(limit int) bool {
	if e == nil || e.shapes == 0 {
		return false
	}
	if e.matches < 1 {
		return true // no rollup counts any: a bitmap finds none, fast
	}
	shape := costShapeRow*e.matches + costProbe*float64(e.shapes*e.days)
	return shape < costTimeRow*float64(limit)*e.total/e.matches
}

// planOf plans f, a validated filter: the shapes it names are read first
// (a few thousand rows at most), then the records of those shapes.
func (s *Store) planOf(ctx context.Context, f evidence.Filter) (plan, error) {
	var p plan
	var conds []string
	cond := func(c string) { conds = append(conds, c) }
	var sa args
	if w := shapeWhere(f, &sa); w != "" {
		days := s.parts.within(f.Since, f.Until)
		names := make([]string, len(days))
		for i, d := range days {
			names[i] = partitionName(d)
		}
		var ids []int32
		var e shapeEstimate
		if err := s.pool.QueryRow(ctx, shapeEstimateSQL(w, &sa, days, names), sa...).Scan(&ids, &e.matches, &e.total); err != nil {
			return p, fmt.Errorf("postgres: query: shapes: %w", err)
		}
		if len(ids) == 0 {
			p.none = true
			return p, nil
		}
		e.shapes, e.days = len(ids), len(days)
		p.est = &e
		cond("shape = ANY(" + p.args.add(ids) + "::integer[])")
	}
	if !f.Since.IsZero() {
		cond("time_ns >= " + p.args.add(clampNano(f.Since)))
	}
	if !f.Until.IsZero() {
		cond("time_ns < " + p.args.add(clampNano(f.Until)))
	}
	if f.PathPrefix != "" {
		cond("path >= " + p.args.add(f.PathPrefix))
		if hi, ok := prefixEnd(f.PathPrefix); ok {
			cond("path < " + p.args.add(hi))
		}
	}
	if f.RequestID != "" {
		if textColumn("request id", f.RequestID) != nil {
			p.none = true // no stored record has one
			return p, nil
		}
		cond(requestCond(f.RequestID, &p.args))
	}
	p.where = "TRUE"
	if len(conds) > 0 {
		p.where = strings.Join(conds, " AND ")
	}
	return p, nil
}

// shapeEstimateSQL is the query of the shapes matching w (their ids) and
// of their estimate over the partitions of days (named names): the daily
// rollups of the shapes' keys (a shape's replica, source key, host,
// destination principal, verdict and outcome are its rollup key), and the
// partitions' row counts. One round trip, as the shapes alone took.
func shapeEstimateSQL(w string, a *args, days []int64, names []string) string {
	return `WITH s AS MATERIALIZED (SELECT id, replica, source_key, host, destination_principal, verdict, allowed FROM shapes WHERE ` + w + `)
SELECT coalesce((SELECT array_agg(id) FROM s), '{}'::integer[]),
	(SELECT coalesce(sum(r.count), 0)::float8
		FROM (SELECT DISTINCT replica, source_key, host, destination_principal, verdict, allowed FROM s) d
		JOIN rollup_keys k ON k.replica = d.replica AND k.source = d.source_key AND k.destination_host = d.host
			AND k.destination_principal = d.destination_principal AND k.verdict = d.verdict AND k.allowed = d.allowed
		JOIN rollups_daily r ON r.key = k.id AND r.day = ANY(` + a.add(days) + `::bigint[])),
	(SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 FROM pg_class c
		WHERE c.oid = ANY(ARRAY(SELECT to_regclass(n) FROM unnest(` + a.add(names) + `::text[]) n)))`
}

// requestCond is the condition on a request id: a UUID's records are
// found by records_by_request (migrations/0008, through the BRIN bloom
// index records_request_uuid, which the planner would not choose), any
// other id through records_request_other (migrations/0005).
func requestCond(requestID string, a *args) string {
	k := requestKey(requestID)
	if len(k) == 16 {
		return "chain IN (SELECT records_by_request(" + a.add(k) + ", " + a.add(int64(binary.BigEndian.Uint64(k[:8]))) + "))"
	}
	c := "request_id = " + a.add(k)
	p := k[:min(len(k), 64)]
	c += " AND length(request_id) <> 16 AND length(request_id) > 0 AND substring(request_id FROM 1 FOR 64) >= " + a.add(p)
	if hi, ok := bytesEnd(p); ok {
		c += " AND substring(request_id FROM 1 FOR 64) < " + a.add(hi)
	}
	return c
}

// bytesEnd is the least byte string above every string that starts with
// p; ok is false when there is none (p is all 0xff).
func bytesEnd(p []byte) ([]byte, bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] < 0xff {
			out := append([]byte(nil), p[:i+1]...)
			out[i]++
			return out, true
		}
	}
	return nil, false
}

// clampNano is t in Unix nanoseconds, saturated to the int64 range (which
// holds every record's time, see evidence.MinTime).
func clampNano(t time.Time) int64 { return evidence.Nanos(t) }

// prefixEnd is the least string above every string that starts with p, in
// the bytewise ("C") order, which for UTF-8 is code point order: p with
// its last code point incremented. ok is false when there is none.
func prefixEnd(p string) (string, bool) {
	for p != "" {
		r, size := utf8.DecodeLastRuneInString(p)
		p = p[:len(p)-size]
		switch {
		case r == 0xD7FF:
			return p + string(rune(0xE000)), true // past the surrogates
		case r < utf8.MaxRune:
			return p + string(r+1), true
		}
	}
	return "", false
}

func verdictStrings(vs []evidence.Verdict) []string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return s
}

// Query returns one page of the records matching f, newest first.
func (s *Store) Query(ctx context.Context, f evidence.Filter, page evidence.PageRequest) (evidence.RecordPage, error) {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return evidence.RecordPage{}, err
	}
	limit := page.Size()
	after, err := parseCursor(page.Cursor)
	if err != nil {
		return evidence.RecordPage{}, err
	}
	recs, next, err := s.page(ctx, f, after, limit)
	if err != nil {
		return evidence.RecordPage{}, err
	}
	res := evidence.RecordPage{Records: recs}
	if next != nil {
		res.Next = storekit.EncodeCursor(next.timeNS, next.id)
	}
	return res, nil
}

// parseCursor reads a page's cursor; nil for the first page.
func parseCursor(c string) (*cursor, error) {
	if c == "" {
		return nil, nil
	}
	t, id, err := storekit.DecodeCursor(c)
	if err != nil {
		return nil, err
	}
	if !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		// No stored id is: a forged cursor, which PostgreSQL would refuse
		// as text.
		return nil, fmt.Errorf("%w: %q", evidence.ErrBadCursor, c)
	}
	return &cursor{t, id}, nil
}

// cursor is the position after which a page starts.
type cursor struct {
	timeNS int64
	id     string
}

// idOrder is the order of ids in SQL: idKey sorts as the ids do.
const idOrder = "id"

// pageSQL is the query of a chunk of p's rows after the cursor, newest
// first.
func (p plan) pageSQL(after *cursor, limit int) (string, args) {
	a := append(args(nil), p.args...)
	w := p.where
	if after != nil {
		t, id := a.add(after.timeNS), a.add(idKey(after.id))
		w += " AND time_ns <= " + t + " AND (time_ns < " + t + " OR " + idOrder + " < " + id + ")"
	}
	return "SELECT " + rowColumns + " FROM records WHERE " + w + " ORDER BY time_ns DESC, " + idOrder + " DESC LIMIT " + a.add(limit), a
}

// page reads up to limit records matching f after the cursor, newest
// first, and the cursor of the next page (nil on the last one). It holds a
// connection only while it reads.
func (s *Store) page(ctx context.Context, f evidence.Filter, after *cursor, limit int) ([]*evidence.Record, *cursor, error) {
	p, err := s.planOf(ctx, f)
	if err != nil || p.none {
		return nil, nil, err
	}
	q, a := p.pageSQL(after, limit+1)
	var rows []row
	if s.pageByShape(p.est, limit+1) {
		rows, err = s.readByShape(ctx, q, a)
	} else {
		var rs pgx.Rows
		if rs, err = s.pool.Query(ctx, q, a...); err == nil {
			rows, err = collectRows(rs)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: query: %w", err)
	}
	var next *cursor
	if len(rows) > limit {
		// The last record returned.
		rows = rows[:limit]
		last := rows[limit-1]
		id, err := idOf(last.id)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: query: %w", err)
		}
		next = &cursor{last.timeNS, id}
	}
	recs, err := s.decodeRows(ctx, s.pool, rows)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: query: %w", err)
	}
	return recs, next, nil
}

// byShapeSettings keep the planner, for the statement after them in the
// same round trip (a batch is one implicit transaction, and set_config's
// third argument makes each local to it), from the time-ordered index
// scan, from parallel workers (whose start costs more than a page's
// bitmap scan), from JIT, and from a generic plan: a plan of this
// statement's text is only ever made under these settings.
const byShapeSettings = `SELECT set_config('enable_indexscan', 'off', true), set_config('max_parallel_workers_per_gather', '0', true),
	set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true)`

// byShapeMark makes a page read by shape a statement text of its own.
const byShapeMark = "/* by shape */ "

// pageByShape is est.byShape(limit), unless a test forces the choice.
func (s *Store) pageByShape(est *shapeEstimate, limit int) bool {
	switch s.pageForm {
	case formByTime:
		return false
	case formByShape:
		return est != nil
	}
	return est.byShape(limit)
}

// readByShape runs the page query q through the shapes' index
// (byShapeSettings).
func (s *Store) readByShape(ctx context.Context, q string, a args) ([]row, error) {
	b := &pgx.Batch{}
	b.Queue(byShapeSettings)
	b.Queue(byShapeMark+q, a...)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rs, err := br.Query()
	if err != nil {
		return nil, err
	}
	rows, err := collectRows(rs)
	if err != nil {
		return nil, err
	}
	return rows, br.Close()
}

// Scan calls fn for every record matching f, newest first, reading a page
// at a time; no connection is held while fn runs.
func (s *Store) Scan(ctx context.Context, f evidence.Filter, fn func(*evidence.Record) error) error {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return err
	}
	return storekit.ScanPages(ctx, func(after *cursor) ([]*evidence.Record, *cursor, bool, error) {
		recs, next, err := s.page(ctx, f, after, evidence.MaxLimit)
		return recs, next, next != nil, err
	}, fn)
}

// Get returns the record with id: a record whose id is the ULID of its
// time (every record a Check makes) through records_time, in the
// millisecond the id names; any other through records_other_id.
func (s *Store) Get(ctx context.Context, id string) (*evidence.Record, error) {
	if r := s.jd.Get(id); r != nil {
		return r, nil // not applied yet (journal.go): no apply for one record
	}
	if !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return nil, fmt.Errorf("record %q: %w", id, evidence.ErrNotFound)
	}
	k := idKey(id)
	var queries []string
	var qargs [][]any
	if u, err := ulid.ParseStrict(id); err == nil && len(k) == 16 && u.Time() < math.MaxInt64/uint64(time.Millisecond) {
		ms := int64(u.Time()) * int64(time.Millisecond)
		queries = append(queries, "SELECT "+rowColumns+" FROM records WHERE id = $1 AND time_ns >= $2 AND time_ns < $3 LIMIT 1")
		qargs = append(qargs, []any{k, ms, ms + int64(time.Millisecond)})
	}
	queries = append(queries, "SELECT "+rowColumns+" FROM records WHERE id = $1 AND "+otherID+" LIMIT 1")
	qargs = append(qargs, []any{k})
	for i, q := range queries {
		rs, err := s.pool.Query(ctx, q, qargs[i]...)
		if err != nil {
			return nil, fmt.Errorf("postgres: get %s: %w", id, err)
		}
		rows, err := collectRows(rs)
		if err != nil {
			return nil, fmt.Errorf("postgres: get %s: %w", id, err)
		}
		if len(rows) == 1 {
			recs, err := s.decodeRows(ctx, s.pool, rows)
			if err != nil {
				return nil, fmt.Errorf("postgres: get: %w", err)
			}
			return recs[0], nil
		}
	}
	return nil, fmt.Errorf("record %q: %w", id, evidence.ErrNotFound)
}

// otherID is the predicate of records_other_id, written as the index
// writes it so that the planner reads that index: a record whose id is not
// the ULID of its time's millisecond.
const otherID = "NOT (time_ns >= 0 AND length(id) = 16 AND substring(id FROM 1 FOR 6) = substring(int8send(time_ns / 1000000) FROM 3 FOR 6))"

// ScanJSON calls fn with the stored JSON of every record matching f,
// newest first, a page at a time as Scan does, without decoding it: the
// bytes are the record's JSON form as Append wrote it (json.Marshal), one
// line. Export streams them as they are, sparing a decode and an encode
// per record. fn must not keep body after it returns.
func (s *Store) ScanJSON(ctx context.Context, f evidence.Filter, fn func(body []byte) error) error {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return err
	}
	return storekit.ScanPages(ctx, func(after *cursor) ([][]byte, *cursor, bool, error) {
		bodies, next, err := s.bodies(ctx, f, after, evidence.MaxLimit)
		return bodies, next, next != nil, err
	}, fn)
}

// Count returns how many records match f: count(*) with the page query's
// WHERE.
func (s *Store) Count(ctx context.Context, f evidence.Filter) (int64, error) {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return 0, err
	}
	p, err := s.planOf(ctx, f)
	if err != nil || p.none {
		return 0, err
	}
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM records WHERE "+p.where, p.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count: %w", err)
	}
	return n, nil
}

// QueryJSON returns one page of the records matching f as Query does, each
// record as its stored JSON (see ScanJSON), and the next cursor.
func (s *Store) QueryJSON(ctx context.Context, f evidence.Filter, page evidence.PageRequest) ([][]byte, string, error) {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	after, err := parseCursor(page.Cursor)
	if err != nil {
		return nil, "", err
	}
	bodies, next, err := s.bodies(ctx, f, after, page.Size())
	if err != nil || next == nil {
		return bodies, "", err
	}
	return bodies, storekit.EncodeCursor(next.timeNS, next.id), nil
}

// bodies reads one page of records as the API serves them
// (evidence.AppendRecordJSON of the stored bytes); it holds a connection
// only while it reads.
func (s *Store) bodies(ctx context.Context, f evidence.Filter, after *cursor, limit int) ([][]byte, *cursor, error) {
	recs, next, err := s.page(ctx, f, after, limit)
	if err != nil {
		return nil, nil, err
	}
	out := make([][]byte, len(recs))
	for i, r := range recs {
		if out[i], err = recordJSON(r); err != nil {
			return nil, nil, fmt.Errorf("postgres: query: %w", err)
		}
	}
	return out, next, nil
}

// recordJSON is a record's JSON as the API serves it: its stored bytes, a
// v2 record's with its chain member put first (evidence.AppendRecordJSON).
func recordJSON(r *evidence.Record) ([]byte, error) {
	body, err := evidence.StoredBody(r)
	if err != nil || r.Chain.Version != evidence.CanonicalV2 {
		return body, err
	}
	return evidence.AppendRecordJSON(make([]byte, 0, len(body)+128), body, r.Chain.Seq, r.Chain.Hash), nil
}

// Amendments returns the amendments of the records with ids: their ids, in
// the partitions of [since, until] (an amendment has its record's time).
func (s *Store) Amendments(ctx context.Context, ids []string, since, until time.Time) (map[string]*evidence.Record, error) {
	s.settle(ctx)
	out := map[string]*evidence.Record{}
	if len(ids) == 0 {
		return out, nil
	}
	want := make([][]byte, len(ids))
	for i, id := range ids {
		want[i] = idKey(evidence.AmendmentID(id))
	}
	// An amendment's id is never a ULID: records_other_id holds them.
	var a args
	w := "id = ANY(" + a.add(want) + "::bytea[]) AND " + otherID
	if !since.IsZero() && !until.IsZero() {
		w += " AND time_ns >= " + a.add(since.UnixNano()) + " AND time_ns <= " + a.add(until.UnixNano())
	}
	rs, err := s.pool.Query(ctx, "SELECT "+rowColumns+" FROM records WHERE "+w, a...)
	if err != nil {
		return nil, fmt.Errorf("postgres: amendments: %w", err)
	}
	rows, err := collectRows(rs)
	if err != nil {
		return nil, fmt.Errorf("postgres: amendments: %w", err)
	}
	recs, err := s.decodeRows(ctx, s.pool, rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: amendments: %w", err)
	}
	for _, r := range recs {
		if r.Amends != nil {
			out[r.Amends.ID] = r
		}
	}
	return out, nil
}
