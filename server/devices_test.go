package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/auth"
	"mailpost/storage"
)

// Device passwords end to end: real POP3 and submission sessions over TLS
// on loopback, from distinct 127.0.0.x source addresses for the from
// rules, against a server whose log lines are kept for inspection.

// syncBuffer collects log output written from many sessions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the log lines with msg="msg" that contain every one of
// the key=value fragments in want.
func (s *syncBuffer) lines(msg string, want ...string) []string {
	var out []string
	for _, l := range strings.Split(s.String(), "\n") {
		if !strings.Contains(l, "msg=\""+msg+"\"") && !strings.Contains(l, "msg="+msg+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

type deviceServer struct {
	*testServer
	dir  string
	logs *syncBuffer
}

// cheapHash hashes a device password with tiny argon2 costs, so the test
// spends its time on sessions, not on hashing.
func cheapHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := auth.HashPasswordParams(pw, auth.Argon2Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

const deviceListeners = pop3sOnly + `
submission {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}
`

// deviceConfig is a complete file: the listeners above and mailboxes.
func deviceConfig(mailboxes string) string {
	return `
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
}
` + deviceListeners + mailboxes
}

func startDeviceServer(t *testing.T, src string) *deviceServer {
	t.Helper()
	dir := t.TempDir()
	logs := &syncBuffer{}
	s, err := startServerWith(t, loadFile(t, dir, src), slog.New(slog.NewTextHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &deviceServer{testServer: s, dir: dir, logs: logs}
}

// dialFrom connects to addr from the loopback address local (any of
// 127/8 works on Linux without configuration).
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	return c
}

// popFrom opens a POP3S session from local and reads the greeting.
func popFrom(t *testing.T, local, addr string) *popClient {
	t.Helper()
	c := tls.Client(dialFrom(t, local, addr), insecureTLS)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	p := &popClient{t: t, c: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	p.line()
	return p
}

// smtpFrom opens a submission session on 587 from local, with STARTTLS,
// and authenticates; the error is AUTH's.
func smtpFrom(t *testing.T, local, addr, user, pass string) (*smtp.Client, error) {
	t.Helper()
	conn := dialFrom(t, local, addr)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, insecureTLS)
	if err != nil {
		conn.Close()
		t.Fatalf("STARTTLS from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.Auth(sasl.NewPlainClient("", user, pass))
}

// sendFrom authenticates from local and sends one message to bob.
func sendFrom(t *testing.T, local, addr, user, pass string) error {
	t.Helper()
	c, err := smtpFrom(t, local, addr, user, pass)
	if err != nil {
		return err
	}
	if err := c.SendMail(user, []string{"bob@example.com"}, strings.NewReader("Subject: from a device\r\n\r\nscan attached\r\n")); err != nil {
		return err
	}
	return c.Quit()
}

const aliceDevices = `
mailbox "alice@example.com" {
  password_hash = %q
  device "scanner" {
    password_hash = %q
    allow         = ["submission"]
  }
  device "helpdesk" {
    password_hash = %q
    allow         = ["pop3"]
  }
  device "lan" {
    password_hash = %q
    from          = ["127.0.0.64/26"]
  }
  device "old" {
    password_hash = %q
    expires       = "2020-01-01"
  }
}
mailbox "bob@example.com" {
  password_hash = %q
}
`

func TestDevicePasswordsEndToEnd(t *testing.T) {
	hashes := map[string]string{}
	for _, d := range []string{"scanner", "helpdesk", "lan", "old"} {
		hashes[d] = cheapHash(t, d+"-pw")
	}
	s := startDeviceServer(t, deviceConfig(fmt.Sprintf(aliceDevices, demoHash,
		hashes["scanner"], hashes["helpdesk"], hashes["lan"], hashes["old"], demoHash)))
	pop, sub := popsAddr(t, s.testServer), addrOf(t, s.testServer, "submission")
	const alice = "alice@example.com"

	popLogin := func(local, pass string) (*popClient, string) {
		t.Helper()
		p := popFrom(t, local, pop)
		return p, p.login(alice, pass)
	}
	popOK := func(local, pass string) {
		t.Helper()
		p, r := popLogin(local, pass)
		if !strings.HasPrefix(r, "+OK") {
			t.Errorf("POP3 login from %s with %s: %q, want +OK", local, pass, r)
			return
		}
		if r := p.cmd("QUIT"); !strings.HasPrefix(r, "+OK") {
			t.Errorf("QUIT: %q", r)
		}
	}
	popRefused := func(local, pass string) {
		t.Helper()
		if _, r := popLogin(local, pass); r != "-ERR [SYS/PERM] POP3 is not allowed for this mailbox or password" {
			t.Errorf("POP3 login from %s with %s: %q, want the access-disabled reply", local, pass, r)
		}
	}

	// A submission-only device sends, and may not read.
	if err := sendFrom(t, "127.0.0.1", sub, alice, "scanner-pw"); err != nil {
		t.Errorf("scanner sending: %s", replyText(err))
	}
	popRefused("127.0.0.1", "scanner-pw")
	// A pop3-only device reads, and may not send.
	popOK("127.0.0.2", "helpdesk-pw")
	if err := sendFrom(t, "127.0.0.2", sub, alice, "helpdesk-pw"); !strings.HasPrefix(replyText(err), "535") {
		t.Errorf("helpdesk sending: %s, want 535", replyText(err))
	}
	// from: outside refused for both protocols, inside allowed.
	popRefused("127.0.0.1", "lan-pw")
	if err := sendFrom(t, "127.0.0.1", sub, alice, "lan-pw"); !strings.HasPrefix(replyText(err), "535") {
		t.Errorf("lan device from outside its network sending: %s", replyText(err))
	}
	popOK("127.0.0.70", "lan-pw")
	// Expired: refused.
	popRefused("127.0.0.1", "old-pw")
	if err := sendFrom(t, "127.0.0.1", sub, alice, "old-pw"); !strings.HasPrefix(replyText(err), "535") {
		t.Errorf("expired device sending: %s", replyText(err))
	}
	// A wrong password is still just a wrong password.
	if _, r := popLogin("127.0.0.1", "nobody-pw"); !strings.HasPrefix(r, "-ERR [AUTH]") {
		t.Errorf("wrong password: %q", r)
	}
	// The main password works everywhere, from anywhere.
	popOK("127.0.0.3", "demo-password")
	if err := sendFrom(t, "127.0.0.4", sub, alice, "demo-password"); err != nil {
		t.Errorf("main password sending: %s", replyText(err))
	}

	// The log lines name the device: logins, and refusals with the reason.
	for _, c := range []struct {
		msg  string
		want []string
	}{
		{"smtp login", []string{"user=" + alice, "device=scanner"}},
		{"pop3 login", []string{"user=" + alice, "device=helpdesk"}},
		{"pop3 login", []string{"user=" + alice, "device=lan", "127.0.0.70"}},
		{"pop3 login refused", []string{"device=scanner", "may not use pop3"}},
		{"smtp login refused", []string{"device=helpdesk", "may not use submission"}},
		{"pop3 login refused", []string{"device=lan", "may not log in from 127.0.0.1"}},
		{"smtp login refused", []string{"device=old", "expired"}},
	} {
		if len(s.logs.lines(c.msg, c.want...)) == 0 {
			t.Errorf("no %q log line with %v", c.msg, c.want)
		}
	}
	// A main-password login line has no device field.
	for _, l := range s.logs.lines("pop3 login", "127.0.0.3") {
		if strings.Contains(l, "device=") {
			t.Errorf("main password login names a device: %s", l)
		}
	}

	// Last use per credential, through the control socket (JSON) as
	// `mailpost mailbox stats` reads it.
	reps, err := NewClient(s.cfg.DataDir).Mailboxes()
	if err != nil {
		t.Fatal(err)
	}
	var a MailboxReport
	for _, r := range reps {
		if r.Address == alice {
			a = r
		}
	}
	if l := a.MainLogin; l == nil || l.Proto != "submission" || l.IP != "127.0.0.4" || l.Device != "" {
		t.Errorf("main password's last use = %+v", l)
	}
	if l := a.LastLogin; l == nil || l.IP != "127.0.0.4" {
		t.Errorf("mailbox's last login = %+v", l)
	}
	want := map[string]struct{ proto, ip string }{
		"scanner":  {"submission", "127.0.0.1"},
		"helpdesk": {"pop3", "127.0.0.2"},
		"lan":      {"pop3", "127.0.0.70"},
		"old":      {}, // refused logins are not uses
	}
	if len(a.Devices) != len(want) {
		t.Fatalf("devices = %+v", a.Devices)
	}
	for _, d := range a.Devices {
		w := want[d.Name]
		switch {
		case w.proto == "" && d.LastUse != nil:
			t.Errorf("%s: last use %+v, want none", d.Name, d.LastUse)
		case w.proto != "" && (d.LastUse == nil || d.LastUse.Proto != w.proto || d.LastUse.IP != w.ip || d.LastUse.Device != d.Name):
			t.Errorf("%s: last use %+v, want %s from %s", d.Name, d.LastUse, w.proto, w.ip)
		}
	}
	if d := a.Devices[2]; d.Name != "lan" || len(d.From) != 1 || d.From[0] != "127.0.0.64/26" || len(d.Allow) != 2 {
		t.Errorf("lan device report = %+v", d)
	}
	if d := a.Devices[3]; d.Name != "old" || d.Expires == nil || !d.Expired {
		t.Errorf("old device report = %+v", d)
	}
}

// A reload that removes a device or changes its password ends the
// sessions logged in with it; the main password's sessions go on.
func TestDeviceReloadEndsSessions(t *testing.T) {
	scanner, helpdesk := cheapHash(t, "scanner-pw"), cheapHash(t, "helpdesk-pw")
	s := startDeviceServer(t, deviceConfig(fmt.Sprintf(aliceDevices, demoHash, scanner, helpdesk,
		cheapHash(t, "lan-pw"), cheapHash(t, "old-pw"), demoHash)))
	pop, sub := popsAddr(t, s.testServer), addrOf(t, s.testServer, "submission")
	const alice = "alice@example.com"

	devPOP := popFrom(t, "127.0.0.1", pop)
	if r := devPOP.login(alice, "helpdesk-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	devSMTP, err := smtpFrom(t, "127.0.0.1", sub, alice, "scanner-pw")
	if err != nil {
		t.Fatal(err)
	}
	mainSMTP, err := smtpFrom(t, "127.0.0.1", sub, alice, "demo-password")
	if err != nil {
		t.Fatal(err)
	}

	// helpdesk removed, scanner's password changed.
	src := deviceConfig(fmt.Sprintf(aliceDevices, demoHash, cheapHash(t, "scanner-new"), helpdesk,
		cheapHash(t, "lan-pw"), cheapHash(t, "old-pw"), demoHash))
	src = regexp.MustCompile(`(?s)  device "helpdesk" \{.*?\n  \}\n`).ReplaceAllString(src, "")
	if strings.Contains(src, "helpdesk") {
		t.Fatal("helpdesk still in the config")
	}
	rewrite(t, s.dir, src)
	mustReload(t, s.testServer)

	if r := devPOP.cmd("STAT"); !strings.HasPrefix(r, "-ERR [SYS/PERM]") || !strings.Contains(r, "removed") {
		t.Errorf("helpdesk's POP3 session after its removal: %q", r)
	}
	err = devSMTP.Mail(alice, nil)
	if got := replyText(err); !strings.HasPrefix(got, "421") || !strings.Contains(got, "password") {
		t.Errorf("scanner's SMTP session after its password changed: %q", got)
	}
	if err := mainSMTP.SendMail(alice, []string{"bob@example.com"}, strings.NewReader("Subject: still here\r\n\r\nx\r\n")); err != nil {
		t.Errorf("the main password's SMTP session after the reload: %s", replyText(err))
	}
	if _, err := smtpFrom(t, "127.0.0.1", sub, alice, "scanner-pw"); !strings.HasPrefix(replyText(err), "535") {
		t.Errorf("scanner's old password after the change: %s", replyText(err))
	}
	if err := sendFrom(t, "127.0.0.1", sub, alice, "scanner-new"); err != nil {
		t.Errorf("scanner's new password: %s", replyText(err))
	}

	// A main-password POP3 session outlives a reload that touches the
	// devices (the helpdesk session is closed, so the lock is free once
	// its connection is gone).
	var mainPOP *popClient
	deadline := time.Now().Add(10 * time.Second)
	for {
		mainPOP = popFrom(t, "127.0.0.1", pop)
		r := mainPOP.login(alice, "demo-password")
		if strings.HasPrefix(r, "+OK") {
			break
		}
		if !strings.HasPrefix(r, "-ERR [IN-USE]") || time.Now().After(deadline) {
			t.Fatalf("main password POP3 login: %q", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rewrite(t, s.dir, regexp.MustCompile(`(?s)  device "scanner" \{.*?\n  \}\n`).ReplaceAllString(src, ""))
	mustReload(t, s.testServer)
	if r := mainPOP.cmd("STAT"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("main password POP3 session after a device reload: %q", r)
	}
	mainPOP.cmd("QUIT")
}

// New-login notices: one per new network per credential, delivered after
// the login (not in the POP3 listing it took), readable over POP3 with a
// real client.
func TestNewLoginNotice(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed (scripts/install-test-deps.sh installs it)")
	}
	s := startDeviceServer(t, deviceConfig(fmt.Sprintf(`
mailbox "carol@example.com" {
  password_hash    = %q
  new_login_notice = true
  device "scanner" {
    password_hash = %q
    allow         = ["submission"]
  }
}
mailbox "bob@example.com" {
  password_hash = %q
}
`, demoHash, cheapHash(t, "scanner-pw"), demoHash)))
	pop, sub := popsAddr(t, s.testServer), addrOf(t, s.testServer, "submission")
	const carol = "carol@example.com"
	count := func() int {
		n, _, err := s.store.Usage(carol)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d notices after 10 s, want %d", count(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	popSession := func(local string) string {
		t.Helper()
		p := popFrom(t, local, pop)
		if r := p.login(carol, "demo-password"); !strings.HasPrefix(r, "+OK") {
			t.Fatalf("login from %s: %q", local, r)
		}
		stat := p.cmd("STAT")
		p.cmd("QUIT")
		return stat
	}

	// The first login ever: a notice, but not in this session's listing.
	if stat := popSession("127.0.0.1"); stat != "+OK 0 0" {
		t.Errorf("the session that triggered the notice sees %q", stat)
	}
	waitFor(1)
	// Same /24, another address: nothing new (checked after shutdown).
	if stat := popSession("127.0.0.9"); !strings.HasPrefix(stat, "+OK 1 ") {
		t.Errorf("second session: %q", stat)
	}
	// The device's first use, from a known network: the device is new.
	if err := sendFrom(t, "127.0.0.1", sub, carol, "scanner-pw"); err != nil {
		t.Fatalf("scanner: %s", replyText(err))
	}
	waitFor(2)
	// Another /24.
	popSession("127.0.1.5")
	waitFor(3)

	// Read them with Python's poplib (connects from 127.0.0.1: known).
	script := `
import json, poplib, ssl, sys
p = poplib.POP3_SSL(sys.argv[1], int(sys.argv[2]), context=ssl._create_unverified_context(), timeout=20)
p.user(sys.argv[3]); p.pass_(sys.argv[4])
out = []
for i in range(1, len(p.list()[1]) + 1):
    out.append(b"\n".join(p.retr(i)[1]).decode("ascii"))
p.quit()
print(json.dumps(out))
`
	host, port, _ := net.SplitHostPort(pop)
	cmd := exec.Command("python3", "-c", script, host, port, carol, "demo-password")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	var msgs []string
	if err := json.Unmarshal(out, &msgs); err != nil {
		t.Fatalf("poplib output %q: %v", out, err)
	}
	wantSubjects := []string{
		"Subject: New sign-in to carol@example.com from 127.0.0.1 (main password, pop3)",
		"Subject: New sign-in to carol@example.com from 127.0.0.1 (device scanner, submission)",
		"Subject: New sign-in to carol@example.com from 127.0.1.5 (main password, pop3)",
	}
	if len(msgs) != len(wantSubjects) {
		t.Fatalf("%d messages over POP3, want %d:\n%s", len(msgs), len(wantSubjects), strings.Join(msgs, "\n----\n"))
	}
	for i, m := range msgs {
		for _, w := range []string{wantSubjects[i], "From: Mail server <postmaster@mail.example.com>", "To: <carol@example.com>",
			"\nDate: ", "\nMessage-ID: <", "Auto-Submitted: auto-generated", "If it was not you"} {
			if !strings.Contains(m, w) {
				t.Errorf("notice %d lacks %q:\n%s", i+1, w, m)
			}
		}
	}
	if !strings.Contains(msgs[0], "first sign-in") || !strings.Contains(msgs[2], "not used from before") ||
		!strings.Contains(msgs[1], "Device:    scanner") || !strings.Contains(msgs[2], "network 127.0.1.0/24") {
		t.Errorf("notice bodies:\n%s", strings.Join(msgs, "\n----\n"))
	}

	// After a shutdown (which waits for notices in flight) there is none
	// beyond the three: not for 127.0.0.9, nor for poplib's login.
	s.stop()
	if n := count(); n != 3 {
		t.Errorf("%d notices after shutdown, want 3", n)
	}
	if n := len(s.logs.lines("new-login notice")); n != 3 {
		t.Errorf("%d new-login notice log lines, want 3", n)
	}
}

// A mailbox without new_login_notice gets none, but its networks are
// still remembered, so switching the option on later does not announce
// the networks already in use.
func TestNoNoticeWithoutOption(t *testing.T) {
	s := startDeviceServer(t, deviceConfig(fmt.Sprintf(`
mailbox "dave@example.com" {
  password_hash = %q
}
`, demoHash)))
	pop := popsAddr(t, s.testServer)
	p := popFrom(t, "127.0.0.1", pop)
	if r := p.login("dave@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	p.cmd("QUIT")
	ev := storage.LoginEvent{Mailbox: "dave@example.com", Login: storage.Login{Time: time.Now(), IP: "127.0.0.2", Proto: "pop3"},
		Network: "127.0.0.0/24", CheckNetwork: true}
	seen, err := s.store.RecordLogin(ev)
	if err != nil || seen.New {
		t.Errorf("the network of a login without notices was not remembered: %+v %v", seen, err)
	}
	s.stop()
	if n, _, _ := s.store.Usage("dave@example.com"); n != 0 {
		t.Errorf("%d messages, want no notice", n)
	}
}

func TestLoginNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7":         "198.51.100.0/24",
		"::ffff:198.51.100.7":  "198.51.100.0/24",
		"2001:db8:1:2:3::4":    "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"::1":                  "::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
	} {
		if got := loginNetwork(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("loginNetwork(%s) = %s, want %s", in, got, want)
		}
	}
}
