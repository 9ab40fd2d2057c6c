package authz_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/rego"
)

// liveHeap is the heap in use after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestDecisionCacheRetainsNoLargeKeys: a policy that reads headers[name]
// depends on the whole headers object, so that object is the cache's key.
// Unique requests with a 1 MiB header each must not stay in the cache: the
// key is charged its real size, over the key limit, and the cache holds at
// most its byte budget (64 MiB by default). It used to charge any composite
// value 64 bytes and kept every such request (150 MiB here).
func TestDecisionCacheRetainsNoLargeKeys(t *testing.T) {
	pol := writePolicy(t, "p.rego", `package envoy.authz
default allow := false
allow if {
	some name in ["x-team", "x-big"]
	startswith(input.attributes.request.http.headers[name], "blue")
}
`)
	s := server(t, []string{pol}, "envoy/authz/allow", 10000, nil)
	ctx := context.Background()
	big := strings.Repeat("b", 1<<20)
	// warm up: the policy, the caches of strings and peers
	s.Explain(ctx, authztest.NewRequest(authztest.Header("x-team", "blue")))
	before := liveHeap()
	for i := range 150 {
		req := authztest.NewRequest(authztest.Header("x-big", big[:len(big)-8]+fmt.Sprintf("%08d", i)))
		if res := s.Explain(ctx, req); res.Outcome != "deny" {
			t.Fatalf("request %d: %s", i, res.Outcome)
		}
	}
	grown := liveHeap() - before
	runtime.KeepAlive(s)
	const budget, slack = 64 << 20, 16 << 20
	t.Logf("150 unique requests with a 1 MiB header: %d MiB retained", grown>>20)
	if grown > budget+slack {
		t.Fatalf("the decision cache retained %d MiB after 150 unique 1 MiB requests; its budget is %d MiB", grown>>20, budget>>20)
	}
}

// TestDecisionCacheBoundedByBytes: with room for a million entries, the
// cache still holds no more than --decision-cache-bytes: 12,000 distinct
// 2 KiB keys (each asked twice, so that the cache stays on) would be 25 MiB.
func TestDecisionCacheBoundedByBytes(t *testing.T) {
	pol := writePolicy(t, "p.rego", `package envoy.authz
default allow := false
allow if startswith(input.attributes.request.http.headers["x-key"], "blue")
`)
	cfg := rego.Defaults()
	cfg.Policies, cfg.Watch = []string{pol}, false
	cfg.DecisionCache, cfg.DecisionCacheBytes = 1_000_000, 4<<20
	e, err := rego.New(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop(ctx) })
	s, err := authz.NewServer(authz.DefaultConfig(), e, nil, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Explain(ctx, authztest.NewRequest(authztest.Header("x-key", "blue")))
	before := liveHeap()
	pad := strings.Repeat("k", 2<<10)
	for i := range 12000 {
		req := authztest.NewRequest(authztest.Header("x-key", pad+fmt.Sprint(i)))
		for range 2 {
			if res := s.Explain(ctx, req); res.Outcome != "deny" {
				t.Fatalf("request %d: %s", i, res.Outcome)
			}
		}
	}
	grown := liveHeap() - before
	runtime.KeepAlive(s)
	const budget, slack = 4 << 20, 8 << 20
	t.Logf("12,000 distinct 2 KiB keys: %d MiB retained", grown>>20)
	if grown > budget+slack {
		t.Fatalf("the decision cache retained %d MiB; its budget is %d MiB", grown>>20, budget>>20)
	}
}
