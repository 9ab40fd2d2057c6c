package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/spool"
)

// TestSpooledStoreReadsStoredJSON: the API over a spooled store (serve
// --spool) answers pages and exports from the stored JSON as it does over
// the bare store, not by decoding and encoding each record (nor looking up
// each record's amendment alone). Measured in allocations per record: the
// slow path costs several times the fast one's (85 against 24 per record
// of a page, 49 against 12 of an export, when this test was written).
func TestSpooledStoreReadsStoredJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations over several requests")
	}
	const n = 200
	store := openStore(t)
	end := time.Now().Truncate(time.Minute)
	appendChained(t, store, meshRecords(n, end, time.Hour, 5))
	sp, err := spool.Open(context.Background(), store, filepath.Join(t.TempDir(), "spool.db"), "spooled", evidence.Options{}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })

	perRecord := func(s evidence.Store, path string) float64 {
		srv, err := New(s, Config{}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		h := srv.Handler()
		get := func() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
			if w.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
			}
		}
		get()
		return testing.AllocsPerRun(5, get) / n
	}
	for _, path := range []string{"/v1/evidence?limit=200", "/v1/export"} {
		bare, spooled := perRecord(store, path), perRecord(sp, path)
		t.Logf("%s: %.2f allocations per record over the bare store, %.2f over the spooled store", path, bare, spooled)
		if spooled > bare+0.5 {
			t.Errorf("%s over the spooled store: %.2f allocations per record, over the bare store %.2f: the spooled store takes a slower path", path, spooled, bare)
		}
	}
}
