package server

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"

	"mailpost/config"
	"mailpost/smtpauth"
	"mailpost/storage"
)

// smtpBackend is the policy behind submission and inbound SMTP: who may
// authenticate and send as what, which recipients are local, and where an
// accepted message goes.
type smtpBackend struct{ s *Server }

var (
	_ smtpauth.Backend     = smtpBackend{}
	_ smtpauth.Revalidator = smtpBackend{}
)

func (b smtpBackend) Login(ctx context.Context, ci smtpauth.ConnInfo, username, password string) (*smtpauth.Account, error) {
	ip := ci.Remote.Addr()
	cred, err := b.s.checkPassword(ctx, ip, config.ProtoSubmission, username, password)
	switch {
	case errors.Is(err, errBadCredentials):
		return nil, smtpauth.ErrAuthFailed
	case errors.Is(err, errThrottled):
		return nil, throttledAs(err, smtpauth.ErrAuthThrottled, smtpauth.ErrAuthThrottled)
	case errors.Is(err, errScope):
		b.s.log.Info("smtp login refused", "user", cred.mb.Address, "device", cred.deviceName(), "remote_ip", ip.String(), "why", err.Error())
		return nil, smtpauth.ErrAccessDisabled
	case err != nil:
		return nil, err
	}
	mb := cred.mb
	b.s.loggedIn(cred, ip, config.ProtoSubmission)
	return &smtpauth.Account{Name: mb.Address, SendAs: mb.SendAs, Device: cred.deviceName(),
		Credential: smtpCredential{hash: cred.hash(), remote: ip}}, nil
}

// smtpCredential is what Revalidate needs of a submission login.
type smtpCredential struct {
	hash   string
	remote netip.Addr
}

// Revalidate ends an authenticated session whose access the running config
// no longer grants, and refreshes what it may send as.
func (b smtpBackend) Revalidate(ctx context.Context, acct *smtpauth.Account) (*smtpauth.Account, error) {
	c, _ := acct.Credential.(smtpCredential)
	if err := b.s.stillAllowed(acct.Name, acct.Device, c.hash, c.remote, config.ProtoSubmission); err != nil {
		return nil, err
	}
	mb := b.s.cur.Load().mailboxes[acct.Name]
	return &smtpauth.Account{Name: mb.Address, SendAs: mb.SendAs, Device: acct.Device, Credential: c}, nil
}

// Recipient accepts a local mailbox or alias (with room for the announced
// size), and an outside address only from an authenticated sender: inbound
// mail for other domains is relaying and refused.
func (b smtpBackend) Recipient(ctx context.Context, ci smtpauth.ConnInfo, acct *smtpauth.Account, rcpt string, sizeHint int64) (err error) {
	defer func() { b.s.prom.refusedIf(err, 1) }()
	cfg := b.s.cur.Load().cfg
	addr := strings.ToLower(rcpt)
	_, domain, _ := strings.Cut(addr, "@")
	if !cfg.IsLocalDomain(domain) {
		if acct == nil {
			return smtpauth.ErrRelayDenied
		}
		return nil
	}
	mb := cfg.Mailbox(addr)
	if mb == nil {
		return smtpauth.ErrUnknownRecipient
	}
	if mb.Quota > 0 {
		_, used, err := b.s.store.Usage(mb.Address)
		if err != nil {
			return err
		}
		if used+sizeHint > mb.Quota {
			return smtpauth.ErrQuotaExceeded
		}
	}
	return nil
}

// Deliver stores the message for every local recipient and queues it for
// the outside ones, in one transaction: the 250 that follows means all of
// it is on disk, and a refusal means none of it is.
func (b smtpBackend) Deliver(ctx context.Context, ci smtpauth.ConnInfo, env *smtpauth.Envelope, msg io.Reader) (err error) {
	defer func() { b.s.prom.refusedIf(err, len(env.To)) }()
	cfg := b.s.cur.Load().cfg
	var local, remote []string
	seen := map[string]bool{}
	for _, rcpt := range env.To {
		addr := strings.ToLower(rcpt)
		_, domain, _ := strings.Cut(addr, "@")
		if !cfg.IsLocalDomain(domain) {
			remote = append(remote, rcpt)
			continue
		}
		mb := cfg.Mailbox(addr)
		if mb == nil {
			// Vetted at RCPT; the config changed since.
			return smtpauth.ErrUnknownRecipient
		}
		if !seen[mb.Address] {
			seen[mb.Address] = true
			local = append(local, mb.Address)
		}
	}
	sub := storage.Submission{Local: local, LocalOpt: func(mailbox string) storage.DeliverOptions {
		// The size limit is the protocol layer's (it counts the octets
		// on the wire); the store enforces quotas.
		return storage.DeliverOptions{Quota: quotaOf(cfg, mailbox)}
	}}
	if len(remote) > 0 {
		if env.Account == "" {
			return smtpauth.ErrRelayDenied
		}
		sub.Outbound = &storage.Outbound{From: env.From, To: remote, Account: env.Account}
	}
	res, err := b.s.store.Submit(msg, sub)
	switch {
	case errors.Is(err, storage.ErrQuotaExceeded):
		return smtpauth.ErrQuotaExceeded
	case errors.Is(err, storage.ErrTooLarge):
		return smtpauth.ErrTooLarge
	case err != nil:
		return err
	}
	queued := uint64(0)
	if res.Queued != nil {
		queued = res.Queued.ID
		b.s.outbound.Wake()
	}
	b.s.prom.delivered(len(local), len(remote))
	b.s.log.Info("message accepted", "id", env.ID, "from", env.From, "account", env.Account,
		"local", len(local), "remote", len(remote), "queue_id", queued)
	return nil
}

func quotaOf(cfg *config.Config, mailbox string) int64 {
	if mb := cfg.Mailbox(mailbox); mb != nil {
		return mb.Quota
	}
	return 0
}
