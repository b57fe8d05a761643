package storage

import (
	"fmt"
	"sync"
)

// Lock takes the exclusive maildrop lock that RFC 1939 §3 requires from
// the moment a POP3 session enters TRANSACTION state. It lives in memory:
// only this process serves the database (bbolt's file lock sees to that).
// It returns ErrLocked if another session holds it. unlock may be called
// any number of times.
func (s *Store) Lock(mailbox string) (unlock func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, held := s.locks[mailbox]; held {
		return nil, fmt.Errorf("storage: lock %s: %w", mailbox, ErrLocked)
	}
	s.locks[mailbox] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.locks, mailbox)
			s.mu.Unlock()
		})
	}, nil
}
