package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
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
	records, next, err := s.store.QueryJSON(ctx, f, page)
	if err != nil {
		return err
	}
	if records, err = s.withEffective(ctx, records); err != nil {
		return err
	}
	return writePage(w, records, next)
}

// count answers how many records match the filter, counted by the store
// (no record is read out): {"count": N}.
func (s *Server) count(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), filterParams)
	if err != nil {
		return err
	}
	f, err := q.filter()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	n, err := s.store.Count(ctx, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, countBody{Count: n})
	return nil
}

// countBody is the answer of /v1/evidence/count.
type countBody struct {
	Count int64 `json:"count"`
}

// A record with an amendment (see evidence.Amends) is answered with
// "effective": what its request actually got, from the amendment. The
// stored record is unchanged (its hash covers it); only the answer adds
// the field.
type recordWithEffective struct {
	*evidence.Record
	Effective *evidence.Effective `json:"effective,omitempty"`
}

func withEffective(r, amendment *evidence.Record) recordWithEffective {
	out := recordWithEffective{Record: r}
	if amendment != nil {
		if e := evidence.EffectiveOf(r, amendment); e.AmendedBy != "" {
			out.Effective = &e
		}
	}
	return out
}

// withEffective adds "effective" to the stored JSON of each record of a
// page that has an amendment. A record's JSON starts with its id and time
// (the Record type's first fields), read here without decoding the rest;
// the few amended records are decoded to be checked against their
// amendment.
func (s *Server) withEffective(ctx context.Context, records [][]byte) ([][]byte, error) {
	if len(records) == 0 {
		return records, nil
	}
	ids := make([]string, 0, len(records))
	var since, until time.Time
	for _, rec := range records {
		var head struct {
			ID   string    `json:"id"`
			Time time.Time `json:"time"`
		}
		if err := headOf(rec, &head); err != nil {
			return nil, fmt.Errorf("a stored record is not JSON: %.40q", rec)
		}
		ids = append(ids, head.ID)
		if since.IsZero() || head.Time.Before(since) {
			since = head.Time
		}
		if head.Time.After(until) {
			until = head.Time
		}
	}
	am, err := s.store.Amendments(ctx, ids, since, until)
	if err != nil || len(am) == 0 {
		return records, err
	}
	out := make([][]byte, len(records))
	for i, rec := range records {
		out[i] = rec
		a := am[ids[i]]
		if a == nil {
			continue
		}
		var r evidence.Record
		if err := json.Unmarshal(rec, &r); err != nil {
			return nil, fmt.Errorf("a stored record is not JSON: %.40q", rec)
		}
		if e := withEffective(&r, a).Effective; e != nil {
			b, err := json.Marshal(e)
			if err != nil {
				return nil, err
			}
			rec = bytes.TrimRight(rec, " \n")
			if len(rec) == 0 || rec[len(rec)-1] != '}' {
				return nil, fmt.Errorf("a stored record is not a JSON object: %.40q", rec)
			}
			joined := make([]byte, 0, len(rec)+len(b)+16)
			joined = append(append(append(joined, rec[:len(rec)-1]...), `,"effective":`...), b...)
			out[i] = append(joined, '}')
		}
	}
	return out, nil
}

// headOf decodes the id and time that start a stored record's JSON
// ({"id":"...","time":"...",...}), reading no further.
func headOf(rec []byte, head any) error {
	// The end of the time's string: the third '"' after "time":.
	i := bytes.Index(rec, []byte(`,"time":"`))
	if i < 0 {
		return json.Unmarshal(rec, head)
	}
	j := bytes.IndexByte(rec[i+len(`,"time":"`):], '"')
	if j < 0 {
		return json.Unmarshal(rec, head)
	}
	prefix := make([]byte, 0, i+len(`,"time":"`)+j+2)
	prefix = append(append(prefix, rec[:i+len(`,"time":"`)+j+1]...), '}')
	if err := json.Unmarshal(prefix, head); err != nil {
		return json.Unmarshal(rec, head)
	}
	return nil
}

// writePage answers a page made of stored JSON records, as writeJSON would
// answer an evidence.RecordPage. Each record is checked to be JSON, so that a
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

// recordID is the {id} of the path, when it can be a record's; the
// request takes no parameter.
func (s *Server) recordID(r *http.Request) (string, error) {
	if _, err := parseQuery(r.URL.RawQuery, s.now(), nil); err != nil {
		return "", err
	}
	id := r.PathValue("id")
	if len(id) > maxID || !utf8.ValidString(id) {
		return "", &apiError{kind: notFound, msg: "no such record"}
	}
	return id, nil
}

// get answers one record.
func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	id, err := s.recordID(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	rec, err := s.store.Get(ctx, id)
	if err != nil {
		return err
	}
	am, err := s.store.Amendments(ctx, []string{rec.ID}, rec.Time, rec.Time)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, withEffective(rec, am[rec.ID]))
	return nil
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
	err = s.store.ScanJSON(r.Context(), f, out.writeJSON)
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
