package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"mailpost/auth"
	"mailpost/config"
)

// credential is what a login was checked against: a mailbox's main
// password, or one of its device passwords.
type credential struct {
	mb     *config.Mailbox
	device *config.Device // nil: the main password
}

// hash is the password hash the login matched; sessions keep it to notice
// a password changed by a reload.
func (c credential) hash() string {
	if c.device != nil {
		return c.device.PasswordHash
	}
	return c.mb.PasswordHash
}

// deviceName is "" for the main password.
func (c credential) deviceName() string {
	if c.device != nil {
		return c.device.Name
	}
	return ""
}

// errBadCredentials: unknown user, no password set, or a wrong password.
var errBadCredentials = errors.New("bad credentials")

// errScope wraps the reason a right password may not be used here: the
// protocol is off for the mailbox, or a device's allow, from or expires
// rule says no. Callers map it to their protocol's "access disabled".
var errScope = errors.New("access refused")

// protoWeb names the settings page in checkPassword: only the main
// password logs in there, never a device's.
const protoWeb = "web"

// checkPassword is the login policy shared by POP3, submission and the
// settings page: it finds the mailbox by its address (aliases are not login
// names) and verifies the password against the main password, then against
// the devices. Unknown users cost the same as a wrong main password, so
// timing does not tell which addresses exist; a failure waits out a delay
// that grows with recent failures from the client's network and for the
// account. Before any of that, the guard (login_limits) refuses a client
// network or account that is over its limit of failures, with an error
// wrapping errThrottled.
//
// Access is checked only after a password matched, so that a disabled
// mailbox or device does not reveal itself to someone without the password;
// such a login returns the credential together with an error wrapping
// errScope.
func (s *Server) checkPassword(ctx context.Context, ip netip.Addr, proto, username, password string) (credential, error) {
	addr := strings.ToLower(strings.TrimSpace(username))
	mb := s.cur.Load().mailboxes[addr]
	// login_limits: refused before any hashing, so a blocked guesser
	// costs no argon2 time or memory.
	if r := s.guard.Check(ip, addr); r != nil {
		s.guardRefused(ip, proto, r)
		return credential{}, fmt.Errorf("%w: %w", errThrottled, r)
	}
	// A guess already known to be wrong against these very hashes gets
	// the same answer without hashing again, and is not counted again.
	fp := s.guard.Fingerprint(guessContext(mb, proto, addr, password)...)
	if s.guard.Repeated(fp) {
		s.guard.Failure(ip, addr, fp)
		if err := auth.Wait(ctx, s.throttle.Failure(ip, addr)); err != nil {
			return credential{}, err
		}
		return credential{}, errBadCredentials
	}
	cred, matched, err := s.matchPassword(ctx, mb, proto, password)
	if err != nil {
		s.guard.Abort(ip, addr)
		return credential{}, fmt.Errorf("verifying password of %s: %w", addr, err)
	}
	if !matched {
		s.guard.Failure(ip, addr, fp)
		if err := auth.Wait(ctx, s.throttle.Failure(ip, addr)); err != nil {
			return credential{}, err
		}
		return credential{}, errBadCredentials
	}
	if why := outOfScope(cred, ip, proto, time.Now()); why != "" {
		// A right password used where it may not be: not a guess, but no
		// exemption either (a device password must not buy one).
		s.guard.Abort(ip, addr)
		return cred, fmt.Errorf("%w: %s", errScope, why)
	}
	s.throttle.Success(ip, addr)
	s.guard.Success(ip, addr)
	return cred, nil
}

// errThrottled wraps the *auth.Refusal of a login refused by login_limits
// before its password was checked. Callers map it to their protocol's
// "try again later", never to "wrong password".
var errThrottled = errors.New("login refused by login_limits")

// guessContext is what a login's answer depends on, for the guard's
// fingerprint: the settings page tries the main password only, POP3 and
// submission every credential, and a reload that changes any hash makes
// a remembered wrong guess stop matching. Never stored, only HMACed.
func guessContext(mb *config.Mailbox, proto, addr, password string) []string {
	kind := "mail"
	if proto == protoWeb {
		kind = protoWeb
	}
	parts := []string{kind, addr, password}
	if mb != nil {
		parts = append(parts, mb.PasswordHash)
		for _, d := range mb.Devices {
			parts = append(parts, d.PasswordHash)
		}
	}
	return parts
}

// guardRefused logs a refusal once per block (the guard logs when the
// block has cooled down), so a guessing run of thousands of attempts
// writes two lines, not thousands.
func (s *Server) guardRefused(ip netip.Addr, proto string, r *auth.Refusal) {
	s.throttledLogins(proto).Add(1)
	if !r.First {
		return
	}
	key := r.Account
	if key == "" {
		key = r.Network.String()
	}
	s.log.Warn("login refused: too many failed logins", "proto", proto, "remote_ip", ip.String(),
		"tier", r.Tier.String(), "key", key, "retry_after", (r.Wait + time.Second - 1).Truncate(time.Second).String())
}

