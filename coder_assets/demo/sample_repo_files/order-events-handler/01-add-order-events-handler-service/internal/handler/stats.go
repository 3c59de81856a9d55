package handler

import (
	"sync"
	"time"
)

type Stats struct {
	mu       sync.Mutex
	Accepted int
	Rejected int
	LastSeen time.Time
}

func (s *Stats) Record(accepted bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if accepted {
		s.Accepted++
	} else {
		s.Rejected++
	}
	s.LastSeen = at
}
