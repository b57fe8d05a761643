package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpConfig has POP3, submission (465 and 587) and inbound (25) on
// ephemeral loopback ports.
func smtpConfig(t *testing.T, dir string) *testServer {
	t.Helper()
	cfg := testConfig(t, dir, pop3sOnly+`
submission {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
  max_message_size = "64KiB"
}
inbound {
  bindings = ["127.0.0.1:0"]
  max_message_size = "64KiB"
}
mailbox "bob@example.com" {
  password_hash = "`+demoHash+`"
}
mailbox "nosend@example.com" {
  password_hash = "`+demoHash+`"
  submission = false
}`)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func addrOf(t *testing.T, s *testServer, proto string) string {
	t.Helper()
	for _, l := range s.Listeners() {
		if l.Proto == proto {
			return l.Addr
		}
	}
	t.Fatalf("no %s listener in %v", proto, s.Listeners())
	return ""
}

var insecureTLS = &tls.Config{InsecureSkipVerify: true}

// submit sends one message over 587 with STARTTLS and AUTH PLAIN.
func submit(t *testing.T, addr, user, from string, to []string, body string) error {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, "demo-password")); err != nil {
		return err
	}
	if err := c.SendMail(from, to, strings.NewReader(body)); err != nil {
		return err
	}
	return c.Quit()
}

// replyText renders an SMTP error as "CODE X.Y.Z text".
func replyText(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	if err == nil {
		return "accepted"
	}
	return err.Error()
}

