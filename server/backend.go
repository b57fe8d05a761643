package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"mailpost/config"
	"mailpost/pop3"
	"mailpost/storage"
)

// pop3Backend is the policy behind POP3 logins: who may log in, with which
// password, and which maildrop they get.
type pop3Backend struct{ s *Server }

var (
	_ pop3.Backend     = pop3Backend{}
	_ pop3.Revalidator = (*maildrop)(nil)
)

func (b pop3Backend) Login(ctx context.Context, ci pop3.ConnInfo, username, password string) (pop3.Maildrop, error) {
	s := b.s
	ip := ci.Remote.Addr()
	cred, err := s.checkPassword(ctx, ip, config.ProtoPOP3, username, password)
	switch {
	case errors.Is(err, errBadCredentials):
		return nil, pop3.ErrAuthFailed
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
	list, err := s.store.List(addr)
	if err != nil {
		unlock()
		return nil, err
	}
	md := &maildrop{srv: s, store: s.store, mailbox: addr, list: list, unlock: unlock,
		device: cred.deviceName(), loginHash: cred.hash(), remote: ip, infos: make([]pop3.MessageInfo, len(list))}
	for i, m := range list {
		md.infos[i] = pop3.MessageInfo{Size: m.Size, UIDL: m.UIDL}
	}
	// After the listing: a notice this login triggers is not part of its
	// session (RFC 1939 §3: the maildrop is the one seen at login).
	s.loggedIn(cred, ip, config.ProtoPOP3)
	return md, nil
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
}

func (m *maildrop) Messages() []pop3.MessageInfo { return m.infos }

// Device names the device that logged in ("" for the main password), for
// the POP3 session's log lines.
func (m *maildrop) Device() string { return m.device }

func (m *maildrop) Open(i int) (io.ReadCloser, error) {
	return m.store.OpenMessage(m.mailbox, m.list[i].ID)
}

func (m *maildrop) Commit(deleted []int) error {
	if len(deleted) == 0 {
		return nil
	}
	ids := make([]uint64, len(deleted))
	for i, d := range deleted {
		ids[i] = m.list[d].ID
	}
	return m.store.Delete(m.mailbox, ids)
}

func (m *maildrop) Close() error {
	m.unlock()
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
