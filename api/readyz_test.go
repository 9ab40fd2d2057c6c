package api

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// TestReadyzHealth: a ready server's /readyz carries Config.Health's detail
// beside its status (which the detail cannot change), still with 200: a
// degraded store does not take the replica out of service.
func TestReadyzHealth(t *testing.T) {
	degraded := map[string]any{"store": map[string]any{"degraded": true, "spooled": 42.0, "reason": "spooling"}}
	tests := []struct {
		name       string
		ready      bool
		health     func() map[string]any
		wantStatus int
		want       map[string]any // the JSON body, when 200
	}{
		{name: "no health", ready: true, wantStatus: 200,
			want: map[string]any{"status": "ready"}},
		{name: "degraded", ready: true, health: func() map[string]any { return degraded }, wantStatus: 200,
			want: map[string]any{"status": "ready", "store": degraded["store"]}},
		{name: "detail cannot override the status", ready: true,
			health:     func() map[string]any { return map[string]any{"status": "broken", "store": "ok"} },
			wantStatus: 200, want: map[string]any{"status": "ready", "store": "ok"}},
		{name: "not ready", ready: false, health: func() map[string]any { return degraded }, wantStatus: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, openStore(t), Config{Ready: func() bool { return tt.ready }, Health: tt.health}, time.Time{})
			resp := ts.get(t, "/readyz", "")
			if resp.status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.status, tt.wantStatus, resp.body)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			var got map[string]any
			if err := json.Unmarshal(resp.body, &got); err != nil {
				t.Fatalf("%v: %s", err, resp.body)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("body %v, want %v", got, tt.want)
			}
		})
	}
}
