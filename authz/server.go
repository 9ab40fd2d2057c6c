// Package authz is the Envoy ext_authz Check service: CheckRequest -> input
// document -> policy decision -> CheckResponse, and the evidence record of
// that same request.
package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/oklog/ulid/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/rego"
)

// EvidenceHeader is the upstream request header that carries the evidence
// id of an allowed request, so the application can cite it.
const EvidenceHeader = "x-meshproof-evidence-id"

// Keys meshproof adds to the CheckResponse's dynamic metadata, which Envoy
// exposes under envoy.filters.http.ext_authz (access logs can print them).
const (
	MetadataEvidenceID = "meshproof_evidence_id"
	MetadataVerdict    = "meshproof_verdict"
	metadataDecisionID = "decision_id" // OPA-Envoy's key, kept for its users
)

// Config configures the Check service.
type Config struct {
	// DryRun lets through what the policy denies (with OnPolicyErrorDeny,
	// also what it gives no decision for); the evidence keeps the real
	// decision.
	DryRun bool `json:"dry_run"`
	// OnPolicyError is what a Check answers when the policy gives no
	// decision (an evaluation error, an undefined or malformed decision):
	// OnPolicyErrorError (also the empty string) answers as OPA-Envoy does,
	// with a gRPC error (Unknown, OPA-Envoy's message), so that Envoy's
	// failure_mode_allow and status_on_error decide, dry run or not; and a
	// request that cannot be parsed gets OPA-Envoy's 400 in dry run too.
	// OnPolicyErrorDeny denies with StatusOnError (and dry run allows).
	OnPolicyError string `json:"on_policy_error"`
	// StatusOnError is the HTTP status of a request denied because no
	// decision could be made, with OnPolicyErrorDeny.
	StatusOnError int `json:"status_on_error"`
	// Replica names this instance in evidence records.
	Replica string `json:"replica"`
	// RecordHeaders are request headers kept in evidence records (beyond
	// the ones every record has); credentials headers never are.
	RecordHeaders []string `json:"record_headers"`
	// RecordQuery keeps the query string in the recorded path; it often
	// holds tokens and personal data, so by default it is dropped.
	RecordQuery bool `json:"record_query"`
	// InputMeshproof also puts meshproof's view of the request into the
	// input as input.meshproof, as versions before the meshproof.*
	// built-ins did. Off, the input is exactly OPA-Envoy's.
	InputMeshproof bool `json:"input_meshproof"`
	// MaxRequestHeaders and MaxRequestHeaderBytes bound the work of one
	// Check: a request with more headers (headers and header_map entries)
	// or more bytes of header names and values is denied with 431 and
	// recorded (LimitError). 0 is the default (DefaultMaxRequestHeaders,
	// DefaultMaxRequestHeaderBytes).
	MaxRequestHeaders     int `json:"max_request_headers"`
	MaxRequestHeaderBytes int `json:"max_request_header_bytes"`
}

// What a Check answers when the policy gives no decision (Config.OnPolicyError).
const (
	OnPolicyErrorError = "error"
	OnPolicyErrorDeny  = "deny"
)

