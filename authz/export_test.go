package authz

import "time"

// SetClock makes s read the time from now (tests of clocks gone wrong).
func SetClock(s *Server, now func() time.Time) { s.now = now }
