package authz

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/rego"
)

// The parts of a Check, to see where its time goes.

func BenchmarkPartDocument(b *testing.B) {
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	c := newInputCache()
	f := newFactsCache(16).get(factsKey{source: req.Attributes.Source.Principal})
	b.ReportAllocs()
	for b.Loop() {
		h := newHeaderReader(req.Attributes.Request.Http)
		if _, err := document(req, &h, c, c.pathTerms(req.Attributes.Request.Http.Path), f.term); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPartEval(b *testing.B) {
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	h := newHeaderReader(req.Attributes.Request.Http)
	f := newFactsCache(16).get(factsKey{source: req.Attributes.Source.Principal})
	input, _ := document(req, &h, newInputCache(), newPathTerms(req.Attributes.Request.Http.Path), f.term)
	cfg := rego.Defaults()
	cfg.Policies, cfg.Decision, cfg.Watch = []string{"../test/testdata/bench/policy.rego"}, "envoy/authz/result", false
	e, _ := rego.New(cfg, zerolog.Nop(), nil)
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := e.Eval(ctx, input); err != nil {
			b.Fatal(err)
		}
	}
}
