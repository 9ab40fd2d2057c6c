package evidencetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/meshproof/meshproof/evidence"
)

// sealedStore is a Varied store whose records of its first three days
// retention removed, after sealing their hours' rollups, with a checkpoint
// of each replica signed afterwards (it names the seals).
func sealedStore(t *testing.T, f Factory) (Backend, note.Verifiers, time.Time) {
	t.Helper()
	ctx := context.Background()
	b, fx := loaded(t, f, 600)
	cut := Base.Add(3*24*time.Hour + 30*time.Minute) // retention cuts at the hour: Base+3d
	if _, err := b.Store.DeleteBefore(ctx, cut, time.Time{}, 7); err != nil {
		t.Fatalf("DeleteBefore: %v", err)
	}
	skey, vkey, err := note.GenerateKey(nil, "seal-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	for replica := range fx.Heads {
		th, ok, err := b.Store.TreeHead(ctx, replica)
		if err != nil || !ok {
			t.Fatalf("TreeHead(%s) = %v, %v", replica, ok, err)
		}
		if want := evidence.SealsUntil(cut); th.Rollups.Through != want {
			t.Fatalf("the seals of %s reach hour %d, want %d (the retention cut)", replica, th.Rollups.Through, want)
		}
		signed, err := evidence.SignCheckpoint(signer, replica, th, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Store.SaveCheckpoint(ctx, evidence.SignedCheckpoint{Replica: replica, Size: th.Size, Time: time.Now(), Note: signed}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(signed), evidence.RollupsExtension+" ") {
			t.Fatalf("checkpoint without the seals' line:\n%s", signed)
		}
	}
	return b, note.VerifierList(verifier), cut
}

// verifyRollups runs Verify as meshproof verify would (a fresh store, the
// key given; b.Store becomes it) and returns the rollups' report, nil when there is none.
func verifyRollups(t *testing.T, b *Backend, keys note.Verifiers, opts evidence.VerifyOptions) *evidence.ChainReport {
	t.Helper()
	opts.Verifiers = keys
	b.Store = b.Reopen(t)
	reports, err := evidence.VerifyWith(context.Background(), b.Store, opts)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var out *evidence.ChainReport
	for i, rep := range reports {
		switch {
		case rep.Replica == evidence.RollupsReplica:
			out = &reports[i]
		case rep.Broken != nil:
			t.Fatalf("chain %s broken: %+v", rep.Replica, *rep.Broken)
		}
	}
	return out
}

// testRollupSeals: the rollups of hours whose records retention removed
// are sealed; Verify finds an edit to them, to their seals, to the hours,
// days and weeks summed from them, and their removal before their time.
// A record that arrives late for a sealed hour is kept but not counted,
// and Verify stays intact.
func testRollupSeals(t *testing.T, f Factory) {
	ctx := context.Background()
	t.Run("intact", func(t *testing.T) {
		b, keys, cut := sealedStore(t, f)
		if rep := verifyRollups(t, &b, keys, evidence.VerifyOptions{}); rep != nil {
			t.Fatalf("rollups after retention: %+v", *rep.Broken)
		}
		// A late record of a sealed hour: stored, not counted.
		head, err := b.Store.Head(ctx, Replicas[0])
		if err != nil {
			t.Fatal(err)
		}
		sealed := Base.Add(24*time.Hour + 10*time.Minute)
		hour := evidence.AggregateQuery{Since: sealed.Truncate(time.Hour), Until: sealed.Truncate(time.Hour).Add(time.Hour)}
		before, err := b.Store.Aggregate(ctx, hour)
		if err != nil {
			t.Fatal(err)
		}
		late := Full("late-for-a-sealed-hour", Replicas[0], sealed)
		Link(head, late)
		write(t, b.Store, []*evidence.Record{late})
		after, err := b.Store.Aggregate(ctx, hour)
		if err != nil {
			t.Fatal(err)
		}
		if count(before) != count(after) {
			t.Errorf("a record of a sealed hour counted: %d records in the hour before, %d after", count(before), count(after))
		}
		if _, err := b.Store.Get(ctx, late.ID); err != nil {
			t.Errorf("Get(the late record) = %v; want it stored", err)
		}
		if rep := verifyRollups(t, &b, keys, evidence.VerifyOptions{Retention: time.Since(cut)}); rep != nil {
			t.Fatalf("rollups after a late record: %+v", *rep.Broken)
		}
	})
	for _, tc := range []struct {
		name   string
		opts   func(cut time.Time) evidence.VerifyOptions
		tamper func(ctx context.Context, tm Tamperer, cut time.Time) error
		want   string
	}{
		{"minute of a sealed hour edited", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.AddToRollup(ctx, 1, Base.Add(36*time.Hour), 5)
		}, "differ from their seal"},
		{"hour summed from sealed minutes edited", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.AddToRollup(ctx, 60, Base.Add(36*time.Hour), 5)
		}, "the hour of"},
		{"day edited", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.AddToRollup(ctx, 1440, Base.Add(24*time.Hour), -1)
		}, "the day of"},
		{"week edited", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.AddToRollup(ctx, 10080, time.Date(2025, 2, 27, 0, 0, 0, 0, time.UTC), 1)
		}, "the week of"},
		{"group turned from plaintext to mtls", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.FlipRollupVerdict(ctx, evidence.Plaintext, evidence.MTLS)
		}, "plaintext"},
		{"a seal removed", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.DeleteSeal(ctx, Replicas[1], evidence.SealsUntil(Base.Add(30*time.Hour)))
		}, "not sealed"},
		{"the last hours cut, seals and all", nil, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.CutSeals(ctx, Replicas[0], evidence.SealsUntil(cut)-5)
		}, "the checkpoint of size"},
		{"the oldest rollups removed before their time", func(cut time.Time) evidence.VerifyOptions {
			return evidence.VerifyOptions{RollupRetention: time.Since(Base) + time.Hour}
		}, func(ctx context.Context, tm Tamperer, cut time.Time) error {
			return tm.MoveRollupHorizon(ctx, Base.Add(24*time.Hour))
		}, "--rollup-retention"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, keys, cut := sealedStore(t, f)
			if err := tc.tamper(ctx, b.Tamper, cut); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			var opts evidence.VerifyOptions
			if tc.opts != nil {
				opts = tc.opts(cut)
			}
			rep := verifyRollups(t, &b, keys, opts)
			if rep == nil || rep.Broken == nil || !strings.Contains(rep.Broken.Detail, tc.want) {
				t.Fatalf("rollups report %+v: want %q", rep, tc.want)
			}
			t.Log(rep.Broken.Detail)
		})
	}
}

func count(groups []evidence.Group) (n int64) {
	for _, g := range groups {
		n += g.Count
	}
	return n
}
