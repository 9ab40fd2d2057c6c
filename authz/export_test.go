package authz

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
)

// SetClock makes s read the time from now (tests of clocks gone wrong).
func SetClock(s *Server, now func() time.Time) { s.now = now }

// RandomRequest is a random CheckRequest with every field in play.
func RandomRequest(r *rand.Rand) *authv3.CheckRequest { return randomRequest(r) }

// FastInput is the input document meshproof builds for req.
func FastInput(req *authv3.CheckRequest) (ast.Value, error) { return fastInput(req, nil) }

// OPAInput is the input document OPA-Envoy logs for req, as JSON: the
// document meshproof builds for a Check (proven equal to OPA-Envoy's by
// input_test.go), converted as OPA converts it for its decision log; nil
// when OPA-Envoy logs none (a request it cannot read). want is the
// document meshproof builds for req.
func OPAInput(t *testing.T, req *authv3.CheckRequest, withMeshproof bool) (raw json.RawMessage, want ast.Value) {
	t.Helper()
	http := req.GetAttributes().GetRequest().GetHttp()
	h := newHeaderReader(http)
	c := newInputCache()
	var mp *ast.Term
	if withMeshproof {
		mp = deriveFacts(factsKey{source: req.GetAttributes().GetSource().GetPrincipal()}).term
	}
	doc, err := document(req, &h, c, c.pathTerms(http.GetPath()), mp)
	if err != nil {
		return nil, nil
	}
	x, err := ast.JSON(doc.Value)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	want, err = fastInput(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw, want
}
