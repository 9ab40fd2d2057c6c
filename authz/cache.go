package authz

import "sync"

// bounded is a concurrent map that holds at most max entries: when full it
// starts over. That is cheaper than LRU bookkeeping on every hit, and the
// working set of a mesh (its identities, peers, paths) refills it at once.
// Values must be immutable: they are shared by concurrent Checks.
type bounded[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]V
	max int
}

func newBounded[K comparable, V any](max int) *bounded[K, V] {
	return &bounded[K, V]{m: make(map[K]V), max: max}
}

// get returns the value for k, making it with mk on a miss.
func (b *bounded[K, V]) get(k K, mk func(K) V) V {
	b.mu.RLock()
	v, ok := b.m[k]
	b.mu.RUnlock()
	if ok {
		return v
	}
	v = mk(k)
	b.mu.Lock()
	if prev, ok := b.m[k]; ok {
		v = prev // keep one value per key
	} else {
		if len(b.m) >= b.max {
			clear(b.m)
		}
		b.m[k] = v
	}
	b.mu.Unlock()
	return v
}
