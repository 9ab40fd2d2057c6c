package ui_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/api/ui"
)

func TestHandler(t *testing.T) {
	h := ui.Handler()
	tests := []struct {
		name, method, path string
		status             int
		contentType        string
		body               string
	}{
		{name: "index", method: "GET", path: "/ui/", status: 200, contentType: "text/html; charset=utf-8", body: `<script type="module" src="app.js">`},
		{name: "script", method: "GET", path: "/ui/app.js", status: 200, contentType: "text/javascript; charset=utf-8", body: "import"},
		{name: "style", method: "GET", path: "/ui/app.css", status: 200, contentType: "text/css; charset=utf-8", body: "--ok"},
		{name: "prefix stripped", method: "GET", path: "/edges.js", status: 200, contentType: "text/javascript; charset=utf-8", body: "tls-check"},
		{name: "icon", method: "GET", path: "/ui/icon.svg", status: 200, contentType: "image/svg+xml", body: "<svg"},
		{name: "head", method: "HEAD", path: "/ui/index.html", status: 200, contentType: "text/html; charset=utf-8"},
		{name: "no slash", method: "GET", path: "/ui", status: http.StatusMovedPermanently},
		{name: "unknown", method: "GET", path: "/ui/secret.go", status: 404},
		{name: "traversal", method: "GET", path: "/ui/../ui.go", status: 404},
		{name: "post", method: "POST", path: "/ui/", status: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("%s %s: status %d, want %d", tt.method, tt.path, rec.Code, tt.status)
			}
			if tt.status != 200 {
				return
			}
			hdr := rec.Header()
			if got := hdr.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
			}
			if got := hdr.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			csp := hdr.Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
				t.Errorf("Content-Security-Policy = %q: want default-src 'self' and no unsafe-inline", csp)
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body does not contain %q", tt.body)
			}
		})
	}
	t.Run("revalidate", func(t *testing.T) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/app.js", nil))
		req := httptest.NewRequest("GET", "/ui/app.js", nil)
		req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
		again := httptest.NewRecorder()
		h.ServeHTTP(again, req)
		if again.Code != http.StatusNotModified {
			t.Errorf("with the ETag %q: status %d, want 304", rec.Header().Get("ETag"), again.Code)
		}
	})
}