// DefaultConfig returns the defaults: enforce; on a policy error, a gRPC
// error as OPA-Envoy (403 with OnPolicyErrorDeny).
func DefaultConfig() Config {
	return Config{OnPolicyError: OnPolicyErrorError, StatusOnError: http.StatusForbidden,
		MaxRequestHeaders: DefaultMaxRequestHeaders, MaxRequestHeaderBytes: DefaultMaxRequestHeaderBytes}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch c.OnPolicyError {
	case "", OnPolicyErrorError, OnPolicyErrorDeny:
	default:
		return fmt.Errorf("on-policy-error %q: must be %s or %s", truncate(c.OnPolicyError, 40), OnPolicyErrorDeny, OnPolicyErrorError)
	}
	if _, ok := typev3.StatusCode_name[int32(c.StatusOnError)]; !ok || http.StatusText(c.StatusOnError) == "" {
		return fmt.Errorf("status-on-error %d: not an HTTP status Envoy can send", c.StatusOnError)
	}
	for _, h := range c.RecordHeaders {
		switch {
		case evidence.NeverKept(h):
			return fmt.Errorf("record-header %s: never recorded: it carries credentials", h)
		case !headerName(h):
			return fmt.Errorf("record-header %q: not a header name", h)
		}
	}
	if c.MaxRequestHeaders < 0 {
		return fmt.Errorf("max-request-headers %d: must be positive (0: the default, %d)", c.MaxRequestHeaders, DefaultMaxRequestHeaders)
	}
	if c.MaxRequestHeaderBytes < 0 {
		return fmt.Errorf("max-request-header-bytes %d: must be positive (0: the default, %d)", c.MaxRequestHeaderBytes, DefaultMaxRequestHeaderBytes)
	}
	if len(c.RecordHeaders) > evidence.MaxListItems {
		return fmt.Errorf("record-header: at most %d headers", evidence.MaxListItems)
	}
	return nil
}

