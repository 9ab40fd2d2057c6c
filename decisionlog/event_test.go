package decisionlog

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/oklog/ulid/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
)

// TestCheckRequestOfOPAEnvoyForm reads an input written by hand in the form
// OPA-Envoy logs: time as {seconds, nanos}, 64-bit integers and enums as
// numbers, bytes as base64, an Any as {typeUrl, value}, and OPA-Envoy's
// keys beside attributes.
func TestCheckRequestOfOPAEnvoyForm(t *testing.T) {
	structMD, _ := structpb.NewStruct(map[string]any{"k": "v"})
	anyMD, _ := anypb.New(structMD)
	input := `{
	  "attributes": {
	    "source": {"address": {"socketAddress": {"address": "10.0.0.1", "portValue": 40000}},
	               "principal": "spiffe://cluster.local/ns/shop/sa/frontend"},
	    "destination": {"address": {"socketAddress": {"address": "10.0.0.2", "portValue": 8080, "protocol": 1}},
	                    "principal": "spiffe://cluster.local/ns/shop/sa/backend"},
	    "request": {
	      "time": {"seconds": 1795780800, "nanos": 123456789},
	      "http": {"id": "1001", "method": "GET", "path": "/api?x=1", "host": "app:8080", "protocol": "HTTP/1.1",
	               "size": 9007199254740993, "rawBody": "aGk=",
	               "headers": {":authority": "app:8080", "x-request-id": "req-1",
	                           "x-forwarded-client-cert": "By=spiffe://cluster.local/ns/shop/sa/backend;Hash=ab;URI=spiffe://cluster.local/ns/shop/sa/frontend"},
	               "headerMap": {"headers": [{"key": "x-raw", "rawValue": "cmF3"}]}}
	    },
	    "contextExtensions": {"route": "api"},
	    "metadataContext": {"filterMetadata": {"f": {"k": "v"}},
	                        "typedFilterMetadata": {"t": {"typeUrl": "` + anyMD.TypeUrl + `", "value": "` + b64(anyMD.Value) + `"}}},
	    "tlsSession": {"sni": "backend.shop"}
	  },
	  "parsed_path": ["api"], "parsed_query": {"x": ["1"]}, "parsed_body": null, "truncated_body": false,
	  "version": {"ext_authz": "v3", "encoding": "protojson"},
	  "source_principal": "spiffe://cluster.local/ns/shop/sa/frontend",
	  "meshproof": {"verdict": "mtls"}
	}`
	got, err := CheckRequestOf(json.RawMessage(input))
	if err != nil {
		t.Fatal(err)
	}
	want := authztest.NewRequest(
		authztest.Principals("spiffe://cluster.local/ns/shop/sa/frontend", "spiffe://cluster.local/ns/shop/sa/backend"),
		func(r *authv3.CheckRequest) {
			a := r.Attributes
			a.Destination.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
			a.Request.Time = timestamppb.New(time.Unix(1795780800, 123456789))
			a.Request.Http = &authv3.AttributeContext_HttpRequest{
				Id: "1001", Method: "GET", Path: "/api?x=1", Host: "app:8080", Protocol: "HTTP/1.1",
				Size: 9007199254740993, RawBody: []byte("hi"),
				Headers: map[string]string{":authority": "app:8080", "x-request-id": "req-1",
					"x-forwarded-client-cert": "By=spiffe://cluster.local/ns/shop/sa/backend;Hash=ab;URI=spiffe://cluster.local/ns/shop/sa/frontend"},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-raw", RawValue: []byte("raw")}}},
			}
			a.ContextExtensions = map[string]string{"route": "api"}
			a.MetadataContext = &corev3.Metadata{
				FilterMetadata:      map[string]*structpb.Struct{"f": structMD},
				TypedFilterMetadata: map[string]*anypb.Any{"t": anyMD},
			}
			a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "backend.shop"}
		},
	)
	if !proto.Equal(got, want) {
		t.Fatalf("rebuilt request\n got %v\nwant %v", got, want)
	}
}

