package api

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// The parameters each endpoint takes, as openapi.json lists them (a test
// holds the two together). Any other name is refused: a misspelt filter
// must not silently widen a query.
var (
	filterParams = []string{"since", "until", "source", "source_prefix", "destination", "destination_prefix",
		"trust_domain", "namespace", "verdict", "mtls", "allowed", "method", "host", "path_prefix", "request_id", "replica"}
	listParams      = append(slices.Clone(filterParams), "limit", "cursor")
	tlsCheckParams  = []string{"since", "until", "destination"}
	readinessParams = []string{"destination", "since", "until"}
	statsParams     = []string{"since"}
	// consistencyParams are the tree sizes of a consistency proof.
	consistencyParams = []string{"from", "to"}
)

// repeatable parameters may be given more than once; every other one once.
var repeatable = map[string]bool{"verdict": true}

// query is a request's parameters, checked against the names an endpoint
// takes. Empty values count as absent (HTML forms send every field).
type query struct {
	values map[string][]string
	now    time.Time
}

// parseQuery reads raw (a URL's query string) for an endpoint taking
// names. It decodes each pair itself, so that a malformed one is named.
func parseQuery(raw string, now time.Time, names []string) (query, error) {
	q := query{values: map[string][]string{}, now: now}
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return q, badParamf(rawKey, "not a valid URL-encoded name")
		}
		if !slices.Contains(names, key) {
			takes := "none"
			if len(names) > 0 {
				takes = strings.Join(names, ", ")
			}
			return q, badParamf(key, "unknown parameter; this endpoint takes "+takes)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return q, badParamf(key, "not a valid URL-encoded value")
		}
		if value == "" {
			continue
		}
		if len(q.values[key]) > 0 && !repeatable[key] {
			return q, badParamf(key, "given more than once")
		}
		q.values[key] = append(q.values[key], value)
	}
	return q, nil
}

// size reads a tree size parameter: def when absent.
func (q query) size(name string, def int64) (int64, error) {
	v := q.get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badParamf(name, "not a tree size (a whole number, 0 or more)")
	}
	return n, nil
}

// get is the value of a parameter given at most once, or "".
func (q query) get(name string) string {
	if v := q.values[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// timeParam reads a time parameter: RFC 3339, or a duration back from now; def
// when absent (zero: no bound).
func (q query) timeParam(name string, def time.Duration) (time.Time, error) {
	v := q.get(name)
	if v == "" {
		if def == 0 {
			return time.Time{}, nil
		}
		return q.now.Add(-def), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := evidence.ParseAgo(v)
	if err != nil {
		return time.Time{}, badParamf(name, quote(v)+" is neither an RFC 3339 time (2025-03-03T10:00:00Z) nor a duration back from now (90s, 1h, 7d, 1d12h)")
	}
	return q.now.Add(-d), nil
}

// boolParam reads true or false; nil when absent.
func (q query) boolParam(name string) (*bool, error) {
	switch v := q.get(name); v {
	case "":
		return nil, nil
	case "true", "false":
		b := v == "true"
		return &b, nil
	default:
		return nil, badParamf(name, quote(v)+" is neither true nor false")
	}
}

// filter reads the filter parameters. Filter.Validate then checks the
// values themselves (length, NUL, UTF-8), naming the parameter.
func (q query) filter() (evidence.Filter, error) {
	var f evidence.Filter
	var err error
	if f.Since, err = q.timeParam("since", 0); err != nil {
		return f, err
	}
	if f.Until, err = q.timeParam("until", 0); err != nil {
		return f, err
	}
	for name, dst := range map[string]*string{
		"source": &f.Source, "source_prefix": &f.SourcePrefix, "destination": &f.Destination,
		"destination_prefix": &f.DestinationPrefix, "trust_domain": &f.TrustDomain, "namespace": &f.Namespace,
		"method": &f.Method, "host": &f.Host, "path_prefix": &f.PathPrefix, "request_id": &f.RequestID, "replica": &f.Replica,
	} {
		*dst = q.get(name)
	}
	for _, v := range q.values["verdict"] {
		if !evidence.Verdict(v).Valid() {
			return f, badParamf("verdict", quote(v)+" is not one of mtls, mtls_mismatch, tls_server_only, xfcc_unverified, plaintext")
		}
		f.Verdicts = append(f.Verdicts, evidence.Verdict(v))
	}
	mtls, err := q.boolParam("mtls")
	switch {
	case err != nil:
		return f, err
	case mtls != nil && len(f.Verdicts) > 0:
		return f, badParamf("mtls", "give mtls or verdict, not both")
	case mtls != nil && *mtls:
		f.Verdicts = []evidence.Verdict{evidence.MTLS}
	case mtls != nil:
		f.NotVerdicts = []evidence.Verdict{evidence.MTLS}
	}
	if f.Allowed, err = q.boolParam("allowed"); err != nil {
		return f, err
	}
	return f, f.Validate()
}

// page reads limit and cursor. The cursor is the store's to check: one it
// did not give out is evidence.ErrBadCursor, a 400 naming it (classify).
func (q query) page() (evidence.PageRequest, error) {
	p := evidence.PageRequest{Limit: evidence.DefaultLimit, Cursor: q.get("cursor")}
	if v := q.get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > evidence.MaxLimit {
			return p, badParamf("limit", quote(v)+" is not a whole number from 1 to "+strconv.Itoa(evidence.MaxLimit))
		}
		p.Limit = n
	}
	return p, nil
}
