package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// browser starts a headless Chromium with a fresh profile, or skips when
// there is none (fails when MESHPROOF_REQUIRE_CHROMIUM=1).
func browser(t *testing.T) context.Context {
	t.Helper()
	const path = "/usr/bin/chromium"
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("%s: %v; install it with test/chromium (apt-get install chromium)", path, err)
		if os.Getenv("MESHPROOF_REQUIRE_CHROMIUM") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	// The machine's network is closed: every background connection Chromium
	// would try is turned off, or it stalls on them.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1400, 1000),
	)
	// The whole browser session has 5 minutes: a backstop for a browser
	// that hangs, not a measure of speed (on a 2-core machine at load 23,
	// 30 seconds were not enough for a page that was right).
	parent, cancelTimeout := context.WithTimeout(context.Background(), 5*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelCtx(); cancelAlloc(); cancelTimeout() })
	do(t, ctx) // starts the browser
	return ctx
}

// console collects the page's console messages and uncaught exceptions.
func console(t *testing.T, ctx context.Context) func() []chromedp.ConsoleMessage {
	var mu sync.Mutex
	var got []chromedp.ConsoleMessage
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
		}
	}()
	return func() []chromedp.ConsoleMessage { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
}

// requestURLs collects the URL of every request the page sends.
func requestURLs(t *testing.T, ctx context.Context) func() []string {
	var mu sync.Mutex
	var got []string
	events := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, ev.Request.URL)
			mu.Unlock()
		}
	}()
	return func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := run(t, ctx, chromedp.FullScreenshot(100))
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	dir := os.Getenv("MESHPROOF_SCREENSHOTS") // a directory to keep them in
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// poll waits up to 2 minutes (a backstop, see browser) for a
// JavaScript condition.
func poll(t *testing.T, ctx context.Context, cond string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(2*time.Minute))); err != nil {
		// Say what the page shows, to tell a slow page from a wrong one.
		state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash + ' | errors: ' +
			[...document.querySelectorAll('.error:not([hidden])')].map(e => e.textContent).join(' / ')`))
		t.Fatalf("waiting for %s: %v (page at %s)", cond, err, state)
	}
}
