package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/sqlite"
)

// openStore opens a fresh SQLite store in the test's temp dir.
func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "evidence.db"), evidence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendChained chains recs (all of one replica, in order) after the
// store's head and appends them in batches.
func appendChained(t testing.TB, s evidence.Store, recs []*evidence.Record) {
	t.Helper()
	ctx := context.Background()
	if len(recs) == 0 {
		return
	}
	head, err := s.Head(ctx, recs[0].Replica)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(recs); i += 1000 {
		batch := recs[i:min(i+1000, len(recs))]
		for _, r := range batch {
			head = head.Link(r)
		}
		if err := s.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
}

// syncBuffer is a log sink tests read while servers write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is the API over a store on a loopback HTTP server, with its
// log kept.
type testServer struct {
	*httptest.Server
	api *Server
	log *syncBuffer
}

func newTestServer(t testing.TB, store evidence.Store, cfg Config, now time.Time) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	s, err := New(store, cfg, zerolog.New(logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	if !now.IsZero() {
		s.now = func() time.Time { return now }
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &testServer{Server: ts, api: s, log: logs}
}

// response is an answer as tests look at it.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// errorOf is the error answer's body.
func (r response) errorOf(t testing.TB) errorBody {
	t.Helper()
	var e errorBody
	r.decode(t, &e)
	return e
}

// get requests path (with its query, raw) with an optional bearer token.
func (ts *testServer) get(t testing.TB, path, token string) response {
	t.Helper()
	return do(t, ts.Client(), http.MethodGet, ts.URL+path, token)
}

func do(t testing.TB, c *http.Client, method, url, token string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// page is /v1/evidence's answer.
type page struct {
	Records []*evidence.Record `json:"records"`
	Next    string             `json:"next_cursor"`
}

// listAll pages through /v1/evidence with query (limit included) and
// returns the ids in order.
func (ts *testServer) listAll(t testing.TB, query string) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for range 10_000 {
		q := query
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		resp := ts.get(t, "/v1/evidence?"+strings.TrimPrefix(q, "&"), "")
		if resp.status != http.StatusOK {
			t.Fatalf("GET /v1/evidence?%s: %d %s", q, resp.status, resp.body)
		}
		var p page
		resp.decode(t, &p)
		for _, r := range p.Records {
			ids = append(ids, r.ID)
		}
		if p.Next == "" {
			return ids
		}
		cursor = p.Next
	}
	t.Fatal("pagination does not end")
	return nil
}
