// Package params is the one table of the evidence API's record filter:
// each parameter's name, kind, documentation, command-line flag and the
// evidence.Filter field it sets. The API parses and validates with it, the
// client encodes with it, the CLI registers its flags from it and the
// served OpenAPI document lists it; a parameter added here reaches all of
// them.
//
// It depends on no flag library: Param.Value is a flag.Value (and has the
// Type method pflag wants), so a command registers a flag per Param.
package params

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// Filter selects records, as the API's query parameters do: zero fields
// select everything, set fields are ANDed, Verdicts are ORed. It is the
// filter as it travels (times as given); Resolve makes the store's
// evidence.Filter of it.
type Filter struct {
	// Since and Until bound the records' time (Until exclusive): an RFC
	// 3339 time, or a duration back from the server's now (90s, 1h, 7d).
	// Format a time.Time with Time.
	Since, Until string

	Source, SourcePrefix           string // source principal, exact or prefix
	Destination, DestinationPrefix string // destination principal, exact or prefix
	TrustDomain                    string // of the source or the destination
	Namespace                      string // of the source or the destination
	SourceNamespace                string // of the source only
	DestinationNamespace           string // of the destination only
	// SourceWorkload and DestinationWorkload are NAMESPACE/NAME of the
	// peer's Kubernetes workload, recorded at Check time.
	SourceWorkload, DestinationWorkload string
	Verdicts                            []evidence.Verdict
	// MTLS true selects verdict mtls, false every other; not with Verdicts.
	MTLS    *bool
	Allowed *bool
	Method  string
	Host    string // as in :authority; without a port, the name on any port
	// PathPrefix, RequestID (x-request-id) and Replica (the meshproof
	// instance that recorded it).
	PathPrefix, RequestID, Replica string
}

// Kind is how a parameter's value is written.
type Kind int

const (
	KindText     Kind = iota // any text: at most 2048 bytes of UTF-8, no NUL (evidence.Filter.Validate)
	KindTime                 // an RFC 3339 time, or a duration back from now
	KindBool                 // true or false
	KindVerdicts             // a verdict; the parameter may be repeated (ORed)
	KindWorkload             // NAMESPACE/NAME: text (as KindText) with one '/' between two non-empty parts
)

// Param is one filter parameter.
type Param struct {
	Name string // query parameter
	Flag string // command-line flag, without dashes
	Kind Kind
	// Doc is one line, for --help and the OpenAPI document; its word in
	// backquotes names the flag's argument (flag.UnquoteUsage) and is
	// plain text in the document (Description).
	Doc string

	// wire points at the parameter's field of a Filter: *string (Text,
	// Time), **bool (Bool) or *[]evidence.Verdict (Verdicts).
	wire func(*Filter) any
	// store sets the parameter's evidence.Filter field from its value in
	// w (set: the parameter was given).
	store func(w *Filter, now time.Time, f *evidence.Filter) error
}

