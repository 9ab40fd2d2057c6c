package authz

import (
	"slices"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// What the OPA decision log ingest (package decisionlog) takes from the
// Check path, so that an uploaded decision is recorded exactly as a Check
// of the same request would be.

// RecordOf is the evidence record a Check of req at t would have, under
// id: everything but the decision, which is the caller's to fill. Append
// to its Reasons, never write them in place (they are shared).
func (s *Server) RecordOf(id string, t time.Time, req *authv3.CheckRequest) *evidence.Record {
	h := newHeaderReader(req.GetAttributes().GetRequest().GetHttp())
	rec := newRecord(id, t, s.cfg, req, &h, s.factsOf(req, &h))
	rec.Reasons = slices.Clip(rec.Reasons) // an append copies
	return rec
}

// Stamp stamps rec, made by RecordOf and complete, as a Check's record is
// (recorder.Stamp): with the server's replica, and bounded.
func (s *Server) Stamp(rec *evidence.Record) {
	recorder.Stamp(rec, s.cfg.Replica)
}

// DecisionOf reads a decision value as a Check reads its policy's: a
// boolean, or an object with allowed, http_status, body and reason; an
// error words what is wrong as OPA-Envoy does. status is the HTTP status
// of a denial, 0 when allowed.
func DecisionOf(v ast.Value) (allowed bool, status int, reason string, err error) {
	out, err := answerOf(v)
	if err != nil {
		return false, 0, "", err
	}
	if !out.allowed {
		status = out.status
	}
	return out.allowed, status, out.reason, nil
}
