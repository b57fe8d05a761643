package storage

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Last use per credential (a mailbox's main password and each of its
// device passwords) and the client networks each credential logged in from,
// behind `mailpost mailbox stats` and the new-login notices.
//
// On disk, two buckets, both created on first use (see FlushLogins), so
// older files need no upgrade step and read-only transactions simply find
// nothing:
//
//	logins/        mailbox -> login record of the main password (the format
//	               of the first release, when the main password was the only
//	               one; older builds keep reading it unchanged)
//	credentials/
//	  <mailbox>/   credential -> device's last login + remembered networks;
//	               credential is the device name, or mainCredential
//
// Older builds never open credentials/, so a downgrade loses nothing but
// the devices' records.

var (
	bucketLogins      = []byte("logins")
	bucketCredentials = []byte("credentials")
)

// mainCredential keys the main password in credentials/<mailbox>/. Device
// names start with a letter or digit (config), so it cannot collide; bbolt
// refuses the empty key "" that stands for it in the API.
const mainCredential = "(main)"

// MaxSeenNetworks is how many client networks are remembered per
// credential; the least recently used one is forgotten first.
const MaxSeenNetworks = 32

// maxNetworkLen bounds one remembered network's text ("2001:db8::/64" and
// the like are far shorter); longer ones are not remembered.
const maxNetworkLen = 64

// loginFlushDelay is how long login records wait in memory before they
// are written together. A login is on the POP3 hot path (clients poll every
// few minutes, ~1,500 sessions/s on 2 cores); a write per login would add
// an fsync to each. Losing the last second of "last login" in a crash is
// harmless: the mail itself is never in this buffer.
const loginFlushDelay = time.Second

// Login is a successful login: the last one with a credential, or into a
// mailbox.
type Login struct {
	Time   time.Time `json:"time"`
	IP     string    `json:"ip"`
	Proto  string    `json:"proto"`            // "pop3", "submission", ...
	Device string    `json:"device,omitempty"` // "" = the main password
}

// LoginEvent is one successful login, as RecordLogin takes it.
type LoginEvent struct {
	Mailbox string
	Login   // Device names the credential
	// Network is the client's network as the caller groups addresses
	// (e.g. "198.51.100.0/24"); it joins the credential's remembered
	// networks. "" remembers nothing.
	Network string
	// CheckNetwork asks RecordLogin whether Network was new for the
	// credential. It costs a read transaction when memory does not know.
	CheckNetwork bool
}

// NetworkSeen answers CheckNetwork.
type NetworkSeen struct {
	New   bool // Network was not among the credential's remembered networks
	First bool // the credential had no network remembered at all
}

type credKey struct{ mailbox, device string }

// pendingCred is what a flush will write for one credential.
type pendingCred struct {
	last Login
	nets []string // to become the most recent remembered, oldest first
}

func (p *pendingCred) hasNet(n string) bool { return p != nil && slices.Contains(p.nets, n) }

// logins is the in-memory side of RecordLogin.
type logins struct {
	mu      sync.Mutex
	pending map[credKey]*pendingCred
	// flushing is the batch a flush is writing: still visible to
	// CheckNetwork until it is committed, so a network is never "new"
	// twice.
	flushing map[credKey]*pendingCred
	timer    *time.Timer // set while a flush is scheduled
	closed   bool

	flushMu sync.Mutex // one flush at a time
}

// RecordLogin notes a successful login. It only updates memory; the
// records are written in one transaction about a second later (and on
// Close), so a login costs a map update, not a disk write. An older time
// than the one already known is ignored.
//
// With ev.CheckNetwork it also reports whether ev.Network is new for the
// credential, deciding under one lock so that two logins from the same new
// network cannot both see it as new. Bounded: MaxSeenNetworks networks per
// credential; which credentials exist is the caller's to bound (the server
// records only configured ones).
func (s *Store) RecordLogin(ev LoginEvent) (NetworkSeen, error) {
	var seen NetworkSeen
	if ev.Mailbox == "" {
		return seen, nil
	}
	if len(ev.Network) > maxNetworkLen {
		ev.Network = ""
	}
	l := &s.logins
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return seen, nil
	}
	key := credKey{ev.Mailbox, ev.Device}
	if ev.CheckNetwork && ev.Network != "" {
		var err error
		if seen, err = s.networkSeen(key, ev.Network); err != nil {
			return seen, err
		}
	}
	if l.pending == nil {
		l.pending = make(map[credKey]*pendingCred)
	}
	p := l.pending[key]
	if p == nil {
		p = &pendingCred{}
		l.pending[key] = p
	}
	if !p.last.Time.After(ev.Time) {
		p.last = ev.Login
		p.last.Time = normTime(ev.Time)
	}
	if ev.Network != "" {
		p.nets = touchNetwork(p.nets, ev.Network)
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(loginFlushDelay, func() { s.FlushLogins() })
	}
	return seen, nil
}

