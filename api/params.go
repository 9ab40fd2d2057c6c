package api

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence"
)

// The parameters each endpoint takes, as openapi.json lists them (a test
// holds the two together); the filter's are package params' table. Any
// other name is refused: a misspelt filter must not silently widen a
// query.
var (
	filterParams     = params.Names()
	listParams       = append(slices.Clone(filterParams), "limit", "cursor")
	tlsCheckParams   = []string{"since", "until", "destination", "namespace"}
	readinessParams  = []string{"destination", "namespace", "all_namespaces", "since", "until", "known_since"}
	timeseriesParams = []string{"since", "until", "destination", "namespace", "step"}
	statsParams      = []string{"since"}
	// consistencyParams are the tree sizes of a consistency proof.
	consistencyParams = []string{"from", "to"}
)

// repeatable says whether a parameter may be given more than once (a
// repeatable filter parameter); every other one is given once.
func repeatable(name string) bool {
	p, ok := params.Lookup(name)
	return ok && p.Repeatable()
}

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
		if len(q.values[key]) > 0 && !repeatable(key) {
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
	t, err := params.ParseTime(v, q.now)
	if err != nil {
		return time.Time{}, badParamf(name, err.Error())
	}
	return t, nil
}

// filter reads the filter parameters, with package params' table: the
// syntax of each, then the values themselves (length, NUL, UTF-8),
// errors naming the parameter.
func (q query) filter() (evidence.Filter, error) {
	w, err := params.Decode(q.values)
	if err != nil {
		return evidence.Filter{}, err
	}
	return w.Resolve(q.now)
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
