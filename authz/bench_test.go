package authz_test

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/rego"
)

// BenchmarkCheck is the in-process figure: the reference request and
// policy (test/testdata/bench), through the whole Check path, with the
// default decision cache (the reference request repeats, so it hits).
func BenchmarkCheck(b *testing.B) { benchCheck(b, rego.Defaults().DecisionCache) }

// BenchmarkCheckNoDecisionCache evaluates the policy on every Check: the
// cost for a policy that cannot be cached, or a request never seen before.
func BenchmarkCheckNoDecisionCache(b *testing.B) { benchCheck(b, 0) }

func benchCheck(b *testing.B, decisionCache int) {
	svc := benchServer(b, decisionCache)
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := svc.Check(ctx, req)
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("not allowed: %v %v", resp, err)
		}
	}
}

func BenchmarkCheckParallel(b *testing.B) {
	svc := benchServer(b, rego.Defaults().DecisionCache)
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := svc.Check(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchServer(b *testing.B, decisionCache int) *authz.Server {
	b.Helper()
	cfg := rego.Defaults()
	cfg.Policies = []string{"../test/testdata/bench/policy.rego"}
	cfg.Decision = "envoy/authz/result"
	cfg.Watch = false
	cfg.DecisionCache = decisionCache
	e, err := rego.New(cfg, zerolog.Nop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Stop(context.Background()) })
	svc, err := authz.NewServer(authz.DefaultConfig(), e, nil, zerolog.Nop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return svc
}