// TestCheckRequestOfFloatInput: an input given to OPA as float64 numbers
// (a caller of OPA's SDK or rego package that decoded it with
// encoding/json) is logged with its large integers in exponent form,
// 1.7957808e+09; they are the same integers.
func TestCheckRequestOfFloatInput(t *testing.T) {
	var input any
	if err := json.Unmarshal([]byte(`{"attributes": {
	    "source": {"address": {"socketAddress": {"address": "10.0.0.1", "portValue": 40000}}},
	    "request": {"time": {"seconds": 1795780800, "nanos": 123456789}, "http": {"method": "GET", "size": 1500000}}},
	  "version": {"ext_authz": "v3", "encoding": "protojson"}}`), &input); err != nil {
		t.Fatal(err)
	}
	v, err := ast.InterfaceToValue(input) // as OPA takes it
	if err != nil {
		t.Fatal(err)
	}
	x, err := ast.JSON(v) // as OPA logs it
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"seconds":1.7957808e+09`) || !strings.Contains(string(raw), `"nanos":1.23456789e+08`) {
		t.Fatalf("OPA no longer logs float64 integers in exponent form: %s", raw)
	}
	got, err := CheckRequestOf(raw)
	if err != nil {
		t.Fatalf("%v\ninput: %s", err, raw)
	}
	if tm := got.Attributes.Request.Time.AsTime(); !tm.Equal(time.Unix(1795780800, 123456789)) {
		t.Errorf("time %v", tm)
	}
	if got.Attributes.Request.Http.Size != 1500000 || got.Attributes.Source.Address.GetSocketAddress().GetPortValue() != 40000 {
		t.Errorf("rebuilt request %v", got)
	}
}

func b64(b []byte) string {
	x, _ := json.Marshal(b) // encoding/json writes []byte as standard base64
	return strings.Trim(string(x), `"`)
}

func TestCheckRequestOfRefuses(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"not an object", `[1]`, "not a JSON object"},
		{"a string", `"x"`, "not a JSON object"},
		{"no attributes", `{"method": "GET", "path": "/"}`, "no attributes object"},
		{"attributes not an object", `{"attributes": []}`, "no attributes object"},
		{"time not numbers", `{"attributes": {"request": {"time": {"seconds": "x"}}}}`, "request.time"},
		{"time with fractions", `{"attributes": {"request": {"time": {"seconds": 1.5}}}}`, "request.time"},
		{"time with fractions in exponent form", `{"attributes": {"request": {"time": {"seconds": 1.5e-1}}}}`, "request.time"},
		{"time beyond a float's integers", `{"attributes": {"request": {"time": {"seconds": 1e300}}}}`, "request.time"},
		{"nanos out of range", `{"attributes": {"request": {"time": {"seconds": 1, "nanos": 1000000000}}}}`, "nanos out of range"},
		{"seconds out of range", `{"attributes": {"request": {"time": {"seconds": 9999999999999}}}}`, "seconds out of range"},
		{"time with another key", `{"attributes": {"request": {"time": {"seconds": 1, "when": 2}}}}`, "unknown key"},
		{"a field of the wrong type", `{"attributes": {"source": {"principal": 7}}}`, "not an Envoy CheckRequest"},
		{"typed metadata not base64", `{"attributes": {"metadataContext": {"typedFilterMetadata": {"t": {"typeUrl": "x", "value": "%%"}}}}}`, "not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CheckRequestOf(json.RawMessage(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
	// An RFC 3339 time (protojson's own form) is read as it is.
	req, err := CheckRequestOf(json.RawMessage(`{"attributes": {"request": {"time": "2026-11-27T12:00:00.5Z"}}}`))
	if err != nil || req.Attributes.Request.Time.AsTime() != time.Date(2026, 11, 27, 12, 0, 0, 5e8, time.UTC) {
		t.Fatalf("RFC 3339 time: %v, %v", req, err)
	}
}

