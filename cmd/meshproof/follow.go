package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/evidence"
)

// followOverlap is how far before the newest record seen each poll of
// --follow reaches back. A record reaches the store a little after its
// time (the recorder batches; replicas commit independently), so polling
// from the newest time alone would miss late ones; the ids already printed
// are skipped.
const followOverlap = 10 * time.Second

// maxSeen bounds the ids --follow remembers: normally those of the last
// followOverlap, but a burst must not grow memory without end (past the
// bound a late record may print twice).
const maxSeen = 100_000

// followRecords prints the newest page, then every new record, oldest
// first, until ctx is done (SIGINT, SIGTERM): that is a clean end. A server
// that cannot be reached is retried; any other error ends it.
func (o *queryOptions) followRecords(ctx context.Context, c *client.Client, since time.Time, stdout, stderr io.Writer) error {
	var sink recordSink = newTableSink(stdout, o.output == "wide")
	if o.output == "ndjson" {
		sink = &ndjsonSink{w: stdout}
	}
	fw := &follower{c: c, filter: o.filter, since: since, first: true, limit: o.limit, seen: seenIDs{ids: map[string]bool{}}}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	lost := false
	for {
		recs, err := fw.poll(ctx)
		var ue *client.UnreachableError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &ue):
			if !lost {
				fmt.Fprintf(stderr, "meshproof query: %v\nretrying every %s\n", o.remote.explain(err), o.interval)
				lost = true
			}
		case err != nil:
			return err
		default:
			if lost {
				fmt.Fprintf(stderr, "meshproof query: %s answers again\n", c.URL())
				lost = false
			}
			if err := sink.write(recs); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// follower finds the records that arrived since its last poll.
type follower struct {
	c      *client.Client
	filter client.Filter
	since  time.Time // --since: no record before it
	first  bool      // the first poll prints the newest page only, as tail does
	limit  int
	newest time.Time // of the records printed
	floor  recordKey // the first page was cut here: nothing before it prints
	seen   seenIDs
}

// recordKey orders records as the API does: by time, then id.
type recordKey struct {
	t  time.Time
	id string
}

func (k recordKey) after(r *evidence.Record) bool {
	return k.t.After(r.Time) || k.t.Equal(r.Time) && k.id > r.ID
}

// poll returns the records not printed yet, oldest first.
func (fw *follower) poll(ctx context.Context) ([]*evidence.Record, error) {
	f := fw.filter
	from := fw.since
	if !fw.newest.IsZero() {
		from = maxTime(from, fw.newest.Add(-followOverlap))
	}
	f.Since = client.Time(from)
	var got []*evidence.Record
	for cursor := ""; ; {
		limit := evidence.MaxLimit
		if fw.first {
			limit = fw.limit
		}
		p, err := fw.c.List(ctx, f, cursor, limit)
		if err != nil {
			return nil, err
		}
		got = append(got, p.Records...)
		if fw.first && p.Next != "" && len(p.Records) > 0 {
			last := p.Records[len(p.Records)-1]
			fw.floor = recordKey{last.Time, last.ID}
		}
		if fw.first || p.Next == "" {
			break
		}
		cursor = p.Next
	}
	fw.first = false
	var out []*evidence.Record
	for _, r := range slices.Backward(got) {
		if fw.seen.has(r.ID) || fw.floor.after(r) {
			continue
		}
		fw.seen.add(r.ID, r.Time)
		out = append(out, r)
		fw.newest = maxTime(fw.newest, r.Time)
	}
	fw.seen.forget(fw.newest.Add(-followOverlap))
	return out, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// seenIDs are the ids printed, oldest first, forgotten once no poll can
// return them again.
type seenIDs struct {
	ids   map[string]bool
	order []recordKey
}

func (s *seenIDs) has(id string) bool { return s.ids[id] }

func (s *seenIDs) add(id string, t time.Time) {
	s.ids[id] = true
	s.order = append(s.order, recordKey{t, id})
}

// forget drops the ids of records before cutoff (polls start after it),
// and the oldest ones beyond maxSeen.
func (s *seenIDs) forget(cutoff time.Time) {
	n := 0
	for n < len(s.order) && (s.order[n].t.Before(cutoff) || len(s.order)-n > maxSeen) {
		delete(s.ids, s.order[n].id)
		n++
	}
	s.order = slices.Delete(s.order, 0, n)
}

// recordSink prints records a chunk at a time.
type recordSink interface {
	write(recs []*evidence.Record) error
	close() error
}

// tableSink is query's table, aligned as it grows; the header comes with
// the first chunk.
type tableSink struct {
	cols    columns
	started bool
	wide    bool // -o wide: recordWideRow
}

func newTableSink(w io.Writer, wide bool) *tableSink {
	return &tableSink{cols: columns{w: w, widths: slices.Clone(recordWidths)}, wide: wide}
}

func (s *tableSink) write(recs []*evidence.Record) error {
	var rows [][]string
	header, row := recordHeader, recordRow
	if s.wide {
		header, row = recordWideHeader, recordWideRow
	}
	if !s.started {
		rows, s.started = append(rows, header), true
	}
	now := time.Now()
	for _, r := range recs {
		rows = append(rows, row(r, now))
	}
	if len(rows) == 0 {
		return nil
	}
	return s.cols.write(rows...)
}

func (s *tableSink) close() error { return nil }

// ndjsonSink writes one record per line, each chunk at once.
type ndjsonSink struct{ w io.Writer }

func (s *ndjsonSink) write(recs []*evidence.Record) error {
	var b []byte
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b = append(append(b, line...), '\n')
	}
	_, err := s.w.Write(b)
	return err
}

func (s *ndjsonSink) close() error { return nil }

// jsonArraySink streams one JSON array of records.
type jsonArraySink struct {
	w *bufio.Writer
	n int
}

func (s *jsonArraySink) write(recs []*evidence.Record) error {
	for _, r := range recs {
		b, err := json.MarshalIndent(r, "  ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n  "
		if s.n == 0 {
			sep = "[\n  "
		}
		s.n++
		if _, err := s.w.WriteString(sep); err != nil {
			return err
		}
		if _, err := s.w.Write(b); err != nil {
			return err
		}
	}
	return s.w.Flush()
}

func (s *jsonArraySink) close() error {
	end := "\n]\n"
	if s.n == 0 {
		end = "[]\n"
	}
	if _, err := s.w.WriteString(end); err != nil {
		return err
	}
	return s.w.Flush()
}