// Table is every filter parameter, in the order the document lists them.
var Table = []Param{
	timeParam("since", "records from this `time` on: RFC 3339, or a duration back from now (90s, 1h, 7d, 1d12h)",
		func(w *Filter) *string { return &w.Since }, func(f *evidence.Filter) *time.Time { return &f.Since }),
	timeParam("until", "records before this `time` (RFC 3339 or a duration back from now); now when absent",
		func(w *Filter) *string { return &w.Until }, func(f *evidence.Filter) *time.Time { return &f.Until }),
	text("source", "source `principal`, exactly",
		func(w *Filter) *string { return &w.Source }, func(f *evidence.Filter) *string { return &f.Source }),
	text("source_prefix", "source principal `prefix`",
		func(w *Filter) *string { return &w.SourcePrefix }, func(f *evidence.Filter) *string { return &f.SourcePrefix }),
	text("destination", "destination `principal`, exactly",
		func(w *Filter) *string { return &w.Destination }, func(f *evidence.Filter) *string { return &f.Destination }),
	text("destination_prefix", "destination principal `prefix`",
		func(w *Filter) *string { return &w.DestinationPrefix }, func(f *evidence.Filter) *string { return &f.DestinationPrefix }),
	text("trust_domain", "trust `domain` of the source or the destination",
		func(w *Filter) *string { return &w.TrustDomain }, func(f *evidence.Filter) *string { return &f.TrustDomain }),
	text("namespace", "`namespace` of the source or the destination: its Istio SPIFFE ID's, else its workload's (either side; source_namespace and destination_namespace pick one)",
		func(w *Filter) *string { return &w.Namespace }, func(f *evidence.Filter) *string { return &f.Namespace }),
	text("source_namespace", "`namespace` of the source: its Istio SPIFFE ID's, else its workload's (a plaintext client's pod)",
		func(w *Filter) *string { return &w.SourceNamespace }, func(f *evidence.Filter) *string { return &f.SourceNamespace }),
	text("destination_namespace", "`namespace` of the destination: its Istio SPIFFE ID's, else its workload's",
		func(w *Filter) *string { return &w.DestinationNamespace }, func(f *evidence.Filter) *string { return &f.DestinationNamespace }),
	workload("source_workload", "the source's Kubernetes workload, `namespace/name` exactly (any kind), as serve --kubernetes recorded it",
		func(w *Filter) *string { return &w.SourceWorkload }, func(f *evidence.Filter) *string { return &f.SourceWorkload }),
	workload("destination_workload", "the destination's Kubernetes workload, `namespace/name` exactly (any kind), as serve --kubernetes recorded it",
		func(w *Filter) *string { return &w.DestinationWorkload }, func(f *evidence.Filter) *string { return &f.DestinationWorkload }),
	{
		Name: "verdict", Flag: "verdict", Kind: KindVerdicts,
		Doc:  "`verdict`, repeatable (any of them): " + verdictNames(),
		wire: func(w *Filter) any { return &w.Verdicts },
		store: func(w *Filter, _ time.Time, f *evidence.Filter) error {
			f.Verdicts = append(f.Verdicts, w.Verdicts...)
			return nil
		},
	},
	{
		Name: "mtls", Flag: "mtls", Kind: KindBool,
		Doc:  "`true`: verdict mtls only; false: every other verdict (not with verdict)",
		wire: func(w *Filter) any { return &w.MTLS },
		store: func(w *Filter, _ time.Time, f *evidence.Filter) error {
			switch {
			case len(w.Verdicts) > 0:
				return &evidence.FilterError{Field: "mtls", Msg: "give mtls or verdict, not both"}
			case *w.MTLS:
				f.Verdicts = []evidence.Verdict{evidence.MTLS}
			default:
				f.NotVerdicts = []evidence.Verdict{evidence.MTLS}
			}
			return nil
		},
	},
	{
		Name: "allowed", Flag: "allowed", Kind: KindBool,
		Doc:  "`true`: allowed requests only; false: denied ones only",
		wire: func(w *Filter) any { return &w.Allowed },
		store: func(w *Filter, _ time.Time, f *evidence.Filter) error {
			b := *w.Allowed
			f.Allowed = &b
			return nil
		},
	},
	text("method", "HTTP `method`",
		func(w *Filter) *string { return &w.Method }, func(f *evidence.Filter) *string { return &f.Method }),
	text("host", "`host` as in :authority: with a port, exactly; without one, the name with no port and on any port",
		func(w *Filter) *string { return &w.Host }, func(f *evidence.Filter) *string { return &f.Host }),
	text("path_prefix", "path `prefix`",
		func(w *Filter) *string { return &w.PathPrefix }, func(f *evidence.Filter) *string { return &f.PathPrefix }),
	text("request_id", "the request's `x-request-id`",
		func(w *Filter) *string { return &w.RequestID }, func(f *evidence.Filter) *string { return &f.RequestID }),
	text("replica", "the `replica` that recorded the request (the meshproof instance: serve's --replica)",
		func(w *Filter) *string { return &w.Replica }, func(f *evidence.Filter) *string { return &f.Replica }),
}

// flagName is the CLI's spelling of a query parameter: dashes for
// underscores.
func flagName(name string) string { return strings.ReplaceAll(name, "_", "-") }

func text(name, doc string, wire func(*Filter) *string, field func(*evidence.Filter) *string) Param {
	return Param{Name: name, Flag: flagName(name), Kind: KindText, Doc: doc,
		wire: func(w *Filter) any { return wire(w) },
		store: func(w *Filter, _ time.Time, f *evidence.Filter) error {
			*field(f) = *wire(w)
			return nil
		},
	}
}

// workload is a text parameter naming a workload; evidence.Filter.Validate
// checks its form.
func workload(name, doc string, wire func(*Filter) *string, field func(*evidence.Filter) *string) Param {
	p := text(name, doc, wire, field)
	p.Kind = KindWorkload
	return p
}

func timeParam(name, doc string, wire func(*Filter) *string, field func(*evidence.Filter) *time.Time) Param {
	return Param{Name: name, Flag: flagName(name), Kind: KindTime, Doc: doc,
		wire: func(w *Filter) any { return wire(w) },
		store: func(w *Filter, now time.Time, f *evidence.Filter) error {
			t, err := ParseTime(*wire(w), now)
			if err != nil {
				return &evidence.FilterError{Field: name, Msg: err.Error()}
			}
			*field(f) = t
			return nil
		},
	}
}

// Names are the query parameters of the table, in its order.
func Names() []string {
	out := make([]string, len(Table))
	for i, p := range Table {
		out[i] = p.Name
	}
	return out
}

