package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/meshproof/meshproof/evidence"
)

// list answers one page of records, newest first.
func (s *Server) list(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), listParams)
	if err != nil {
		return err
	}
	f, err := q.filter()
	if err != nil {
		return err
	}
	page, err := q.page()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	if jq, ok := s.store.(jsonQuerier); ok {
		records, next, err := jq.QueryJSON(ctx, f, page)
		if err != nil {
			return err
		}
		return writePage(w, records, next)
	}
	res, err := s.store.Query(ctx, f, page)
	if err != nil {
		return err
	}
	if res.Records == nil {
		res.Records = []*evidence.Record{}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// jsonQuerier is a store that answers a page of records as their stored
// JSON (see jsonScanner).
type jsonQuerier interface {
	QueryJSON(ctx context.Context, f evidence.Filter, page evidence.Page) (records [][]byte, next string, err error)
}

// writePage answers a page made of stored JSON records, as writeJSON would
// answer an evidence.Result. Each record is checked to be JSON, so that a
// record edited in the store cannot make the answer unreadable.
func writePage(w http.ResponseWriter, records [][]byte, next string) error {
	n := 64
	for _, rec := range records {
		n += len(rec) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"records":[`...)
	for i, rec := range records {
		if !json.Valid(rec) {
			return fmt.Errorf("a stored record is not JSON: %.40q", rec)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, rec...)
	}
	b = append(b, `],"next_cursor":`...)
	b = strconv.AppendQuote(b, next) // a cursor is base64url: the same in JSON
	b = append(b, "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	return nil
}

// maxID bounds a record id worth looking up: ids are ULIDs (26 bytes).
const maxID = 128

// recordID is the {id} of the path, when it can be a record's.
func recordID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if len(id) > maxID || !utf8.ValidString(id) {
		return "", &apiError{kind: notFound, msg: "no such record"}
	}
	return id, nil
}

// get answers one record.
func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	if _, err := parseQuery(r.URL.RawQuery, s.now(), nil); err != nil {
		return err
	}
	id, err := recordID(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	rec, err := s.store.Get(ctx, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// jsonScanner is a store that streams the matching records as their
// stored JSON (the record's JSON form, one line each), sparing export a
// decode and an encode per record: most of the cost of Scan.
type jsonScanner interface {
	ScanJSON(ctx context.Context, f evidence.Filter, fn func(record []byte) error) error
}

// export streams every matching record as NDJSON (see ndjson).
func (s *Server) export(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), filterParams)
	if err != nil {
		return err
	}
	f, err := q.filter()
	if err != nil {
		return err
	}
	out := newNDJSON(w)
	if js, ok := s.store.(jsonScanner); ok {
		err = js.ScanJSON(r.Context(), f, out.writeJSON)
	} else {
		err = s.store.Scan(r.Context(), f, out.write)
	}
	switch {
	case err == nil:
		return out.finish()
	case !out.started:
		return err // nothing sent yet: an ordinary error answer
	case r.Context().Err() != nil || out.werr != nil:
		noteErr(w, err)
		return nil // the client went away: Scan has stopped and let go
	}
	// The store failed mid-stream. A cut NDJSON stream looks whole, so the
	// connection is aborted: the client sees a transfer error instead.
	s.log.Error().Err(err).Int64("records_sent", out.n).Msg("api: export failed mid-stream; aborting the response")
	noteErr(w, err)
	panic(http.ErrAbortHandler)
}