// throttledAs turns an errThrottled error into a protocol's sentinel:
// account when the account is over its limit, network when the client's
// network is. The *auth.Refusal stays in the chain for its RetryAfter.
func throttledAs(err, account, network error) error {
	var r *auth.Refusal
	if !errors.As(err, &r) {
		return fmt.Errorf("%w: %w", network, err)
	}
	if r.AccountLimited() {
		return fmt.Errorf("%w: %w", account, r)
	}
	return fmt.Errorf("%w: %w", network, r)
}

// throttledLogins is proto's count of logins refused by the guard.
func (s *Server) throttledLogins(proto string) *atomic.Uint64 {
	switch proto {
	case config.ProtoPOP3:
		return &s.throttledPOP3
	case config.ProtoSubmission:
		return &s.throttledSubmission
	}
	return &s.throttledWeb
}

// loginLimits is the guard's view of the running config's login_limits,
// read at every login so a reload applies at once.
func (s *Server) loginLimits() auth.GuardLimits {
	rt := s.cur.Load()
	if rt == nil {
		return auth.GuardLimits{}
	}
	l := rt.cfg.LoginLimits
	return auth.GuardLimits{IPv4_32: l.IPv4_32, IPv4_26: l.IPv4_26, IPv4_21: l.IPv4_21,
		IPv6_64: l.IPv6_64, IPv6_48: l.IPv6_48, IPv6_32: l.IPv6_32, Account: l.Account,
		Window: l.Window, ExemptAfterSuccess: l.ExemptAfterSuccess}
}

// matchPassword finds the credential of mb that password matches: the main
// password first, then the devices that could be used here, then the rest
// (so a device used where it may not be gets a clear refusal rather than
// "wrong password"). The settings page tries the main password only.
func (s *Server) matchPassword(ctx context.Context, mb *config.Mailbox, proto, password string) (credential, bool, error) {
	if mb == nil || (mb.PasswordHash == "" && len(mb.Devices) == 0) {
		s.verifier.VerifyUnknown(ctx, password)
		return credential{}, false, nil
	}
	try := func(c credential) (bool, error) {
		if c.hash() == "" {
			return false, nil
		}
		return s.verifier.Verify(ctx, c.hash(), password)
	}
	if ok, err := try(credential{mb: mb}); ok || err != nil {
		return credential{mb: mb}, ok, err
	}
	if proto == protoWeb {
		return credential{}, false, nil
	}
	var later []*config.Device
	for _, d := range mb.Devices {
		if !d.Allows(proto) {
			later = append(later, d)
			continue
		}
		if ok, err := try(credential{mb, d}); ok || err != nil {
			return credential{mb, d}, ok, err
		}
	}
	for _, d := range later {
		if ok, err := try(credential{mb, d}); ok || err != nil {
			return credential{mb, d}, ok, err
		}
	}
	return credential{}, false, nil
}

// outOfScope says why cred may not log in with proto from ip at now, or
// returns "".
func outOfScope(c credential, ip netip.Addr, proto string, now time.Time) string {
	if proto != protoWeb && !c.mb.Allows(proto) {
		return proto + " is switched off for this mailbox"
	}
	d := c.device
	switch {
	case d == nil:
		return ""
	case !d.Allows(proto):
		return fmt.Sprintf("device %q may not use %s", d.Name, proto)
	case d.Expired(now):
		return fmt.Sprintf("the password of device %q expired", d.Name)
	case !d.AllowsFrom(ip):
		return fmt.Sprintf("device %q may not log in from %s", d.Name, ip)
	}
	return ""
}

// stillAllowed is the revalidation after a reload: it returns why a session
// logged in as mailbox (with device, "" for the main password, whose hash
// was hash) from ip may no longer go on, or nil.
func (s *Server) stillAllowed(mailbox, device, hash string, ip netip.Addr, proto string) error {
	mb := s.cur.Load().mailboxes[mailbox]
	if mb == nil {
		return errors.New("this mailbox was removed from the configuration")
	}
	c := credential{mb: mb}
	if device != "" {
		if c.device = mb.Device(device); c.device == nil {
			return fmt.Errorf("device %q was removed from the configuration", device)
		}
	}
	if c.hash() != hash {
		return errors.New("the password was changed; log in again")
	}
	if why := outOfScope(c, ip, proto, time.Now()); why != "" {
		return errors.New(why)
	}
	return nil
}
