package probe

import (
	"context"
	"errors"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"mailpost/server"
)

// STARTTLS on submission, implicit TLS on POP3, a trusted certificate:
// every step passes, and the message is gone from the maildrop after.
func TestRoundtripStartTLSAndPOP3S(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	o := ms.options(pki, MethodTLS, MethodSSL)
	rep := Roundtrip(t.Context(), o)
	if !rep.OK || rep.Warnings() {
		t.Fatalf("roundtrip not clean:\n%s", dump(rep))
	}
	want := []string{
		"connect submission " + o.Submission.Addr, "STARTTLS", "certificate", "AUTH PLAIN", "MAIL/RCPT/DATA",
		"connect pop3s " + o.POP3.Addr, "TLS", "certificate", "login", "find message", "RETR", "DELE+QUIT",
	}
	if got := names(rep); !slices.Equal(got, want) {
		t.Fatalf("steps = %q\nwant    %q", got, want)
	}
	if d := stepNamed(t, rep, "STARTTLS").Detail; !strings.HasPrefix(d, "TLS 1.3, TLS_") {
		t.Errorf("STARTTLS detail = %q, want the TLS version and suite", d)
	}
	if d := stepNamed(t, rep, "certificate").Detail; !strings.Contains(d, "valid for mail.example.com") || !strings.Contains(d, "probe test CA") {
		t.Errorf("certificate detail = %q", d)
	}
	// mailpost offers SASL PLAIN in CAPA, so the probe uses it.
	if d := stepNamed(t, rep, "login").Detail; d != "AUTH PLAIN as alice@example.com" {
		t.Errorf("login detail = %q", d)
	}
	if d := stepNamed(t, rep, "RETR").Detail; !strings.Contains(d, "token in headers and body") {
		t.Errorf("RETR detail = %q", d)
	}
	var total time.Duration
	for _, s := range rep.Steps {
		if s.Duration <= 0 {
			t.Errorf("step %q has no duration", s.Name)
		}
		total += s.Duration
	}
	if rep.Total < total {
		t.Errorf("total %v is less than the sum of the steps %v", rep.Total, total)
	}
	// DELE took effect at QUIT.
	if msgs := ms.messages(t); len(msgs) != 0 {
		t.Errorf("maildrop after the roundtrip holds %d message(s):\n%s", len(msgs), msgs[0])
	}
}

