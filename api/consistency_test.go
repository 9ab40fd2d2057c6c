package api

import (
	"net/http"
	"testing"
)

// TestConsistencyFromEmptyLog: there is no RFC 6962 proof from the empty
// log (tlog.ProveTree refuses size 0), so from=0 is the client's mistake,
// a 400 naming from, not a store failure (it was a 500).
func TestConsistencyFromEmptyLog(t *testing.T) {
	ts, _, fx := fixture(t)
	base := "/v1/checkpoints/" + fx.Records[0].Replica + "/consistency"
	for _, q := range []string{"?from=0", "?from=0&to=0", "?from=0&to=5"} {
		resp := ts.get(t, base+q, "")
		if e := resp.errorOf(t); resp.status != http.StatusBadRequest || e.Parameter != "from" {
			t.Errorf("%s: %d %s, want 400 naming from", q, resp.status, resp.body)
		}
	}
	if resp := ts.get(t, base+"?from=1&to=5", ""); resp.status != http.StatusOK {
		t.Errorf("from=1&to=5: %d %s", resp.status, resp.body)
	}
}
