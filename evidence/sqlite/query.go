package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/compact"
	"github.com/meshproof/meshproof/evidence/storekit"
)

// where is a WHERE clause being built: every value is a bound parameter;
// the SQL text comes only from the constants below.
type where struct {
	conds []string
	args  []any
}

func (w *where) and(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// edgeWhere is f's conditions on a record's edge (see migration 2), on the
// edges table's columns; ok is false when f has none.
func edgeWhere(f evidence.Filter) (w *where, ok bool) {
	w = &where{}
	exact := []struct{ column, value string }{
		{"src_principal", f.Source}, {"dst_principal", f.Destination}, {"replica", f.Replica},
		{"src_ns", f.SourceNamespace}, {"dst_ns", f.DestinationNamespace},
		{"src_wl", f.SourceWorkload}, {"dst_wl", f.DestinationWorkload},
	}
	for _, e := range exact {
		if e.value != "" {
			w.and(e.column+" = ?", e.value)
		}
	}
	switch {
	case f.Host == "":
	case evidence.HostAnyPort(f.Host):
		// One range of edges_host, as evidence.HostAnyPort says.
		w.and("host >= ? AND host < ? AND (host = ? OR host >= ?)", f.Host, f.Host+";", f.Host, f.Host+":")
	default:
		w.and("host = ?", f.Host)
	}
	prefixes := []struct{ column, value string }{{"src_principal", f.SourcePrefix}, {"dst_principal", f.DestinationPrefix}}
	for _, p := range prefixes {
		if p.value != "" {
			prefixRange(w, p.column, p.value)
		}
	}
	if f.TrustDomain != "" {
		w.and("(src_td = ? OR dst_td = ?)", f.TrustDomain, f.TrustDomain)
	}
	if f.Namespace != "" {
		w.and("(src_ns = ? OR dst_ns = ?)", f.Namespace, f.Namespace)
	}
	if len(f.Verdicts) > 0 {
		w.and("verdict IN ("+placeholders(len(f.Verdicts))+")", verdictArgs(f.Verdicts)...)
	}
	if len(f.NotVerdicts) > 0 {
		w.and("verdict NOT IN ("+placeholders(len(f.NotVerdicts))+")", verdictArgs(f.NotVerdicts)...)
	}
	if f.Allowed != nil {
		w.and("allowed = ?", *f.Allowed)
	}
	return w, len(w.conds) > 0
}

// recordWhere is f's conditions on the record's own columns, and the
// cursor's position: what no edge says.
func recordWhere(f evidence.Filter, cursor string) (*where, error) {
	w := &where{}
	if !f.Since.IsZero() {
		w.and("time_ns >= ?", evidence.Nanos(f.Since))
	}
	if !f.Until.IsZero() {
		w.and("time_ns < ?", evidence.Nanos(f.Until))
	}
	if cursor != "" {
		t, id, err := storekit.DecodeCursor(cursor)
		if err != nil {
			return nil, err
		}
		// time_ns alone first: the range of the time indexes.
		w.and("time_ns <= ? AND (time_ns, id) < (?, ?)", t, t, compact.IDKey(id))
	}
	if f.Method != "" {
		// The method is the shape's (a shape is one edge's, method's and
		// outcome's: a few thousand of them).
		w.and("shape IN (SELECT id FROM shapes WHERE method = ?)", f.Method)
	}
	if f.PathPrefix != "" {
		prefixRange(w, "path", f.PathPrefix)
	}
	if f.RequestID != "" {
		k := compact.RequestIDKey(f.RequestID)
		w.and("substr(rid, -4) = substr(?, -4) AND rid = ?", k, k)
	}
	return w, nil
}

// prefixRange adds column LIKE prefix% as the range [prefix, end).
func prefixRange(w *where, column, prefix string) {
	w.and(column+" >= ?", prefix)
	if upper, ok := prefixEnd(prefix); ok {
		w.and(column+" < ?", upper)
	}
}

// mergeEdges is how many edges a filter may name for the page to be read
// edge by edge: each edge's newest rows through records_edge, merged. More
// edges than that are a broad filter, read newest first through
// records_time, the edge checked in the index.
const mergeEdges = 100

// querySQL is the page query: f's records after the cursor, newest first,
// as rows of rowCols. Its plan is chosen here, not left to the
// planner (there are no statistics to guide it):
//   - a request id: its index, every chain segment probed;
//   - conditions on edges naming up to mergeEdges: each edge's newest rows
//     from records_edge, merged (SQLite merges the ordered arms of a
//     compound select), and the bodies of the page only;
//   - otherwise: records_time, newest first.
func (s *Store) querySQL(ctx context.Context, f evidence.Filter, cursor string, limit int) (string, []any, error) {
	rw, err := recordWhere(f, cursor)
	if err != nil {
		return "", nil, err
	}
	ew, hasEdges := edgeWhere(f)
	if f.RequestID != "" {
		if hasEdges {
			rw.and("edge IN (SELECT id FROM edges"+ew.String()+")", ew.args...)
		}
		return byRequestSQL(rowCols, rw) + ` ORDER BY time_ns DESC, id DESC LIMIT ?`,
			append(rw.args, limit), nil
	}
	if !hasEdges {
		return `SELECT ` + rowCols + ` FROM records INDEXED BY records_time` + rw.String() +
			` ORDER BY time_ns DESC, id DESC LIMIT ?`, append(rw.args, limit), nil
	}
	edges, err := s.edgeIDs(ctx, ew, mergeEdges+1)
	if err != nil {
		return "", nil, err
	}
	switch {
	case len(edges) == 0:
		return `SELECT ` + rowCols + ` FROM records WHERE 0`, nil, nil
	case len(edges) > mergeEdges:
		rw.and("edge IN (SELECT id FROM edges"+ew.String()+")", ew.args...)
		return `SELECT ` + rowCols + ` FROM records INDEXED BY records_time` + rw.String() +
			` ORDER BY time_ns DESC, id DESC LIMIT ?`, append(rw.args, limit), nil
	}
	arms := make([]string, len(edges))
	var args []any
	for i, e := range edges {
		arms[i] = `SELECT * FROM (SELECT time_ns, id, key FROM records INDEXED BY records_edge WHERE edge = ?` +
			strings.Replace(rw.String(), " WHERE ", " AND ", 1) + ` ORDER BY time_ns DESC, id DESC LIMIT ?)`
		args = append(append(append(args, e), rw.args...), limit)
	}
	return `SELECT r.seq, r.time_ns, r.shape, r.id, r.rid, r.path, r.rest FROM (` + strings.Join(arms, " UNION ALL ") +
		` ORDER BY 1 DESC, 2 DESC LIMIT ?) AS page JOIN records AS r ON r.key = page.key
		ORDER BY r.time_ns DESC, r.id DESC`, append(args, limit), nil
}

// byRequestSQL selects cols of the records matching rw, which holds a
// request id, through its index, every chain segment probed.
func byRequestSQL(cols string, rw *where) string {
	return `WITH RECURSIVE segment(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM segment
				WHERE n < (SELECT coalesce(max(seq), 0) >> 15 FROM chain_heads))
			SELECT ` + cols + ` FROM records INDEXED BY records_request` + rw.String() + `
				AND (seq >> 15) IN (SELECT n FROM segment)`
}

// countSQL is the count of f's records, with the page query's conditions
// (recordWhere, edgeWhere) and index choice: a request id's index; the
// edges' index for conditions on edges (the edges listed when they are
// at most mergeEdges, else their subquery); otherwise records_time (a
// count of every record SQLite reads from its smallest index). ok is
// false when no edge matches: the count is 0.
func (s *Store) countSQL(ctx context.Context, f evidence.Filter) (q string, args []any, ok bool, err error) {
	rw, err := recordWhere(f, "")
	if err != nil {
		return "", nil, false, err
	}
	ew, hasEdges := edgeWhere(f)
	if f.RequestID != "" {
		if hasEdges {
			rw.and("edge IN (SELECT id FROM edges"+ew.String()+")", ew.args...)
		}
		return byRequestSQL("count(*)", rw), rw.args, true, nil
	}
	if !hasEdges {
		return `SELECT count(*) FROM records INDEXED BY records_time` + rw.String(), rw.args, true, nil
	}
	edges, err := s.edgeIDs(ctx, ew, mergeEdges+1)
	if err != nil {
		return "", nil, false, err
	}
	switch {
	case len(edges) == 0:
		return "", nil, false, nil
	case len(edges) > mergeEdges:
		rw.and("edge IN (SELECT id FROM edges"+ew.String()+")", ew.args...)
	default:
		ids := make([]any, len(edges))
		for i, e := range edges {
			ids[i] = e
		}
		rw.and("edge IN ("+placeholders(len(ids))+")", ids...)
	}
	return `SELECT count(*) FROM records INDEXED BY records_edge` + rw.String(), rw.args, true, nil
}

// Count returns how many records match f, counted by SQLite.
func (s *Store) Count(ctx context.Context, f evidence.Filter) (int64, error) {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return 0, err
	}
	q, args, ok, err := s.countSQL(ctx, f)
	if err != nil || !ok {
		return 0, err
	}
	rows, err := s.readStmt(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("evidence sqlite: count: %w", err)
	}
	defer rows.Close()
	var n int64
	if rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, fmt.Errorf("evidence sqlite: count: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("evidence sqlite: count: %w", err)
	}
	return n, nil
}

