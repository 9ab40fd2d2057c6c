package api

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
)

// TestProofLoad measures GET /v1/evidence/{id}/proof's work (ProveRecord:
// the record, its replica's log head and latest checkpoint, O(log n)
// tiles) on a large store, and checks every proof it makes. It signs a
// checkpoint of each replica first. MESHPROOF_BENCH_API names the store, as
// for TestLoad.
func TestProofLoad(t *testing.T) {
	path := os.Getenv("MESHPROOF_BENCH_API")
	if path == "" {
		t.Skip("set MESHPROOF_BENCH_API=PATH of a large SQLite store (or a postgres:// DSN) to measure proofs")
	}
	dsn := path
	if _, err := os.Stat(path); err == nil {
		dsn = "sqlite:" + path
	}
	ctx := context.Background()
	store, err := evidence.Open(ctx, dsn, evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	skey, vkey, err := evidence.GenerateSigningKey("meshproof.bench")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	if err := evidence.NewCheckpointer(store, signer, time.Hour, zerolog.Nop(), nil).SignAll(ctx); err != nil {
		t.Fatal(err)
	}
	// Ids spread over the whole store: one page of records from each of
	// 200 random points in its time range.
	st, err := store.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d records", st.Records)
	span := st.Newest.Sub(st.Oldest)
	var ids []string
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		at := st.Oldest.Add(time.Duration(rng.Int64N(int64(span) + 1)))
		res, err := store.Query(ctx, evidence.Filter{Until: at}, evidence.PageRequest{Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Records {
			if r.Chain.Version == evidence.CanonicalV2 {
				ids = append(ids, r.ID)
			}
		}
	}
	if len(ids) == 0 {
		t.Skip("no record of the store is in a transparency log")
	}
	var took []time.Duration
	for _, id := range ids {
		start := time.Now()
		p, err := ProveRecord(ctx, store, id)
		took = append(took, time.Since(start))
		if err != nil {
			t.Fatalf("proof of %s: %v", id, err)
		}
		if _, _, err := p.Check(note.VerifierList(verifier)); err != nil {
			t.Fatalf("proof of %s does not check: %v", id, err)
		}
	}
	slices.Sort(took)
	t.Logf("%d proofs: p50 %v, p99 %v, max %v", len(took), took[len(took)/2], took[len(took)*99/100], took[len(took)-1])
}
