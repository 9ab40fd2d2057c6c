package postgres

import (
	"context"
	"errors"
	"fmt"

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

// where is the WHERE clause of f, a validated filter.
func where(f evidence.Filter, a *args) string {
	var conds []string
	cond := func(c string) { conds = append(conds, c) }
	if !f.Since.IsZero() {
		cond("time_ns >= " + a.add(clampNano(f.Since)))
	}
	if !f.Until.IsZero() {
		cond("time_ns < " + a.add(clampNano(f.Until)))
	}
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
		// One range of records_host, as evidence.HostAnyPort says.
		lo, hi := a.add(f.Host), a.add(f.Host+";")
		cond("host >= " + lo + " AND host < " + hi + " AND (host = " + lo + " OR host >= " + a.add(f.Host+":") + ")")
	} else {
		eq("host", f.Host)
	}
	prefix("path", f.PathPrefix)
	if f.RequestID != "" {
		// Spelled out so that the partial index applies.
		cond("request_id = " + a.add(f.RequestID) + " AND request_id <> ''")
	}
	eq("replica", f.Replica)
	if len(conds) == 0 {
		return "TRUE"
	}
	return strings.Join(conds, " AND ")
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

// decodeColumns are the columns decode reads.
const decodeColumns = "time_ns, id, seq, prev_hash, hash, body"

// selectRecord reads decodeColumns.
const selectRecord = "SELECT " + decodeColumns + " FROM records "

// decode reads a row of selectRecord: the stored record, with the chain
// fields of the stored columns.
func decode(rows pgx.Rows) (r *evidence.Record, at cursor, err error) {
	var (
		timeNS         int64
		id, prev, hash string
		seq            int64
		body           []byte
	)
	if err := rows.Scan(&timeNS, &id, &seq, &prev, &hash, &body); err != nil {
		return nil, at, err
	}
	r, err = evidence.DecodeStored(id, body, uint64(seq), hash)
	if err != nil {
		return nil, at, fmt.Errorf("postgres: %w", err)
	}
	if r.Chain.Version != evidence.CanonicalV2 {
		r.Chain = evidence.Chain{Seq: uint64(seq), PrevHash: prev, Hash: hash}
	}
	return r, cursor{timeNS, id}, nil
}

// Query returns one page of the records matching f, newest first.
func (s *Store) Query(ctx context.Context, f evidence.Filter, page evidence.PageRequest) (evidence.RecordPage, error) {
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

// pageSQL is the query of a page of f after the cursor: cols, newest
// first, limit+1 rows (the extra one says a next page exists).
func pageSQL(cols string, f evidence.Filter, after *cursor, limit int) (string, args) {
	var a args
	w := where(f, &a)
	if after != nil {
		t, id := a.add(after.timeNS), a.add(after.id)
		w += " AND time_ns <= " + t + " AND (time_ns < " + t + " OR id < " + id + ")"
	}
	return "SELECT " + cols + " FROM records WHERE " + w + " ORDER BY time_ns DESC, id DESC LIMIT " + a.add(limit+1), a
}

// page reads up to limit records matching f after the cursor, newest
// first, and the cursor of the next page (nil on the last one). It holds a
// connection only while it reads.
func (s *Store) page(ctx context.Context, f evidence.Filter, after *cursor, limit int) ([]*evidence.Record, *cursor, error) {
	q, a := pageSQL(decodeColumns, f, after, limit)
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: query: %w", err)
	}
	defer rows.Close()
	recs := make([]*evidence.Record, 0, min(limit, 128))
	var next *cursor
	var at cursor
	for rows.Next() {
		if len(recs) == limit {
			next = &at // the last record returned
			break
		}
		r, c, err := decode(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: query: %w", err)
		}
		recs, at = append(recs, r), c
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("postgres: query: %w", err)
	}
	return recs, next, nil
}

// Scan calls fn for every record matching f, newest first, reading a page
// at a time; no connection is held while fn runs.
func (s *Store) Scan(ctx context.Context, f evidence.Filter, fn func(*evidence.Record) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	return storekit.ScanPages(ctx, func(after *cursor) ([]*evidence.Record, *cursor, bool, error) {
		recs, next, err := s.page(ctx, f, after, evidence.MaxLimit)
		return recs, next, next != nil, err
	}, fn)
}

// Get returns the record with id.
func (s *Store) Get(ctx context.Context, id string) (*evidence.Record, error) {
	// A ULID carries its creation time, close to the record's: look in
	// the partitions around it first.
	// An amendment's id is its record's, suffixed; it has its record's time.
	if u, err := ulid.ParseStrict(strings.TrimSuffix(id, evidence.AmendmentSuffix)); err == nil {
		t := ulid.Time(u.Time())
		r, err := s.get(ctx, id, t.Add(-24*time.Hour), t.Add(24*time.Hour))
		if !errors.Is(err, evidence.ErrNotFound) {
			return r, err
		}
	}
	return s.get(ctx, id, time.Time{}, time.Time{})
}

func (s *Store) get(ctx context.Context, id string, since, until time.Time) (*evidence.Record, error) {
	if !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return nil, fmt.Errorf("record %q: %w", id, evidence.ErrNotFound)
	}
	var a args
	w := "id = " + a.add(id)
	if !since.IsZero() {
		w += " AND time_ns >= " + a.add(clampNano(since)) + " AND time_ns < " + a.add(clampNano(until))
	}
	rows, err := s.pool.Query(ctx, selectRecord+"WHERE "+w+" LIMIT 1", a...)
	if err != nil {
		return nil, fmt.Errorf("postgres: get %s: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("postgres: get %s: %w", id, err)
		}
		return nil, fmt.Errorf("record %q: %w", id, evidence.ErrNotFound)
	}
	r, _, err := decode(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: get: %w", err)
	}
	return r, nil
}

