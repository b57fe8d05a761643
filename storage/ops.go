package storage

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Operations: the consistent hot copy behind `mailpost backup`, and the
// per-mailbox last login behind `mailpost mailbox stats`.

// bucketLogins holds mailbox -> login record. It is created on first use
// (see flushLogins), so older files need no upgrade step and read-only
// transactions simply find nothing.
var bucketLogins = []byte("logins")

// loginFlushDelay is how long login records wait in memory before they
// are written together. A login is on the POP3 hot path (clients poll every
// few minutes, ~1,500 sessions/s on 2 cores); a write per login would add
// an fsync to each. Losing the last second of "last login" in a crash is
// harmless: the mail itself is never in this buffer.
const loginFlushDelay = time.Second

// Backup writes a consistent copy of the whole database to w while the
// store stays in use: bbolt's read transaction sees one committed state and
// writers carry on beside it (they never wait for a reader). The copy is a
// complete bbolt file; restoring is replacing mailpost.db with it while
// mailpost is stopped. It returns the bytes written.
func (s *Store) Backup(w io.Writer) (int64, error) {
	return s.BackupSized(w, nil)
}

// BackupSized is Backup, calling size (when non-nil) with the exact length
// of the copy before the first byte is written, so a server can announce
// it (Content-Length) and a client can tell a cut-off copy from a whole one.
func (s *Store) BackupSized(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("storage: backup %s: %w", s.path, err)
	}
	return n, nil
}

// Login is the last successful login into a mailbox.
type Login struct {
	Time  time.Time `json:"time"`
	IP    string    `json:"ip"`
	Proto string    `json:"proto"` // "pop3", "submission", ...
}

// logins is the in-memory side of RecordLogin.
type logins struct {
	mu      sync.Mutex
	pending map[string]Login
	timer   *time.Timer // set while a flush is scheduled
	closed  bool
}

// RecordLogin notes a successful login. It only updates memory; the
// records are written in one transaction about a second later (and on
// Close), so a login costs a map update, not a disk write. An older time
// than the one already known is ignored.
func (s *Store) RecordLogin(mailbox, ip, proto string, t time.Time) {
	if mailbox == "" {
		return
	}
	l := &s.logins
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if old, ok := l.pending[mailbox]; ok && old.Time.After(t) {
		return
	}
	if l.pending == nil {
		l.pending = make(map[string]Login)
	}
	l.pending[mailbox] = Login{Time: normTime(t), IP: ip, Proto: proto}
	if l.timer == nil {
		l.timer = time.AfterFunc(loginFlushDelay, func() { s.FlushLogins() })
	}
}

// FlushLogins writes the login records held in memory now. Close calls it.
func (s *Store) FlushLogins() error {
	l := &s.logins
	l.mu.Lock()
	batch := l.pending
	l.pending = nil
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketLogins)
		if err != nil {
			return err
		}
		for mb, rec := range batch {
			if old, ok := decodeLogin(b.Get([]byte(mb))); ok && old.Time.After(rec.Time) {
				continue
			}
			if err := b.Put([]byte(mb), encodeLogin(rec)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: record logins: %w", err)
	}
	return nil
}

// closeLogins flushes what is pending and refuses later records; the
// timer's own flush may still be running and finds nothing to do.
func (s *Store) closeLogins() error {
	err := s.FlushLogins()
	s.logins.mu.Lock()
	s.logins.closed = true
	s.logins.mu.Unlock()
	return err
}

// login record: time(12) len(proto)(1) proto ip
func encodeLogin(l Login) []byte {
	p := l.Proto
	if len(p) > 255 {
		p = p[:255]
	}
	b := make([]byte, 13+len(p)+len(l.IP))
	putTime(b[0:12], l.Time)
	b[12] = byte(len(p))
	copy(b[13:], p)
	copy(b[13+len(p):], l.IP)
	return b
}

func decodeLogin(v []byte) (Login, bool) {
	if len(v) < 13 || len(v) < 13+int(v[12]) {
		return Login{}, false
	}
	n := int(v[12])
	return Login{Time: getTime(v[0:12]), Proto: string(v[13 : 13+n]), IP: string(v[13+n:])}, true
}

// MailboxStats is one mailbox's usage and last login.
type MailboxStats struct {
	Mailbox   string `json:"mailbox"`
	Messages  int    `json:"messages"`
	Bytes     int64  `json:"bytes"`
	LastLogin *Login `json:"last_login,omitempty"` // nil: never since logins were recorded
}

// MailboxStats returns every mailbox the store knows (one that holds or
// held mail, or has logged in), sorted by name, with its running totals
// (O(1) each; no message is read) and last login, including logins not
// yet flushed.
func (s *Store) MailboxStats() ([]MailboxStats, error) {
	byName := map[string]*MailboxStats{}
	get := func(name string) *MailboxStats {
		m := byName[name]
		if m == nil {
			m = &MailboxStats{Mailbox: name}
			byName[name] = m
		}
		return m
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		mbs := tx.Bucket(bucketMailboxes)
		err := mbs.ForEachBucket(func(k []byte) error {
			c, b := getUsage(mbs.Bucket(k))
			m := get(string(k))
			m.Messages, m.Bytes = int(c), int64(b)
			return nil
		})
		if err != nil {
			return err
		}
		if lb := tx.Bucket(bucketLogins); lb != nil {
			return lb.ForEach(func(k, v []byte) error {
				if l, ok := decodeLogin(v); ok {
					get(string(k)).LastLogin = &l
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: mailbox stats: %w", err)
	}
	s.logins.mu.Lock()
	for name, l := range s.logins.pending {
		m := get(name)
		if m.LastLogin == nil || l.Time.After(m.LastLogin.Time) {
			l := l
			m.LastLogin = &l
		}
	}
	s.logins.mu.Unlock()
	out := make([]MailboxStats, 0, len(byName))
	for _, m := range byName {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mailbox < out[j].Mailbox })
	return out, nil
}
