package smtpauth

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// ehloCaps sends EHLO and returns the capability lines.
func (r *raw) ehloCaps() []string {
	r.t.Helper()
	rep := r.cmd("EHLO client.example", "250 ")
	lines := strings.Split(rep, "\n")
	return lines[1:]
}

func hasCap(caps []string, prefix string) bool {
	for _, c := range caps {
		if c == prefix || strings.HasPrefix(c, prefix+" ") {
			return true
		}
	}
	return false
}

func TestEHLOBeforeAndAfterSTARTTLS(t *testing.T) {
	ts := start(t, submissionSettings(), false, "127.0.0.1")
	r := dialRaw(t, ts.addr, false)
	r.expect("220 mx.example.org ESMTP")

	caps := r.ehloCaps()
	for _, want := range []string{"STARTTLS", "SIZE 65536", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"} {
		if !hasCap(caps, want) {
			t.Errorf("EHLO before TLS lacks %q: %q", want, caps)
		}
	}
	if hasCap(caps, "AUTH") || hasCap(caps, "SMTPUTF8") {
		t.Errorf("EHLO before TLS offers AUTH or SMTPUTF8: %q", caps)
	}
	// RFC 3207 §4: AUTH before TLS is refused, whatever the mechanism.
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "530 5.7.0 Must issue a STARTTLS command first")
	r.cmd("AUTH LOGIN", "530 5.7.0 Must issue a STARTTLS command first")
	r.cmd("MAIL FROM:<alice@example.org>", "530 5.7.0 authentication required")
	if n := ts.be.loginCalls; n != 0 {
		t.Errorf("backend saw %d logins before TLS", n)
	}

	r.starttls()
	caps = r.ehloCaps()
	if !hasCap(caps, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after TLS lacks AUTH PLAIN LOGIN: %q", caps)
	}
	if hasCap(caps, "STARTTLS") {
		t.Errorf("EHLO after TLS still offers STARTTLS: %q", caps)
	}
	for _, want := range []string{"SIZE 65536", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"} {
		if !hasCap(caps, want) {
			t.Errorf("EHLO after TLS lacks %q: %q", want, caps)
		}
	}
	r.cmd("MAIL FROM:<alice@example.org>", "530 5.7.0")
	r.cmd("AUTH CRAM-MD5", "504 5.7.4")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 2.0.0")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "503 5.5.1")
	r.cmd("QUIT", "221 2.0.0")
}

