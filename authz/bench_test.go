package authz_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	_ "github.com/meshproof/meshproof/evidence/sqlite"
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

// BenchmarkCheckWorkloads is BenchmarkCheck with and without serve
// --kubernetes's index (10,000 pods; the reference request's source is one
// of them, with the SPIFFE identity it presents, its destination none), in
// one run: the cost of naming the peers' workloads on the Check path (the
// issue allows 1 µs).
func BenchmarkCheckWorkloads(b *testing.B) {
	req := authztest.FromFile(b, "../test/testdata/bench/request.json")
	src := req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	ix := workload.NewIndex()
	for i := range 10_000 {
		ip, ns := fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256), "ns"
		if i == 0 {
			ip, ns = src, "mtls-pg" // the source's spiffe://cluster.local/ns/mtls-pg/sa/sleep
		}
		ix.UpsertPod(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p-%d", i), UID: types.UID(fmt.Sprint(i)), ResourceVersion: "1"},
			Spec:       corev1.PodSpec{ServiceAccountName: "sleep", Containers: []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
		})
	}
	for _, with := range []bool{false, true} {
		b.Run(fmt.Sprintf("workloads=%v", with), func(b *testing.B) {
			svc := benchServer(b, rego.Defaults().DecisionCache)
			if with {
				svc.ResolveWorkloads(ix)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if resp, err := svc.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("not allowed: %v %v", resp, err)
				}
			}
		})
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

// BenchmarkCheckEvidence is BenchmarkCheck with evidence on: a Recorder
// writing to a SQLite store in a temp dir, async (the Check returns once the
// record is queued) and sync (once it is committed: many concurrent Checks
// share each commit, so it runs with 64 goroutines per CPU). The clock runs
// until the recorder has written the last record, and a full queue makes
// Checks wait (not deny): ns/op is the sustained cost of a Check with its
// evidence written, bounded by the store's ingest rate, not the cost of
// queueing a record.
func BenchmarkCheckEvidence(b *testing.B) {
	for _, d := range []recorder.Durability{recorder.Async, recorder.Sync, recorder.FSync} {
		b.Run(string(d), func(b *testing.B) {
			cfg := rego.Defaults()
			cfg.Policies, cfg.Decision, cfg.Watch = []string{"../test/testdata/bench/policy.rego"}, "envoy/authz/result", false
			e, err := rego.New(cfg, zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer e.Stop(context.Background())
			store, err := evidence.Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "e.db"), evidence.Options{Durable: d == recorder.FSync})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			rc := recorder.DefaultConfig()
			rc.Durability = d
			rc.BlockTimeout = time.Minute
			rec, err := recorder.New(context.Background(), rc, "bench", store, zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			ac := authz.DefaultConfig()
			ac.Replica = "bench"
			svc, err := authz.NewServer(ac, e, rec, zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			req := authztest.FromFile(b, "../test/testdata/bench/request.json")
			b.ReportAllocs()
			if d == recorder.Sync {
				b.SetParallelism(64)
			}
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if resp, err := svc.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
						b.Fatalf("not allowed: %v %v", resp, err)
					}
				}
			})
			if err := rec.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
		})
	}
}

// BenchmarkCheckFacts is a policy reading meshproof's facts, through the
// meshproof.* built-ins and through input.meshproof (--input-meshproof),
// evaluated on every Check (no decision cache), in one run: the built-ins
// must cost no more than the input key did.
func BenchmarkCheckFacts(b *testing.B) {
	for _, c := range []struct {
		name, policy string
		input        bool
	}{
		{"builtins", `package envoy.authz
allow if {
	meshproof.verdict() == "mtls"
	meshproof.source().namespace == "mtls-pg"
	input.attributes.request.http.method == "GET"
}`, false},
		{"input.meshproof", `package envoy.authz
allow if {
	input.meshproof.verdict == "mtls"
	input.meshproof.source.namespace == "mtls-pg"
	input.attributes.request.http.method == "GET"
}`, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "policy.rego")
			if err := os.WriteFile(path, []byte(c.policy), 0o600); err != nil {
				b.Fatal(err)
			}
			cfg := rego.Defaults()
			cfg.Policies = []string{path}
			cfg.Watch = false
			cfg.DecisionCache = 0
			e, err := rego.New(cfg, zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { e.Stop(context.Background()) })
			a := authz.DefaultConfig()
			a.InputMeshproof = c.input
			svc, err := authz.NewServer(a, e, nil, zerolog.Nop(), nil)
			if err != nil {
				b.Fatal(err)
			}
			req := authztest.FromFile(b, "../test/testdata/bench/request.json")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := svc.Check(ctx, req)
				if err != nil || resp.GetOkResponse() == nil {
					b.Fatalf("not allowed: %v %v", resp, err)
				}
			}
		})
	}
}
