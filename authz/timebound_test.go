package authz_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// TestDecisionLogsTimeAttack is the attack end to end: 200 events
// recorded, then one stamped 2300-01-01, which a meshproof before time
// bounds stored wrapped (as if from 1715), so that retention deleted all
// 201 records and verify still said intact. Now that upload is refused
// whole with a 400 naming the event's index and time; retention at the
// default window deletes nothing, and the chain verifies with its 200.
func TestDecisionLogsTimeAttack(t *testing.T) {
	env := newLogsEnv(t, syncRecorder(), authz.DecisionLogConfig{MaxAge: 72 * time.Hour})
	good := make([]logs.EventV1, 200)
	for i := range good {
		good[i] = simpleEvent(t, "good-"+strconv.Itoa(i), authztest.NewRequest(authztest.MTLS(srcID, dstID)))
	}
	if status, msg := env.upload(t, payload(t, good...), logsToken); status != http.StatusNoContent {
		t.Fatalf("upload of 200 events: %d %s", status, msg)
	}
	late := simpleEvent(t, "from-2300", authztest.NewRequest(authztest.MTLS(srcID, dstID)))
	late.Timestamp = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	fine := simpleEvent(t, "fine", authztest.NewRequest(authztest.MTLS(srcID, dstID)))
	status, msg := env.upload(t, payload(t, fine, late), logsToken)
	if status != http.StatusBadRequest || !strings.Contains(msg, `event 1 (decision_id \"from-2300\"): timestamp \"2300-01-01T00:00:00Z\"`) {
		t.Fatalf("upload of an event stamped 2300: %d %s, want 400 naming event 1 and its time", status, msg)
	}
	if got := env.records(t); len(got) != 200 || got["fine"] != nil {
		t.Fatalf("%d records after the refused upload (fine stored: %v), want the 200 before it", len(got), got["fine"] != nil)
	}
	n, err := env.store.DeleteBefore(context.Background(), time.Now().Add(-720*time.Hour), time.Time{}, 1000)
	if err != nil || n != 0 {
		t.Fatalf("retention at the default window: %d deleted, %v; want 0", n, err)
	}
	verifyChain(t, env.store, 200)
}

// TestDecisionLogsClockSkew: an event stamped further ahead of the clock
// than MaxClockSkew refuses its upload (400 naming the event and its
// time); one within it is recorded.
func TestDecisionLogsClockSkew(t *testing.T) {
	env := newLogsEnv(t, syncRecorder(), authz.DecisionLogConfig{MaxClockSkew: time.Hour})
	ahead := simpleEvent(t, "ahead", authztest.NewRequest())
	ahead.Timestamp = time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	status, msg := env.upload(t, payload(t, simpleEvent(t, "now", authztest.NewRequest()), ahead), logsToken)
	want := `event 1 (decision_id \"ahead\"): timestamp ` + ahead.Timestamp.Format(time.RFC3339Nano) + ` is `
	if status != http.StatusBadRequest || !strings.Contains(msg, want) || !strings.Contains(msg, "ahead of this server's clock") ||
		!strings.Contains(msg, "--max-clock-skew 1h0m0s") {
		t.Fatalf("upload: %d %s, want 400 saying %s", status, msg, want)
	}
	if got := env.records(t); len(got) != 0 {
		t.Fatalf("%d records written by a refused upload", len(got))
	}
	ahead.Timestamp = time.Now().Add(30 * time.Minute)
	if status, msg := env.upload(t, payload(t, ahead), logsToken); status != http.StatusNoContent {
		t.Fatalf("upload of an event within the skew: %d %s", status, msg)
	}
	if got := env.records(t); len(got) != 1 || got["ahead"] == nil {
		t.Fatalf("records %v, want the event within the skew", got)
	}
}

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
