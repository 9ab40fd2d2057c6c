package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyzDetail is /readyz's answer with the spool's health detail.
type readyzDetail struct {
	Status        string `json:"status"`
	EvidenceStore *struct {
		Degraded bool   `json:"degraded"`
		Spooled  int    `json:"spooled"`
		Reason   string `json:"reason"`
	} `json:"evidence_store"`
}

// probeReadyz polls /readyz every 100ms until stop is closed, and returns
// every status seen and whether a 200 answer said the store was degraded
// with records spooled.
func probeReadyz(s *server, stop <-chan struct{}) (statuses map[int]int, degraded bool) {
	statuses = map[int]int{}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		code, body, err := httpGet("http://" + s.HTTPAddr + "/readyz")
		if err != nil {
			code = -1
		}
		statuses[code]++
		var d readyzDetail
		if code == http.StatusOK && json.Unmarshal([]byte(body), &d) == nil && d.EvidenceStore != nil &&
			d.EvidenceStore.Degraded && d.EvidenceStore.Spooled > 0 && d.EvidenceStore.Reason != "" {
			degraded = true
		}
		select {
		case <-stop:
			return statuses, degraded
		case <-t.C:
		}
	}
}

// TestPostgresOutageSpooled: as TestPostgresStoreOutage (PostgreSQL stopped
// hard mid-load and started again a few seconds later, the same small
// queue), but with --spool: no Check is denied, since the spool takes the
// writes; /readyz stays 200 and says the store is degraded; the spool
// drains once PostgreSQL is back; and every acknowledged Check has exactly
// one record in PostgreSQL, on a chain that verifies. In both durabilities.
func TestPostgresOutageSpooled(t *testing.T) {
	t.Parallel()
	for _, durability := range []string{"async", "sync"} {
		t.Run(durability, func(t *testing.T) {
			t.Parallel()
			dsn, pg := privatePostgres(t)
			spoolPath := filepath.Join(t.TempDir(), "spool.db")
			// The block timeout is long enough for a busy machine: what
			// is tested is that the spool takes the writes, not how fast
			// (with 20ms, 4 of 90,000 Checks timed out while the whole
			// suite ran on 2 cores).
			s := startServe(t, "--store", dsn, "--replica", "e2e-spool-"+durability, "--spool", spoolPath,
				"--evidence-durability", durability, "--evidence-queue-size", "500",
				"--evidence-flush-interval", "10ms", "--evidence-block-timeout", "5s")
			conn := dial(t, s.GRPCAddr, nil)

			stopLoad, stopProbe := make(chan struct{}), make(chan struct{})
			var acked []string
			var failed int64
			var statuses map[int]int
			var degraded bool
			var wg sync.WaitGroup
			wg.Go(func() { acked, failed = load(t, conn, 4, 1_000_000, stopLoad) })
			wg.Go(func() { statuses, degraded = probeReadyz(s, stopProbe) })

			waitMetric(t, s, "meshproof_evidence_written_total", func(v float64) bool { return v >= 200 })
			pg("halt")
			waitMetric(t, s, "meshproof_evidence_spool_depth", func(v float64) bool { return v >= 500 })
			if up := s.metrics(t)["meshproof_evidence_primary_up"]; up != 0 {
				t.Errorf("meshproof_evidence_primary_up %v while PostgreSQL is down", up)
			}
			time.Sleep(3 * time.Second)
			pg("start")
			// The drain's progress is waited on, then its log line.
			waitMetric(t, s, "meshproof_evidence_spool_depth", func(v float64) bool { return v == 0 })
			s.waitLog(t, "spool drained; evidence is written to the store again", 60*time.Second)
			time.Sleep(time.Second) // Checks go to PostgreSQL again
			close(stopLoad)
			close(stopProbe)
			wg.Wait()

			m := s.metrics(t)
			if failed > 0 {
				t.Errorf("%d Checks failed or were denied although the spool takes the writes", failed)
			}
			for _, reason := range []string{"block_timeout", "denied", "queue_full"} {
				if n := m[`meshproof_evidence_dropped_total{reason="`+reason+`"}`]; n != 0 {
					t.Errorf("%v records dropped (%s)", n, reason)
				}
			}
			if m["meshproof_evidence_spool_drained_total"] == 0 || m["meshproof_evidence_primary_up"] != 1 {
				t.Errorf("drained %v, primary_up %v after the outage", m["meshproof_evidence_spool_drained_total"], m["meshproof_evidence_primary_up"])
			}
			if len(statuses) != 1 || statuses[http.StatusOK] == 0 {
				t.Errorf("/readyz answered %v; want 200 throughout", statuses)
			}
			if !degraded {
				t.Error("/readyz never said the evidence store was degraded with records spooled")
			}
			if n := len(s.findLogs("evidence store write failed; retrying")); n != 0 {
				t.Errorf("the recorder saw %d failed writes; the spool should take them all", n)
			}
			if code := s.stop(); code != 0 {
				t.Fatalf("exit %d", code)
			}
			stored := ids(storedRecords(t, dsn))
			recordedOnce(t, stored, acked)
			if len(stored) != len(acked) {
				t.Fatalf("%d records in PostgreSQL for %d acknowledged Checks", len(stored), len(acked))
			}
			verifyChains(t, dsn)
			t.Logf("%d Checks acknowledged, %v of them through the spool; /readyz %v", len(acked), m["meshproof_evidence_spool_drained_total"], statuses)
		})
	}
}