// readStmts caches the readers' prepared page queries by text: a page query
// is long (an arm per edge) and its text repeats from one page to the next
// (the values are parameters), and preparing it cost a tenth of the API's
// CPU for a filtered page.
type readStmts struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

// maxReadStmts bounds the cache; queries of other shapes, once it is full,
// are prepared each time, as they would be without it. (Nothing is evicted:
// a statement another reader is about to run is never closed under it.)
const maxReadStmts = 256

// readStmt runs the page query q on the read pool, prepared once.
func (s *Store) readStmt(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.rs.get(ctx, s.r, q)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return s.r.QueryContext(ctx, q, args...)
	}
	return st.QueryContext(ctx, args...)
}

// get is q prepared, or nil when the cache is full.
func (rs *readStmts) get(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if st, ok := rs.stmts[q]; ok {
		return st, nil
	}
	if len(rs.stmts) >= maxReadStmts {
		return nil, nil
	}
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if rs.stmts == nil {
		rs.stmts = map[string]*sql.Stmt{}
	}
	rs.stmts[q] = st
	return st, nil
}

func (rs *readStmts) close() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, st := range rs.stmts {
		st.Close()
	}
	rs.stmts = nil
}

// edgeIDs lists the edges matching w, at most max of them.
func (s *Store) edgeIDs(ctx context.Context, w *where, max int) ([]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM edges`+w.String()+` LIMIT ?`, append(w.args, max)...)
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: query: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("evidence sqlite: query: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("evidence sqlite: query: %w", err)
	}
	return ids, nil
}

// prefixEnd is the least string greater than every string starting with
// prefix (bytewise, as SQLite's BINARY collation compares), so that a
// prefix match is the index range [prefix, end). ok is false when there is
// none (a prefix of 0xff bytes): the range is then open.
func prefixEnd(prefix string) (end string, ok bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

func verdictArgs(vs []evidence.Verdict) []any {
	args := make([]any, len(vs))
	for i, v := range vs {
		args[i] = string(v)
	}
	return args
}

// Query returns one page of the records matching f, newest first.
func (s *Store) Query(ctx context.Context, f evidence.Filter, page evidence.PageRequest) (evidence.RecordPage, error) {
	s.settle(ctx)
	if err := f.Validate(); err != nil {
		return evidence.RecordPage{}, err
	}
	recs, next, err := readPage(ctx, s, f, page.Cursor, page.Size(), func(w *row) (*evidence.Record, error) {
		return read(ctx, s.r, s.shapes, w)
	})
	if err != nil {
		return evidence.RecordPage{}, err
	}
	return evidence.RecordPage{Records: recs, Next: next}, nil
}

// readPage reads one page of f's records after cursor, each row made into
// a T by conv, and the next cursor: no rows stay open after it.
func readPage[T any](ctx context.Context, s *Store, f evidence.Filter, cursor string, limit int, conv func(*row) (T, error)) ([]T, string, error) {
	q, args, err := s.querySQL(ctx, f, cursor, limit+1)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.readStmt(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("evidence sqlite: query: %w", err)
	}
	ws := make([]row, 0, limit+1)
	for rows.Next() {
		var w row
		if err := rows.Scan(w.dest()...); err != nil {
			rows.Close()
			return nil, "", fmt.Errorf("evidence sqlite: query: %w", err)
		}
		ws = append(ws, w)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("evidence sqlite: query: %w", err)
	}
	var next string
	if len(ws) > limit {
		ws = ws[:limit]
		last := ws[limit-1]
		id, err := compact.IDOfKey(last.id)
		if err != nil {
			return nil, "", fmt.Errorf("evidence sqlite: query: %w", err)
		}
		next = storekit.EncodeCursor(last.timeNS, id)
	}
	out := make([]T, len(ws))
	for i := range ws {
		if out[i], err = conv(&ws[i]); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// scanPage is how many records Scan holds at a time.
const scanPage = 500

// Scan calls fn for every record matching f, newest first, one page at a
// time: no rows or transaction stay open while fn runs.
func (s *Store) Scan(ctx context.Context, f evidence.Filter, fn func(*evidence.Record) error) error {
	s.settle(ctx)
	return storekit.ScanPages(ctx, func(cursor string) ([]*evidence.Record, string, bool, error) {
		res, err := s.Query(ctx, f, evidence.PageRequest{Limit: scanPage, Cursor: cursor})
		return res.Records, res.Next, res.Next != "", err
	}, fn)
}

// Get returns the record with id.
func (s *Store) Get(ctx context.Context, id string) (*evidence.Record, error) {
	if r := s.jd.Get(id); r != nil {
		return r, nil // not applied yet (journal.go): no apply for one record
	}
	var w row
	err := s.r.QueryRowContext(ctx, `SELECT `+rowCols+` FROM records WHERE `+idsWhere(1), compact.IDKey(id)).Scan(w.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("record %q: %w", id, evidence.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: get %s: %w", id, err)
	}
	return read(ctx, s.r, s.shapes, &w)
}

// Amendments returns the amendments of the records with ids, by their ids
// (the unique index on id), in chunks of at most 500.
func (s *Store) Amendments(ctx context.Context, ids []string, _, _ time.Time) (map[string]*evidence.Record, error) {
	s.settle(ctx)
	out := map[string]*evidence.Record{}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = compact.IDKey(evidence.AmendmentID(id))
		}
		rows, err := s.r.QueryContext(ctx, `SELECT `+rowCols+` FROM records WHERE `+idsWhere(len(chunk)), args...)
		if err != nil {
			return nil, fmt.Errorf("evidence sqlite: amendments: %w", err)
		}
		var ws []row
		for rows.Next() {
			var w row
			if err := rows.Scan(w.dest()...); err != nil {
				rows.Close()
				return nil, fmt.Errorf("evidence sqlite: amendments: %w", err)
			}
			ws = append(ws, w)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("evidence sqlite: amendments: %w", err)
		}
		for i := range ws {
			r, err := read(ctx, s.r, s.shapes, &ws[i])
			if err != nil {
				return nil, err
			}
			if r.Amends != nil {
				out[r.Amends.ID] = r
			}
		}
	}
	return out, nil
}