func readAll(t *testing.T, s *testServer, mailbox string) []string {
	t.Helper()
	list, err := s.store.List(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range list {
		r, err := s.store.OpenMessage(mailbox, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		if int64(len(b)) != m.Size {
			t.Errorf("%s message %d: %d octets stored, size says %d", mailbox, m.ID, len(b), m.Size)
		}
		out = append(out, string(b))
	}
	return out
}

func TestSubmissionDeliversLocallyAndQueuesOutside(t *testing.T) {
	s := smtpConfig(t, t.TempDir())
	addr := addrOf(t, s, "submission")
	body := "From: alice@example.com\r\nTo: bob@example.com, a.smith@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
	// bob, alice through her alias, and one outside address.
	err := submit(t, addr, "alice@example.com", "a.smith@example.com",
		[]string{"bob@example.com", "A.Smith@example.com", "friend@elsewhere.org"}, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range []string{"bob@example.com", "alice@example.com"} {
		msgs := readAll(t, s, mb)
		if len(msgs) != 1 || !strings.HasPrefix(msgs[0], "Received: from ") || !strings.HasSuffix(msgs[0], body) {
			t.Errorf("%s got %q", mb, msgs)
		}
		if len(msgs) == 1 && !strings.Contains(msgs[0], "with ESMTPSA") {
			t.Errorf("%s: Received header does not record authenticated TLS submission: %q", mb, msgs[0])
		}
	}
	q, err := s.store.Queue()
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || len(q[0].To) != 1 || q[0].To[0] != "friend@elsewhere.org" || q[0].Account != "alice@example.com" {
		t.Errorf("queue = %+v", q)
	}
}

func TestSubmissionPolicy(t *testing.T) {
	s := smtpConfig(t, t.TempDir())
	addr := addrOf(t, s, "submission")
	cases := []struct {
		name, user, from string
		to               []string
		body             string
		want             string // substring of the error, "" = accepted
	}{
		{"not my address", "alice@example.com", "bob@example.com", []string{"bob@example.com"}, "x\r\n", "not an address you may send as"},
		{"submission off", "nosend@example.com", "nosend@example.com", []string{"bob@example.com"}, "x\r\n", "535"},
		{"unknown local", "alice@example.com", "alice@example.com", []string{"ghost@example.com"}, "x\r\n", "550 5.1.1"},
		{"too big", "alice@example.com", "alice@example.com", []string{"bob@example.com"}, strings.Repeat(strings.Repeat("x", 70)+"\r\n", 1000), "552 5.3.4"},
	}
	for _, c := range cases {
		err := submit(t, addr, c.user, c.from, c.to, c.body)
		if got := replyText(err); !strings.Contains(got, c.want) {
			t.Errorf("%s: reply %q, want one containing %q", c.name, got, c.want)
		}
	}
	if n, _, _ := s.store.Usage("bob@example.com"); n != 0 {
		t.Errorf("refused submissions stored %d messages for bob", n)
	}
	// AUTH before STARTTLS is refused on 587.
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "demo-password")); err == nil {
		t.Error("AUTH accepted before STARTTLS")
	}
}

func TestInboundLocalOnly(t *testing.T) {
	s := smtpConfig(t, t.TempDir())
	addr := addrOf(t, s, "smtp")
	send := func(from string, to []string) error {
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SendMail(from, to, strings.NewReader("Subject: in\r\n\r\nfrom outside\r\n")); err != nil {
			return err
		}
		return c.Quit()
	}
	if err := send("someone@outside.net", []string{"a.smith@example.com"}); err != nil {
		t.Fatalf("inbound to an alias: %v", err)
	}
	if err := send("", []string{"bob@example.com"}); err != nil {
		t.Fatalf("inbound bounce (null sender): %v", err)
	}
	if got := replyText(send("spammer@outside.net", []string{"victim@elsewhere.org"})); !strings.HasPrefix(got, "554 5.7.1") {
		t.Errorf("relay attempt: %q, want 554 5.7.1", got)
	}
	if got := readAll(t, s, "alice@example.com"); len(got) != 1 || !strings.Contains(got[0], "from outside") {
		t.Errorf("alice got %q", got)
	}
	if q, _ := s.store.Queue(); len(q) != 0 {
		t.Errorf("inbound queued %d messages for relay", len(q))
	}
}

// What submission accepts, POP3 returns byte for byte, with LIST sizes
// that match RETR exactly.
func TestSubmitThenRetrieve(t *testing.T) {
	s := smtpConfig(t, t.TempDir())
	body := "From: alice@example.com\nSubject: round trip\n\n.dot line\nbare LF lines\n"
	c, err := smtp.DialTLS(addrOf(t, s, "submissions"), insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "demo-password")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.com", []string{"bob@example.com"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	stored := readAll(t, s, "bob@example.com")
	if len(stored) != 1 {
		t.Fatalf("bob has %d messages", len(stored))
	}
	p := dialPOP(t, popsAddr(t, s))
	if r := p.login("bob@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	list := p.cmd("LIST 1")
	if want := fmt.Sprintf("+OK 1 %d", len(stored[0])); list != want {
		t.Errorf("LIST 1 = %q, want %q", list, want)
	}
	p.cmd("RETR 1")
	var got bytes.Buffer
	for {
		l, err := p.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == ".\r\n" {
			break
		}
		got.WriteString(strings.TrimPrefix(l, ".")) // undo dot-stuffing
	}
	if got.String() != stored[0] || !strings.HasSuffix(got.String(), strings.ReplaceAll(body, "\n", "\r\n")) {
		t.Errorf("RETR differs from what was stored:\n%q\n%q", got.String(), stored[0])
	}
}

// A reload that switches submission off ends an authenticated SMTP session
// at its next command with 421 and closes it; a new login is refused.
func TestReloadRevokesSubmission(t *testing.T) {
	dir := t.TempDir()
	s := smtpConfig(t, dir)
	addr := addrOf(t, s, "submission")
	c, err := smtp.DialStartTLS(addr, insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "demo-password")); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(s.cfg.Source), `  aliases = ["a.smith@example.com"]`, `  aliases = ["a.smith@example.com"]
  submission = false`, 1)
	rewrite(t, dir, src)
	mustReload(t, s)
	err = c.Mail("alice@example.com", nil)
	if got := replyText(err); !strings.HasPrefix(got, "421 4.7.0") || !strings.Contains(got, "switched off") {
		t.Errorf("MAIL after revocation: %q", got)
	}
	if err := c.Noop(); err == nil {
		t.Error("the session stayed open after the 421")
	}
	if err := submit(t, addr, "alice@example.com", "alice@example.com", []string{"bob@example.com"}, "x\r\n"); !strings.HasPrefix(replyText(err), "535") {
		t.Errorf("new login after revocation: %q", replyText(err))
	}
}
