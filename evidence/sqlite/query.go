package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
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

// filterWhere translates f. The most selective exact match present drives
// the query through its (column, time_ns, id) index, which also gives the
// newest-first order; a unary + keeps the planner off the other indexes,
// whose guesses without statistics can be far worse.
func filterWhere(f evidence.Filter) *where {
	w := &where{}
	drive := ""
	switch {
	case f.RequestID != "":
		drive = "request_id"
	case f.Source != "":
		drive = "src_principal"
	case f.Destination != "":
		drive = "dst_principal"
	case f.Host != "":
		drive = "host"
	}
	col := func(name string) string {
		if drive == "" || drive == name {
			return name
		}
		return "+" + name
	}
	if !f.Since.IsZero() {
		w.and("time_ns >= ?", nanos(f.Since))
	}
	if !f.Until.IsZero() {
		w.and("time_ns < ?", nanos(f.Until))
	}
	exact := []struct{ column, value string }{
		{"request_id", f.RequestID}, {"src_principal", f.Source}, {"dst_principal", f.Destination},
		{"host", f.Host}, {"method", f.Method}, {"replica", f.Replica},
	}
	for _, e := range exact {
		if e.value != "" {
			w.and(col(e.column)+" = ?", e.value)
		}
	}
	prefixes := []struct{ column, value string }{
		{"src_principal", f.SourcePrefix}, {"dst_principal", f.DestinationPrefix}, {"path", f.PathPrefix},
	}
	for _, p := range prefixes {
		if p.value == "" {
			continue
		}
		w.and(col(p.column)+" >= ?", p.value)
		if upper, ok := prefixEnd(p.value); ok {
			w.and(col(p.column)+" < ?", upper)
		}
	}
	if f.TrustDomain != "" {
		w.and("(src_td = ? OR dst_td = ?)", f.TrustDomain, f.TrustDomain)
	}
	if f.Namespace != "" {
		w.and("(src_ns = ? OR dst_ns = ?)", f.Namespace, f.Namespace)
	}
	if len(f.Verdicts) > 0 {
		w.and(col("verdict")+" IN ("+placeholders(len(f.Verdicts))+")", verdictArgs(f.Verdicts)...)
	}
	if len(f.NotVerdicts) > 0 {
		w.and("+verdict NOT IN ("+placeholders(len(f.NotVerdicts))+")", verdictArgs(f.NotVerdicts)...)
	}
	if f.Allowed != nil {
		w.and("allowed = ?", *f.Allowed)
	}
	return w
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

// nanos is t in Unix nanoseconds, saturated to the int64 range.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// Query returns one page of the records matching f, newest first.
func (s *Store) Query(ctx context.Context, f evidence.Filter, page evidence.Page) (evidence.Result, error) {
	if err := f.Validate(); err != nil {
		return evidence.Result{}, err
	}
	limit := page.Limit
	if limit <= 0 {
		limit = evidence.DefaultLimit
	}
	limit = min(limit, evidence.MaxLimit)
	q, args, err := querySQL(f, page.Cursor, limit+1)
	if err != nil {
		return evidence.Result{}, err
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return evidence.Result{}, fmt.Errorf("evidence sqlite: query: %w", err)
	}
	defer rows.Close()
	var res evidence.Result
	var lastTime int64
	var lastID string
	for rows.Next() {
		if len(res.Records) == limit {
			res.Next = evidence.EncodeCursor(lastTime, lastID)
			break
		}
		var body []byte
		if err := rows.Scan(&lastTime, &lastID, &body); err != nil {
			return evidence.Result{}, fmt.Errorf("evidence sqlite: query: %w", err)
		}
		r, err := decode(lastID, body)
		if err != nil {
			return evidence.Result{}, err
		}
		res.Records = append(res.Records, r)
	}
	if err := rows.Err(); err != nil {
		return evidence.Result{}, fmt.Errorf("evidence sqlite: query: %w", err)
	}
	return res, nil
}

// querySQL is the page query: f's records after the cursor, newest first.
func querySQL(f evidence.Filter, cursor string, limit int) (string, []any, error) {
	w := filterWhere(f)
	if cursor != "" {
		t, id, err := evidence.DecodeCursor(cursor)
		if err != nil {
			return "", nil, err
		}
		w.and("(time_ns, id) < (?, ?)", t, id)
	}
	return `SELECT time_ns, id, body FROM records` + w.String() + ` ORDER BY time_ns DESC, id DESC LIMIT ?`,
		append(w.args, limit), nil
}

func decode(id string, body []byte) (*evidence.Record, error) {
	r := new(evidence.Record)
	if err := json.Unmarshal(body, r); err != nil {
		return nil, fmt.Errorf("evidence sqlite: record %s: the stored record does not decode: %w", id, err)
	}
	return r, nil
}

// scanPage is how many records Scan holds at a time.
const scanPage = 500

// Scan calls fn for every record matching f, newest first, one page at a
// time: no rows or transaction stay open while fn runs.
func (s *Store) Scan(ctx context.Context, f evidence.Filter, fn func(*evidence.Record) error) error {
	return evidence.ScanPages(ctx, func(cursor string) ([]*evidence.Record, string, bool, error) {
		res, err := s.Query(ctx, f, evidence.Page{Limit: scanPage, Cursor: cursor})
		return res.Records, res.Next, res.Next != "", err
	}, fn)
}

// Get returns the record with id.
func (s *Store) Get(ctx context.Context, id string) (*evidence.Record, error) {
	var body []byte
	err := s.r.QueryRowContext(ctx, `SELECT body FROM records WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("record %q: %w", id, evidence.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("evidence sqlite: get %s: %w", id, err)
	}
	return decode(id, body)
}
