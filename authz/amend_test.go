package authz_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/postgres"
	"github.com/meshproof/meshproof/evidence/postgres/postgrestest"
	"github.com/meshproof/meshproof/evidence/recorder"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// stalledStore holds every Append while stalled, until released: a store
// that is down (PostgreSQL stopped) or far too slow for the Check's deadline.
type stalledStore struct {
	evidence.Store
	mu      sync.Mutex
	release chan struct{} // nil: not stalled
	entered chan struct{} // closed by the first stalled Append
	once    sync.Once
}

func (s *stalledStore) stall() {
	s.mu.Lock()
	s.release, s.entered = make(chan struct{}), make(chan struct{})
	s.once = sync.Once{}
	s.mu.Unlock()
}

func (s *stalledStore) Append(ctx context.Context, b []*evidence.Record) error {
	s.mu.Lock()
	release, entered := s.release, s.entered
	if release != nil {
		s.once.Do(func() { close(entered) })
	}
	s.mu.Unlock()
	if release != nil {
		<-release
	}
	return s.Store.Append(ctx, b)
}

func (s *stalledStore) unstall() {
	s.mu.Lock()
	close(s.release)
	s.release = nil
	s.mu.Unlock()
}

// givingUp tells when the Check's Record call returned an error.
type givingUp struct {
	*recorder.Recorder
	errs chan error
}

func (g *givingUp) Record(ctx context.Context, r *evidence.Record) error {
	err := g.Recorder.Record(ctx, r)
	if err != nil {
		g.errs <- err
	}
	return err
}

// TestSyncCheckPastItsDeadlineIsAmended: in sync durability a Check whose
// record is not committed before its deadline is not allowed (the client's
// call fails), so the evidence must not say it was: the record, queued as
// allowed, is followed in its chain by an amendment saying it was not, and
// the rollups count the request as denied.
func TestSyncCheckPastItsDeadlineIsAmended(t *testing.T) {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := &stalledStore{Store: db}
	checkPastDeadline(t, db, store, store.stall, func() {
		<-store.entered // the record's batch was being written when the Check gave up
		store.unstall()
	})
}

// TestSyncCheckWhilePostgresDownIsAmended: the same with PostgreSQL
// stopped while the Check waits, and started again after its deadline.
func TestSyncCheckWhilePostgresDownIsAmended(t *testing.T) {
	c := postgrestest.NewCluster(t)
	if err := postgres.Migrate(context.Background(), c.DSN()); err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(context.Background(), c.DSN(), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	checkPastDeadline(t, db, db, func() { c.Stop(t, "fast") }, func() { c.Start(t) })
}

// checkPastDeadline sends a Check in time, then one while the store is out
// (from outage until restore), which fails at its deadline, and checks the
// evidence db holds once the recorder, writing to w, has stopped.
func checkPastDeadline(t *testing.T, db evidence.Store, w evidence.Writer, outage, restore func()) {
	ctx := context.Background()
	rc := recorder.DefaultConfig()
	rc.Durability = recorder.Sync
	rec, err := recorder.New(ctx, rc, "replica-a", w, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	watch := &givingUp{Recorder: rec, errs: make(chan error, 4)}
	svc, err := authz.NewServer(authz.Config{StatusOnError: 403, Replica: "replica-a"}, noCacheEngine(t, allowTrue), watch, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, svc)

	// A Check answered in time, for contrast.
	if _, err := client.Check(ctx, authztest.NewRequest(authztest.Header("x-request-id", "in-time"))); err != nil {
		t.Fatal(err)
	}

	outage()
	// The deadline only has to pass: the store is out until it has. The
	// server's deadline (from grpc-timeout, rounded up) and the client's
	// end together: the client either gives up first (DeadlineExceeded)
	// or receives the server's denial sent at its deadline. Neither lets
	// the request through.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	resp, err := client.Check(cctx, authztest.NewRequest(authztest.Header("x-request-id", "late")))
	cancel()
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
	case err == nil && resp.GetStatus().GetCode() == int32(codes.PermissionDenied) &&
		resp.GetDeniedResponse().GetStatus().GetCode() == typev3.StatusCode_ServiceUnavailable:
	default:
		t.Fatalf("Check with the store out: %v, %v; want DeadlineExceeded or a 503 denial", err, resp)
	}
	if gerr := <-watch.errs; !errors.Is(gerr, recorder.ErrNotCommitted) {
		t.Fatalf("Record gave up with %v, want ErrNotCommitted", gerr)
	}
	restore()
	// Generous: Close returns as soon as everything queued is stored.
	cctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	err = rec.Close(cctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	page, err := db.Query(ctx, evidence.Filter{RequestID: "late"}, evidence.PageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var orig, amendment *evidence.Record
	for _, r := range page.Records {
		if r.Amends != nil {
			amendment = r
		} else {
			orig = r
		}
	}
	if orig == nil || amendment == nil || len(page.Records) != 2 {
		t.Fatalf("records of the late Check: %+v, want the record and its amendment", page.Records)
	}
	if !orig.Decision.Allowed {
		t.Fatalf("the record was queued as allowed: %+v", orig.Decision)
	}
	if amendment.ID != evidence.AmendmentID(orig.ID) || amendment.Amends.ID != orig.ID || !amendment.Amends.Allowed ||
		amendment.Decision.Allowed || amendment.Decision.Error == "" || amendment.Chain.Seq <= orig.Chain.Seq ||
		!amendment.Time.Equal(orig.Time) || amendment.Replica != orig.Replica || amendment.Verdict != orig.Verdict {
		t.Fatalf("amendment %+v\nof %+v", amendment, orig)
	}
	got, err := db.Get(ctx, evidence.AmendmentID(orig.ID))
	if err != nil {
		t.Fatal(err)
	}
	if eff := evidence.EffectiveOf(orig, got); eff.Allowed || eff.AmendedBy != amendment.ID {
		t.Fatalf("effective outcome %+v, want denied by %s", eff, amendment.ID)
	}

	reps, err := evidence.Verify(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Broken != nil || reps[0].Checked != 3 {
		t.Fatalf("chains: %+v", reps)
	}
	// Two requests: one allowed, one not; the amendment is no request of
	// its own.
	groups, err := db.Aggregate(ctx, evidence.AggregateQuery{})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[bool]int64{}
	for _, g := range groups {
		counts[g.Allowed] += g.Count
	}
	if counts[true] != 1 || counts[false] != 1 {
		t.Fatalf("aggregate counts %v (groups %+v), want one allowed and one denied", counts, groups)
	}
	st, err := db.Stats(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ByDecision["allowed"] != 1 || st.ByDecision["denied"] != 1 {
		t.Fatalf("stats by decision %v, want one of each", st.ByDecision)
	}
}