// ScanJSON calls fn with the stored JSON of every record matching f,
// newest first, a page at a time as Scan does, without decoding it: the
// bytes are the record's JSON form as Append wrote it (json.Marshal), one
// line. Export streams them as they are, sparing a decode and an encode
// per record. fn must not keep body after it returns.
func (s *Store) ScanJSON(ctx context.Context, f evidence.Filter, fn func(body []byte) error) error {
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
	if err := f.Validate(); err != nil {
		return 0, err
	}
	var a args
	w := where(f, &a)
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM records WHERE "+w, a...).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count: %w", err)
	}
	return n, nil
}

// QueryJSON returns one page of the records matching f as Query does, each
// record as its stored JSON (see ScanJSON), and the next cursor.
func (s *Store) QueryJSON(ctx context.Context, f evidence.Filter, page evidence.PageRequest) ([][]byte, string, error) {
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

// bodies reads one page of stored records as they are; it holds a
// connection only while it reads.
func (s *Store) bodies(ctx context.Context, f evidence.Filter, after *cursor, limit int) ([][]byte, *cursor, error) {
	q, a := pageSQL("time_ns, id, seq, hash, body", f, after, limit)
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: query: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, min(limit, 128))
	var next *cursor
	var at cursor
	for rows.Next() {
		if len(out) == limit {
			next = &at // the last record returned
			break
		}
		var body []byte // pgx gives each row a fresh slice for []byte
		var seq int64
		var hash string
		if err := rows.Scan(&at.timeNS, &at.id, &seq, &hash, &body); err != nil {
			return nil, nil, fmt.Errorf("postgres: query: %w", err)
		}
		if evidence.StoredVersion(body) != evidence.CanonicalV1 {
			body = evidence.AppendRecordJSON(make([]byte, 0, len(body)+128), body, uint64(seq), hash)
		}
		out = append(out, body)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("postgres: query: %w", err)
	}
	return out, next, nil
}

// Amendments returns the amendments of the records with ids: their ids, in
// the partitions of [since, until] (an amendment has its record's time).
func (s *Store) Amendments(ctx context.Context, ids []string, since, until time.Time) (map[string]*evidence.Record, error) {
	out := map[string]*evidence.Record{}
	if len(ids) == 0 {
		return out, nil
	}
	want := make([]string, len(ids))
	for i, id := range ids {
		want[i] = evidence.AmendmentID(id)
	}
	var a args
	w := "id = ANY(" + a.add(want) + "::text[])"
	if !since.IsZero() && !until.IsZero() {
		w += " AND time_ns >= " + a.add(since.UnixNano()) + " AND time_ns <= " + a.add(until.UnixNano())
	}
	rows, err := s.pool.Query(ctx, selectRecord+"WHERE "+w, a...)
	if err != nil {
		return nil, fmt.Errorf("postgres: amendments: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, _, err := decode(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: amendments: %w", err)
		}
		if r.Amends != nil {
			out[r.Amends.ID] = r
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: amendments: %w", err)
	}
	return out, nil
}