// sendWith submits one message with go-smtp's client over c.
func sendWith(t *testing.T, c *smtp.Client, auth sasl.Client, from string, to []string, body string) error {
	t.Helper()
	if err := c.Auth(auth); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

const testBody = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello Bob.\r\n.leading dot\r\n"

func TestSubmitSTARTTLS(t *testing.T) {
	ts := start(t, submissionSettings(), false, "127.0.0.1")
	for _, tc := range []struct {
		name string
		auth sasl.Client
	}{
		{"PLAIN", sasl.NewPlainClient("", "alice", "wonderland")},
		{"PLAIN-authzid-self", sasl.NewPlainClient("alice", "alice", "wonderland")},
		{"LOGIN", sasl.NewLoginClient("alice", "wonderland")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(ts.be.stored())
			c, err := smtp.DialStartTLS(ts.addr, clientTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := sendWith(t, c, tc.auth, "alice@example.org", []string{"bob@example.org"}, testBody); err != nil {
				t.Fatal(err)
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			msgs := ts.be.stored()
			if len(msgs) != n+1 {
				t.Fatalf("stored %d messages, want %d", len(msgs), n+1)
			}
			m := msgs[n]
			if m.env.Account != "alice" || m.env.From != "alice@example.org" || len(m.env.To) != 1 || m.env.To[0] != "bob@example.org" {
				t.Errorf("envelope %+v", m.env)
			}
			if !m.ci.TLS || m.ci.Helo != "localhost" || m.ci.Listener != "test" || m.ci.Remote.Addr().String() != "127.0.0.1" {
				t.Errorf("ConnInfo %+v", m.ci)
			}
			_, body, _ := strings.Cut(m.data, "\r\n\t")
			_, body, _ = strings.Cut(body, "\r\n")
			if body != testBody {
				t.Errorf("stored body %q, want %q (dot-unstuffed)", body, testBody)
			}
			if !strings.Contains(m.data, " with ESMTPSA id "+m.env.ID+" for <bob@example.org>;") {
				t.Errorf("Received header wrong: %q", m.data)
			}
		})
	}
}

// TestLoginChallenges drives LOGIN by hand, without an initial response:
// the server must ask "Username:" then "Password:" in base64.
func TestLoginChallenges(t *testing.T) {
	ts := start(t, submissionSettings(), false, "127.0.0.1")
	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.starttls()
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH LOGIN", "334 "+b64("Username:"))
	r.cmd(b64("alice"), "334 "+b64("Password:"))
	r.cmd(b64("wonderland"), "235 2.0.0")

	// A malformed PLAIN response is a syntax error, not a server fault.
	r2 := dialRaw(t, ts.addr, false)
	r2.expect("220 ")
	r2.cmd("EHLO c", "250 ")
	r2.starttls()
	r2.cmd("EHLO c", "250 ")
	r2.cmd("AUTH PLAIN "+b64("no-nuls-here"), "501 5.5.2")
	r2.cmd("AUTH LOGIN", "334 ")
	r2.cmd("*", "501 ") // RFC 4954 §4: the client cancels
}

func TestImplicitTLS(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	c, err := smtp.DialTLS(ts.addr, clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on implicit TLS")
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH = %v %q, want PLAIN LOGIN", ok, mechs)
	}
	if err := sendWith(t, c, sasl.NewLoginClient("alice", "wonderland"), "Alice@Example.ORG", []string{"x@elsewhere.example"}, "Subject: x\r\n\r\nbody\r\n"); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs := ts.be.stored()
	if len(msgs) != 1 || msgs[0].env.From != "Alice@Example.ORG" {
		t.Fatalf("stored %+v", msgs)
	}
}

// failLine is the fail2ban regex documented on authFailed.
var failLine = regexp.MustCompile(`msg="smtp auth failed" .*?remote_ip=(\S+) user=(\S+)`)

func TestAuthFailures(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00letmein"), "535 5.7.8")
	m := failLine.FindAllStringSubmatch(ts.logs.String(), -1)
	if len(m) != 1 || m[0][1] != "127.0.0.1" || m[0][2] != "alice" {
		t.Fatalf("fail2ban lines %q in log", m)
	}
	// LOGIN fails the same way and logs once more.
	r.cmd("AUTH LOGIN "+b64("alice"), "334 ")
	r.cmd(b64("nope"), "535 5.7.8")
	if n := len(failLine.FindAllString(ts.logs.String(), -1)); n != 2 {
		t.Errorf("%d fail2ban lines after two failures", n)
	}
	// An authorization identity other than the user is refused without
	// asking the backend.
	calls := ts.be.loginCalls
	r.cmd("AUTH PLAIN "+b64("root\x00alice\x00wonderland"), "535 5.7.8")
	if ts.be.loginCalls != calls {
		t.Error("backend asked despite authzid mismatch")
	}

	// Right password, disabled mailbox: same reply, different log line.
	before := len(failLine.FindAllString(ts.logs.String(), -1))
	r.cmd("AUTH PLAIN "+b64("\x00mallory\x00secret"), "535 5.7.8")
	logs := ts.logs.String()
	if n := len(failLine.FindAllString(logs, -1)); n != before {
		t.Errorf("disabled mailbox logged a fail2ban line")
	}
	if !strings.Contains(logs, `msg="smtp submission disabled"`) || !strings.Contains(logs, "user=mallory") {
		t.Errorf("no distinct log line for the disabled mailbox")
	}
	r.cmd("MAIL FROM:<mallory@example.org>", "530 5.7.0")
	// Passwords and AUTH payloads never reach the log.
	for _, secret := range []string{"letmein", "nope", "secret", "wonderland", b64("nope")} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
}

func TestSenderPolicy(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<ceo@example.org>", "550 5.7.1 <ceo@example.org> is not an address you may send as")
	r.cmd("MAIL FROM:<>", "550 5.7.1")
	r.cmd("MAIL FROM:<alice@example.org.evil>", "550 5.7.1")
	r.cmd("MAIL FROM:<sales@EXAMPLE.org>", "250 2.0.0") // case-insensitive on the whole address
	// A second MAIL, refused, must not leave a transaction with another
	// (or the null) sender behind.
	r.cmd("MAIL FROM:<ceo@example.org>", "503 5.5.1")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: s\r\n\r\nx\r\n.\r\n")
	r.tp.W.Flush()
	r.expect("250 ")
	if m := ts.be.stored(); len(m) != 1 || m[0].env.From != "sales@EXAMPLE.org" {
		t.Fatalf("stored %+v", m)
	}
	r.cmd("RSET", "250 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
}

func TestSizeLimits(t *testing.T) {
	s := submissionSettings()
	s.MaxMessageBytes = 1000
	ts := start(t, s, true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	if caps := r.ehloCaps(); !hasCap(caps, "SIZE 1000") {
		t.Errorf("caps %q lack SIZE 1000", caps)
	}
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	// RFC 1870 §6.2: refused at MAIL when the declared size is too big.
	r.cmd("MAIL FROM:<alice@example.org> SIZE=1001", "552 5.3.4")
	// The SIZE hint reaches the backend's quota check.
	r.cmd("MAIL FROM:<alice@example.org> SIZE=900 BODY=8BITMIME", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	if h := ts.be.rcptHints; len(h) != 1 || h[0] != 900 {
		t.Errorf("size hints %v, want [900]", h)
	}
	// RFC 1870 §6.3: and at DATA when the octets exceed the limit.
	r.cmd("DATA", "354 ")
	big := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\xc3\xa9\r\n", 40)
	r.tp.W.WriteString("Subject: big\r\n\r\n" + big + ".\r\n")
	r.tp.W.Flush()
	r.expect("552 5.3.4")
	if n := len(ts.be.stored()); n != 0 {
		t.Fatalf("stored %d messages", n)
	}
	// The session carries on; a small 8-bit message goes through.
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: small\r\n\r\ncaf\xc3\xa9\r\n.\r\n")
	r.tp.W.Flush()
	r.expect("250 2.0.0 queued as ")
	if msgs := ts.be.stored(); len(msgs) != 1 || !strings.HasSuffix(msgs[0].data, "caf\xc3\xa9\r\n") {
		t.Errorf("stored %+v", msgs)
	}
}

func TestRecipients(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	ts.be.fullAtRcpt["carol@example.org"] = true
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<nobody@example.org>", "550 5.1.1 <nobody@example.org>: no such mailbox here")
	r.cmd("RCPT TO:<carol@example.org>", "452 4.2.2 mailbox full")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("RCPT TO:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<friend@elsewhere.example>", "250 ")
	// MaxRecipients is 3: the 4th accepted recipient is one too many.
	r.cmd("RCPT TO:<x@elsewhere.example>", "452 4.5.3")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: many\r\n\r\nhi all\r\n.\r\n")
	r.tp.W.Flush()
	id := strings.TrimPrefix(r.expect("250 2.0.0 queued as "), "250 2.0.0 queued as ")

	msgs := ts.be.stored()
	if len(msgs) != 1 || ts.be.deliveries != 1 {
		t.Fatalf("%d deliveries storing %d messages, want one", ts.be.deliveries, len(msgs))
	}
	env := msgs[0].env
	if strings.Join(env.To, ",") != "bob@example.org,alice@example.org,friend@elsewhere.example" || env.ID != id {
		t.Errorf("envelope %+v, reply id %q", env, id)
	}
	if strings.Contains(msgs[0].data, " for <") {
		t.Errorf("Received names a recipient of several: %q", msgs[0].data)
	}

	// Quota found at DATA time: 552 5.2.2, nothing stored.
	ts.be.mu.Lock()
	ts.be.deliverErr = errors.Join(errors.New("fake"), ErrQuotaExceeded)
	ts.be.mu.Unlock()
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: x\r\n\r\nx\r\n.\r\n")
	r.tp.W.Flush()
	r.expect("552 5.2.2 mailbox full")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ErrTooLarge, "552 5.3.4"},
		{errors.New("disk on fire"), "451 4.3.0"},
	} {
		ts.be.mu.Lock()
		ts.be.deliverErr = tc.err
		ts.be.mu.Unlock()
		r.cmd("MAIL FROM:<alice@example.org>", "250 ")
		r.cmd("RCPT TO:<bob@example.org>", "250 ")
		r.cmd("DATA", "354 ")
		r.tp.W.WriteString("Subject: x\r\n\r\nx\r\n.\r\n")
		r.tp.W.Flush()
		r.expect(tc.want)
	}
	if n := len(ts.be.stored()); n != 1 {
		t.Errorf("stored %d messages, want 1", n)
	}
	if !strings.Contains(ts.logs.String(), "disk on fire") {
		t.Error("unexpected delivery error not logged")
	}
}

// TestPipelining sends a whole transaction in one write (RFC 2920) and
// expects the replies in order.
func TestPipelining(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.conn.Write([]byte("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"))
	r.expect("250 ")
	r.expect("250 ")
	r.expect("550 5.1.1")
	r.expect("250 ")
	r.expect("354 ")
	r.conn.Write([]byte("Subject: p\r\n\r\npipelined\r\n.\r\nNOOP\r\nQUIT\r\n"))
	r.expect("250 2.0.0 queued as ")
	r.expect("250 ")
	r.expect("221 ")
	msgs := ts.be.stored()
	if len(msgs) != 1 || strings.Join(msgs[0].env.To, " ") != "bob@example.org carol@example.org" {
		t.Fatalf("stored %+v", msgs)
	}
}

// TestDisconnectMidData: the client goes away in the middle of the body;
// Deliver sees a read error and nothing is stored.
func TestDisconnectMidData(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.conn.Write([]byte("Subject: cut\r\n\r\nhalf a messa"))
	r.conn.Close()
	waitFor(t, "session end", func() bool { return ts.Stats().Sessions == 0 })
	ts.be.mu.Lock()
	defer ts.be.mu.Unlock()
	if ts.be.deliveries != 1 || len(ts.be.readErrs) != 1 {
		t.Fatalf("deliveries %d, read errors %v; want one failed read", ts.be.deliveries, ts.be.readErrs)
	}
	if len(ts.be.msgs) != 0 {
		t.Fatalf("stored %d messages", len(ts.be.msgs))
	}
	if ts.Stats().Delivered != 0 {
		t.Error("Stats counts a delivery")
	}
}

func TestReceivedHeader(t *testing.T) {
	ts := start(t, submissionSettings(), false, "::1")
	c, err := smtp.Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("laptop.example"); err != nil {
		t.Fatal(err)
	}
	c.Close()

	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.starttls()
	r.cmd("EHLO laptop(evil);x", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: r\r\n\r\nx\r\n.\r\n")
	r.tp.W.Flush()
	id := strings.TrimPrefix(r.expect("250 2.0.0 queued as "), "250 2.0.0 queued as ")
	msgs := ts.be.stored()
	if len(msgs) != 1 {
		t.Fatalf("stored %d", len(msgs))
	}
	want := regexp.MustCompile(`^Received: from laptop_evil__x \(\[IPv6:::1\]\) by mx\.example\.org \(mailpost\) with ESMTPSA id ` +
		regexp.QuoteMeta(id) + ` for <bob@example\.org>;\r\n\t[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\nSubject: r\r\n`)
	if !want.MatchString(msgs[0].data) {
		t.Errorf("message starts %q", msgs[0].data)
	}
	if !regexp.MustCompile(`^[0-9a-v]{12}\.1$`).MatchString(id) {
		t.Errorf("id %q", id)
	}
}

// TestSizeExact: RFC 1870 §4: a message of exactly the advertised SIZE is
// accepted, one octet more is not, by DATA and by BDAT alike.
func TestSizeExact(t *testing.T) {
	s := submissionSettings()
	s.MaxMessageBytes = 100
	ts := start(t, s, true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	body := func(n int) string { return "Subject: x\r\n\r\n" + strings.Repeat("y", n-16) + "\r\n" }
	for _, tc := range []struct {
		n    int
		want string
	}{{100, "250 "}, {101, "552 5.3.4"}} {
		r.cmd("MAIL FROM:<alice@example.org> SIZE="+strconv.Itoa(tc.n), map[bool]string{true: "250 ", false: "552 5.3.4"}[tc.n <= 100])
		if tc.n > 100 {
			r.cmd("MAIL FROM:<alice@example.org>", "250 ")
		}
		r.cmd("RCPT TO:<bob@example.org>", "250 ")
		r.cmd("DATA", "354 ")
		r.tp.W.WriteString(body(tc.n) + ".\r\n")
		r.tp.W.Flush()
		r.expect(tc.want)

		r.cmd("MAIL FROM:<alice@example.org>", "250 ")
		r.cmd("RCPT TO:<bob@example.org>", "250 ")
		r.tp.W.WriteString("BDAT " + strconv.Itoa(tc.n) + " LAST\r\n" + body(tc.n))
		r.tp.W.Flush()
		r.expect(tc.want)
	}
	if n := len(ts.be.stored()); n != 2 {
		t.Errorf("stored %d, want the two of exactly 100 octets", n)
	}
	if caps := r.ehloCaps(); !hasCap(caps, "SIZE 100") {
		t.Errorf("caps %q", caps)
	}
}