// Implicit TLS on submission (465) and STLS on POP3 (110). Mail already in
// the maildrop is looked at, left alone and kept.
func TestRoundtripImplicitSubmissionAndSTLS(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	for i := 0; i < 3; i++ {
		if _, _, err := server.Deliver(ms.cfg, ms.store, "alice@example.com",
			strings.NewReader("Subject: keep me\r\n\r\nan older message\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	o := ms.options(pki, MethodSSL, MethodTLS)
	rep := Roundtrip(t.Context(), o)
	if !rep.OK || rep.Warnings() {
		t.Fatalf("roundtrip not clean:\n%s", dump(rep))
	}
	if got := names(rep); got[0] != "connect submissions "+o.Submission.Addr || got[1] != "TLS" ||
		got[5] != "connect pop3 "+o.POP3.Addr || got[6] != "STLS" {
		t.Errorf("steps = %q", got)
	}
	// Newest first: the test message is number 4 and found at once.
	if d := stepNamed(t, rep, "find message").Detail; !strings.HasPrefix(d, "message 4 (UIDL ") || !strings.HasSuffix(d, "poll 1") {
		t.Errorf("find message detail = %q", d)
	}
	msgs := ms.messages(t)
	if len(msgs) != 3 {
		t.Fatalf("%d messages left, want the 3 older ones", len(msgs))
	}
	for _, m := range msgs {
		if !strings.Contains(m, "keep me") {
			t.Errorf("a message other than the older ones is left:\n%s", m)
		}
	}
}

// A wrong password stops the run at AUTH with the server's own reply, and
// POP3 is never tried.
func TestRoundtripWrongPassword(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	o := ms.options(pki, MethodTLS, MethodSSL)
	o.Password = "not-the-password"
	rep := Roundtrip(t.Context(), o)
	if rep.OK {
		t.Fatalf("roundtrip OK with a wrong password:\n%s", dump(rep))
	}
	last := rep.Steps[len(rep.Steps)-1]
	if last.Name != "AUTH PLAIN" || last.OK || !strings.HasPrefix(last.Detail, "rejected: 535 5.7.8 ") {
		t.Errorf("last step = %+v, want AUTH PLAIN failed with the 535 reply", last)
	}
	if f := rep.Failed(); f == nil || f.Name != "AUTH PLAIN" {
		t.Errorf("Failed() = %v", f)
	}
	for _, s := range rep.Steps {
		if strings.Contains(s.Name, "pop3") || strings.Contains(s.Detail, "not-the-password") {
			t.Errorf("step %+v: POP3 attempted or the password shown", s)
		}
	}
}

// A certificate for another name is a warning naming both names; the test
// goes on and passes. So is a certificate from a CA the client does not
// trust.
func TestRoundtripCertificateWarnings(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)

	o := ms.options(pki, MethodTLS, MethodSSL)
	o.Submission.ServerName = "smtp.example.org"
	o.POP3.ServerName = "pop.example.org"
	rep := Roundtrip(t.Context(), o)
	if !rep.OK || !rep.Warnings() {
		t.Fatalf("want OK with warnings:\n%s", dump(rep))
	}
	var certs []Step
	for _, s := range rep.Steps {
		if s.Name == "certificate" {
			certs = append(certs, s)
		}
	}
	if len(certs) != 2 {
		t.Fatalf("%d certificate steps:\n%s", len(certs), dump(rep))
	}
	for i, want := range []string{"certificate is valid for mail.example.com, not smtp.example.org", "certificate is valid for mail.example.com, not pop.example.org"} {
		if !certs[i].Warning || !certs[i].OK || certs[i].Detail != want {
			t.Errorf("certificate step %d = %+v, want a warning %q", i, certs[i], want)
		}
	}
	if !strings.Contains(dump(rep), "  WARN ") || !strings.Contains(dump(rep), "OK with warnings") {
		t.Errorf("report does not show the warning:\n%s", dump(rep))
	}

	o = ms.options(pki, MethodSSL, MethodTLS)
	o.RootCAs = newPKI(t, "some other CA").roots
	rep = Roundtrip(t.Context(), o)
	if !rep.OK || !rep.Warnings() {
		t.Fatalf("want OK with warnings:\n%s", dump(rep))
	}
	if d := stepNamed(t, rep, "certificate").Detail; !strings.Contains(d, "certificate for mail.example.com is signed by an unknown authority (CN=probe test CA") {
		t.Errorf("untrusted CA detail = %q", d)
	}
}

// A listener that is down fails the connect step, in plain words.
func TestRoundtripListenerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep := Roundtrip(t.Context(), Options{
		Submission: Endpoint{Addr: addr, Method: MethodTLS, ServerName: "mail.example.com"},
		POP3:       Endpoint{Addr: addr, Method: MethodSSL, ServerName: "mail.example.com"},
		User:       "alice@example.com", Password: "x",
	})
	if rep.OK || len(rep.Steps) != 1 {
		t.Fatalf("want one failed step:\n%s", dump(rep))
	}
	if s := rep.Steps[0]; s.Name != "connect submission "+addr || !strings.HasPrefix(s.Detail, "connection refused: nothing listens on "+addr) {
		t.Errorf("step = %+v", s)
	}
	if !strings.Contains(dump(rep), "  FAIL ") || !strings.Contains(dump(rep), `FAILED at "connect submission `) {
		t.Errorf("report:\n%s", dump(rep))
	}
}

// Submission to one server and POP3 on another (same user and password,
// separate stores): the message honestly never arrives where POP3 looks,
// and the polls stop after Wait.
func TestRoundtripMessageNeverArrives(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	sender, other := startMailServer(t, pki), startMailServer(t, pki)
	o := sender.options(pki, MethodTLS, MethodSSL)
	o.POP3 = other.options(pki, MethodTLS, MethodSSL).POP3
	o.Wait = time.Second
	start := time.Now()
	rep := Roundtrip(t.Context(), o)
	elapsed := time.Since(start)
	if rep.OK {
		t.Fatalf("roundtrip OK with POP3 on another server:\n%s", dump(rep))
	}
	f := rep.Failed()
	if f == nil || f.Name != "find message" || !strings.Contains(f.Detail, "did not arrive within 1s") {
		t.Fatalf("failed step = %+v\n%s", f, dump(rep))
	}
	if f.Duration < 700*time.Millisecond || elapsed > 10*time.Second {
		t.Errorf("find message took %v (whole run %v), want about the 1s Wait", f.Duration, elapsed)
	}
	// The sender's copy is where it was delivered; the other box is empty.
	if n := len(sender.messages(t)); n != 1 {
		t.Errorf("sender's maildrop has %d messages, want 1", n)
	}
	if n := len(other.messages(t)); n != 0 {
		t.Errorf("other maildrop has %d messages, want 0", n)
	}
}

// Implicit TLS aimed at a plain-text port says so; STARTTLS aimed at an
// implicit-TLS port times out at the greeting (the server waits for a
// ClientHello), which the step reports as such.
func TestRoundtripWrongMethod(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)

	o := ms.options(pki, MethodSSL, MethodSSL)
	o.Submission.Addr = ms.addr["submission"] // plain port
	rep := Roundtrip(t.Context(), o)
	if f := rep.Failed(); f == nil || f.Name != "TLS" || !strings.Contains(f.Detail, "did not answer in TLS") {
		t.Errorf("implicit TLS on a plain port: failed step %+v\n%s", f, dump(rep))
	}

	o = ms.options(pki, MethodTLS, MethodSSL)
	o.Submission.Addr = ms.addr["submissions"] // implicit TLS port
	o.Timeout = 300 * time.Millisecond
	rep = Roundtrip(t.Context(), o)
	if f := rep.Failed(); f == nil || f.Name != "STARTTLS" || !strings.Contains(f.Detail, "no answer within 300ms") {
		t.Errorf("STARTTLS on an implicit-TLS port: failed step %+v\n%s", f, dump(rep))
	}

	o = ms.options(pki, MethodTLS, "")
	rep = Roundtrip(t.Context(), o)
	if f := rep.Failed(); f == nil || !strings.HasPrefix(f.Name, "connect pop3 ") || !strings.Contains(f.Detail, "never sends a password unencrypted") {
		t.Errorf("no encryption method: failed step %+v\n%s", f, dump(rep))
	}
}

