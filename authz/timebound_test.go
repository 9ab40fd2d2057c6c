package authz_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestCheckClockOutOfRange: a Check on a host whose clock is beyond what
// a record may hold (2300, 1969) is denied, its record refused by the
// recorder, never stored wrapped; once the clock is right, Checks are
// allowed and recorded again.
func TestCheckClockOutOfRange(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rec, err := recorder.New(ctx, syncRecorder(), "replica-a", store, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close(context.Background()) })
	svc, err := authz.NewServer(authz.Config{StatusOnError: 403, Replica: "replica-a"}, noCacheEngine(t, allowTrue), rec, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, clock := range []time.Time{time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)} {
		authz.SetClock(svc, func() time.Time { return clock })
		res := svc.Explain(ctx, authztest.NewRequest(authztest.MTLS(srcID, dstID)))
		if c := res.Response.GetStatus().GetCode(); c != int32(code.Code_PERMISSION_DENIED) ||
			!strings.Contains(res.Response.GetDeniedResponse().GetBody(), "time out of range") {
			t.Errorf("clock %s: status %d %q, want denied, evidence not recorded (time out of range)", clock, c, res.Response.GetDeniedResponse().GetBody())
		}
	}
	authz.SetClock(svc, time.Now)
	if res := svc.Explain(ctx, authztest.NewRequest(authztest.MTLS(srcID, dstID))); res.Response.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("clock right again: %+v, want allowed", res.Response)
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	verifyChain(t, store, 1)
}
