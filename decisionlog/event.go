package decisionlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/oklog/ulid/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/evidence"
)

// This file turns one OPA decision log event, as OPA's decision log plugin
// uploads it (github.com/open-policy-agent/opa/v1/plugins/logs.EventV1),
// into the evidence record meshproof would have written had it answered
// that Check itself: the CheckRequest is rebuilt from OPA-Envoy's input
// document and goes through the same facts, verdict and record code as a
// Check; the decision is OPA's, read by the same code as meshproof's own.

// opaEvent is the part of logs.EventV1 meshproof reads. Input, result and
// error stay raw until they are needed: their numbers must keep every digit.
type opaEvent struct {
	Labels     map[string]string `json:"labels"`
	DecisionID string            `json:"decision_id"`
	Revision   string            `json:"revision"` // before bundles
	Bundles    map[string]struct {
		Revision string `json:"revision"`
	} `json:"bundles"`
	Path      string          `json:"path"`
	Input     json.RawMessage `json:"input"`
	Result    json.RawMessage `json:"result"`
	Error     json.RawMessage `json:"error"`
	Erased    []string        `json:"erased"`
	Timestamp string          `json:"timestamp"`
}

// maxDecisionID bounds a decision id: OPA's are UUIDs.
const maxDecisionID = 256

// errNoInput is an event OPA-Envoy logged without an input: the request
// could not be read, so there is nobody to record; it is skipped.
var errNoInput = errors.New("no input")

// eventRecord converts one event. An error says what is wrong with it;
// errNoInput marks an event to skip.
func eventRecord(c Checker, ev *opaEvent) (*evidence.Record, error) {
	switch {
	case ev.DecisionID == "":
		return nil, errors.New("no decision_id")
	case len(ev.DecisionID) > maxDecisionID:
		return nil, fmt.Errorf("decision_id is %d bytes, at most %d", len(ev.DecisionID), maxDecisionID)
	}
	ts, err := eventTime(ev.Timestamp)
	if err != nil {
		return nil, err
	}
	if absent(ev.Input) {
		if !absent(ev.Error) {
			return nil, errNoInput
		}
		if slices.Contains(ev.Erased, "/input") {
			return nil, errors.New("input erased by OPA's mask policy: meshproof needs input.attributes (erase single fields, such as /input/attributes/request/http/headers/authorization, instead)")
		}
		return nil, errors.New("no input: not an OPA-Envoy decision")
	}
	req, err := CheckRequestOf(ev.Input)
	if err != nil {
		return nil, err
	}
	rec := c.RecordOf(eventID(ev.DecisionID, ts), ts, req)
	rec.Reasons = append(rec.Reasons, "from OPA decision log: instance "+labelOr(ev.Labels["id"])+", path "+labelOr(ev.Path))
	rec.Decision = eventDecision(ev)
	c.Stamp(rec)
	return rec, nil
}

func labelOr(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// eventTime reads the event's timestamp: RFC 3339 as OPA writes it, within
// the times a record may have (evidence.CheckTime).
func eventTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("no timestamp")
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	switch {
	case err != nil:
		return time.Time{}, fmt.Errorf("timestamp %s: not RFC 3339", quoted(s))
	case evidence.CheckTime(t) != nil: // within what a ULID holds too
		return time.Time{}, fmt.Errorf("timestamp %s: out of range: a record's time is within [%s, %s)",
			quoted(s), evidence.MinTime.Format(time.RFC3339), evidence.MaxTime.Format(time.RFC3339))
	}
	return t.UTC(), nil
}

// eventID is the record's id: a ULID whose time is the decision's and whose
// entropy is a hash of its decision id, so that an upload OPA retries maps
// to the same ids and is written once.
func eventID(decisionID string, t time.Time) string {
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(t)) // in range: eventTime
	sum := sha256.Sum256([]byte(decisionID))
	_ = id.SetEntropy(sum[:10])
	return id.String()
}

