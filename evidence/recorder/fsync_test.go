package recorder_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/recorder"
)

// flushLog is a real store that logs, in one order, when each Append
// returned (with its records), when each Sync began and returned, and
// when each Check was answered. failSyncs makes that many Syncs fail first.
type flushLog struct {
	evidence.Store
	sync evidence.Syncer

	mu        sync.Mutex
	events    []event
	failSyncs int
}

type event struct {
	kind string // "append", "sync-begin", "sync-end", "answer"
	ids  []string
	sync int // the Sync's number, for sync-begin and sync-end
}

func (l *flushLog) log(e event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *flushLog) Append(ctx context.Context, b []*evidence.Record) error {
	if err := l.Store.Append(ctx, b); err != nil {
		return err
	}
	ids := make([]string, len(b))
	for i, r := range b {
		ids[i] = r.ID
	}
	l.log(event{kind: "append", ids: ids})
	return nil
}

func (l *flushLog) Sync(ctx context.Context) error {
	l.mu.Lock()
	n := len(l.events)
	l.events = append(l.events, event{kind: "sync-begin", sync: n})
	fail := l.failSyncs > 0
	if fail {
		l.failSyncs--
	}
	l.mu.Unlock()
	if fail {
		return errors.New("fsync: input/output error")
	}
	err := l.sync.Sync(ctx)
	l.log(event{kind: "sync-end", sync: n})
	return err
}

// TestRecorderFSyncFlushesBeforeAnswering: in fsync durability every Check
// is answered only after a flush that began once its record's commit had
// returned, and that flush had returned: its record is on stable storage
// (the store's Sync, observed around the real SQLite store). A failing flush
// is retried, the Checks waiting. In sync durability nothing flushes.
func TestRecorderFSyncFlushesBeforeAnswering(t *testing.T) {
	for _, d := range []recorder.Durability{recorder.FSync, recorder.Sync} {
		t.Run(string(d), func(t *testing.T) {
			s, _ := openSQLite(t)
			l := &flushLog{Store: s, sync: s.(evidence.Syncer), failSyncs: 2}
			cfg := recorder.DefaultConfig()
			cfg.Durability = d
			r := newRecorder(t, cfg, l, "r1")
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 25 {
						id := "f" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
						if err := r.Record(context.Background(), record(id)); err != nil {
							t.Error(err)
							return
						}
						l.log(event{kind: "answer", ids: []string{id}})
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			checkFlushed(t, l.events, d == recorder.FSync)
			if got := count(t, s); got != 200 {
				t.Errorf("%d records stored for 200 Checks", got)
			}
			verify(t, s)
		})
	}
}

// checkFlushed checks events: with flushes, that each answered record's
// append came before the beginning of a flush that ended before its
// answer; without, that nothing flushed.
func checkFlushed(t *testing.T, events []event, flushes bool) {
	t.Helper()
	appended := map[string]int{} // id: the event of its append
	began := map[int]int{}       // a flush: the event of its beginning
	var ended []int              // the events at which flushes ended, with their beginnings
	var endedBegan []int
	answers := 0
	for at, e := range events {
		switch e.kind {
		case "append":
			for _, id := range e.ids {
				appended[id] = at
			}
		case "sync-begin":
			began[e.sync] = at
		case "sync-end":
			ended = append(ended, at)
			endedBegan = append(endedBegan, began[e.sync])
		case "answer":
			answers++
			id := e.ids[0]
			a, ok := appended[id]
			if !ok {
				t.Fatalf("%s answered before its record was committed", id)
			}
			if !flushes {
				continue
			}
			covered := false
			for i, end := range ended {
				if end < at && endedBegan[i] > a {
					covered = true
					break
				}
			}
			if !covered {
				t.Fatalf("%s answered (event %d) without a completed flush begun after its commit (event %d)", id, at, a)
			}
		}
	}
	if answers != 200 {
		t.Fatalf("%d answers logged", answers)
	}
	if !flushes && len(began) > 0 {
		t.Fatalf("sync durability flushed %d times", len(began))
	}
	if flushes && len(ended) == 0 {
		t.Fatal("no flush completed")
	}
}