// Lookup returns the parameter named name (a query parameter).
func Lookup(name string) (Param, bool) {
	for _, p := range Table {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// Description is Doc without its backquotes, for the OpenAPI document.
func (p Param) Description() string { return strings.ReplaceAll(p.Doc, "`", "") }

// Usage is Doc for a command-line flag, whose Verdicts also take a
// comma-separated list.
func (p Param) Usage() string {
	if p.Kind == KindVerdicts {
		return p.Doc + "; or comma-separated"
	}
	return p.Doc
}

// Repeatable says whether the parameter may be given more than once.
func (p Param) Repeatable() bool { return p.Kind == KindVerdicts }

// isSet says whether w has a value for p.
func (p Param) isSet(w *Filter) bool {
	switch v := p.wire(w).(type) {
	case *string:
		return *v != ""
	case **bool:
		return *v != nil
	case *[]evidence.Verdict:
		return len(*v) > 0
	}
	panic("params: bad wire field of " + p.Name)
}

// values are p's values in w as query parameter values.
func (p Param) values(w *Filter) []string {
	if !p.isSet(w) {
		return nil
	}
	switch v := p.wire(w).(type) {
	case *string:
		return []string{*v}
	case **bool:
		return []string{strconv.FormatBool(**v)}
	case *[]evidence.Verdict:
		out := make([]string, len(*v))
		for i, vd := range *v {
			out[i] = string(vd)
		}
		return out
	}
	return nil
}

// set adds one value of p to w, checking its syntax: a bool must be true
// or false, a verdict one of evidence.Verdicts. The error names p.
func (p Param) set(w *Filter, value string) error {
	switch v := p.wire(w).(type) {
	case *string:
		*v = value
	case **bool:
		b, err := parseBool(value)
		if err != nil {
			return &evidence.FilterError{Field: p.Name, Msg: err.Error()}
		}
		*v = &b
	case *[]evidence.Verdict:
		if !evidence.Verdict(value).Valid() {
			return &evidence.FilterError{Field: p.Name, Msg: Quote(value) + " is not one of " + verdictNames()}
		}
		*v = append(*v, evidence.Verdict(value))
	}
	return nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errors.New(Quote(s) + " is neither true nor false")
}

// maxEcho bounds how much of a bad value an error repeats.
const maxEcho = 48

// Quote is a bad value as an error repeats it: quoted, escaped, and at
// most maxEcho bytes of it.
func Quote(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxEcho]) + "..."
}

func verdictNames() string {
	names := make([]string, len(evidence.Verdicts))
	for i, v := range evidence.Verdicts {
		names[i] = string(v)
	}
	return strings.Join(names, ", ")
}

// Values are f's query parameters.
func (f Filter) Values() url.Values {
	v := url.Values{}
	for _, p := range Table {
		for _, s := range p.values(&f) {
			v.Add(p.Name, s)
		}
	}
	return v
}

// Decode reads the filter parameters from values (a request's query,
// each name at most once but for a repeatable one; an empty value counts
// as absent). Names outside the table are the caller's to refuse. A
// value of the wrong syntax is an *evidence.FilterError naming its
// parameter.
func Decode(values map[string][]string) (Filter, error) {
	var w Filter
	for _, p := range Table {
		for _, s := range values[p.Name] {
			if s == "" {
				continue
			}
			if err := p.set(&w, s); err != nil {
				return w, err
			}
		}
	}
	return w, nil
}

// Resolve makes the store's filter of f: relative times from now, mtls
// as verdicts, every value checked (evidence.Filter.Validate). Errors are
// *evidence.FilterError naming the parameter.
func (f Filter) Resolve(now time.Time) (evidence.Filter, error) {
	var out evidence.Filter
	for _, p := range Table {
		if !p.isSet(&f) {
			continue
		}
		if err := p.store(&f, now, &out); err != nil {
			return out, err
		}
	}
	return out, out.Validate()
}

// Time formats t as the API's time parameters take it.
func Time(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTime reads a time as the API's since and until take it, an RFC 3339
// time or a duration back from now (90s, 1h, 7d, 1d12h; d is 24 hours),
// so that a caller can fix a relative window once, on its own clock.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := ParseAgo(s)
	if err != nil {
		return time.Time{}, errors.New(Quote(s) + " is neither an RFC 3339 time (2025-03-03T10:00:00Z) nor a duration back from now (90s, 1h, 7d, 1d12h)")
	}
	return now.Add(-d), nil
}

// Value is a command-line flag for p that writes into w: flag.Value, and
// pflag.Value with Type. A Verdicts flag is repeatable and also takes a
// comma-separated list; a Bool flag takes true or false as its argument.
func (p Param) Value(w *Filter) *Value { return &Value{p: p, w: w} }

// Value is the flag of one filter parameter (see Param.Value).
type Value struct {
	p Param
	w *Filter
}

func (v *Value) String() string {
	if v == nil || v.w == nil {
		return ""
	}
	return strings.Join(v.p.values(v.w), ",")
}

// Set adds s; the error says what is wrong with it (the flag library
// names the flag).
func (v *Value) Set(s string) error {
	values := []string{s}
	if v.p.Kind == KindVerdicts {
		values = strings.Split(s, ",")
	}
	for _, one := range values {
		if err := v.p.set(v.w, strings.TrimSpace(one)); err != nil {
			var fe *evidence.FilterError
			if errors.As(err, &fe) {
				return errors.New(fe.Msg)
			}
			return err
		}
	}
	return nil
}

// Type names the value's kind, as pflag's usage shows it.
func (v *Value) Type() string {
	switch v.p.Kind {
	case KindTime:
		return "time"
	case KindBool:
		return "bool"
	case KindVerdicts:
		return "verdicts"
	}
	return "string"
}
