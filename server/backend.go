package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"mailpost/auth"
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
	mb, err := s.checkPassword(ctx, ci.Remote.Addr(), username, password)
	if errors.Is(err, errBadCredentials) {
		return nil, pop3.ErrAuthFailed
	} else if err != nil {
		return nil, err
	}
	addr := mb.Address
	// Access is checked only after the password, so that a disabled
	// mailbox does not reveal itself to someone without the password.
	if !mb.POP3 {
		return nil, pop3.ErrAccessDisabled
	}
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
		loginHash: mb.PasswordHash, infos: make([]pop3.MessageInfo, len(list))}
	for i, m := range list {
		md.infos[i] = pop3.MessageInfo{Size: m.Size, UIDL: m.UIDL}
	}
	s.store.RecordLogin(addr, ci.Remote.Addr().String(), "pop3", time.Now()) // memory only; written within a second
	return md, nil
}

// errBadCredentials: unknown user, no password set, or a wrong password.
var errBadCredentials = errors.New("bad credentials")

// checkPassword is the login policy shared by POP3 and submission: it finds
// the mailbox by its address (aliases are not login names) and verifies the
// password. Unknown users cost the same as a wrong password, so timing does
// not tell which addresses exist; a failure waits out a delay that grows
// with recent failures from the client's network and for the account.
// Per-protocol access is the caller's to check, after this succeeded, so a
// disabled mailbox does not reveal itself to someone without the password.
func (s *Server) checkPassword(ctx context.Context, ip netip.Addr, username, password string) (*config.Mailbox, error) {
	addr := strings.ToLower(strings.TrimSpace(username))
	mb := s.cur.Load().mailboxes[addr]
	var ok bool
	if mb == nil || mb.PasswordHash == "" {
		s.verifier.VerifyUnknown(ctx, password)
	} else {
		var err error
		ok, err = s.verifier.Verify(ctx, mb.PasswordHash, password)
		if err != nil {
			return nil, fmt.Errorf("verifying password of %s: %w", addr, err)
		}
	}
	if !ok {
		if err := auth.Wait(ctx, s.throttle.Failure(ip, addr)); err != nil {
			return nil, err
		}
		return nil, errBadCredentials
	}
	s.throttle.Success(ip, addr)
	return mb, nil
}

// maildrop is one locked POP3 snapshot of a mailbox.
type maildrop struct {
	srv       *Server
	loginHash string // the password hash the login was checked against
	store     *storage.Store
	mailbox   string
	list      []storage.MessageInfo // taken at login; index = message number - 1
	infos     []pop3.MessageInfo
	unlock    func()
}

func (m *maildrop) Messages() []pop3.MessageInfo { return m.infos }

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
