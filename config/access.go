package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"mailpost/auth"
)

// Protocols a credential may be allowed, as written in a device's allow list.
const (
	ProtoPOP3       = "pop3"
	ProtoSubmission = "submission"
)

// Device is a scoped second password of a mailbox: a scanner that only
// sends, a helpdesk that only polls. It logs in with the mailbox's address
// and its own password, and only where Allow, From and Expires say.
type Device struct {
	Name         string // unique within its mailbox
	PasswordHash string
	// Allow lists the protocols (ProtoPOP3, ProtoSubmission) the device
	// may use, intersected with what the mailbox itself may use.
	Allow []string
	// From lists the networks the device may log in from; empty = any.
	From []netip.Prefix
	// Expires is the first instant the password no longer works; zero =
	// never. A date "2027-06-30" in the file means through the end of that
	// day, UTC.
	Expires time.Time
}

// Allows reports whether the device may use proto.
func (d *Device) Allows(proto string) bool {
	for _, p := range d.Allow {
		if p == proto {
			return true
		}
	}
	return false
}

// AllowsFrom reports whether ip is inside one of d.From (any if empty).
func (d *Device) AllowsFrom(ip netip.Addr) bool {
	if len(d.From) == 0 {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range d.From {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Expired reports whether the device's password no longer works at now.
func (d *Device) Expired(now time.Time) bool {
	return !d.Expires.IsZero() && !now.Before(d.Expires)
}

// Device returns the mailbox's device called name, or nil.
func (m *Mailbox) Device(name string) *Device {
	for _, d := range m.Devices {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// Allows reports whether the mailbox itself may use proto.
func (m *Mailbox) Allows(proto string) bool {
	switch proto {
	case ProtoPOP3:
		return m.POP3
	case ProtoSubmission:
		return m.Submission
	}
	return false
}

// LoginLimits configure the defence against password guessing: failed
// logins are counted per client network, in tiers of growing prefixes, and
// per account. A tier over its limit is refused until its count cools
// down, at Limit per Window. A limit of 0 switches that tier off.
type LoginLimits struct {
	IPv4_32, IPv4_26, IPv4_21 int
	IPv6_64, IPv6_48, IPv6_32 int
	Account                   int
	Window                    time.Duration
	// ExemptAfterSuccess: a network (IPv4 /32, IPv6 /64) that logged in
	// with a right password is exempt from the limits this long, so a
	// guessing run elsewhere cannot lock its owner out.
	ExemptAfterSuccess time.Duration
}

// Defaults of the login_limits block. A phone retrying an old password
// counts once, so the per-address limit needs no room for that.
var DefaultLoginLimits = LoginLimits{
	IPv4_32: 10, IPv4_26: 30, IPv4_21: 100,
	IPv6_64: 10, IPv6_48: 30, IPv6_32: 100,
	Account:            30,
	Window:             15 * time.Minute,
	ExemptAfterSuccess: 24 * time.Hour,
}

// Bounds a limit and the window are kept in.
const (
	MaxLoginLimit     = 1_000_000
	MinLoginWindow    = time.Second
	MaxLoginWindow    = 7 * 24 * time.Hour
	MaxExemptDuration = 90 * 24 * time.Hour
)

// Retention bounds: EXPIRE is in whole days (RFC 2449 §6.7).
const MaxRetentionDays = 36500

type rawLoginLimits struct {
	DefRange hcl.Range `hcl:",def_range"`

	IPv4_32      *int      `hcl:"ipv4_32,optional"`
	IPv4_32Range hcl.Range `hcl:"ipv4_32,attr_range"`
	IPv4_26      *int      `hcl:"ipv4_26,optional"`
	IPv4_26Range hcl.Range `hcl:"ipv4_26,attr_range"`
	IPv4_21      *int      `hcl:"ipv4_21,optional"`
	IPv4_21Range hcl.Range `hcl:"ipv4_21,attr_range"`
	IPv6_64      *int      `hcl:"ipv6_64,optional"`
	IPv6_64Range hcl.Range `hcl:"ipv6_64,attr_range"`
	IPv6_48      *int      `hcl:"ipv6_48,optional"`
	IPv6_48Range hcl.Range `hcl:"ipv6_48,attr_range"`
	IPv6_32      *int      `hcl:"ipv6_32,optional"`
	IPv6_32Range hcl.Range `hcl:"ipv6_32,attr_range"`
	Account      *int      `hcl:"account,optional"`
	AccountRange hcl.Range `hcl:"account,attr_range"`
	Window       *string   `hcl:"window,optional"`
	WindowRange  hcl.Range `hcl:"window,attr_range"`
	Exempt       *string   `hcl:"exempt_after_success,optional"`
	ExemptRange  hcl.Range `hcl:"exempt_after_success,attr_range"`
}

type rawDevice struct {
	Name      string    `hcl:"name,label"`
	NameRange hcl.Range `hcl:"name,label_range"`
	DefRange  hcl.Range `hcl:",def_range"`

	PasswordHash      *string   `hcl:"password_hash,optional"`
	PasswordHashRange hcl.Range `hcl:"password_hash,attr_range"`
	Allow             []string  `hcl:"allow,optional"`
	AllowRange        hcl.Range `hcl:"allow,attr_range"`
	From              []string  `hcl:"from,optional"`
	FromRange         hcl.Range `hcl:"from,attr_range"`
	Expires           *string   `hcl:"expires,optional"`
	ExpiresRange      hcl.Range `hcl:"expires,attr_range"`
}

// loginLimits applies the login_limits block (at most one) to defaults.
func (p *parser) loginLimits(raws []*rawLoginLimits) (LoginLimits, hcl.Diagnostics) {
	l := DefaultLoginLimits
	diags := extraBlocks("login_limits", raws, func(b *rawLoginLimits) hcl.Range { return b.DefRange })
	if len(raws) == 0 {
		return l, diags
	}
	r := raws[0]
	for _, f := range []struct {
		name string
		v    *int
		rng  hcl.Range
		dst  *int
	}{
		{"ipv4_32", r.IPv4_32, r.IPv4_32Range, &l.IPv4_32},
		{"ipv4_26", r.IPv4_26, r.IPv4_26Range, &l.IPv4_26},
		{"ipv4_21", r.IPv4_21, r.IPv4_21Range, &l.IPv4_21},
		{"ipv6_64", r.IPv6_64, r.IPv6_64Range, &l.IPv6_64},
		{"ipv6_48", r.IPv6_48, r.IPv6_48Range, &l.IPv6_48},
		{"ipv6_32", r.IPv6_32, r.IPv6_32Range, &l.IPv6_32},
		{"account", r.Account, r.AccountRange, &l.Account},
	} {
		if f.v == nil || !p.ok(f.rng) {
			continue
		}
		if *f.v < 0 || *f.v > MaxLoginLimit {
			diags = append(diags, errorf(f.rng, "Invalid login limit",
				"login_limits %s must be between 0 (no limit for this tier) and %d failed logins per window, not %d", f.name, MaxLoginLimit, *f.v))
			continue
		}
		*f.dst = *f.v
	}
	if r.Window != nil && p.ok(r.WindowRange) {
		d, err := ParseDuration(*r.Window)
		switch {
		case err != nil:
			diags = append(diags, errorf(r.WindowRange, "Invalid window", "the login_limits window is invalid: %s", err.Error()))
		case d < MinLoginWindow || d > MaxLoginWindow:
			diags = append(diags, errorf(r.WindowRange, "Invalid window",
				"the login_limits window must be between 1s and 7d, not %s", *r.Window))
		default:
			l.Window = d
		}
	}
	if r.Exempt != nil && p.ok(r.ExemptRange) {
		d, err := ParseDuration(*r.Exempt)
		switch {
		case err != nil:
			diags = append(diags, errorf(r.ExemptRange, "Invalid exempt_after_success", "exempt_after_success is invalid: %s", err.Error()))
		case d > MaxExemptDuration:
			diags = append(diags, errorf(r.ExemptRange, "Invalid exempt_after_success",
				"exempt_after_success may be at most 90d (0 turns the exemption off), not %s", *r.Exempt))
		default:
			l.ExemptAfterSuccess = d
		}
	}
	if l.IPv4_32 == 0 && l.IPv6_64 == 0 && l.Account == 0 && l.IPv4_26 == 0 && l.IPv4_21 == 0 && l.IPv6_48 == 0 && l.IPv6_32 == 0 {
		diags = append(diags, warnf(r.DefRange, "No login limits",
			"every login limit is 0, so password guessing is only slowed by the per-failure delay"))
	}
	return l, diags
}

var deviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// devices checks a mailbox's device blocks. shown names the mailbox in
// messages; now decides which expiry dates are already past.
func (p *parser) devices(m *Mailbox, raws []*rawDevice, shown string, now time.Time) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]hcl.Range{}
	for _, rd := range raws {
		keep := true
		if !deviceName.MatchString(rd.Name) {
			diags = append(diags, errorf(rd.NameRange, "Invalid device name",
				"the device name %q must be 1 to 64 letters, digits, dots, hyphens or underscores, starting with a letter or digit", rd.Name))
			keep = false
		} else if first, dup := seen[strings.ToLower(rd.Name)]; dup {
			diags = append(diags, errorf(rd.NameRange, "Duplicate device",
				"mailbox %s already has a device called %q on line %d", shown, rd.Name, first.Start.Line))
			keep = false
		} else {
			seen[strings.ToLower(rd.Name)] = rd.NameRange
		}
		d := &Device{Name: rd.Name}
		if p.ok(rd.PasswordHashRange) {
			switch {
			case rd.PasswordHash == nil || *rd.PasswordHash == "":
				diags = append(diags, errorf(rd.DefRange, "Missing password_hash",
					"device %q of %s needs a password_hash (make one with `mailpost hash-password -random`)", rd.Name, shown))
				keep = false
			default:
				if err := auth.ValidateHash(*rd.PasswordHash); err != nil {
					diags = append(diags, errorf(rd.PasswordHashRange, "Invalid password hash",
						"the password_hash of device %q of %s is not usable: %s", rd.Name, shown, err.Error()))
					keep = false
				} else {
					d.PasswordHash = *rd.PasswordHash
					if d.PasswordHash == m.PasswordHash {
						diags = append(diags, warnf(rd.PasswordHashRange, "Device shares the main password",
							"device %q of %s has the same password_hash as the mailbox, so its limits do not apply: that password logs in as the mailbox", rd.Name, shown))
					}
				}
			}
		} else {
			keep = false
		}
		if rd.AllowRange.Filename == "" {
			// Without an allow list a device may do what its mailbox may.
			for _, proto := range []string{ProtoPOP3, ProtoSubmission} {
				if m.Allows(proto) {
					d.Allow = append(d.Allow, proto)
				}
			}
		} else if p.ok(rd.AllowRange) {
			if len(rd.Allow) == 0 {
				diags = append(diags, errorf(rd.AllowRange, "Empty allow",
					"the allow list of device %q is empty, so it could never log in; list \"pop3\" and/or \"submission\", or remove the device", rd.Name))
			}
			for i, rng := range p.elemRanges(rd.AllowRange, len(rd.Allow)) {
				proto := strings.ToLower(strings.TrimSpace(rd.Allow[i]))
				switch {
				case proto != ProtoPOP3 && proto != ProtoSubmission:
					diags = append(diags, errorf(rng, "Unknown protocol",
						"device %q allows %q, which is not a protocol; use \"pop3\" or \"submission\"", rd.Name, rd.Allow[i]))
				case d.Allows(proto):
					diags = append(diags, warnf(rng, "Duplicate protocol", "%q is listed twice in the allow list of device %q", proto, rd.Name))
				default:
					if !m.Allows(proto) {
						diags = append(diags, warnf(rng, "Protocol off for the mailbox",
							"device %q allows %s, but %s is off for mailbox %s, so the device cannot use it either", rd.Name, proto, proto, shown))
					}
					d.Allow = append(d.Allow, proto)
				}
			}
		}
		if p.ok(rd.FromRange) {
			for i, rng := range p.elemRanges(rd.FromRange, len(rd.From)) {
				pfx, err := parseNetwork(rd.From[i])
				if err != nil {
					diags = append(diags, errorf(rng, "Invalid network", "device %q: %s", rd.Name, err.Error()))
					continue
				}
				d.From = append(d.From, pfx)
			}
			if rd.FromRange.Filename != "" && len(rd.From) == 0 {
				diags = append(diags, errorf(rd.FromRange, "Empty from",
					"the from list of device %q is empty, so it could never log in; list networks such as \"192.168.1.0/24\", or leave from out to allow any", rd.Name))
			}
		}
		if rd.Expires != nil && p.ok(rd.ExpiresRange) {
			t, err := parseExpiry(*rd.Expires)
			if err != nil {
				diags = append(diags, errorf(rd.ExpiresRange, "Invalid expiry", "device %q: %s", rd.Name, err.Error()))
			} else {
				d.Expires = t
				if !now.Before(t) {
					diags = append(diags, warnf(rd.ExpiresRange, "Device expired",
						"device %q of %s expired (expires = %q) and can no longer log in", rd.Name, shown, *rd.Expires))
				}
			}
		}
		if keep {
			m.Devices = append(m.Devices, d)
		}
	}
	return diags
}

// parseNetwork reads "192.168.1.0/24", "2001:db8::/48" or a single address.
// Host bits set below the prefix are refused: "192.168.1.7/24" is more
// likely a typo than a wish for the whole /24.
func parseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a network like 192.168.1.0/24", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network like 192.168.1.0/24 or 2001:db8::/48", s)
	}
	if pfx.Addr().Is4In6() {
		bits := pfx.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped network shorter than ::ffff:0:0/96", s)
		}
		pfx = netip.PrefixFrom(pfx.Addr().Unmap(), bits)
	}
	if pfx.Masked() != pfx {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, pfx.Masked())
	}
	return pfx, nil
}

// parseExpiry reads a date ("2027-06-30": the password works through that
// day, UTC) or an RFC 3339 instant.
func parseExpiry(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		return d.AddDate(0, 0, 1), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("expires %q is not a date like 2027-06-30 or a time like 2027-06-30T18:00:00Z", s)
}

// parseRetention reads a mailbox's retention: whole days ("30d"), or
// "never".
func parseRetention(s string) (days int, err error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "never" {
		return -1, nil
	}
	d, err := ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("retention %q is not a number of days such as 30d, or \"never\"", s)
	}
	if d%(24*time.Hour) != 0 {
		return 0, fmt.Errorf("retention %q is not a whole number of days; POP3 announces it in days (write 30d, or \"never\")", s)
	}
	days64 := int64(d / (24 * time.Hour))
	if days64 > MaxRetentionDays {
		return 0, fmt.Errorf("retention %q is longer than %d days; write \"never\" to keep mail forever", s, MaxRetentionDays)
	}
	return int(days64), nil
}
