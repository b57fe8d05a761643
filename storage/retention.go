package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Retention of retrieved mail (RFC 2449 §6.7, the POP3 EXPIRE capability).
// A message's clock starts when a client first downloads it whole; a message
// nobody has retrieved is never expired, whatever its age.

// Day is the unit of a retention period: EXPIRE is announced in days.
const Day = 24 * time.Hour

// Expired reports whether a message first retrieved at retrieved is due for
// removal under a retention of days at now: never when it was not retrieved
// or days < 0 (NEVER); otherwise once at least days whole days have passed,
// so 0 means "as soon as it was retrieved".
func Expired(retrieved time.Time, days int, now time.Time) bool {
	if retrieved.IsZero() || days < 0 {
		return false
	}
	return !now.Before(retrieved.Add(time.Duration(days) * Day))
}

// CommitSession applies the end of a POP3 session to mailbox in one
// fsynced Update: the messages in deleted are removed as by Delete, and the
// messages in retrieved that are still there and carry no retrieval time
// get at as their first retrieval (a later download does not restart the
// retention clock). Ids that no longer exist are ignored. It writes nothing
// when both lists are empty, so a session that only listed costs no fsync.
func (s *Store) CommitSession(mailbox string, deleted, retrieved []uint64, at time.Time) error {
	if len(deleted) == 0 && len(retrieved) == 0 {
		return nil
	}
	at = normTime(at)
	err := s.db.Update(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return nil
		}
		if _, err := deleteMessages(m, deleted); err != nil {
			return err
		}
		for _, id := range retrieved {
			key := u64(id)
			v := m.index.Get(key)
			if v == nil {
				continue // deleted above, or by an earlier session
			}
			info, err := decodeRecord(id, v)
			if err != nil {
				return err
			}
			if !info.Retrieved.IsZero() {
				continue
			}
			info.Retrieved = at
			if err := m.index.Put(key, encodeRecord(info)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: commit session %s: %w", mailbox, err)
	}
	return nil
}

// ExpireRetrieved removes up to limit messages of mailbox (limit <= 0: no limit)
// that Expired says are due under days at now, in one Update, and reports
// how many it removed and whether more are due. The caller holds the
// mailbox's lock (Lock), so no POP3 session sees a message vanish. Removal
// is Delete's: usage updated, UIDLs never reused.
func (s *Store) ExpireRetrieved(mailbox string, days int, now time.Time, limit int) (removed int, more bool, err error) {
	if days < 0 {
		return 0, false, nil
	}
	// Find candidates in a read transaction first: most sweeps find
	// nothing and then cost no write and no fsync.
	var due []uint64
	err = s.db.View(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return nil
		}
		due, more, err = dueIDs(m, days, now, limit)
		return err
	})
	if err != nil || len(due) == 0 {
		if err != nil {
			err = fmt.Errorf("storage: expire %s: %w", mailbox, err)
		}
		return 0, false, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return nil
		}
		removed, err = deleteMessages(m, due)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("storage: expire %s: %w", mailbox, err)
	}
	return removed, more, nil
}

// dueIDs scans the index (records only, never bodies) for messages due
// under days at now, at most limit of them (limit <= 0: all).
func dueIDs(m mailbox, days int, now time.Time, limit int) (due []uint64, more bool, err error) {
	c := m.index.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return nil, false, fmt.Errorf("corrupt index key %x", k)
		}
		// Only version 2 records carry a retrieval time; skip the rest
		// without decoding the UIDL.
		if len(v) == 0 || v[0] != recVersion2 {
			continue
		}
		id := binary.BigEndian.Uint64(k)
		info, err := decodeRecord(id, v)
		if err != nil {
			return nil, false, err
		}
		if !Expired(info.Retrieved, days, now) {
			continue
		}
		if limit > 0 && len(due) == limit {
			return due, true, nil
		}
		due = append(due, id)
	}
	return due, false, nil
}

// ListExpiring is List for a POP3 login: it first removes (as
// ExpireRetrieved, at most limit) the messages due under days at now, then
// returns the rest. The caller holds the mailbox's lock, so the removal
// happens before the session's snapshot, never during it. Messages over
// limit stay listed until the next login or sweep.
func (s *Store) ListExpiring(mailbox string, days int, now time.Time, limit int) (list []MessageInfo, expired int, err error) {
	list, err = s.List(mailbox)
	if err != nil || days < 0 {
		return list, 0, err
	}
	// The listing already holds every retrieval time: decide here and
	// write only when something is due.
	var due []uint64
	for _, m := range list {
		if Expired(m.Retrieved, days, now) && (limit <= 0 || len(due) < limit) {
			due = append(due, m.ID)
		}
	}
	if len(due) == 0 {
		return list, 0, nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return nil
		}
		expired, err = deleteMessages(m, due)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("storage: expire %s: %w", mailbox, err)
	}
	gone := make(map[uint64]bool, len(due))
	for _, id := range due {
		gone[id] = true
	}
	kept := list[:0]
	for _, m := range list {
		if !gone[m.ID] {
			kept = append(kept, m)
		}
	}
	return kept, expired, nil
}