// eventDecision reads the decision as a Check reads meshproof's own (the
// same authz.DecisionOf): a boolean, or an object with allowed, http_status, body
// and reason. No result (an evaluation error, an undefined decision, a
// masked result) is a decision that could not be made: denied.
func eventDecision(ev *opaEvent) evidence.Decision {
	d := evidence.Decision{DecisionID: ev.DecisionID, PolicyRevision: eventRevision(ev)}
	if absent(ev.Result) {
		switch {
		case !absent(ev.Error):
			d.Error = "OPA: " + eventError(ev.Error)
		case slices.Contains(ev.Erased, "/result"):
			d.Error = "the result was erased by OPA's mask policy"
		default:
			d.Error = "OPA logged no result (undefined decision)"
		}
		return d
	}
	var result any
	if err := decodeNumbers(ev.Result, &result); err != nil {
		d.Error = "result: " + err.Error()
		return d
	}
	val, err := ast.InterfaceToValue(result)
	if err != nil {
		d.Error = "result: " + err.Error()
		return d
	}
	allowed, status, reason, err := authz.DecisionOf(val)
	if err != nil {
		d.Error = err.Error()
		return d
	}
	d.Allowed, d.HTTPStatus, d.Reason = allowed, status, reason
	return d
}

// eventRevision is the policy revision as meshproof writes its own: the
// active bundles' name@revision, sorted, else OPA's older single revision.
func eventRevision(ev *opaEvent) string {
	if len(ev.Bundles) == 0 {
		return ev.Revision
	}
	parts := make([]string, 0, len(ev.Bundles))
	for name, b := range ev.Bundles {
		parts = append(parts, name+"@"+b.Revision)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// eventError is the message of OPA's error: an object with a message (a
// topdown or ast error), a string, or an error OPA could not serialise.
func eventError(raw json.RawMessage) string {
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Message != "" {
		if e.Code != "" {
			return e.Code + ": " + e.Message
		}
		return e.Message
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s
	}
	return "evaluation failed (OPA logged no detail)"
}

func decodeNumbers(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

// CheckRequestOf rebuilds the CheckRequest from OPA-Envoy's input document.
// That document is the request in protojson field names with three
// differences protojson does not read (README "Policies", authz/input.go):
// request.time is {"seconds", "nanos"}, not an RFC 3339 string; an Any is
// {"typeUrl", "value"}, not {"@type", fields...}; and OPA-Envoy's own keys
// (parsed_path, version, ...) beside attributes. 64-bit integers as
// numbers, enums as numbers and standard base64 bytes protojson reads as
// they are.
func CheckRequestOf(input json.RawMessage) (*authv3.CheckRequest, error) {
	var doc map[string]any
	if err := decodeNumbers(input, &doc); err != nil || doc == nil {
		return nil, errors.New("input is not a JSON object: not an OPA-Envoy input")
	}
	attrs, ok := doc["attributes"].(map[string]any)
	if !ok {
		// A request without attributes (Envoy never sends one) still has
		// OPA-Envoy's version key.
		version, _ := doc["version"].(map[string]any)
		if _, isEnvoy := version["ext_authz"].(string); !isEnvoy || doc["attributes"] != nil {
			return nil, errors.New("input has no attributes object: not an OPA-Envoy input (is the decision log from the envoy_ext_authz_grpc plugin?)")
		}
		return &authv3.CheckRequest{}, nil
	}
	if err := protojsonTime(attrs); err != nil {
		return nil, err
	}
	typed, err := takeTypedMetadata(attrs)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(map[string]any{"attributes": attrs})
	if err != nil {
		return nil, fmt.Errorf("input.attributes: %w", err)
	}
	req := &authv3.CheckRequest{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, req); err != nil {
		return nil, fmt.Errorf("input.attributes is not an Envoy CheckRequest's: %w", err)
	}
	for _, t := range typed {
		md := req.Attributes.GetMetadataContext()
		if t.route {
			md = req.Attributes.GetRouteMetadataContext()
		}
		if md != nil {
			md.TypedFilterMetadata = t.m
		}
	}
	return req, nil
}

// protojsonTime rewrites attributes.request.time from OPA-Envoy's
// {"seconds": s, "nanos": n} (zero fields absent) to RFC 3339; a string is
// left to protojson.
func protojsonTime(attrs map[string]any) error {
	req, _ := attrs["request"].(map[string]any)
	obj, ok := req["time"].(map[string]any)
	if !ok {
		return nil
	}
	t, err := timestampOf(obj)
	if err != nil {
		return fmt.Errorf("input.attributes.request.time: %w", err)
	}
	req["time"] = t.Format("2006-01-02T15:04:05.000000000Z")
	return nil
}

func timestampOf(obj map[string]any) (time.Time, error) {
	var secs, nanos int64
	for k, v := range obj {
		num, ok := v.(json.Number)
		if !ok {
			return time.Time{}, fmt.Errorf("%s is not a number", quoted(k))
		}
		n, ok := jsonInteger(num)
		if !ok {
			return time.Time{}, fmt.Errorf("%s is not a 64-bit integer", quoted(k))
		}
		switch k {
		case "seconds":
			secs = n
		case "nanos":
			nanos = n
		default:
			return time.Time{}, fmt.Errorf("unknown key %s: want seconds and nanos", quoted(k))
		}
	}
	if nanos < 0 || nanos >= 1e9 {
		return time.Time{}, errors.New("nanos out of range")
	}
	// Beyond what RFC 3339 (and a protobuf Timestamp) can hold.
	if secs < -62135596800 || secs > 253402300799 {
		return time.Time{}, errors.New("seconds out of range")
	}
	return time.Unix(secs, nanos).UTC(), nil
}

// jsonInteger reads a JSON number that is an integer, in either notation:
// OPA writes a number it was given as a float64 (by a caller of its SDK or
// rego package that decoded JSON with encoding/json) in exponent form when
// it has 7 digits or more, 1.570831792e+09, as protojson reads the other
// integer fields. Beyond 2^53 only the integer notation is exact.
func jsonInteger(num json.Number) (int64, bool) {
	if n, err := num.Int64(); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

type typedMetadata struct {
	route bool
	m     map[string]*anypb.Any
}

// takeTypedMetadata removes typedFilterMetadata from both metadata
// contexts, whose Any values protojson would try to resolve, and returns
// them as the Any values they were ({"typeUrl", "value"}, never expanded).
func takeTypedMetadata(attrs map[string]any) ([]typedMetadata, error) {
	var out []typedMetadata
	for _, ctx := range []struct {
		names [2]string
		route bool
	}{
		{[2]string{"metadataContext", "metadata_context"}, false},
		{[2]string{"routeMetadataContext", "route_metadata_context"}, true},
	} {
		for _, name := range ctx.names {
			md, _ := attrs[name].(map[string]any)
			for _, key := range []string{"typedFilterMetadata", "typed_filter_metadata"} {
				raw, ok := md[key]
				if !ok {
					continue
				}
				delete(md, key)
				m, err := anyMap(raw)
				if err != nil {
					return nil, fmt.Errorf("input.attributes.%s.%s: %w", name, key, err)
				}
				out = append(out, typedMetadata{route: ctx.route, m: m})
			}
		}
	}
	return out, nil
}

func anyMap(raw any) (map[string]*anypb.Any, error) {
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, errors.New("not an object")
	}
	m := make(map[string]*anypb.Any, len(obj))
	for k, v := range obj {
		a, _ := v.(map[string]any)
		if a == nil {
			return nil, fmt.Errorf("%s: not an object", k)
		}
		url, _ := a["typeUrl"].(string)
		if url == "" {
			url, _ = a["type_url"].(string)
		}
		b64, _ := a["value"].(string)
		value, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("%s: value is not base64: %w", k, err)
		}
		if len(value) == 0 {
			value = nil
		}
		m[k] = &anypb.Any{TypeUrl: url, Value: value}
	}
	return m, nil
}

// quoted is a client's value as an error repeats it: quoted, and short.
func quoted(s string) string {
	const max = 48
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
