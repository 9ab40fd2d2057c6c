package recorder

import (
	"context"
	"runtime"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// RecordGivingUpLate is Record for a Check that stops waiting (its context
// ended with cause) only once the writer is done with its record's batch,
// the race Record's select can lose: the amendment must then be written
// on its own, after the record.
func RecordGivingUpLate(r *Recorder, rec *evidence.Record, cause error) error {
	p := &pending{rec: rec, ack: make(chan error, 1), letThrough: rec.Decision.Allowed || rec.Decision.DryRun}
	r.mu.RLock()
	err := r.enqueue(context.Background(), p)
	r.mu.RUnlock()
	if err != nil {
		return err
	}
	for p.amend.Load() != writerPassed {
		runtime.Gosched() // until the writer has written the batch
	}
	r.amend(p, cause)
	return nil
}

// SetClock makes the recorders' clock now and calls onGather when a group
// starts waiting for more records, until the test ends.
func SetClock(t interface{ Cleanup(func()) }, now func() time.Time, onGather func()) {
	clock, gathering = now, onGather
	t.Cleanup(func() { clock, gathering = time.Now, func() {} })
}