// headerName reports whether h is an HTTP header name (an RFC 9110 token,
// or an HTTP/2 pseudo-header such as :authority).
func headerName(h string) bool {
	h = strings.TrimPrefix(h, ":")
	if h == "" {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

// Evaluator evaluates the policy decision for an input document.
type Evaluator interface {
	Eval(ctx context.Context, input *ast.Term) (ast.Value, *rego.Policy, error)
}

// Recorder accepts evidence records. An error means the record could not be
// accepted and the request must not be allowed without it.
type Recorder interface {
	Record(ctx context.Context, r *evidence.Record) error
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	cfg     Config
	engine  Evaluator
	rec     Recorder
	log     zerolog.Logger
	facts   *factsCache
	input   *inputCache
	metrics *checkMetrics
	now     func() time.Time // the clock: time.Now, a test's otherwise
	// workloads, when set, names the peers' Kubernetes workloads in
	// records (ResolveWorkloads).
	workloads Workloads
	// peerModes, when set, gives the destinations' configured mTLS modes
	// for meshproof_destination_checks_total (ResolvePeerModes).
	peerModes PeerModes
}

// NewServer builds the Check service. rec may be nil: records are then built
// and dropped (meshproof eval uses that).
func NewServer(cfg Config, engine Evaluator, rec Recorder, log zerolog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{
		cfg:     cfg,
		engine:  engine,
		rec:     rec,
		log:     log.With().Str("component", "authz").Logger(),
		facts:   newFactsCache(4096),
		input:   newInputCache(),
		metrics: newCheckMetrics(reg),
		now:     time.Now,
	}, nil
}

// Result is everything one Check produced.
type Result struct {
	Response *authv3.CheckResponse
	// EvidenceID is the id of the request's evidence record.
	EvidenceID string
	// Record is a copy of the evidence record as the store keeps it
	// (stamped: see recorder.Stamp), taken before the record was handed to
	// the recorder, whose it is from then on; its link (Chain) is the
	// writer's to set and stays empty. Explain only: nil from Check.
	Record *evidence.Record
	Input  *ast.Term // nil when the request could not be turned into one
	// Outcome is what was done: allow, deny, error (no decision could be
	// made, or its evidence not recorded: denied, or answered with Err) or
	// dry_run (denied by the policy, let through).
	Outcome string
	// Verdict is the record's verdict.
	Verdict evidence.Verdict
	// Err, when set, is the gRPC error Check returns instead of Response
	// (nil then): the policy gave no decision, with OnPolicyErrorError.
	Err error
	// peers are the counters of its destination's and client's
	// namespaces, taken before the record was handed over.
	peers peerCounts
}

// Check is the gRPC method Envoy calls.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.checkDecoded(ctx, req, nil)
}

// checkDecoded is Check for a request the gRPC codec may have decoded only
// leniently: then undecodable says why, and the request is denied without
// evaluating the policy, recorded and counted.
func (s *Server) checkDecoded(ctx context.Context, req *authv3.CheckRequest, undecodable *UndecodableError) (*authv3.CheckResponse, error) {
	start := time.Now()
	res := s.decide(ctx, req, undecodable, false)
	if undecodable != nil {
		s.metrics.undecodable.Inc()
	}
	s.metrics.observe(res.Outcome, res.Verdict, time.Since(start))
	res.peers.count(0, res.Verdict)
	if res.Err != nil {
		// Envoy does not read it; grpcurl and other clients see it.
		_ = grpc.SetTrailer(ctx, metadata.Pairs(EvidenceHeader, res.EvidenceID))
		return nil, res.Err
	}
	return res.Response, nil
}

// Explain is Check for a caller that wants to see everything (meshproof
// eval, tests): the same path, and with the answer a copy of the record as
// stored and the input document (Result.Record, Result.Input).
func (s *Server) Explain(ctx context.Context, req *authv3.CheckRequest) Result {
	return s.decide(ctx, req, nil, true)
}

// decide runs one request through input building, the policy and the
// response mapping, stamps its record and hands it to the recorder; with
// keepRecord, res.Record is a copy of it. A request the gRPC codec decoded
// only leniently (undecodable says why) is denied without evaluating the
// policy. Whatever goes wrong is in the record, and denies the request
// (fail closed), or, when the policy gives no decision under
// OnPolicyErrorError, is res.Err.
func (s *Server) decide(ctx context.Context, req *authv3.CheckRequest, undecodable *UndecodableError, keepRecord bool) Result {
	now := s.now()
	id := recordID(now)
	h := newHeaderReader(req.GetAttributes().GetRequest().GetHttp())
	lerr := s.checkHeaders(req.GetAttributes().GetRequest().GetHttp(), &h)
	f := s.factsOf(req, &h)
	rec := newRecord(id, now, s.cfg, req, &h, f)
	if s.workloads != nil {
		addWorkloads(rec, s.workloads)
	}
	res := Result{EvidenceID: id, Verdict: f.verdict, peers: s.metrics.peersOf(rec, s.peerModes)}

	var (
		out policyAnswer
		val ast.Value
		pol *rego.Policy
		err error
	)
	switch {
	case undecodable != nil:
		err = undecodable // not what was sent: no policy sees it
	case lerr != nil:
		err = lerr
		s.metrics.refuse(lerr.Limit)
	default:
		val, pol, err = s.evaluate(ctx, req, &h, f, &res)
	}
	if pol != nil {
		rec.Decision.PolicyRevision = pol.Revision
	}
	if err == nil {
		out, err = answerOf(val)
	}
	if err != nil {
		out = s.noDecision(id, err, &res)
		rec.Decision.Error = err.Error()
	}
	rec.Decision.DecisionID = id
	rec.Decision.Allowed = out.allowed
	rec.Decision.Reason = out.reason
	if !out.allowed {
		rec.Decision.HTTPStatus = out.status
	}
	res.Outcome = outcomeOf(rec.Decision)
	// With OnPolicyErrorError, only what the policy denied is let through,
	// as in OPA-Envoy, where errors return before its dry run applies.
	if s.cfg.DryRun && !out.allowed && (s.cfg.OnPolicyError == OnPolicyErrorDeny || rec.Decision.Error == "") {
		if res.Outcome == "deny" {
			res.Outcome = "dry_run" // an error stays an error
		}
		rec.Decision.DryRun = true
		// As OPA-Envoy: the policy's dynamic metadata stays.
		out.response = &authv3.CheckResponse{Status: okStatus, DynamicMetadata: out.response.GetDynamicMetadata()}
		out.allowed = true
	}
	recorder.Stamp(rec, s.cfg.Replica)
	if keepRecord {
		// Nothing in a stamped record changes but its link, which is a
		// value: a shallow copy stays as it is.
		kept := *rec
		res.Record = &kept
	}
	if s.rec != nil {
		// In sync durability this waits for the commit, as long as Envoy
		// waits; the record is written either way, and when Envoy stopped
		// waiting first, the recorder writes an amendment after it saying
		// the request was not let through (evidence.Amends).
		if rerr := s.rec.Record(ctx, rec); rerr != nil && out.allowed {
			// No allowed request without its evidence. The record itself
			// is the recorder's now and stays as handed over.
			out = denyUnrecorded(id, rerr)
			res.Outcome = "error"
		}
	}
	if res.Err == nil {
		res.Response = finish(out, id, f.verdict)
	}
	return res
}

// factsOf is what the request's identities say (shared, never modified).
func (s *Server) factsOf(req *authv3.CheckRequest, h *headerReader) *facts {
	attrs := req.GetAttributes()
	xfccValue, xfccPresent := h.lookup("x-forwarded-client-cert")
	return s.facts.get(factsKey{
		source:      attrs.GetSource().GetPrincipal(),
		destination: attrs.GetDestination().GetPrincipal(),
		certificate: attrs.GetSource().GetCertificate(),
		xfcc:        xfccValue,
		xfccPresent: xfccPresent,
	})
}

func outcomeOf(d evidence.Decision) string {
	switch {
	case d.Error != "":
		return "error"
	case d.Allowed:
		return "allow"
	default:
		return "deny"
	}
}

// evaluate asks the decision cache first, straight from the request; on a
// miss it builds the input document (into res.Input) and evaluates it.
func (s *Server) evaluate(ctx context.Context, req *authv3.CheckRequest, h *headerReader, f *facts, res *Result) (ast.Value, *rego.Policy, error) {
	pt := s.input.pathTerms(req.GetAttributes().GetRequest().GetHttp().GetPath())
	if ce, ok := s.engine.(cachedEvaluator); ok {
		k := requestKey{req: req, f: f, path: pt, c: s.input}
		if val, pol, found, err := ce.Cached(k.values); found {
			return val, pol, err
		}
	}
	var inputFacts *ast.Term
	if s.cfg.InputMeshproof {
		inputFacts = f.term
	}
	input, err := document(req, h, s.input, pt, inputFacts)
	if err != nil {
		return nil, nil, err
	}
	res.Input = input
	return s.engine.Eval(rego.WithFacts(ctx, f.term), input)
}

// noDecision answers a request no decision could be made for. A request
// meshproof cannot read is denied with 400 exactly as OPA-Envoy denies it:
// "request_parse_error: <error>" as status message and body, and no
// decision_id. A policy that gives no decision is a gRPC error Unknown with
// OPA-Envoy's message (res.Err) with OnPolicyErrorError, and denied with
// --status-on-error with OnPolicyErrorDeny.
//
// A request over a bound on a Check's work (LimitError) is meshproof's own:
// denied with 431, whatever the setting.
func (s *Server) noDecision(id string, err error, res *Result) policyAnswer {
	if le := (*LimitError)(nil); errors.As(err, &le) {
		s.log.Warn().Err(err).Str("evidence_id", id).Msg("request over a limit; denied")
		return policyAnswer{
			status: statusHeadersTooLarge,
			response: &authv3.CheckResponse{
				Status: deniedStatus,
				HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode(statusHeadersTooLarge)},
					Body:   "meshproof: " + err.Error(),
				}},
			},
		}
	}
	if ie := (*InputError)(nil); errors.As(err, &ie) {
		msg := "request_parse_error: " + ie.upstream()
		return policyAnswer{
			status:       http.StatusBadRequest,
			noDecisionID: true,
			response: &authv3.CheckResponse{
				Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: msg},
				HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_BadRequest},
					Body:   msg,
				}},
			},
		}
	}
	body := "meshproof: no policy decision; evidence " + id
	if ue := (*UndecodableError)(nil); errors.As(err, &ue) {
		// OPA-Envoy never sees such a request: gRPC's codec answers
		// Internal before its Check runs.
		s.log.Warn().Err(err).Str("evidence_id", id).Str("on_policy_error", s.cfg.OnPolicyError).Msg("request could not be decoded; no decision")
		if s.cfg.OnPolicyError != OnPolicyErrorDeny {
			res.Err = status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", ue.Err)
			return policyAnswer{}
		}
		body = "meshproof: request could not be decoded; evidence " + id
	} else {
		s.log.Warn().Err(err).Str("evidence_id", id).Bool("dry_run", s.cfg.DryRun).Str("on_policy_error", s.cfg.OnPolicyError).Msg("policy evaluation failed; no decision")
		if s.cfg.OnPolicyError != OnPolicyErrorDeny {
			res.Err = status.Error(codes.Unknown, upstreamMessage(err))
			return policyAnswer{}
		}
	}
	return policyAnswer{
		status: s.cfg.StatusOnError,
		response: &authv3.CheckResponse{
			Status: deniedStatus,
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode(s.cfg.StatusOnError)},
				Body:   body,
			}},
		},
	}
}

