package authz

import "golang.org/x/sync/semaphore"

// A CheckRequest costs far more memory decoded than on the wire: an empty
// header_map entry is 2 bytes sent and about 100 decoded, an empty struct
// value in metadata as bad, and the input document and a parsed body add to
// that; a few such requests at once took gigabytes (docs/performance.md).
// checkBudget bounds the memory of the Checks in flight by reserving, from a
// budget, checkBytesPerByte times each request's size, from before it is
// decoded until its Check has returned: the Check handler
// (checkServiceDesc) reserves inside the codec, where the size on the wire
// is known (lenientCheck.reserve). A Check waits (first come, first served)
// for room, or until its caller gives up.
type checkBudget struct {
	sem   *semaphore.Weighted
	worst int64 // what the largest request may hold
}

const (
	// checkBytesPerByte is what one byte of request may cost while its
	// Check runs, above the 51 measured for header_map entries.
	checkBytesPerByte = 64
	// checkBaseBytes is what any Check holds: its input document, record,
	// evaluation.
	checkBaseBytes = 64 << 10
)

// newCheckBudget makes a budget of size bytes for requests of up to maxMsg
// bytes. A budget smaller than the largest request's share is that share:
// such requests are then decoded one at a time.
func newCheckBudget(size int64, maxMsg int) *checkBudget {
	worst := checkBaseBytes + checkBytesPerByte*int64(maxMsg)
	size = max(size, worst)
	return &checkBudget{sem: semaphore.NewWeighted(size), worst: worst}
}

// share is the share of a request of n bytes on the wire.
func (b *checkBudget) share(n int) int64 {
	return min(b.worst, checkBaseBytes+checkBytesPerByte*int64(n))
}
