// Package decisionlog takes OPA's decision log uploads (POST /logs, as
// OPA's decision log plugin sends them) and records every OPA-Envoy
// decision in them as the evidence record meshproof would have written had
// it answered that Check itself (event.go).
package decisionlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// Config configures the decision log upload endpoint, which takes what
// OPA's decision log plugin POSTs to <service url>/logs: a JSON array of
// events, gzip-compressed. Zero values take the defaults.
type Config struct {
	// Exists reports whether a record id is already stored, so that an
	// upload OPA retries is written once. nil: only the ids this process
	// queued are known.
	Exists func(ctx context.Context, id string) (bool, error)
	// MaxBodyBytes bounds the body as sent (compressed): 4 MiB by default.
	MaxBodyBytes int64
	// MaxDecodedBytes bounds the body once decompressed, so that a small
	// upload cannot expand without limit: 32 MiB by default.
	MaxDecodedBytes int64
	// MaxEvents bounds the events in one upload: 10,000 by default. The
	// recorder's queue must be able to take that many at once.
	MaxEvents int
	// Remember is how many of the ids it queued the endpoint remembers
	// (they may not be stored yet when OPA retries): 131,072 by default.
	// Keep it above the recorder's queue size plus its batch size.
	Remember int
	// MaxAge skips events older than this (0: none is too old): retention
	// would delete such a record at once, and cut the replica's chain
	// after it, taking newer records with it.
	MaxAge time.Duration
	// MaxClockSkew refuses an upload holding an event stamped further
	// ahead of this server's clock than this: 5 minutes by default. Such
	// a record would be kept by retention for as long as its time says,
	// and keep every record after it on its chain.
	MaxClockSkew time.Duration
	// Registerer, when set, gets the endpoint's metrics.
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.MaxDecodedBytes == 0 {
		c.MaxDecodedBytes = 32 << 20
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = 10_000
	}
	if c.Remember == 0 {
		c.Remember = 1 << 17
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = 5 * time.Minute
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 || c.MaxDecodedBytes < 0 || c.MaxEvents < 0 || c.Remember < 0 || c.MaxAge < 0 || c.MaxClockSkew < 0 {
		return errors.New("decision logs: limits must not be negative")
	}
	return nil
}

// BatchRecorder takes the records of one upload all at once or not at all
// (recorder.Recorder.RecordBatch).
type BatchRecorder interface {
	RecordBatch(ctx context.Context, recs []*evidence.Record) error
}

// Checker builds a record as a Check of the same request would have it
// (*authz.Server).
type Checker interface {
	RecordOf(id string, t time.Time, req *authv3.CheckRequest) *evidence.Record
	// Stamp stamps a record made by RecordOf, once complete, as the
	// Check path stamps its own (recorder.Stamp): replica and bounds.
	Stamp(rec *evidence.Record)
	// TallyOf and CountDecisionLogs count the recorded events with the
	// Checks (meshproof_checks_total{source="opa_decision_logs"}): what
	// to count is taken before the records are handed over.
	TallyOf(rec *evidence.Record) authz.Tally
	CountDecisionLogs(ts []authz.Tally)
}

// uploadReadTimeout bounds how long one upload may take to arrive.
const uploadReadTimeout = time.Minute

// maxUploads bounds the uploads decoded at once: each holds its decoded
// events in memory.
const maxUploads = 4

// decisionLogs is the endpoint.
type decisionLogs struct {
	check Checker
	now   func() time.Time
	cfg   Config
	rec   BatchRecorder
	seen  *idSet
	slot  chan struct{}
	log   zerolog.Logger
	m     *uploadMetrics
}

// New serves OPA's decision log uploads: every event of an upload becomes
// an evidence record, built by check as a Check's is, and handed to rec;
// or the upload is refused whole with a 4xx naming the problem (OPA keeps
// it and retries; fix the cause). 204 when recorded; 503 when the
// evidence queue or store cannot take it now (OPA retries).
func New(cfg Config, check Checker, rec BatchRecorder, log zerolog.Logger) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if check == nil || rec == nil {
		return nil, errors.New("decision logs: a Check server and an evidence recorder are needed")
	}
	cfg = cfg.withDefaults()
	return &decisionLogs{
		check: check, now: time.Now, cfg: cfg, rec: rec,
		seen: newIDSet(cfg.Remember),
		slot: make(chan struct{}, maxUploads),
		log:  log.With().Str("component", "decision-logs").Logger(),
		m:    newUploadMetrics(cfg.Registerer),
	}, nil
}

// uploadError is a refused upload: the status and what to tell the client.
type uploadError struct {
	status int
	msg    string
}

func (e *uploadError) Error() string { return e.msg }