// upstreamMessage is the message of OPA-Envoy's gRPC error for err: its own
// words for an undefined decision; OPA's error, or the decision mapping's
// (which answerOf words as OPA-Envoy does), as they are.
//
// The protobuf library puts a non-breaking space after "proto:" in some
// builds and a plain one in others (so that nobody matches its messages);
// the message says a plain one, so that it reads the same from every build.
func upstreamMessage(err error) string {
	if errors.Is(err, rego.ErrUndefined) {
		return "undefined decision"
	}
	return strings.ReplaceAll(err.Error(), "\u00a0", " ")
}

func denyUnrecorded(id string, err error) policyAnswer {
	return policyAnswer{
		status: http.StatusServiceUnavailable,
		response: &authv3.CheckResponse{
			Status: deniedStatus,
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
				Body:   "meshproof: evidence could not be recorded (" + err.Error() + "); evidence " + id,
			}},
		},
	}
}

// recordID is a new record's id: a ULID of t, or of the nearest time a
// ULID holds when the clock is beyond them. Such a clock is broken: the
// recorder refuses the record (evidence.CheckTime) and an allowed request
// is denied, as for any record that cannot be stored.
func recordID(t time.Time) string {
	var ms uint64
	switch {
	case t.Before(time.Unix(0, 0)):
	case t.After(ulid.Time(ulid.MaxTime())):
		ms = ulid.MaxTime()
	default:
		ms = ulid.Timestamp(t)
	}
	return ulid.MustNew(ms, ulid.DefaultEntropy()).String()
}