// Cancelling the context stops the run at once and says why.
func TestRoundtripCancelled(t *testing.T) {
	// A listener that accepts and then never speaks.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 10)
	t.Cleanup(func() {
		ln.Close()
		for len(accepted) > 0 {
			(<-accepted).Close()
		}
	})
	go func() {
		for i := 0; i < cap(accepted); i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	ctx, cancel := context.WithCancelCause(t.Context())
	time.AfterFunc(200*time.Millisecond, func() { cancel(context.Canceled) })
	start := time.Now()
	rep := Roundtrip(ctx, Options{
		Submission: Endpoint{Addr: ln.Addr().String(), Method: MethodTLS, ServerName: "mail.example.com"},
		POP3:       Endpoint{Addr: ln.Addr().String(), Method: MethodSSL, ServerName: "mail.example.com"},
		User:       "alice@example.com", Password: "x", Timeout: 20 * time.Second,
	})
	if time.Since(start) > 5*time.Second {
		t.Errorf("cancel took %v to stop the run", time.Since(start))
	}
	if f := rep.Failed(); f == nil || f.Name != "STARTTLS" || !strings.HasPrefix(f.Detail, "cancelled (context canceled)") {
		t.Errorf("failed step = %+v\n%s", f, dump(rep))
	}
}

// The injected dialer is the only way out: endpoints named by host name
// reach the servers without any lookup, and the certificate is judged by
// that name.
func TestRoundtripInjectedDialer(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	o := ms.options(pki, MethodTLS, MethodSSL)
	real := map[string]string{}
	for _, ep := range []*Endpoint{&o.Submission, &o.POP3} {
		_, port, _ := net.SplitHostPort(ep.Addr)
		name := net.JoinHostPort("mail.example.com", port)
		real[name], ep.Addr = ep.Addr, name
	}
	var dialled []string
	o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialled = append(dialled, addr)
		to, ok := real[addr]
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("not in the test's table")}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, to)
	}
	rep := Roundtrip(t.Context(), o)
	if !rep.OK || rep.Warnings() {
		t.Fatalf("roundtrip through the injected dialer:\n%s", dump(rep))
	}
	if len(dialled) != 2 || dialled[0] != o.Submission.Addr || dialled[1] != o.POP3.Addr {
		t.Errorf("dialled %q, want the submission then the POP3 name", dialled)
	}
	if s := rep.Steps[0]; s.Name != "connect submission "+o.Submission.Addr {
		t.Errorf("first step %q", s.Name)
	}
}

// A full maildrop refuses the message: the failure is the delivery step,
// with the server's reply.
func TestRoundtripDeliveryRefused(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServerWith(t, pki, `quota = "1KiB"`)
	if _, _, err := server.Deliver(ms.cfg, ms.store, "alice@example.com",
		strings.NewReader("Subject: filler\r\n\r\n"+strings.Repeat("x", 900)+"\r\n")); err != nil {
		t.Fatal(err)
	}
	rep := Roundtrip(t.Context(), ms.options(pki, MethodTLS, MethodSSL))
	f := rep.Failed()
	if f == nil || f.Name != "MAIL/RCPT/DATA" {
		t.Fatalf("failed step = %+v\n%s", f, dump(rep))
	}
	// Which command, then the reply code and the server's text (mailpost
	// says "552 5.2.2 mailbox full" after DATA).
	if !regexp.MustCompile(`^(RCPT TO:<alice@example.com> refused|message refused after DATA): [45]\d\d [45]\.\d+\.\d+ \S`).MatchString(f.Detail) {
		t.Errorf("detail %q does not give the refused command and the reply", f.Detail)
	}
	if n := len(ms.messages(t)); n != 1 {
		t.Errorf("%d messages, want only the filler", n)
	}
}

// BenchmarkRoundtrip measures one whole round trip (STARTTLS submission,
// POP3S read-back and delete) against the real server on loopback, the
// password check cached after the first login.
func BenchmarkRoundtrip(b *testing.B) {
	pki := newPKI(b, "probe test CA")
	ms := startMailServer(b, pki)
	o := ms.options(pki, MethodTLS, MethodSSL)
	for b.Loop() {
		if rep := Roundtrip(b.Context(), o); !rep.OK {
			b.Fatalf("roundtrip:\n%s", dump(rep))
		}
	}
}
