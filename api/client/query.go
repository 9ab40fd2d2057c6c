package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
)

// Filter selects records, as the API's query parameters do: zero fields
// select everything, set fields are ANDed, Verdicts are ORed. Its
// parameters, their encoding (Values) and their checks (Resolve) are the
// API's own table, package params.
type Filter = params.Filter

// Time formats t as the API's time parameters take it.
func Time(t time.Time) string { return params.Time(t) }

// List returns one page of the records matching f: the newest, or those
// after cursor (a previous page's Next, "" on the last page). limit 0 is
// the server's default (100); the most is 1000.
func (c *Client) List(ctx context.Context, f Filter, cursor string, limit int) (evidence.RecordPage, error) {
	q := f.Values()
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p evidence.RecordPage
	if err := c.getJSON(ctx, "/v1/evidence", q, &p); err != nil {
		return evidence.RecordPage{}, err
	}
	return p, nil
}

// Count returns how many records match f, counted by the server's store
// (GET /v1/evidence/count): no record travels.
func (c *Client) Count(ctx context.Context, f Filter) (int64, error) {
	var body struct {
		Count *int64 `json:"count"`
	}
	if err := c.getJSON(ctx, "/v1/evidence/count", f.Values(), &body); err != nil {
		return 0, err
	}
	if body.Count == nil || *body.Count < 0 {
		return 0, errors.New("count: the server's answer has no count")
	}
	return *body.Count, nil
}

// Get returns one record by id; an *Error with StatusCode 404 when there is
// none.
func (c *Client) Get(ctx context.Context, id string) (*evidence.Record, error) {
	if id == "" {
		return nil, errors.New("no record id")
	}
	var r evidence.Record
	if err := c.getJSON(ctx, "/v1/evidence/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// maxLine bounds one NDJSON line: a record is cut to size limits when it
// is stored (evidence.Bound), far below this.
const maxLine = 16 << 20

// ExportLines streams every record matching f, newest first, calling fn
// with each NDJSON line as the server sent it (without its newline; fn
// must not keep it). It stops at fn's first error, returned, or when ctx
// is done. A stream the server cut short is an error, never taken for a
// whole one.
func (c *Client) ExportLines(ctx context.Context, f Filter, fn func(line []byte) error) error {
	resp, err := c.get(ctx, "/v1/export", f.Values())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("export cut short (the server failed or the connection broke; what came before is incomplete): %w", err)
	}
	return nil
}

// Export streams every record matching f, newest first, to fn (see
// ExportLines).
func (c *Client) Export(ctx context.Context, f Filter, fn func(*evidence.Record) error) error {
	return c.ExportLines(ctx, f, func(line []byte) error {
		var r evidence.Record
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("export: a line is not a record: %w", err)
		}
		return fn(&r)
	})
}

// TLSCheck returns the tls-check report of [since, until) (the API's
// time parameters; "" for the last 24 hours and now), for one destination
// (host:port or destination principal), the destinations of one namespace,
// or all (both "").
func (c *Client) TLSCheck(ctx context.Context, since, until, destination, namespace string) (report.TLSCheckReport, error) {
	q := url.Values{}
	setNonEmpty(q, "since", since)
	setNonEmpty(q, "until", until)
	setNonEmpty(q, "destination", destination)
	setNonEmpty(q, "namespace", namespace)
	var rep report.TLSCheckReport
	err := c.getJSON(ctx, "/v1/reports/tls-check", q, &rep)
	return rep, err
}

// StrictReadiness answers whether destination (host:port or destination
// principal) can go to STRICT, from the traffic of [since, until) (""
// for the last 7 days and now).
func (c *Client) StrictReadiness(ctx context.Context, destination, since, until string) (report.StrictReadinessReport, error) {
	q := url.Values{}
	setNonEmpty(q, "destination", destination)
	setNonEmpty(q, "since", since)
	setNonEmpty(q, "until", until)
	var rep report.StrictReadinessReport
	err := c.getJSON(ctx, "/v1/reports/strict-readiness", q, &rep)
	return rep, err
}