func refuse(status int, format string, args ...any) *uploadError {
	return &uploadError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (d *decisionLogs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		answer(w, refuse(http.StatusMethodNotAllowed, "method %s not allowed: OPA's decision log plugin POSTs", quoted(r.Method)))
		return
	}
	select {
	case d.slot <- struct{}{}:
		defer func() { <-d.slot }()
	case <-r.Context().Done():
		return
	}
	n, err := d.upload(w, r)
	if err != nil {
		d.m.uploads.WithLabelValues(strconv.Itoa(err.status)).Inc()
		if err.status < 500 {
			d.log.Warn().Str("remote", r.RemoteAddr).Int("status", err.status).Str("error", err.msg).
				Msg("decision log upload refused; OPA keeps it and retries until its cause is fixed")
		}
		answer(w, err)
		return
	}
	d.m.uploads.WithLabelValues("204").Inc()
	d.log.Debug().Str("remote", r.RemoteAddr).Int("recorded", n).Msg("decision log upload")
	w.WriteHeader(http.StatusNoContent)
}

// upload reads, converts and records one upload, and returns how many
// records it handed over.
func (d *decisionLogs) upload(w http.ResponseWriter, r *http.Request) (int, *uploadError) {
	body, err := d.read(w, r)
	if err != nil {
		return 0, err
	}
	events, err := d.parse(body)
	if err != nil {
		return 0, err
	}
	recs, err := d.convert(events)
	if err != nil {
		d.m.events.WithLabelValues("refused").Add(float64(len(events)))
		return 0, err
	}
	return d.record(r.Context(), recs)
}

// read returns the body, decompressed, within the configured bounds.
func (d *decisionLogs) read(w http.ResponseWriter, r *http.Request) ([]byte, *uploadError) {
	gzipped := false
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		gzipped = true
	default:
		return nil, refuse(http.StatusUnsupportedMediaType, "Content-Encoding %s not supported: send gzip (as OPA does) or none", quoted(enc))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, refuse(http.StatusUnsupportedMediaType, "Content-Type %s not supported: send application/json (as OPA does)", quoted(ct))
		}
	}
	if r.ContentLength > d.cfg.MaxBodyBytes {
		return nil, refuse(http.StatusRequestEntityTooLarge, "body of %d bytes, at most %d: lower decision_logs.reporting.upload_size_limit_bytes in OPA's configuration", r.ContentLength, d.cfg.MaxBodyBytes)
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadReadTimeout))
	var src io.Reader = http.MaxBytesReader(w, r.Body, d.cfg.MaxBodyBytes)
	if gzipped {
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, readError(err, d.cfg.MaxBodyBytes, "the body is not gzip")
		}
		defer zr.Close()
		src = zr
	}
	body, err := io.ReadAll(io.LimitReader(src, d.cfg.MaxDecodedBytes+1))
	switch {
	case err != nil:
		return nil, readError(err, d.cfg.MaxBodyBytes, "reading the body")
	case int64(len(body)) > d.cfg.MaxDecodedBytes:
		return nil, refuse(http.StatusRequestEntityTooLarge, "decompressed body larger than %d bytes: lower decision_logs.reporting.upload_size_limit_bytes in OPA's configuration", d.cfg.MaxDecodedBytes)
	}
	return body, nil
}

func readError(err error, max int64, what string) *uploadError {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return refuse(http.StatusRequestEntityTooLarge, "body larger than %d bytes: lower decision_logs.reporting.upload_size_limit_bytes in OPA's configuration", max)
	}
	return refuse(http.StatusBadRequest, "%s: %v", what, err)
}

// parse splits the body into events: a JSON array of objects.
func (d *decisionLogs) parse(body []byte) ([]*opaEvent, *uploadError) {
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, refuse(http.StatusBadRequest, "the body is not a JSON array of decision log events (OPA's upload format)")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, refuse(http.StatusBadRequest, "malformed JSON: %v", err)
	}
	if len(raws) > d.cfg.MaxEvents {
		return nil, refuse(http.StatusRequestEntityTooLarge, "%d events in one upload, at most %d: lower decision_logs.reporting.upload_size_limit_bytes in OPA's configuration", len(raws), d.cfg.MaxEvents)
	}
	events := make([]*opaEvent, len(raws))
	for i, raw := range raws {
		ev := &opaEvent{}
		if err := json.Unmarshal(raw, ev); err != nil {
			return nil, refuse(http.StatusBadRequest, "event %d: not a decision log event: %v", i, err)
		}
		events[i] = ev
	}
	return events, nil
}

