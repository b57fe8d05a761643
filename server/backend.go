package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"mailpost/config"
	"mailpost/pop3"
	"mailpost/storage"
)

// pop3Backend is the policy behind POP3 logins: who may log in, with which
// password, and which maildrop they get.
type pop3Backend struct{ s *Server }

var (
	_ pop3.Backend           = pop3Backend{}
	_ pop3.Revalidator       = (*maildrop)(nil)
	_ pop3.Expirer           = (*maildrop)(nil)
	_ pop3.RetrievalRecorder = (*maildrop)(nil)
)

func (b pop3Backend) Login(ctx context.Context, ci pop3.ConnInfo, username, password string) (pop3.Maildrop, error) {
	s := b.s
	ip := ci.Remote.Addr()
	cred, err := s.checkPassword(ctx, ip, config.ProtoPOP3, username, password)
	switch {
	case errors.Is(err, errBadCredentials):
		return nil, pop3.ErrAuthFailed
	case errors.Is(err, errThrottled):
		return nil, throttledAs(err, pop3.ErrLoginDelay, pop3.ErrNetworkThrottled)
	case errors.Is(err, errScope):
		s.log.Info("pop3 login refused", "user", cred.mb.Address, "device", cred.deviceName(), "remote_ip", ip.String(), "why", err.Error())
		return nil, pop3.ErrAccessDisabled
	case err != nil:
		return nil, err
	}
	addr := cred.mb.Address
	unlock, err := s.store.Lock(addr)
	if errors.Is(err, storage.ErrLocked) {
		return nil, pop3.ErrInUse
	} else if err != nil {
		return nil, err
	}
	list, err := s.listForLogin(cred.mb)
	if err != nil {
		unlock()
		return nil, err
	}
	md := &maildrop{srv: s, store: s.store, mailbox: addr, list: list, unlock: unlock, retention: cred.mb.RetentionDays,
		device: cred.deviceName(), loginHash: cred.hash(), remote: ip, infos: make([]pop3.MessageInfo, len(list))}
	for i, m := range list {
		md.infos[i] = pop3.MessageInfo{Size: m.Size, UIDL: m.UIDL}
	}
	// After the listing: a notice this login triggers is not part of its
	// session (RFC 1939 §3: the maildrop is the one seen at login).
	s.loggedIn(cred, ip, config.ProtoPOP3)
	return md, nil
}

// loginExpireLimit bounds the messages one login removes for retention, so
// a mailbox with a huge backlog cannot stall a login in one big
// transaction; the rest stay listed and go at the next login or sweep.
const loginExpireLimit = 5000

// listForLogin takes the POP3 snapshot of a mailbox whose lock the caller
// holds. Messages due under its retention (RFC 2449 §6.7) are removed first,
// so a client never sees one vanish in the middle of a session; with
// sort_order = "descending" message 1 is the newest (UIDLs are the
// messages' own, whatever the order).
func (s *Server) listForLogin(mb *config.Mailbox) ([]storage.MessageInfo, error) {
	list, expired, err := s.store.ListExpiring(mb.Address, mb.RetentionDays, s.now(), loginExpireLimit)
	if err != nil {
		return nil, err
	}
	if expired > 0 {
		s.prom.expired.Add(uint64(expired))
		s.log.Info("retention: expired retrieved messages at login", "user", mb.Address, "expired", expired, "retention_days", mb.RetentionDays)
	}
	if mb.SortDescending {
		slices.Reverse(list)
	}
	return list, nil
}

// maildrop is one locked POP3 snapshot of a mailbox.
type maildrop struct {
	srv       *Server
	device    string     // the device that logged in, "" for the main password
	loginHash string     // the password hash the login was checked against
	remote    netip.Addr // the client, for revalidating a device's networks
	store     *storage.Store
	mailbox   string
	list      []storage.MessageInfo // taken at login; index = message number - 1
	infos     []pop3.MessageInfo
	unlock    func()
	retention int    // days, config.Mailbox.RetentionDays at login (-1 = never)
	got       []bool // RETR sent message i in full, not yet written; nil until the first
}

func (m *maildrop) Messages() []pop3.MessageInfo { return m.infos }

// Device names the device that logged in ("" for the main password), for
// the POP3 session's log lines.
func (m *maildrop) Device() string { return m.device }

func (m *maildrop) Open(i int) (io.ReadCloser, error) {
	return m.store.OpenMessage(m.mailbox, m.list[i].ID)
}

// Expire is the mailbox's EXPIRE (RFC 2449 §6.7) for CAPA after login.
func (m *maildrop) Expire() (days int, ok bool) { return m.retention, m.retention >= 0 }

// Retrieved notes a RETR in memory only: RETR is the hot path, and the
// notes go to disk together at Commit or Close.
// One flag per message keeps a client that repeats RETR from growing it.
func (m *maildrop) Retrieved(i int) {
	if m.got == nil {
		m.got = make([]bool, len(m.list))
	}
	m.got[i] = true
}

// gotIDs lists the messages retrieved and not yet written.
func (m *maildrop) gotIDs() []uint64 {
	var ids []uint64
	for i, got := range m.got {
		if got {
			ids = append(ids, m.list[i].ID)
		}
	}
	return ids
}

// Commit applies QUIT: deletions and first-retrieval times in one
// transaction.
func (m *maildrop) Commit(deleted []int) error {
	ids := make([]uint64, len(deleted))
	for i, d := range deleted {
		ids[i] = m.list[d].ID
	}
	if err := m.store.CommitSession(m.mailbox, ids, m.gotIDs(), m.srv.now()); err != nil {
		return err
	}
	m.got = nil
	return nil
}

// Close writes retrievals not yet written, then releases the lock. A
// session that ended without QUIT (or whose QUIT deleted nothing) still
// downloaded what RETR sent, so the retention clock starts; a client that
// never says QUIT would otherwise keep its mail for ever. Under retention 0
// the removal is QUIT's implicit DELE (RFC 2449 §6.7), which a dropped
// session never reaches (RFC 1939 §6); recording its retrievals would let
// the next login remove mail the client may not have, so nothing is written.
func (m *maildrop) Close() error {
	defer m.unlock()
	if m.got == nil || m.retention == 0 {
		return nil
	}
	if err := m.store.CommitSession(m.mailbox, nil, m.gotIDs(), m.srv.now()); err != nil {
		return fmt.Errorf("recording retrieved messages: %w", err)
	}
	m.got = nil
	return nil
}

// ErrNoSuchRecipient means an address names no mailbox or alias.
var ErrNoSuchRecipient = errors.New("no such mailbox or alias")

// Deliver puts one message into the mailbox that addr (an address or alias)
// names in cfg, within its quota.
func Deliver(cfg *config.Config, store *storage.Store, addr string, r io.Reader) (storage.MessageInfo, string, error) {
	mb := cfg.Mailbox(addr)
	if mb == nil {
		return storage.MessageInfo{}, "", fmt.Errorf("%s: %w", addr, ErrNoSuchRecipient)
	}
	info, err := store.Deliver(mb.Address, r, storage.DeliverOptions{Quota: mb.Quota})
	return info, mb.Address, err
}