// waitMetric waits for the metric to satisfy ok, as long as it moves: it
// fails only when the value has not changed for stallWindow (the server is
// stuck), never after a fixed time that assumes a throughput, since a
// drain on a busy 2-core machine may take minutes while it progresses.
func waitMetric(t *testing.T, s *server, name string, ok func(float64) bool) {
	t.Helper()
	var last float64
	seen := false
	moved := time.Now()
	for {
		v, found := s.metrics(t)[name]
		if found && ok(v) {
			return
		}
		if found && (!seen || v != last) {
			last, seen, moved = v, true, time.Now()
		}
		if time.Since(moved) > stallWindow {
			t.Fatalf("metric %s is %v and has not moved for %v", name, v, stallWindow)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stallWindow is how long a wait on progress accepts no progress at all.
const stallWindow = 60 * time.Second

// startQuery starts `meshproof serve --role query` with args, waits until it
// serves, and returns it; its serving log line has no gRPC address.
func startQuery(t *testing.T, args ...string) (*server, map[string]any) {
	t.Helper()
	s := &server{t: t, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	args = append([]string{"serve", "--role", "query", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	s.cmd = exec.Command(meshproofBin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("meshproof %s\n--- stderr:\n%s", strings.Join(args, " "), s.stderr)
		}
	})
	deadline := time.Now().Add(readyTimeout)
	var line map[string]any
	for line == nil {
		line = s.findLog("meshproof serving")
		s.failIfExitedOrLate(t, deadline, "the \"meshproof serving\" log line")
		time.Sleep(20 * time.Millisecond)
	}
	s.HTTPAddr, _ = line["http_addr"].(string)
	return s, line
}

// listeningPorts are the TCP ports pid listens on (from /proc).
func listeningPorts(t *testing.T, pid int) []int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot read the process's sockets: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil {
				ports = append(ports, int(p))
			}
		}
		f.Close()
	}
	return ports
}

// TestQueryRole: a `--role query` replica over the fleet's PostgreSQL serves
// the evidence a serving replica wrote, and the same reports, with no
// gRPC listener (its only listening socket is the HTTP one); it refuses the
// flags of the data path.
func TestQueryRole(t *testing.T) {
	t.Parallel()
	dsn, _ := privatePostgres(t)
	w := startServe(t, "--store", dsn, "--replica", "e2e-writer")
	acked, failed := load(t, dial(t, w.GRPCAddr, nil), 4, 300, nil)
	if failed > 0 {
		t.Fatalf("%d Checks failed", failed)
	}

	q, line := startQuery(t, "--store", dsn)
	if line["role"] != "query" || line["grpc_addr"] != nil {
		t.Errorf("the query replica's serving line: %v", line)
	}
	_, httpPort, _ := net.SplitHostPort(q.HTTPAddr)
	if ports := listeningPorts(t, q.cmd.Process.Pid); len(ports) != 1 || strconv.Itoa(ports[0]) != httpPort {
		t.Errorf("the query replica listens on ports %v; want only its HTTP port %s", ports, httpPort)
	}
	waitReadyz(t, q)

	// Once the writer's queue is written, both replicas see the same
	// evidence and give the same reports.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			Records int64 `json:"records"`
		}
		getJSON(t, q, "/v1/stats", &st)
		if st.Records == int64(len(acked)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the query replica sees %d records, the writer acknowledged %d", st.Records, len(acked))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var page struct {
		Records []struct {
			ID      string `json:"id"`
			Replica string `json:"replica"`
		} `json:"records"`
	}
	getJSON(t, q, "/v1/evidence?limit=10", &page)
	if len(page.Records) != 10 || page.Records[0].Replica != "e2e-writer" {
		t.Errorf("/v1/evidence on the query replica: %+v", page)
	}
	window := "?since=" + url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)) +
		"&until=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	for _, report := range []string{"/v1/reports/tls-check" + window, "/v1/reports/strict-readiness" + window + "&destination=httpbin:8000"} {
		var fromQuery, fromWriter map[string]any
		getJSON(t, q, report, &fromQuery)
		getJSON(t, w, report, &fromWriter)
		a, _ := json.Marshal(fromQuery)
		b, _ := json.Marshal(fromWriter)
		if string(a) != string(b) || len(a) < 50 {
			t.Errorf("%s differs between the replicas:\nquery:  %s\nwriter: %s", report, a, b)
		}
	}

	for _, refused := range [][]string{
		{"--grpc-addr", "127.0.0.1:0"},
		{"--spool", filepath.Join(t.TempDir(), "spool.db")},
		{"--policy", "builtin:observe"},
		{"--evidence-durability", "sync"},
	} {
		r := meshproof(t, nil, append([]string{"serve", "--role", "query", "--store", dsn, "--http-addr", "127.0.0.1:0"}, refused...)...)
		if r.code != 2 || !containsAll(r.stderr, "--role query", refused[0]) {
			t.Errorf("serve --role query %s: want exit 2 naming the flag\n%s", refused[0], r)
		}
	}
}

// waitReadyz waits for s's /readyz to answer 200.
func waitReadyz(t *testing.T, s *server) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if code, _, err := httpGet("http://" + s.HTTPAddr + "/readyz"); err == nil && code == http.StatusOK {
			return
		}
		s.failIfExitedOrLate(t, deadline, "/readyz to answer 200")
		time.Sleep(20 * time.Millisecond)
	}
}

// getJSON GETs path on s and decodes its 200 answer.
func getJSON(t *testing.T, s *server, path string, v any) {
	t.Helper()
	code, body, err := httpGet("http://" + s.HTTPAddr + path)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", path, code, err, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}
