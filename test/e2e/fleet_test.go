package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// ghzReport is the part of ghz's JSON report (-O json) the fleet test reads.
type ghzReport struct {
	Count         int            `json:"count"`
	StatusCodes   map[string]int `json:"statusCodeDistribution"`
	ErrorMessages map[string]int `json:"errorDistribution"`
}

// ghzRun is one finished ghz run against one replica: its x-request-ids are
// prefix followed by 0..n-1 (ghz's RequestNumber counts every request of
// the run, whatever the worker).
type ghzRun struct {
	prefix     string
	n          int
	start, end time.Time
	report     ghzReport
	err        error
}

// ok is how many of the run's Checks returned OK.
func (r ghzRun) ok() int { return r.report.StatusCodes["OK"] }

func (r ghzRun) String() string {
	return fmt.Sprintf("%s[0,%d) %s-%s: count %d, codes %v, errors %v, err %v", r.prefix, r.n,
		r.start.Format("15:04:05.000"), r.end.Format("15:04:05.000"), r.report.Count, r.report.StatusCodes, r.report.ErrorMessages, r.err)
}

// ghzRequests returns the reference request (test/testdata/bench/request.json)
// for ghz, as a function of prefix: its x-request-id is prefix followed by
// ghz's request number (a template ghz fills in per request).
func ghzRequests(t *testing.T) func(prefix string) string {
	t.Helper()
	raw, err := os.ReadFile(benchFile("request.json"))
	if err != nil {
		t.Fatal(err)
	}
	const id = `"x-request-id": "bench-0001"`
	if !bytes.Contains(raw, []byte(id)) {
		t.Fatalf("request.json no longer has %s", id)
	}
	return func(prefix string) string {
		return strings.Replace(string(raw), id, `"x-request-id": "`+prefix+`{{.RequestNumber}}"`, 1)
	}
}

// runGhz runs ghz (a process of its own) with n Checks at rps against addr,
// the request's x-request-id being prefix followed by the request number.
// It returns an error rather than failing the test: it runs on goroutines.
func runGhz(addr, request, prefix string, n, rps int) ghzRun {
	r := ghzRun{prefix: prefix, n: n, start: time.Now()}
	// n/rps seconds, plus room for a slow machine; past it ghz is killed
	// and the run is an error.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n/rps)*time.Second+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ghzBin,
		"--insecure", // server reflection tells ghz the method's types
		"--call", "envoy.service.auth.v3.Authorization.Check",
		"-d", request,
		"-n", strconv.Itoa(n), "--rps", strconv.Itoa(rps),
		"-c", "8", "--connections", "1",
		"-O", "json",
		addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r.end = time.Now()
	switch {
	case ctx.Err() != nil:
		r.err = fmt.Errorf("ghz still running after %v", time.Since(r.start).Round(time.Second))
	case err != nil:
		r.err = fmt.Errorf("ghz: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	default:
		if err := json.Unmarshal(stdout.Bytes(), &r.report); err != nil {
			r.err = fmt.Errorf("ghz's report: %v: %s", err, stdout.Bytes())
		}
	}
	return r
}

// ghzLoop runs ghz against one replica, one run after another, until stop
// is closed (the run under way is finished, not cut short: a Check cancelled
// on the client could still have been recorded, and ghz would count it as
// an error rather than as acknowledged).
type ghzLoop struct {
	mu   sync.Mutex
	runs []ghzRun
}

// run runs ghz until stop is closed or a run fails to complete.
func (l *ghzLoop) run(request func(prefix string) string, addr, replica string, n, rps int, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		prefix := fmt.Sprintf("fleet-%s-%d-", replica, i)
		r := runGhz(addr, request(prefix), prefix, n, rps)
		l.mu.Lock()
		l.runs = append(l.runs, r)
		l.mu.Unlock()
		if r.err != nil {
			return
		}
	}
}

