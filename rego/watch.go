package rego

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce gathers the burst of events one save produces (editors write a
// temp file, rename it, chmod it) into one reload.
const debounce = 150 * time.Millisecond

// maxPolicySettle bounds --policy-settle: a policy change waits no longer.
const maxPolicySettle = time.Minute

// watch reloads the local sources when any of their files changes. Files are
// watched through their directory, because editors and kubectl's ConfigMap
// updates replace files (rename, symlink swap) rather than write them.
func (e *Engine) watch(sources []string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("policy watch: %w", err)
	}
	var m matcher
	for _, src := range sources {
		if strings.HasPrefix(src, BuiltinPrefix) {
			continue
		}
		info, err := os.Stat(src)
		if err == nil {
			err = addWatch(w, src)
		}
		if err != nil {
			w.Close()
			return fmt.Errorf("policy watch %s: %w", src, err)
		}
		if info.IsDir() {
			m.dirs = append(m.dirs, filepath.Clean(src))
		} else {
			m.files = append(m.files, filepath.Clean(src))
		}
	}
	m.watched = func(path string) bool { return slices.Contains(w.WatchList(), path) }
	ctx, cancel := context.WithCancel(context.Background())
	e.stopWatch = cancel
	e.watchDone = make(chan struct{})
	go e.watchLoop(ctx, w, m)
	return nil
}

// matcher tells the events that concern the policy from those of other files
// sharing a directory with it (the evidence database, say).
type matcher struct {
	files []string
	dirs  []string
	// watched reports whether a directory is being watched (so its removal
	// matters).
	watched func(path string) bool
}

func (m matcher) relevant(name string) bool {
	name = filepath.Clean(name)
	base := filepath.Base(name)
	for _, f := range m.files {
		// ..data is the symlink Kubernetes swaps on a ConfigMap update.
		if name == f || (base == "..data" && filepath.Dir(name) == filepath.Dir(f)) {
			return true
		}
	}
	for _, d := range m.dirs {
		if name == d || strings.HasPrefix(name, d+string(filepath.Separator)) {
			return base == "..data" || !strings.HasPrefix(base, ".") && m.isPolicyFile(base, name)
		}
	}
	return false
}

// isPolicyFile: a file the loader reads, or a directory (that may hold some).
// A removed entry counts when it was a watched directory; the churn of other
// files (a database's journal) does not.
func (m matcher) isPolicyFile(base, path string) bool {
	for _, ext := range []string{".rego", ".json", ".yaml", ".yml", ".tar.gz"} {
		if strings.HasSuffix(base, ext) {
			return true
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		return m.watched != nil && m.watched(path)
	}
	return info.IsDir()
}

func addWatch(w *fsnotify.Watcher, src string) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return w.Add(filepath.Dir(src))
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != src && strings.HasPrefix(d.Name(), ".") && !strings.HasPrefix(d.Name(), "..") {
				return filepath.SkipDir
			}
			return w.Add(path)
		}
		return nil
	})
}

func (e *Engine) watchLoop(ctx context.Context, w *fsnotify.Watcher, m matcher) {
	defer close(e.watchDone)
	defer w.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// Files written in place since the last reload: a writer may pause
	// halfway through (a valid half of a policy once denied thousands of
	// requests), so the reload waits until they have been unchanged for
	// PolicySettle. A file replaced whole (created, renamed into place,
	// removed) is complete: it no longer waits.
	written := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !m.relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				// A new directory inside a watched tree: watch it too.
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
					_ = addWatch(w, ev.Name)
				}
			}
			name := filepath.Clean(ev.Name)
			switch {
			case ev.Has(fsnotify.Write) && e.cfg.PolicySettle > 0:
				if !written[name] {
					e.log.Debug().Str("file", name).Dur("settle", e.cfg.PolicySettle).
						Msg("policy file written in place; reloading once it has been unchanged for the settle time")
				}
				written[name] = true
			case ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove):
				delete(written, name)
			}
			wait := debounce
			if len(written) > 0 {
				wait = max(e.cfg.PolicySettle, debounce)
			}
			timer.Reset(wait)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			e.log.Warn().Err(err).Msg("policy watch")
		case <-timer.C:
			clear(written)
			_ = e.Reload(ctx)
		}
	}
}
