package config

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

const deviceHash = "$argon2id$v=19$m=65536,t=3,p=2$tEASAH8AEQjKkgZ8ItsAhA$NZlU6f0TZd9ePJuRZIebfIhbUvtKQZyV60zBUBnRWao"

func TestDevicesAndMailboxOptions(t *testing.T) {
	src := head + `
login_limits {
  ipv4_32 = 5
  ipv6_48 = 0
  window  = "10m"
}
mailbox "alice@example.com" {
  password_hash    = "` + goodHash + `"
  retention        = "30d"
  sort_order       = "Descending"
  new_login_notice = true
  device "scanner" {
    password_hash = "` + deviceHash + `"
    allow         = ["submission"]
    from          = ["192.168.1.0/24", "2001:db8::/48", "::ffff:10.0.0.0/104", "203.0.113.9"]
  }
  device "helpdesk" {
    password_hash = "` + deviceHash + `"
    allow         = ["POP3"]
    expires       = "2027-06-30"
  }
  device "phone" {
    password_hash = "` + deviceHash + `"
    expires       = "2027-06-30T18:00:00+02:00"
  }
}
mailbox "bob@example.com" {
  password_hash = "` + goodHash + `"
  pop3          = false
  retention     = "0d"
  device "any" {
    password_hash = "` + deviceHash + `"
  }
}
mailbox "carol@example.com" {
  password_hash = "` + goodHash + `"
  retention     = "never"
}
`
	cfg, lines, _ := parseIn(t, t.TempDir(), src)
	if cfg == nil {
		t.Fatalf("rejected: %v", lines)
	}
	if len(lines) != 0 {
		t.Errorf("unexpected diagnostics: %v", lines)
	}
	want := DefaultLoginLimits
	want.IPv4_32, want.IPv6_48, want.Window = 5, 0, 10*time.Minute
	if cfg.LoginLimits != want {
		t.Errorf("limits = %+v, want %+v", cfg.LoginLimits, want)
	}
	a := cfg.Mailbox("alice@example.com")
	if a.RetentionDays != 30 || !a.SortDescending || !a.NewLoginNotice || len(a.Devices) != 3 {
		t.Fatalf("alice = %+v", a)
	}
	sc := a.Device("scanner")
	if !slices.Equal(sc.Allow, []string{ProtoSubmission}) || sc.Allows(ProtoPOP3) {
		t.Errorf("scanner allow = %v", sc.Allow)
	}
	for ip, ok := range map[string]bool{
		"192.168.1.40": true, "::ffff:192.168.1.40": true, "192.168.2.1": false,
		"2001:db8:0:5::1": true, "2001:db9::1": false, "10.200.0.1": true, "203.0.113.9": true, "203.0.113.10": false,
	} {
		if got := sc.AllowsFrom(netip.MustParseAddr(ip)); got != ok {
			t.Errorf("scanner from %s = %v, want %v", ip, got, ok)
		}
	}
	hd := a.Device("helpdesk")
	if !slices.Equal(hd.Allow, []string{ProtoPOP3}) || !hd.AllowsFrom(netip.MustParseAddr("198.51.100.1")) {
		t.Errorf("helpdesk = %+v", hd)
	}
	// A date means through the end of that day, UTC.
	if hd.Expired(time.Date(2027, 6, 30, 23, 59, 59, 0, time.UTC)) || !hd.Expired(time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("helpdesk expires %v", hd.Expires)
	}
	if ph := a.Device("phone"); !ph.Expires.Equal(time.Date(2027, 6, 30, 16, 0, 0, 0, time.UTC)) ||
		!slices.Equal(ph.Allow, []string{ProtoPOP3, ProtoSubmission}) {
		t.Errorf("phone = %+v", ph)
	}
	b := cfg.Mailbox("bob@example.com")
	if b.RetentionDays != 0 || b.SortDescending || b.NewLoginNotice {
		t.Errorf("bob = %+v", b)
	}
	// Without allow, a device may do what its mailbox may: here only send.
	if d := b.Device("any"); !slices.Equal(d.Allow, []string{ProtoSubmission}) {
		t.Errorf("bob's device allow = %v", d.Allow)
	}
	if c := cfg.Mailbox("carol@example.com"); c.RetentionDays != -1 || len(c.Devices) != 0 {
		t.Errorf("carol = %+v", c)
	}
	// No login_limits block: the defaults.
	cfg2, lines, _ := parseIn(t, t.TempDir(), head)
	if cfg2 == nil || cfg2.LoginLimits != DefaultLoginLimits {
		t.Errorf("defaults not applied: %v %v", lines, cfg2)
	}
	if m := cfg2.Mailbox("x@example.com"); m != nil {
		t.Errorf("phantom mailbox %v", m)
	}
}
