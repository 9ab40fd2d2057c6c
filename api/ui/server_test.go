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
// bearer token and the page mounted at /ui/, as serve wires it.
func handler(t *testing.T, store evidence.Store, token string) http.Handler {
	t.Helper()
	srv, err := api.New(store, api.Config{Tokens: []string{token}, UI: ui.Handler()}, zerolog.Nop())
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	return srv.Handler()
}
