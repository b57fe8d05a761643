package server

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"mailpost/config"
	"mailpost/storage"
)

// What a successful login leaves behind: the credential's last use in the
// store and, for a mailbox with new_login_notice, a notice when the
// credential logs in from a network it was not seen on.

// loginNetwork groups client addresses the way the notices do: an IPv4 /24
// and an IPv6 /64. A /64 is the smallest network one household or office
// gets, and its hosts rotate through it (privacy addresses), so a single
// address would notify on every rotation; a /24 absorbs DHCP churn on a LAN
// or an ISP pool while another place is still another network.
func loginNetwork(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// loggedIn records a successful login of cred from ip over proto, and
// queues a new-login notice when the mailbox wants one. It never fails
// the login: a store error is logged and the login goes on.
//
// The first login of a credential ever (no network remembered yet) gets a
// notice too: for a device password it is the moment a new device appears,
// which is what the owner most wants to hear about, and for the main
// password it happens once after the option is switched on.
func (s *Server) loggedIn(cred credential, ip netip.Addr, proto string) {
	now := time.Now()
	ev := storage.LoginEvent{
		Mailbox:      cred.mb.Address,
		Login:        storage.Login{Time: now, IP: ip.Unmap().String(), Proto: proto, Device: cred.deviceName()},
		CheckNetwork: cred.mb.NewLoginNotice,
	}
	if n := loginNetwork(ip); n.IsValid() {
		ev.Network = n.String()
	}
	seen, err := s.store.RecordLogin(ev) // memory, plus a read for the check; written within a second
	if err != nil {
		s.log.Warn("recording login", "user", cred.mb.Address, "device", cred.deviceName(), slog.Any("err", err))
		return
	}
	if !seen.New {
		return
	}
	rt := s.cur.Load()
	msg := newLoginNotice(rt.cfg.Hostname, cred, ev.Login, ev.Network, seen.First)
	quota := cred.mb.Quota
	// After the login, not in it: the client has its answer while the
	// notice is stored. Sessions are counted in s.wg, so this Add never
	// races Shutdown's Wait, and Shutdown waits for the notice before the
	// store is closed.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		info, err := s.store.Deliver(cred.mb.Address, strings.NewReader(msg), storage.DeliverOptions{Quota: quota})
		if err != nil {
			s.log.Warn("new-login notice not delivered", "user", cred.mb.Address, "device", cred.deviceName(),
				"remote_ip", ev.IP, slog.Any("err", err))
			return
		}
		s.log.Info("new-login notice", "user", cred.mb.Address, "device", cred.deviceName(), "remote_ip", ev.IP,
			"proto", proto, "network", ev.Network, "uidl", info.UIDL)
	}()
}

// newLoginNotice renders the notice as a plain-text message (CRLF lines).
// Every value in it is an address, a device name (letters, digits, ., -,
// _) or a protocol name, so none can carry a line break into the header.
func newLoginNotice(hostname string, cred credential, l storage.Login, network string, first bool) string {
	if hostname == "" {
		hostname = "localhost"
	}
	who := "the main password"
	subjWho := "main password"
	if d := cred.device; d != nil {
		who = fmt.Sprintf("the password of device %q", d.Name)
		subjWho = "device " + d.Name
	}
	proto := l.Proto
	switch l.Proto {
	case config.ProtoPOP3:
		proto = "pop3 (reading mail)"
	case config.ProtoSubmission:
		proto = "submission (sending mail)"
	}
	why := "a network this password was not used from before"
	if first {
		why = "the first sign-in with this password that mailpost has recorded"
	}
	id := make([]byte, 12)
	rand.Read(id)
	var b strings.Builder
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	line("From: Mail server <postmaster@%s>", hostname)
	line("To: <%s>", cred.mb.Address)
	line("Subject: New sign-in to %s from %s (%s, %s)", cred.mb.Address, l.IP, subjWho, l.Proto)
	line("Date: %s", l.Time.Format(time.RFC1123Z))
	line("Message-ID: <%s.login@%s>", hex.EncodeToString(id), hostname)
	line("Auto-Submitted: auto-generated") // RFC 3834: no auto-replies to this
	line("MIME-Version: 1.0")
	line("Content-Type: text/plain; charset=us-ascii")
	line("")
	line("Someone signed in to %s with %s,", cred.mb.Address, who)
	line("from %s.", why)
	line("")
	line("  Time:      %s", l.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	line("  Address:   %s (network %s)", l.IP, network)
	line("  Protocol:  %s", proto)
	if cred.device != nil {
		line("  Device:    %s", cred.device.Name)
	} else {
		line("  Device:    none (the main password)")
	}
	line("")
	line("If this was you, or a device or program you set up, there is nothing")
	line("to do: you hear about each network only once.")
	line("")
	line("If it was not you, someone else knows this password. Ask the")
	line("administrator of %s to change it (or to remove the device),", hostname)
	line("and change the passwords of anything else that used the same one.")
	line("The change ends the sessions that are still open with the old one.")
	return b.String()
}
