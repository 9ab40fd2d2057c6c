package decisionlog

import (
	"sync"

	"github.com/meshproof/meshproof/evidence"
)

// idSet remembers the last max record ids claimed, oldest forgotten first.
type idSet struct {
	mu   sync.Mutex
	pos  map[string]int // id -> its slot in ring
	ring []string
	next int
}

func newIDSet(max int) *idSet {
	return &idSet{pos: make(map[string]int), ring: make([]string, max)}
}

func (s *idSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pos[id]
	return ok
}

// claim remembers the ids of recs not remembered yet, and returns those
// records: of two uploads claiming one id at once, one gets it.
func (s *idSet) claim(recs []*evidence.Record) []*evidence.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := recs[:0]
	for _, r := range recs {
		if _, ok := s.pos[r.ID]; ok {
			continue
		}
		if old := s.ring[s.next]; old != "" && s.pos[old] == s.next {
			delete(s.pos, old)
		}
		s.ring[s.next] = r.ID
		s.pos[r.ID] = s.next
		s.next = (s.next + 1) % len(s.ring)
		out = append(out, r)
	}
	return out
}

// release forgets ids whose records were not queued after all.
func (s *idSet) release(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.pos, id)
	}
}