// networkSeen looks net up in memory, then in the file. l.mu is held, so
// no flush can commit between the two looks without clearing flushing
// under the same lock afterwards.
func (s *Store) networkSeen(key credKey, net string) (NetworkSeen, error) {
	l := &s.logins
	p, f := l.pending[key], l.flushing[key]
	if p.hasNet(net) || f.hasNet(net) {
		return NetworkSeen{}, nil
	}
	remembered := (p != nil && len(p.nets) > 0) || (f != nil && len(f.nets) > 0)
	var rec credRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		rec = readCred(tx, key)
		return nil
	})
	if err != nil {
		return NetworkSeen{}, fmt.Errorf("storage: networks of %s: %w", key.mailbox, err)
	}
	if slices.Contains(rec.nets, net) {
		return NetworkSeen{}, nil
	}
	return NetworkSeen{New: true, First: !remembered && len(rec.nets) == 0}, nil
}

// touchNetwork makes net the most recent of nets, forgetting the least
// recent beyond MaxSeenNetworks.
func touchNetwork(nets []string, net string) []string {
	nets = slices.DeleteFunc(nets, func(n string) bool { return n == net })
	nets = append(nets, net)
	if over := len(nets) - MaxSeenNetworks; over > 0 {
		nets = slices.Delete(nets, 0, over)
	}
	return nets
}

// FlushLogins writes the login records held in memory now. Close calls it.
func (s *Store) FlushLogins() error {
	l := &s.logins
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	batch := l.pending
	l.pending = nil
	l.flushing = batch
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for key, p := range batch {
			if err := writeCred(tx, key, p); err != nil {
				return fmt.Errorf("%s: %w", key.mailbox, err)
			}
		}
		return nil
	})
	l.mu.Lock()
	l.flushing = nil
	if err != nil && !l.closed {
		// Keep what could not be written for the next flush, under
		// anything newer that arrived meanwhile.
		if l.pending == nil {
			l.pending = make(map[credKey]*pendingCred)
		}
		for key, old := range batch {
			if cur := l.pending[key]; cur != nil {
				if cur.last.Time.Before(old.last.Time) {
					cur.last = old.last
				}
				for _, n := range cur.nets {
					old.nets = touchNetwork(old.nets, n)
				}
				cur.nets = old.nets
			} else {
				l.pending[key] = old
			}
		}
	}
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("storage: record logins: %w", err)
	}
	return nil
}

// writeCred merges one credential's pending record into the file.
func writeCred(tx *bolt.Tx, key credKey, p *pendingCred) error {
	if key.device == "" && !p.last.Time.IsZero() {
		b, err := tx.CreateBucketIfNotExists(bucketLogins)
		if err != nil {
			return err
		}
		if old, ok := decodeLogin(b.Get([]byte(key.mailbox))); !ok || !old.Time.After(p.last.Time) {
			if err := b.Put([]byte(key.mailbox), encodeLogin(p.last)); err != nil {
				return err
			}
		}
	}
	if key.device == "" && len(p.nets) == 0 {
		return nil // nothing for credentials/
	}
	rec := readCred(tx, key)
	if key.device != "" && (rec.last == nil || !rec.last.Time.After(p.last.Time)) {
		last := p.last
		rec.last = &last
	}
	for _, n := range p.nets {
		rec.nets = touchNetwork(rec.nets, n)
	}
	cb, err := tx.CreateBucketIfNotExists(bucketCredentials)
	if err != nil {
		return err
	}
	mb, err := cb.CreateBucketIfNotExists([]byte(key.mailbox))
	if err != nil {
		return err
	}
	return mb.Put([]byte(credName(key.device)), encodeCred(rec))
}

func credName(device string) string {
	if device == "" {
		return mainCredential
	}
	return device
}

