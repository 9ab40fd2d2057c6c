package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// scanWatch counts the ScanJSONs (the export's) in progress and reports
// each one's end.
type scanWatch struct {
	evidence.Store
	active atomic.Int32
	ended  chan error
}

func (s *scanWatch) ScanJSON(ctx context.Context, f evidence.Filter, fn func([]byte) error) error {
	s.active.Add(1)
	err := s.Store.ScanJSON(ctx, f, fn)
	s.active.Add(-1)
	s.ended <- err
	return err
}

// TestExportClientGoesAway starts exporting 100,000 records, reads a few
// lines and hangs up: Scan must stop, every goroutine the export started
// must end, no read transaction may stay open, and the next request must
// work. (Small records: writing 100,000 takes 3 s, 40 s under -race.)
func TestExportClientGoesAway(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 records")
	}
	store := openStore(t)
	end := time.Now().Truncate(time.Minute)
	appendChained(t, store, leanRecords(100_000, end.Add(-time.Hour)))
	watch := &scanWatch{Store: store, ended: make(chan error, 4)}
	hangUp(t, watch, watch)
	appendChained(t, store, meshRecords(1, end, time.Minute, 2))
	// A read transaction lives on a read connection in use: the store
	// checkpoints its WAL in the background, so an open one can no longer
	// be told from a checkpoint that finds the log busy.
	if busy := store.ReadersInUse(); busy != 0 {
		t.Errorf("%d read connections still in use after the exports stopped", busy)
	}
}

// hangUp exports from store, reads five records and hangs up.
func hangUp(t *testing.T, store evidence.Store, watch *scanWatch) {
	ts := newTestServer(t, store, Config{}, time.Time{})
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp := do(t, client, http.MethodGet, ts.URL+"/v1/stats", ""); resp.status != http.StatusOK {
		t.Fatalf("stats: %d %s", resp.status, resp.body)
	}
	baseline := settledGoroutines(0)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/v1/export", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 5 {
		line, err := br.ReadBytes('\n')
		var r evidence.Record
		if err != nil || json.Unmarshal(line, &r) != nil || r.ID == "" {
			t.Fatalf("line %d: %.100q, %v", i, line, err)
		}
	}
	cancel()
	resp.Body.Close()

	select {
	case err := <-watch.ended:
		if err == nil {
			t.Error("Scan ran to the end of 100,000 records for a client that hung up after 5")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scan still running 10 s after the client went away")
	}
	if n := watch.active.Load(); n != 0 {
		t.Errorf("%d Scans still active", n)
	}
	if n := settledGoroutines(baseline); n > baseline {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Errorf("%d goroutines after the export, %d before", n, baseline)
	}
	if resp := do(t, client, http.MethodGet, ts.URL+"/v1/evidence?limit=5&since=2h", ""); resp.status != http.StatusOK {
		t.Errorf("the next request: %d %s", resp.status, resp.body)
	}
	if resp := do(t, client, http.MethodGet, ts.URL+"/v1/export?since=2h&request_id=req-0000099999", ""); resp.status != http.StatusOK || len(resp.body) == 0 {
		t.Errorf("the next export: %d, %d bytes", resp.status, len(resp.body))
	}
	<-watch.ended // the next export's
}

// settledGoroutines waits up to 5 s for the goroutine count to fall to
// target (0: to stop changing) and returns it.
func settledGoroutines(target int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if target > 0 && m <= target || target == 0 && m == n {
			return m
		}
		n = m
	}
	return n
}

// TestExportStoredJSON exports through ScanJSON: the lines are the
// records Scan gives, each as its JSON form; a stored record spread over
// lines is put back on one; one that is not JSON aborts the stream, so that
// the client sees it cut.
func TestExportStoredJSON(t *testing.T) {
	ts, store, _ := fixture(t)
	var want []byte
	if err := store.Scan(context.Background(), evidence.Filter{NotVerdicts: []evidence.Verdict{evidence.MTLS}}, func(r *evidence.Record) error {
		b, err := evidence.RecordJSON(r)
		want = append(append(want, b...), '\n')
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := ts.get(t, "/v1/export?mtls=false", ""); got.status != http.StatusOK || !bytes.Equal(got.body, want) || len(want) == 0 {
		t.Errorf("export: %d, %d bytes; Scan: %d bytes", got.status, len(got.body), len(want))
	}
	for _, tc := range []struct {
		name   string
		stored string
		lines  int
		cut    bool
	}{
		{"pretty", "{\n  \"id\": \"x\"\n}", 2, false},
		{"not JSON", "{\n oops", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := newTestServer(t, badJSON{store, []byte(tc.stored)}, Config{}, time.Time{})
			resp, err := bad.Client().Get(bad.URL + "/v1/export")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if cut := err != nil; cut != tc.cut {
				t.Errorf("read error %v, want a cut stream: %v", err, tc.cut)
			}
			if n := bytes.Count(body, []byte("\n")); n != tc.lines {
				t.Errorf("%d lines, want %d: %q", n, tc.lines, body)
			}
		})
	}
}

// badJSON streams one good record, then body as a stored record.
type badJSON struct {
	evidence.Store
	body []byte
}

func (b badJSON) ScanJSON(_ context.Context, _ evidence.Filter, fn func([]byte) error) error {
	if err := fn([]byte(`{"id":"good"}`)); err != nil {
		return err
	}
	return fn(b.body)
}