// finishedSince says whether a run that started at or after t has
// finished, and returns the run that ended the loop with an error, if one
// did.
func (l *ghzLoop) finishedSince(t time.Time) (bool, *ghzRun) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.runs {
		if r.err != nil {
			return false, &r
		}
	}
	for _, r := range l.runs {
		if !r.start.Before(t) {
			return true, nil
		}
	}
	return false, nil
}

// TestFleet: three replicas share one PostgreSQL, each with a spool of its
// own, one in sync durability and two in async, under load from ghz.
// PostgreSQL is stopped hard (pg_ctl stop -m immediate) in the middle of the
// load and started again 30 s later, the load going on throughout and after.
// No Check fails (the spools take the writes, nothing is denied), /readyz
// stays 200, every replica's spool fills and drains; afterwards every Check
// ghz saw acknowledged has exactly one record, on the replica it went to, no
// record or request id appears twice and no record is unaccounted for, every
// chain verifies with no gap, and the replicas give the same reports and
// count.
func TestFleet(t *testing.T) {
	const (
		runChecks = 1000             // per ghz run
		rps       = 200              // per replica: 5 s per run
		outage    = 30 * time.Second // as issue 6 says
	)
	testStart := time.Now()
	dsn, pg := privatePostgres(t)
	type replica struct {
		name, durability string
		s                *server
		loop             ghzLoop
		readyz           map[int]int
		degraded         bool
		depthEarly       float64 // spool depth soon after the halt
		depthLate        float64 // just before the restart
	}
	replicas := []*replica{
		{name: "fleet-a", durability: "sync"},
		{name: "fleet-b", durability: "async"},
		{name: "fleet-c", durability: "async"},
	}
	for _, r := range replicas {
		r.s = benchServe(t, "--store", dsn, "--replica", r.name, "--spool", filepath.Join(t.TempDir(), "spool.db"),
			"--evidence-durability", r.durability)
	}

	request := ghzRequests(t)
	stopLoad, stopProbe := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Go(func() { r.loop.run(request, r.s.GRPCAddr, r.name, runChecks, rps, stopLoad) })
		wg.Go(func() { r.readyz, r.degraded = probeReadyz(r.s, stopProbe) })
	}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			close(stopLoad)
			close(stopProbe)
			wg.Wait()
		}
	}
	t.Cleanup(stopAll) // a failed assertion must not leave ghz running

	// Load reaches PostgreSQL on every replica, then PostgreSQL goes down.
	for _, r := range replicas {
		waitMetric(t, r.s, "meshproof_evidence_written_total", func(v float64) bool { return v >= 300 })
	}
	pg("halt")
	halted := time.Now()
	t.Logf("PostgreSQL halted %v into the test", halted.Sub(testStart).Round(time.Millisecond))
	for _, r := range replicas {
		waitMetric(t, r.s, "meshproof_evidence_primary_up", func(v float64) bool { return v == 0 })
		waitMetric(t, r.s, "meshproof_evidence_spool_depth", func(v float64) bool { return v > 0 })
	}
	time.Sleep(2 * time.Second)
	for _, r := range replicas {
		r.depthEarly = r.s.metrics(t)["meshproof_evidence_spool_depth"]
	}
	time.Sleep(time.Until(halted.Add(outage - time.Second)))
	for _, r := range replicas {
		m := r.s.metrics(t)
		r.depthLate = m["meshproof_evidence_spool_depth"]
		if r.depthLate <= r.depthEarly {
			t.Errorf("%s: spool depth %v after 2s of the outage and %v at its end: the load did not go on through the outage", r.name, r.depthEarly, r.depthLate)
		}
		if up := m["meshproof_evidence_primary_up"]; up != 0 {
			t.Errorf("%s: meshproof_evidence_primary_up %v while PostgreSQL is down", r.name, up)
		}
	}
	time.Sleep(time.Until(halted.Add(outage)))
	pg("start")
	restarted := time.Now()
	t.Logf("PostgreSQL started again after %v", restarted.Sub(halted).Round(time.Millisecond))

	// Every spool drains while the load goes on; then every replica
	// finishes a whole ghz run that started after, straight to PostgreSQL.
	for _, r := range replicas {
		waitMetric(t, r.s, "meshproof_evidence_spool_depth", func(v float64) bool { return v == 0 })
		r.s.waitLog(t, "spool drained; evidence is written to the store again", 60*time.Second)
	}
	drained := time.Now()
	t.Logf("every spool drained %v after the restart", drained.Sub(restarted).Round(time.Millisecond))
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range replicas {
		for {
			done, failed := r.loop.finishedSince(drained)
			if failed != nil {
				t.Fatalf("%s: ghz stopped: %v", r.name, failed)
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no ghz run started after the spools drained finished within 60s", r.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	stopAll()

	// What ghz saw: every Check OK.
	acked := 0
	for _, r := range replicas {
		for _, run := range r.loop.runs {
			if run.err != nil || run.report.Count != run.n || run.ok() != run.n {
				t.Errorf("%s: a ghz run did not get every Check OK: %v", r.name, run)
			}
			acked += run.ok()
		}
		t.Logf("%s (%s): %d ghz runs, spool depth %v → %v during the outage, /readyz %v", r.name, r.durability,
			len(r.loop.runs), r.depthEarly, r.depthLate, r.readyz)
	}
	// What each replica says of itself.
	for _, r := range replicas {
		m := r.s.metrics(t)
		if m["meshproof_evidence_spool_drained_total"] < r.depthLate || m["meshproof_evidence_spool_depth"] != 0 || m["meshproof_evidence_primary_up"] != 1 {
			t.Errorf("%s: drained %v (the spool held %v), depth %v, primary_up %v after the outage", r.name,
				m["meshproof_evidence_spool_drained_total"], r.depthLate, m["meshproof_evidence_spool_depth"], m["meshproof_evidence_primary_up"])
		}
		for _, reason := range []string{"block_timeout", "denied", "queue_full"} {
			if n := m[`meshproof_evidence_dropped_total{reason="`+reason+`"}`]; n != 0 {
				t.Errorf("%s: %v records dropped (%s)", r.name, n, reason)
			}
		}
		if len(r.readyz) != 1 || r.readyz[http.StatusOK] == 0 {
			t.Errorf("%s: /readyz answered %v; want 200 throughout", r.name, r.readyz)
		}
		if !r.degraded {
			t.Errorf("%s: /readyz never said the evidence store was degraded with records spooled", r.name)
		}
		if n := len(r.s.findLogs("evidence store write failed; retrying")); n != 0 {
			t.Errorf("%s: the recorder saw %d failed writes; the spool should take them all", r.name, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every replica sees every replica's evidence (the async ones may still
	// be writing their last batch), and gives the same reports.
	for _, r := range replicas {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var st struct {
				Records int64 `json:"records"`
			}
			getJSON(t, r.s, "/v1/stats", &st)
			if st.Records == int64(acked) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /v1/stats counts %d records; ghz had %d Checks acknowledged", r.name, st.Records, acked)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	window := "?since=" + url.QueryEscape(testStart.Add(-time.Minute).UTC().Format(time.RFC3339)) +
		"&until=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	for _, report := range []string{"/v1/reports/tls-check" + window, "/v1/reports/strict-readiness" + window + "&destination=httpbin:8000"} {
		var first []byte
		for i, r := range replicas {
			var v any
			getJSON(t, r.s, report, &v)
			b, _ := json.Marshal(v)
			switch {
			case i == 0:
				first = b
				// One destination, one client: the report's total is all.
				if !regexp.MustCompile(`"total":` + strconv.Itoa(acked) + `[,}]`).Match(b) {
					t.Errorf("%s on %s does not count the %d Checks: %s", report, r.name, acked, b)
				}
			case !bytes.Equal(b, first):
				t.Errorf("%s differs between the replicas:\n%s: %s\n%s: %s", report, replicas[0].name, first, r.name, b)
			}
		}
	}
	for _, r := range replicas {
		if code := r.s.stop(); code != 0 {
			t.Fatalf("%s: exit %d", r.name, code)
		}
	}

	// The store: each acknowledged Check exactly once, on its replica, and
	// nothing else.
	recs := storedRecords(t, dsn)
	byID, byRequest := map[string]int{}, map[string]*evidence.Record{}
	seqs := map[string][]uint64{}
	for _, rec := range recs {
		if byID[rec.ID]++; byID[rec.ID] == 2 {
			t.Errorf("record id %s stored twice", rec.ID)
		}
		if prev := byRequest[rec.RequestID]; prev != nil {
			t.Errorf("request id %q stored twice: records %s (seq %d) and %s (seq %d)", rec.RequestID, prev.ID, prev.Chain.Seq, rec.ID, rec.Chain.Seq)
		}
		byRequest[rec.RequestID] = rec
		seqs[rec.Replica] = append(seqs[rec.Replica], rec.Chain.Seq)
	}
	missing := 0
	for _, r := range replicas {
		for _, run := range r.loop.runs {
			for k := range run.n {
				id := run.prefix + strconv.Itoa(k)
				switch rec := byRequest[id]; {
				case rec == nil:
					if missing++; missing <= 10 {
						t.Errorf("acknowledged Check %s has no record", id)
					}
				case rec.Replica != r.name:
					t.Errorf("Check %s went to %s but its record says replica %s", id, r.name, rec.Replica)
				}
				delete(byRequest, id)
			}
		}
	}
	if missing > 0 || len(byRequest) > 0 || len(recs) != acked {
		t.Fatalf("%d records for %d acknowledged Checks: %d Checks without a record, %d records of no acknowledged Check (e.g. %v)",
			len(recs), acked, missing, len(byRequest), slices.Collect(maps.Keys(byRequest))[:min(len(byRequest), 5)])
	}
	// No gap: each replica's chain is seq 1..n.
	for _, r := range replicas {
		s := seqs[r.name]
		slices.Sort(s)
		for i, seq := range s {
			if seq != uint64(i+1) {
				t.Fatalf("%s's chain: the %d-th record has seq %d (a gap or a double)", r.name, i+1, seq)
			}
		}
	}
	out := verifyChains(t, dsn)
	if want := fmt.Sprintf("%d records in 3 chain(s) checked", acked); !strings.Contains(out, want) {
		t.Fatalf("verify said:\n%s\nwant %q", out, want)
	}
	t.Logf("%d Checks acknowledged over 3 replicas, each recorded once; outage %v; test took %v", acked, outage, time.Since(testStart).Round(time.Millisecond))
}

// TestSpoolDrainKilled: a replica is killed (SIGKILL) while it drains a
// spool of tens of thousands of records into PostgreSQL, and restarted on
// the same spool: the drain resumes where it was, and every acknowledged
// Check has exactly one record in PostgreSQL, on a chain that verifies.
func TestSpoolDrainKilled(t *testing.T) {
	t.Parallel()
	const spooled = 30_000 // at 1000 records per drained chunk: long enough to interrupt
	testStart := time.Now()
	dsn, pg := privatePostgres(t)
	args := []string{"--store", dsn, "--replica", "e2e-drain-killed", "--spool", filepath.Join(t.TempDir(), "spool.db")}
	s := startServe(t, args...)
	conn := dial(t, s.GRPCAddr, nil)

	before, failed := load(t, conn, 4, 300, nil)
	if failed > 0 {
		t.Fatalf("%d Checks failed with a healthy store", failed)
	}
	waitMetric(t, s, "meshproof_evidence_written_total", func(v float64) bool { return v == float64(len(before)) })
	pg("halt")
	stop := make(chan struct{})
	var during []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		during, failed = load(t, conn, 8, 1_000_000, stop)
	}()
	waitMetric(t, s, "meshproof_evidence_spool_depth", func(v float64) bool { return v >= spooled })
	close(stop)
	<-done
	if failed > 0 {
		t.Fatalf("%d Checks failed or were denied although the spool takes the writes", failed)
	}
	acked := len(before) + len(during)
	// Async: every acknowledged record is written (to the spool) before
	// PostgreSQL comes back.
	waitMetric(t, s, "meshproof_evidence_written_total", func(v float64) bool { return v == float64(acked) })
	depth := s.metrics(t)["meshproof_evidence_spool_depth"]
	t.Logf("%d Checks acknowledged, %v of them spooled, %v into the test", acked, depth, time.Since(testStart).Round(time.Millisecond))

	pg("start")
	deadline := time.Now().Add(30 * time.Second)
	var m map[string]float64
	for {
		m = s.metrics(t)
		if m["meshproof_evidence_spool_drained_total"] > 0 && m["meshproof_evidence_spool_depth"] > 0 {
			// The next chunk is under way: kill at a random point of it
			// (a chunk takes some 50ms here), so that runs of the test
			// also land between its write to PostgreSQL and its removal
			// from the spool. Whether work was left is checked below.
			time.Sleep(rand.N(100 * time.Millisecond))
			s.kill()
			break
		}
		if m["meshproof_evidence_spool_depth"] == 0 {
			t.Fatalf("the spool drained (%v records) before the test could kill the replica mid-drain: spool more", m["meshproof_evidence_spool_drained_total"])
		}
		if time.Now().After(deadline) {
			t.Fatalf("no drain within 30s of PostgreSQL's restart: %v", m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	inStore := len(storedRecords(t, dsn))
	t.Logf("killed with %v drained, %v left (metrics); PostgreSQL holds %d records", m["meshproof_evidence_spool_drained_total"],
		m["meshproof_evidence_spool_depth"], inStore)

	s2 := startServe(t, args...)
	// The restarted replica must find work left, or the kill proved nothing.
	// (It says so before it serves.)
	l := s2.findLog("the spool holds evidence from before; draining it")
	left, _ := l["spooled"].(float64)
	if left <= 0 {
		t.Fatalf("the restarted replica found no spooled record to drain (%v): the kill came after the drain, and proves nothing", l)
	}
	// What PostgreSQL held and what the spool held overlap by at most the
	// chunk being drained at the kill (written to PostgreSQL, not yet
	// removed from the spool); the drain must skip those.
	if overlap := inStore + int(left) - acked; overlap < 0 || overlap > 1000 {
		t.Fatalf("PostgreSQL held %d records and the spool %v after the kill, for %d acknowledged Checks", inStore, left, acked)
	} else {
		t.Logf("the restarted replica drains %v records; %d of them PostgreSQL already held", left, overlap)
	}
	l = s2.waitLog(t, "spool drained; evidence is written to the store again", 30*time.Second)
	t.Logf("the restarted replica drained its spool in %v", l["spooled_for"])
	waitMetric(t, s2, "meshproof_evidence_spool_depth", func(v float64) bool { return v == 0 })
	// The chain goes on after the drain.
	after, failed := load(t, dial(t, s2.GRPCAddr, nil), 2, 100, nil)
	if failed > 0 {
		t.Fatalf("%d Checks failed after the drain", failed)
	}
	if code := s2.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	recs := storedRecords(t, dsn)
	stored := ids(recs)
	recordedOnce(t, stored, before, during, after)
	if total := acked + len(after); len(recs) != total || len(stored) != total {
		t.Fatalf("%d records (%d ids) in PostgreSQL for %d acknowledged Checks", len(recs), len(stored), total)
	}
	seqs := make([]uint64, 0, len(recs))
	for _, r := range recs {
		seqs = append(seqs, r.Chain.Seq)
	}
	slices.Sort(seqs)
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("the %d-th record has seq %d (a gap or a double)", i+1, seq)
		}
	}
	out := verifyChains(t, dsn)
	if want := fmt.Sprintf("%d records in 1 chain(s) checked", len(recs)); !strings.Contains(out, want) {
		t.Fatalf("verify said:\n%s\nwant %q", out, want)
	}
	t.Logf("%d records, each once; test took %v", len(recs), time.Since(testStart).Round(time.Millisecond))
}
