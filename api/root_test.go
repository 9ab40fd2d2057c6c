package api

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRootRedirectsToPage: the listener's root sends a browser to the page
// (GET and HEAD, with or without a token configured, as the page itself is
// open), and an unknown path is still a 404 whose message names the page
// and the API.
func TestRootRedirectsToPage(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ui " + r.URL.Path)) })
	noRedirect := func(c *http.Client) *http.Client {
		cc := *c
		cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return &cc
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		token string
	}{
		{"open", Config{UI: ui}, ""},
		{"with tokens", Config{UI: ui, Tokens: []string{tokenA}}, tokenA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, openStore(t), tc.cfg, time.Time{})
			c := noRedirect(ts.Client())
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				for _, path := range []string{"/", "/?window=1h"} {
					r := do(t, c, method, ts.URL+path, "")
					if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/" {
						t.Errorf("%s %s: %d, Location %q; want 303 to /ui/", method, path, r.status, r.header.Get("Location"))
					}
				}
			}
			// Followed, as a browser does; and as curl -IL does.
			if r := ts.get(t, "/", ""); r.status != http.StatusOK || string(r.body) != "ui /ui/" {
				t.Errorf("GET / followed: %d %q", r.status, r.body)
			}
			if r := do(t, ts.Client(), http.MethodHead, ts.URL+"/", ""); r.status != http.StatusOK {
				t.Errorf("HEAD / followed: %d, want 200", r.status)
			}
			if r := do(t, c, http.MethodPost, ts.URL+"/", ""); r.status != http.StatusMethodNotAllowed {
				t.Errorf("POST /: %d, want 405", r.status)
			}
			for _, path := range []string{"/index.html", "/uix", "/v2/evidence", "/v1"} {
				r := do(t, c, http.MethodGet, ts.URL+path, tc.token)
				if r.status != http.StatusNotFound {
					t.Errorf("GET %s: %d %s, want 404", path, r.status, r.body)
					continue
				}
				if msg := r.errorOf(t).Error; !strings.Contains(msg, "/ui/") || !strings.Contains(msg, "/v1/") {
					t.Errorf("GET %s: 404 %q names neither the page (/ui/) nor the API (/v1/)", path, msg)
				}
			}
		})
	}

	// Without a page (a server built without one), / is a path like any other.
	ts := newTestServer(t, openStore(t), Config{}, time.Time{})
	if r := do(t, noRedirect(ts.Client()), http.MethodGet, ts.URL+"/", ""); r.status != http.StatusNotFound {
		t.Errorf("GET / without a page: %d, want 404", r.status)
	}
}
