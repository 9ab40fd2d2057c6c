package meshsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// App is an httpbin-like application: GET /headers echoes the request
// headers it received, /get the request, /status/NNN answers NNN.
type App struct {
	requests atomic.Int64
	ln       net.Listener
	srv      *http.Server
	done     chan struct{}
	once     sync.Once
}

// StartApp serves the application on addr (127.0.0.1:0 when empty) until
// Close or until ctx is done.
func StartApp(ctx context.Context, addr string) (*App, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("meshsim: app listener: %w", err)
	}
	a := &App{ln: ln, done: make(chan struct{})}
	a.srv = &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(a.done)
		_ = a.srv.Serve(ln)
	}()
	stop := context.AfterFunc(ctx, func() { _ = a.Close() })
	go func() {
		<-a.done
		stop()
	}()
	return a, nil
}

// Addr is the application's address (host:port).
func (a *App) Addr() string { return a.ln.Addr().String() }

// Close stops the application and waits for its server to end.
func (a *App) Close() error {
	var err error
	a.once.Do(func() {
		err = a.srv.Close()
		<-a.done
	})
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Requests is how many requests reached the application.
func (a *App) Requests() int64 { return a.requests.Load() }

func (a *App) serve(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	switch {
	case r.URL.Path == "/headers":
		writeJSON(w, map[string]any{"headers": echoHeaders(r)})
	case r.URL.Path == "/get":
		args := map[string]string{}
		for k, vs := range r.URL.Query() {
			args[k] = strings.Join(vs, ",")
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		writeJSON(w, map[string]any{"args": args, "headers": echoHeaders(r), "origin": host, "url": "http://" + r.Host + r.URL.RequestURI()})
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil || code < 100 || code > 599 {
			http.Error(w, "Invalid status code", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
	default:
		http.NotFound(w, r)
	}
}

// echoHeaders are the request's headers as httpbin shows them: canonical
// names, repeated values joined with ",", Host included.
func echoHeaders(r *http.Request) map[string]string {
	m := make(map[string]string, len(r.Header)+1)
	for k, vs := range r.Header {
		m[k] = strings.Join(vs, ",")
	}
	m["Host"] = r.Host
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
