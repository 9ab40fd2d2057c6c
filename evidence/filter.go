package evidence

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Filter selects records. Zero fields select everything; set fields are
// ANDed; the values of one list field are ORed.
type Filter struct {
	Since, Until time.Time // Until is exclusive

	Source, SourcePrefix           string // source principal, exact or prefix
	Destination, DestinationPrefix string // destination principal, exact or prefix
	TrustDomain                    string // of the source or the destination
	// Namespace, SourceNamespace and DestinationNamespace compare a
	// peer's namespace: its Istio SPIFFE ID's, else its workload's
	// (Columns.SourceNamespace).
	Namespace            string // of the source or the destination
	SourceNamespace      string // of the source only
	DestinationNamespace string // of the destination only
	// SourceWorkload and DestinationWorkload are NAMESPACE/NAME of the
	// peer's workload as recorded at Check time (WorkloadRef), exact; any
	// kind of that name matches.
	SourceWorkload, DestinationWorkload string
	Verdicts                            []Verdict
	NotVerdicts                         []Verdict
	Allowed                             *bool
	Method, Host, PathPrefix            string // Host without a port: on any port (HostAnyPort)
	RequestID                           string
	Replica                             string
}

// maxFilterValue bounds each filter value: a longer one is a mistake or an
// attack, not a principal.
const maxFilterValue = 2048

// Validate rejects filters no record could match for a reason the caller
// should hear about; the error names the field.
func (f Filter) Validate() error {
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return &FilterError{Field: "until", Msg: "must be after since"}
	}
	for name, v := range map[string]string{
		"source": f.Source, "source_prefix": f.SourcePrefix, "destination": f.Destination,
		"destination_prefix": f.DestinationPrefix, "trust_domain": f.TrustDomain, "namespace": f.Namespace,
		"source_namespace": f.SourceNamespace, "destination_namespace": f.DestinationNamespace,
		"method": f.Method, "host": f.Host, "path_prefix": f.PathPrefix, "request_id": f.RequestID, "replica": f.Replica,
		"source_workload": f.SourceWorkload, "destination_workload": f.DestinationWorkload,
	} {
		if len(v) > maxFilterValue {
			return &FilterError{Field: name, Msg: fmt.Sprintf("longer than %d bytes", maxFilterValue)}
		}
		if strings.ContainsRune(v, 0) {
			return &FilterError{Field: name, Msg: "contains a NUL byte"}
		}
		if !utf8.ValidString(v) {
			return &FilterError{Field: name, Msg: "is not valid UTF-8"}
		}
	}
	for name, v := range map[string]string{"source_workload": f.SourceWorkload, "destination_workload": f.DestinationWorkload} {
		if v == "" {
			continue
		}
		if ns, name2, ok := strings.Cut(v, "/"); !ok || ns == "" || name2 == "" || strings.Contains(name2, "/") {
			return &FilterError{Field: name, Msg: fmt.Sprintf("%q is not NAMESPACE/NAME", v)}
		}
	}
	for _, v := range append(append([]Verdict(nil), f.Verdicts...), f.NotVerdicts...) {
		if !v.Valid() {
			return &FilterError{Field: "verdict", Msg: fmt.Sprintf("%q is not one of %v", v, Verdicts)}
		}
	}
	return nil
}

// HostAnyPort reports whether a host filter value names no port, and so
// matches the name with no port and on any port: "web.shop" matches
// "web.shop" and "web.shop:8080", not "web.shop.svc:80"; "[fd00::1]" any
// port of that address. A store reads it as the range
// [host, host+";") of names (';' follows ':'), of which it keeps host
// itself and those from host+":" on: one index range.
func HostAnyPort(host string) bool {
	i := strings.LastIndexByte(host, ':')
	return i < 0 || i < strings.LastIndexByte(host, ']')
}

// FilterError is a filter value that cannot be used; Field names it as the
// query API does.
type FilterError struct {
	Field string
	Msg   string
}

func (e *FilterError) Error() string { return e.Field + ": " + e.Msg }

// ErrBadCursor is wrapped by errors for a cursor this store did not issue.
var ErrBadCursor = errors.New("invalid cursor")

// Validate checks an aggregate query as Filter.Validate checks a filter.
func (q AggregateQuery) Validate() error {
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return &FilterError{Field: "until", Msg: "must be after since"}
	}
	return Filter{Destination: q.Destination}.Validate()
}