// finish adds what meshproof adds to every response: the evidence id and
// verdict in dynamic metadata, and the evidence id upstream when allowed.
func finish(out policyAnswer, id string, v evidence.Verdict) *authv3.CheckResponse {
	resp := out.response
	if resp.DynamicMetadata == nil {
		resp.DynamicMetadata = &structpb.Struct{Fields: make(map[string]*structpb.Value, 3)}
	} else if resp.DynamicMetadata.Fields == nil {
		resp.DynamicMetadata.Fields = make(map[string]*structpb.Value, 3)
	}
	idValue := structpb.NewStringValue(id)
	resp.DynamicMetadata.Fields[MetadataEvidenceID] = idValue
	if !out.noDecisionID {
		resp.DynamicMetadata.Fields[metadataDecisionID] = idValue
	}
	resp.DynamicMetadata.Fields[MetadataVerdict] = verdictValues[v]
	if out.allowed {
		ok := resp.GetOkResponse()
		if ok == nil {
			ok = &authv3.OkHttpResponse{}
			resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
		}
		ok.Headers = append(ok.Headers, headerOption(EvidenceHeader, id))
	}
	return resp
}

var verdictValues = func() map[evidence.Verdict]*structpb.Value {
	m := make(map[evidence.Verdict]*structpb.Value, len(evidence.Verdicts))
	for _, v := range evidence.Verdicts {
		m[v] = structpb.NewStringValue(string(v))
	}
	return m
}()
