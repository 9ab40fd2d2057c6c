package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Export's pacing: records are buffered and flushed at least every
// exportFlush, and each flush gives the client exportStall to take the next
// lot. A client that stops reading without closing its connection is cut
// off then, rather than holding a goroutine and a store cursor forever.
const (
	exportFlush  = 100 * time.Millisecond
	exportStall  = time.Minute
	exportBuffer = 64 << 10
)

// ndjson writes records one per line, in constant memory.
type ndjson struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	bw        *bufio.Writer
	started   bool
	n         int64
	lastFlush time.Time
	werr      error // the first write error: the client went away
}

func newNDJSON(w http.ResponseWriter) *ndjson {
	out := &ndjson{w: w, rc: http.NewResponseController(w)}
	out.bw = bufio.NewWriterSize(w, exportBuffer)
	return out
}

func (o *ndjson) start() {
	o.started = true
	o.w.Header().Set("Content-Type", "application/x-ndjson")
	o.w.WriteHeader(http.StatusOK)
	o.lastFlush = time.Now()
	_ = o.rc.SetWriteDeadline(o.lastFlush.Add(exportStall))
}

// writeJSON is ScanJSON's callback: the record's JSON as stored.
func (o *ndjson) writeJSON(record []byte) error {
	if !o.started {
		o.start()
	}
	if bytes.IndexByte(record, '\n') >= 0 {
		// Not as json.Marshal wrote it (edited in the store?): one record
		// must stay one line.
		var c bytes.Buffer
		if err := json.Compact(&c, record); err != nil {
			return fmt.Errorf("a stored record is not JSON: %w", err)
		}
		record = c.Bytes()
	}
	o.bw.Write(record)
	if err := o.bw.WriteByte('\n'); err != nil {
		return o.failed(err)
	}
	return o.counted()
}

// counted counts a record written and flushes when it is time.
func (o *ndjson) counted() error {
	o.n++
	if o.n == 1 || time.Since(o.lastFlush) >= exportFlush {
		return o.flush()
	}
	return nil
}

func (o *ndjson) flush() error {
	if err := o.bw.Flush(); err != nil {
		return o.failed(err)
	}
	if err := o.rc.Flush(); err != nil {
		return o.failed(err)
	}
	o.lastFlush = time.Now()
	_ = o.rc.SetWriteDeadline(o.lastFlush.Add(exportStall))
	return nil
}

// failed remembers a write error: the client went away.
func (o *ndjson) failed(err error) error {
	if o.werr == nil {
		o.werr = err
	}
	return err
}

// finish ends a complete export.
func (o *ndjson) finish() error {
	if !o.started {
		o.start()
	}
	_ = o.flush()
	return nil
}