func TestEventDecision(t *testing.T) {
	base := evidence.Decision{DecisionID: "d1"}
	with := func(f func(*evidence.Decision)) evidence.Decision { d := base; f(&d); return d }
	tests := []struct {
		name  string
		event string // the event's fields beside decision_id
		want  evidence.Decision
	}{
		{"true", `"result": true`, with(func(d *evidence.Decision) { d.Allowed = true })},
		{"false", `"result": false`, with(func(d *evidence.Decision) { d.HTTPStatus = 403 })},
		{"object allowed", `"result": {"allowed": true, "headers": {"x": "y"}, "reason": "ok"}`,
			with(func(d *evidence.Decision) { d.Allowed, d.Reason = true, "ok" })},
		{"object denied", `"result": {"allowed": false, "http_status": 401, "body": "who are you"}`,
			with(func(d *evidence.Decision) { d.HTTPStatus, d.Reason = 401, "who are you" })},
		{"object denied with reason", `"result": {"allowed": false, "reason": "not on the list", "body": "no"}`,
			with(func(d *evidence.Decision) { d.HTTPStatus, d.Reason = 403, "not on the list" })},
		{"no allowed", `"result": {"status": 200}`,
			with(func(d *evidence.Decision) {
				d.Error = `failed to get response status: unable to determine evaluation result due to missing "allowed" key`
			})},
		{"a string", `"result": "yes"`,
			with(func(d *evidence.Decision) {
				d.Error = "failed to get response status: illegal value for policy evaluation result: string"
			})},
		{"evaluation error", `"error": {"code": "eval_conflict_error", "message": "complete rules must not produce multiple outputs"}`,
			with(func(d *evidence.Decision) {
				d.Error = "OPA: eval_conflict_error: complete rules must not produce multiple outputs"
			})},
		{"an error OPA could not serialise", `"error": {}`,
			with(func(d *evidence.Decision) { d.Error = "OPA: evaluation failed (OPA logged no detail)" })},
		{"result erased", `"erased": ["/result"]`,
			with(func(d *evidence.Decision) { d.Error = "the result was erased by OPA's mask policy" })},
		{"undefined", `"result": null`,
			with(func(d *evidence.Decision) { d.Error = "OPA logged no result (undefined decision)" })},
		{"bundles", `"result": true, "revision": "old", "bundles": {"b": {"revision": "r2"}, "a": {"revision": "r1"}}`,
			with(func(d *evidence.Decision) { d.Allowed, d.PolicyRevision = true, "a@r1,b@r2" })},
		{"revision only", `"result": true, "revision": "r9"`,
			with(func(d *evidence.Decision) { d.Allowed, d.PolicyRevision = true, "r9" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev opaEvent
			if err := json.Unmarshal([]byte(`{"decision_id": "d1", `+tt.event+`}`), &ev); err != nil {
				t.Fatal(err)
			}
			if got := eventDecision(&ev); got != tt.want {
				t.Fatalf("decision\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestEventID(t *testing.T) {
	ts := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	a, b := eventID("4ec47ab6-ef9c-4d56-bd23-35e1d1b6e1f5", ts), eventID("4ec47ab6-ef9c-4d56-bd23-35e1d1b6e1f5", ts)
	if a != b {
		t.Fatalf("the same decision gives ids %s and %s", a, b)
	}
	if c := eventID("another", ts); c == a {
		t.Fatal("two decisions give one id")
	}
	id, err := ulid.ParseStrict(a)
	if err != nil || !ulid.Time(id.Time()).Equal(ts.Truncate(time.Millisecond)) {
		t.Fatalf("id %s: %v, time %v", a, err, ulid.Time(id.Time()))
	}
	for _, bad := range []string{"", "yesterday", "1969-12-31T23:59:59Z", "2026-11-27 12:00:00"} {
		if _, err := eventTime(bad); err == nil {
			t.Errorf("timestamp %q accepted", bad)
		}
	}
}
