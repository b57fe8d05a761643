package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
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
// account.
//
// Access is checked only after a password matched, so that a disabled
// mailbox or device does not reveal itself to someone without the password;
// such a login returns the credential together with an error wrapping
// errScope.
func (s *Server) checkPassword(ctx context.Context, ip netip.Addr, proto, username, password string) (credential, error) {
	addr := strings.ToLower(strings.TrimSpace(username))
	mb := s.cur.Load().mailboxes[addr]
	cred, matched, err := s.matchPassword(ctx, mb, proto, password)
	if err != nil {
		return credential{}, fmt.Errorf("verifying password of %s: %w", addr, err)
	}
	if !matched {
		if err := auth.Wait(ctx, s.throttle.Failure(ip, addr)); err != nil {
			return credential{}, err
		}
		return credential{}, errBadCredentials
	}
	s.throttle.Success(ip, addr)
	return cred, scopeError(cred, ip, proto, time.Now())
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

// scopeError says why cred may not log in with proto from ip at now, or
// returns nil.
func scopeError(c credential, ip netip.Addr, proto string, now time.Time) error {
	if proto != protoWeb && !c.mb.Allows(proto) {
		return fmt.Errorf("%w: %s is switched off for this mailbox", errScope, proto)
	}
	d := c.device
	switch {
	case d == nil:
		return nil
	case !d.Allows(proto):
		return fmt.Errorf("%w: device %q may not use %s", errScope, d.Name, proto)
	case d.Expired(now):
		return fmt.Errorf("%w: the password of device %q expired", errScope, d.Name)
	case !d.AllowsFrom(ip):
		return fmt.Errorf("%w: device %q may not log in from %s", errScope, d.Name, ip)
	}
	return nil
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
	if err := scopeError(c, ip, proto, time.Now()); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), errScope.Error()+": "))
	}
	return nil
}