// convert builds every event's record before any is handed over: one bad
// event refuses the upload whole.
func (d *decisionLogs) convert(events []*opaEvent) ([]*evidence.Record, *uploadError) {
	recs := make([]*evidence.Record, 0, len(events))
	now := d.now()
	var oldest time.Time
	if d.cfg.MaxAge > 0 {
		oldest = now.Add(-d.cfg.MaxAge)
	}
	latest := now.Add(d.cfg.MaxClockSkew)
	for i, ev := range events {
		rec, err := eventRecord(d.check, ev)
		switch {
		case errors.Is(err, errNoInput):
			d.m.events.WithLabelValues("no_input").Inc()
			continue
		case err != nil:
			return nil, refuse(http.StatusBadRequest, "event %d (decision_id %s): %v", i, quoted(ev.DecisionID), err)
		case rec.Time.After(latest):
			return nil, refuse(http.StatusBadRequest, "event %d (decision_id %s): timestamp %s is %s ahead of this server's clock (%s), more than --max-clock-skew %s: fix the clock of the OPA that logged it",
				i, quoted(ev.DecisionID), rec.Time.Format(time.RFC3339Nano), rec.Time.Sub(now).Round(time.Second), now.UTC().Format(time.RFC3339), d.cfg.MaxClockSkew)
		case !oldest.IsZero() && rec.Time.Before(oldest):
			d.m.events.WithLabelValues("too_old").Inc()
			d.log.Warn().Str("decision_id", ev.DecisionID).Time("time", rec.Time).Dur("max_age", d.cfg.MaxAge).
				Msg("decision log event older than retention allows: not recorded")
			continue
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// record hands over the records not yet stored nor queued, all at once.
func (d *decisionLogs) record(ctx context.Context, recs []*evidence.Record) (int, *uploadError) {
	fresh := make([]*evidence.Record, 0, len(recs))
	inUpload := make(map[string]bool, len(recs))
	for _, rec := range recs {
		if inUpload[rec.ID] || d.seen.has(rec.ID) {
			d.m.events.WithLabelValues("duplicate").Inc()
			continue
		}
		inUpload[rec.ID] = true
		if d.cfg.Exists != nil {
			found, err := d.cfg.Exists(ctx, rec.ID)
			if err != nil {
				d.log.Warn().Err(err).Msg("decision logs: cannot tell stored records from new ones; OPA will retry")
				return 0, refuse(http.StatusServiceUnavailable, "the evidence store cannot be read to skip records already stored; retry later")
			}
			if found {
				d.m.events.WithLabelValues("duplicate").Inc()
				continue
			}
		}
		fresh = append(fresh, rec)
	}
	// Claimed under one lock: a concurrent upload of the same events
	// (OPA retrying a slow answer) keeps only one copy.
	if claimed := d.seen.claim(fresh); len(claimed) < len(fresh) {
		d.m.events.WithLabelValues("duplicate").Add(float64(len(fresh) - len(claimed)))
		fresh = claimed
	}
	if len(fresh) == 0 {
		return 0, nil
	}
	ids := make([]string, len(fresh)) // the records are the recorder's once handed over
	tallies := make([]authz.Tally, len(fresh))
	for i, rec := range fresh {
		ids[i] = rec.ID
		tallies[i] = d.check.TallyOf(rec)
	}
	if err := d.rec.RecordBatch(ctx, fresh); err != nil {
		queued := !errors.Is(err, recorder.ErrQueueFull) && !errors.Is(err, recorder.ErrClosed) && !errors.Is(err, evidence.ErrTimeRange)
		if !queued {
			d.seen.release(ids)
		}
		d.log.Warn().Err(err).Int("records", len(ids)).Bool("queued", queued).Msg("decision logs: evidence not taken now; OPA will retry")
		return 0, refuse(http.StatusServiceUnavailable, "evidence could not be recorded now (%v); retry later", err)
	}
	d.m.events.WithLabelValues("recorded").Add(float64(len(ids)))
	d.check.CountDecisionLogs(tallies)
	return len(ids), nil
}

// answer writes a refusal as the API writes its errors: {"error": "..."}.
func answer(w http.ResponseWriter, e *uploadError) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{e.msg})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	if e.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	w.WriteHeader(e.status)
	w.Write(append(b, '\n'))
}

// uploadMetrics count uploads by status and events by what became of them.
type uploadMetrics struct {
	uploads *prometheus.CounterVec
	events  *prometheus.CounterVec
}

func newUploadMetrics(reg prometheus.Registerer) *uploadMetrics {
	m := &uploadMetrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshproof_decision_log_uploads_total",
			Help: "OPA decision log uploads answered, by HTTP status (204 recorded; 4xx refused, OPA retries them until fixed; 503 not taken now). Uploads the API refuses before reading them (401, 403: a wrong or missing token) are not counted here; the api request log line shows them.",
		}, []string{"status"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshproof_decision_log_events_total",
			Help: "OPA decision log events, by outcome: recorded, duplicate (stored or queued before), refused (in a refused upload), no_input (OPA-Envoy could not read the request), too_old (older than retention allows).",
		}, []string{"outcome"}),
	}
	for _, o := range []string{"recorded", "duplicate", "refused", "no_input", "too_old"} {
		m.events.WithLabelValues(o)
	}
	m.uploads.WithLabelValues("204") // the others as they happen
	if reg != nil {
		reg.MustRegister(m.uploads, m.events)
	}
	return m
}
