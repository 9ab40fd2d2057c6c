package ui_test

import (
	"net/http"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshproof/meshproof/api"
	"github.com/meshproof/meshproof/api/ui"
	"github.com/meshproof/meshproof/evidence"
)

// handler is the real query API over store, with token as the only accepted
// bearer token (none: open, as on loopback) and the page mounted at /ui/,
// as serve wires it.
func handler(t *testing.T, store evidence.Store, token string) http.Handler {
	t.Helper()
	var tokens []string
	if token != "" {
		tokens = []string{token}
	}
	srv, err := api.New(store, api.Config{Tokens: tokens, UI: ui.Handler()}, zerolog.Nop())
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	return srv.Handler()
}
