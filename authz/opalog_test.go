package authz_test

import (
	"math/rand/v2"
	"testing"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/decisionlog"
)

// TestCheckRequestOfRoundTrip is a property test: for random requests with
// every field in play, the request decisionlog rebuilds from OPA-Envoy's
// logged input gives the very same input document, so the same facts and
// record. It lives here, beside the input document it holds to.
func TestCheckRequestOfRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	tried := 0
	for i := range 3000 {
		req := authz.RandomRequest(rng)
		raw, want := authz.OPAInput(t, req, i%2 == 0)
		if raw == nil {
			continue // OPA-Envoy logs no input for a request it cannot read
		}
		tried++
		got, err := decisionlog.CheckRequestOf(raw)
		if err != nil {
			t.Fatalf("request %d: %v\ninput: %s", i, err, raw)
		}
		again, err := authz.FastInput(got)
		if err != nil {
			t.Fatalf("request %d: the rebuilt request gives no input: %v", i, err)
		}
		if again.Compare(want) != 0 {
			t.Fatalf("request %d: input differs\nlogged:  %v\nrebuilt: %v", i, want, again)
		}
	}
	if tried < 1000 {
		t.Fatalf("only %d random requests had an input", tried)
	}
}