// NamespaceReadiness answers whether namespace's destinations, or every
// namespace's (all), can go to STRICT, from the traffic of [since, until)
// ("" for the last 7 days and now); destinations are known from 30 days
// before until.
func (c *Client) NamespaceReadiness(ctx context.Context, namespace string, all bool, since, until string) (report.NamespaceReadinessReport, error) {
	q := url.Values{}
	setNonEmpty(q, "namespace", namespace)
	if all {
		q.Set("all_namespaces", "true")
	}
	setNonEmpty(q, "since", since)
	setNonEmpty(q, "until", until)
	var rep report.NamespaceReadinessReport
	err := c.getJSON(ctx, "/v1/reports/strict-readiness", q, &rep)
	return rep, err
}

// TimeseriesQuery asks for a time series; every field is optional: the
// last 24 hours, every destination, a step that gives about 120 points.
type TimeseriesQuery struct {
	Since, Until string // the API's time parameters
	Destination  string // host:port or destination principal
	Namespace    string // the destinations of one namespace; not with Destination
	Step         string // a duration of whole minutes: 1m, 5m, 1h, 1d
}

// Timeseries returns the mTLS share and plaintext requests per destination
// over time.
func (c *Client) Timeseries(ctx context.Context, tq TimeseriesQuery) (report.Timeseries, error) {
	q := url.Values{}
	setNonEmpty(q, "since", tq.Since)
	setNonEmpty(q, "until", tq.Until)
	setNonEmpty(q, "destination", tq.Destination)
	setNonEmpty(q, "namespace", tq.Namespace)
	setNonEmpty(q, "step", tq.Step)
	var ts report.Timeseries
	err := c.getJSON(ctx, "/v1/reports/timeseries", q, &ts)
	return ts, err
}

// Stats summarises the store; the counts by verdict and decision cover
// the records since since ("" for the last 24 hours).
func (c *Client) Stats(ctx context.Context, since string) (evidence.Stats, error) {
	q := url.Values{}
	setNonEmpty(q, "since", since)
	var st evidence.Stats
	err := c.getJSON(ctx, "/v1/stats", q, &st)
	return st, err
}

func setNonEmpty(q url.Values, name, value string) {
	if value != "" {
		q.Set(name, value)
	}
}

// ParseTime reads a time as the API's since and until take it, an RFC 3339
// time or a duration back from now (90s, 1h, 7d, 1d12h; d is 24 hours),
// so that a caller can fix a relative window once, on its own clock.
func ParseTime(s string, now time.Time) (time.Time, error) { return params.ParseTime(s, now) }

// Proof returns a record's inclusion proof in its replica's transparency
// log (check it with evidence.Proof.Check).
func (c *Client) Proof(ctx context.Context, id string) (*evidence.Proof, error) {
	if id == "" {
		return nil, errors.New("no record id")
	}
	var p evidence.Proof
	if err := c.getJSON(ctx, "/v1/evidence/"+url.PathEscape(id)+"/proof", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// CheckpointInfo is a replica's latest signed checkpoint, as listed.
type CheckpointInfo struct {
	Replica string    `json:"replica"`
	Size    int64     `json:"size"`
	Time    time.Time `json:"time"`
}

// Checkpoints lists each replica's latest signed checkpoint.
func (c *Client) Checkpoints(ctx context.Context) ([]CheckpointInfo, error) {
	var out struct {
		Checkpoints []CheckpointInfo `json:"checkpoints"`
	}
	if err := c.getJSON(ctx, "/v1/checkpoints", nil, &out); err != nil {
		return nil, err
	}
	return out.Checkpoints, nil
}

// Checkpoint returns a replica's latest signed checkpoint, the note's text.
func (c *Client) Checkpoint(ctx context.Context, replica string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.get(ctx, "/v1/checkpoints/"+url.PathEscape(replica), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10+1))
	if err != nil {
		return nil, fmt.Errorf("checkpoint of %s: %w", replica, err)
	}
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("checkpoint of %s: over 64 KiB", replica)
	}
	return b, nil
}