// readCred returns a credential's stored record; a missing or unreadable
// one reads as empty (it only ever costs a repeated notice).
func readCred(tx *bolt.Tx, key credKey) credRecord {
	cb := tx.Bucket(bucketCredentials)
	if cb == nil {
		return credRecord{}
	}
	mb := cb.Bucket([]byte(key.mailbox))
	if mb == nil {
		return credRecord{}
	}
	rec, _ := decodeCred(mb.Get([]byte(credName(key.device))))
	return rec
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

// credRecord is one credential's entry in credentials/<mailbox>/.
type credRecord struct {
	last *Login   // devices only; the main password's is in logins/
	nets []string // least recently used first
}

const credRecordVersion = 1

// credential record: version(1) uvarint(len(login)) login
// count(1) { len(1) network }...
func encodeCred(r credRecord) []byte {
	var login []byte
	if r.last != nil {
		login = encodeLogin(*r.last)
	}
	b := []byte{credRecordVersion}
	b = binary.AppendUvarint(b, uint64(len(login)))
	b = append(b, login...)
	b = append(b, byte(len(r.nets)))
	for _, n := range r.nets {
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	return b
}

func decodeCred(v []byte) (credRecord, bool) {
	var r credRecord
	if len(v) < 1 || v[0] != credRecordVersion {
		return r, false
	}
	v = v[1:]
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)-k) {
		return r, false
	}
	v = v[k:]
	if n > 0 {
		l, ok := decodeLogin(v[:n])
		if !ok {
			return credRecord{}, false
		}
		r.last = &l
	}
	v = v[n:]
	if len(v) < 1 {
		return credRecord{}, false
	}
	count := int(v[0])
	v = v[1:]
	for range count {
		if len(v) < 1 || len(v) < 1+int(v[0]) {
			return credRecord{}, false
		}
		r.nets = append(r.nets, string(v[1:1+int(v[0])]))
		v = v[1+int(v[0]):]
	}
	if len(r.nets) > MaxSeenNetworks {
		r.nets = r.nets[len(r.nets)-MaxSeenNetworks:]
	}
	return r, true
}

// MailboxStats is one mailbox's usage and last logins.
type MailboxStats struct {
	Mailbox  string `json:"mailbox"`
	Messages int    `json:"messages"`
	Bytes    int64  `json:"bytes"`
	// LastLogin is the newest login with any credential (its Device
	// says which); nil: never since logins were recorded.
	LastLogin *Login `json:"last_login,omitempty"`
	// MainLogin is the last login with the main password.
	MainLogin *Login `json:"main_login,omitempty"`
	// Devices holds each device's last login, by device name, including
	// devices the configuration no longer has.
	Devices map[string]Login `json:"devices,omitempty"`
}

// note keeps l as the credential's last login if it is newer.
func (m *MailboxStats) note(l Login) {
	if l.Device == "" {
		if m.MainLogin == nil || l.Time.After(m.MainLogin.Time) {
			m.MainLogin = &l
		}
	} else if old, ok := m.Devices[l.Device]; !ok || l.Time.After(old.Time) {
		if m.Devices == nil {
			m.Devices = map[string]Login{}
		}
		m.Devices[l.Device] = l
	}
	if m.LastLogin == nil || l.Time.After(m.LastLogin.Time) {
		m.LastLogin = &l
	}
}

// MailboxStats returns every mailbox the store knows (one that holds or
// held mail, or has logged in), sorted by name, with its running totals
// (O(1) each; no message is read) and last logins per credential,
// including logins not yet flushed.
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
			err := lb.ForEach(func(k, v []byte) error {
				if l, ok := decodeLogin(v); ok {
					get(string(k)).note(l)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		cb := tx.Bucket(bucketCredentials)
		if cb == nil {
			return nil
		}
		return cb.ForEachBucket(func(mk []byte) error {
			return cb.Bucket(mk).ForEach(func(k, v []byte) error {
				if string(k) == mainCredential {
					return nil // its login is in logins/
				}
				if r, ok := decodeCred(v); ok && r.last != nil {
					l := *r.last
					l.Device = string(k)
					get(string(mk)).note(l)
				}
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: mailbox stats: %w", err)
	}
	s.logins.mu.Lock()
	for _, batch := range []map[credKey]*pendingCred{s.logins.flushing, s.logins.pending} {
		for key, p := range batch {
			if !p.last.Time.IsZero() {
				l := p.last
				l.Device = key.device
				get(key.mailbox).note(l)
			}
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
