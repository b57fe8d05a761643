package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// ipv6Loopback skips nothing: the machines this runs on have ::1. If one
// does not, the test says so plainly instead of passing.
func ipv6Loopback(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback here (%v); these tests need ::1", err)
	}
	l.Close()
}

// Every service on IPv6 only: submission over STARTTLS and implicit TLS,
// inbound, and POP3 after STLS. The Received header carries the RFC 5321
// IPv6 address literal, and the message comes back byte for byte.
func TestIPv6EndToEnd(t *testing.T) {
	ipv6Loopback(t)
	cfg := testConfig(t, t.TempDir(), `pop3 {
  ssl_bindings = ["[::1]:0"]
  unencrypted_or_tls_bindings = ["[::1]:0"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}
submission {
  ssl_bindings = ["[::1]:0"]
  unencrypted_or_tls_bindings = ["[::1]:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}
inbound {
  bindings = ["[::1]:0"]
}
mailbox "bob@example.com" {
  password_hash = "`+demoHash+`"
}`)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range s.Listeners() {
		if !strings.HasPrefix(l.Addr, "[::1]:") {
			t.Errorf("listener %s on %s, want [::1]", l.Proto, l.Addr)
		}
	}

	// 587 with STARTTLS.
	if err := submit(t, addrOf(t, s, "submission"), "alice@example.com", "alice@example.com",
		[]string{"bob@example.com"}, "Subject: over v6 587\r\n\r\nhello\r\n"); err != nil {
		t.Fatalf("submission on 587 over IPv6: %v", err)
	}
	// 465, implicit TLS.
	c, err := smtp.DialTLS(addrOf(t, s, "submissions"), insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "demo-password")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.com", []string{"bob@example.com"}, strings.NewReader("Subject: over v6 465\r\n\r\n.dot\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	// Inbound from another server, no AUTH.
	ic, err := smtp.Dial(addrOf(t, s, "smtp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ic.SendMail("someone@example.org", []string{"bob@example.com"}, strings.NewReader("Subject: inbound v6\r\n\r\nhi\r\n")); err != nil {
		t.Fatalf("inbound over IPv6: %v", err)
	}
	ic.Quit()

	stored := readAll(t, s, "bob@example.com")
	if len(stored) != 3 {
		t.Fatalf("bob has %d messages, want 3", len(stored))
	}
	for i, m := range stored {
		if !strings.Contains(m, "[IPv6:::1]") {
			t.Errorf("message %d lacks the IPv6 address literal in Received:\n%s", i+1, m[:min(len(m), 400)])
		}
	}

	// POP3 on the plain IPv6 port, STLS, then read everything back.
	raw, err := net.DialTimeout("tcp6", addrOf(t, s, "pop3"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(raw)
	expect := func(r *bufio.Reader, prefix string) string {
		t.Helper()
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, prefix) {
			t.Fatalf("got %q (%v), want %s", l, err, prefix)
		}
		return l
	}
	expect(br, "+OK")
	raw.Write([]byte("STLS\r\n"))
	expect(br, "+OK")
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.com"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("STLS handshake over IPv6: %v", err)
	}
	p := &popClient{t: t, c: tc, r: bufio.NewReader(tc)}
	if r := p.login("bob@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("login over IPv6: %s", r)
	}
	for i, want := range stored {
		if r := p.cmd("RETR %d", i+1); !strings.HasPrefix(r, "+OK") {
			t.Fatalf("RETR %d: %s", i+1, r)
		}
		var got bytes.Buffer
		for n := 0; n < 10000; n++ {
			l := p.line()
			if l == "." {
				break
			}
			got.WriteString(strings.TrimPrefix(l, ".") + "\r\n")
		}
		if got.String() != want {
			t.Errorf("RETR %d over IPv6 differs from the store:\n%q\n%q", i+1, got.String(), want)
		}
	}
	if r := p.cmd("QUIT"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("QUIT: %s", r)
	}
}
