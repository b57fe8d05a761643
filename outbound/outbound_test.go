package outbound

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"

	"mailpost/storage"
)

// TestRelayAuth delivers through a smarthost that requires AUTH PLAIN,
// over STARTTLS and over implicit TLS, verifying its certificate.
func TestRelayAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode hopMode
		tls  string
	}{{"starttls", startTLSHop, "starttls"}, {"implicit", implicitHop, "implicit"}} {
		t.Run(tc.name, func(t *testing.T) {
			cert, roots := hopCert(t)
			hop := startHop(t, tc.mode, &cert, func(h *hopServer) { h.user, h.pw = "apikey", "s3cret" })
			st := openStore(t)
			id := enqueue(t, st, "alice@example.com", []string{"bob@example.net", "carol@example.org"}, testMessage("relay"))
			s := baseSettings()
			s.Relay = &Relay{Address: hop.addr, TLS: tc.tls, Username: "apikey", Password: "s3cret"}
			startRunner(t, st, s, fastOptions(noResolver{t}, 0, roots))
			waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
			got := hop.messages()
			if len(got) != 1 {
				t.Fatalf("relay got %d messages, want 1 (both recipients in one transaction)", len(got))
			}
			m := got[0]
			if !m.tls || m.authed != "apikey" || m.from != "alice@example.com" ||
				strings.Join(m.to, ",") != "bob@example.net,carol@example.org" {
				t.Errorf("relay saw tls=%v auth=%q from=%q to=%v", m.tls, m.authed, m.from, m.to)
			}
			if m.data != testMessage("relay") {
				t.Errorf("body changed in transit:\n%q\nwant\n%q", m.data, testMessage("relay"))
			}
			if _, err := st.QueuedMessage(id); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("entry still queued: %v", err)
			}
		})
	}
}

// TestRelayWrongPassword keeps the message queued: a refused AUTH is our
// configuration's fault, not the message's, so it must not bounce.
func TestRelayWrongPassword(t *testing.T) {
	cert, roots := hopCert(t)
	hop := startHop(t, implicitHop, &cert, func(h *hopServer) { h.user, h.pw = "apikey", "right" })
	st := openStore(t)
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("pw"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "implicit", Username: "apikey", Password: "wrong"}
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, roots))
	waitFor(t, "two attempts", func() bool {
		q, err := st.QueuedMessage(id)
		return err == nil && q.Attempts >= 2
	})
	q, _ := st.QueuedMessage(id)
	if !strings.Contains(q.LastError, "AUTH") || !strings.Contains(q.LastError, "535") {
		t.Errorf("LastError = %q, want the AUTH refusal", q.LastError)
	}
	if n := len(mailboxMessages(t, st, "alice@example.com")); n != 0 {
		t.Errorf("%d bounces for a relay login failure", n)
	}
}

// TestRelayUntrustedCertificate refuses a relay whose certificate does not
// verify: the password must not go to an impostor.
func TestRelayUntrustedCertificate(t *testing.T) {
	cert, _ := hopCert(t)
	_, otherRoots := hopCert(t)
	hop := startHop(t, startTLSHop, &cert, func(h *hopServer) { h.user, h.pw = "u", "p" })
	st := openStore(t)
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("mitm"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "starttls", Username: "u", Password: "p"}
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, otherRoots))
	waitFor(t, "an attempt", func() bool {
		q, err := st.QueuedMessage(id)
		return err == nil && q.Attempts >= 1
	})
	q, _ := st.QueuedMessage(id)
	if !strings.Contains(q.LastError, "certificate") {
		t.Errorf("LastError = %q, want a certificate error", q.LastError)
	}
	if len(hop.messages()) != 0 {
		t.Error("message delivered over an unverified relay connection")
	}
}

// TestDirectDelivery looks up MX records through the stub resolver, falls
// back to the address of a domain without MX, uses STARTTLS when offered,
// and groups recipients by domain.
func TestDirectDelivery(t *testing.T) {
	cert, roots := hopCert(t, "mx.example.net")
	hop := startHop(t, startTLSHop, &cert, nil)
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	res := &stubResolver{
		mx: map[string][]*net.MX{"example.net": {
			{Host: "mx-dead.example.net.", Pref: 5}, // has no address: skipped
			{Host: "mx.example.net.", Pref: 10},
		}},
		ips: map[string][]netip.Addr{"mx.example.net": lo, "example.org": lo},
	}
	st := openStore(t)
	enqueue(t, st, "alice@example.com", []string{"bob@example.net", "dave@example.net", "erin@example.org"}, testMessage("direct"))
	startRunner(t, st, baseSettings(), fastOptions(res, hop.port(), roots))
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	got := hop.messages()
	if len(got) != 2 {
		t.Fatalf("got %d transactions, want 2 (one per domain)", len(got))
	}
	rcpts := map[string]bool{}
	for _, m := range got {
		if !m.tls {
			t.Error("STARTTLS was offered but not used")
		}
		for _, r := range m.to {
			rcpts[r] = true
		}
	}
	if !rcpts["bob@example.net"] || !rcpts["dave@example.net"] || !rcpts["erin@example.org"] || len(rcpts) != 3 {
		t.Errorf("recipients delivered: %v", rcpts)
	}
}

// TestDirectPlainAndNullMX: a next hop without STARTTLS still gets the
// mail; a domain with a null MX is bounced at once.
func TestDirectPlainAndNullMX(t *testing.T) {
	hop := startHop(t, plainHop, nil, nil)
	res := &stubResolver{
		mx:  map[string][]*net.MX{"example.net": {{Host: "mx.example.net", Pref: 10}}, "nomail.example": {{Host: ".", Pref: 0}}},
		ips: map[string][]netip.Addr{"mx.example.net": {netip.MustParseAddr("127.0.0.1")}},
	}
	st := openStore(t)
	enqueue(t, st, "alice@example.com", []string{"bob@example.net", "x@nomail.example"}, testMessage("nullmx"))
	startRunner(t, st, baseSettings(), fastOptions(res, hop.port(), nil))
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	if got := hop.messages(); len(got) != 1 || got[0].tls || strings.Join(got[0].to, ",") != "bob@example.net" {
		t.Errorf("next hop got %+v", got)
	}
	b := mailboxMessages(t, st, "alice@example.com")
	if len(b) != 1 || !strings.Contains(b[0], "Final-Recipient: rfc822; x@nomail.example") || !strings.Contains(b[0], "Status: 5.1.2") {
		t.Errorf("bounce: %q", b)
	}
}

// TestTemporaryThenSuccess retries after a 4xx and delivers once.
func TestTemporaryThenSuccess(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) {
		h.dataErrs = []error{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}}
	})
	st := openStore(t)
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("retry"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	// The first attempt fails; hold the second back long enough to see
	// the recorded failure.
	opt := fastOptions(noResolver{t}, 0, nil)
	opt.RetryBase, opt.RetryMax = 300*time.Millisecond, time.Second
	startRunner(t, st, s, opt)
	waitFor(t, "the failed attempt", func() bool {
		q, err := st.QueuedMessage(id)
		return err == nil && q.Attempts == 1
	})
	q, err := st.QueuedMessage(id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(q.LastError, "451 4.3.0 try again later") || !q.NextAttempt.After(q.Queued) {
		t.Errorf("after the 4xx: %+v", q)
	}
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	if got := hop.messages(); len(got) != 1 {
		t.Errorf("delivered %d times, want 1", len(got))
	}
	if b := mailboxMessages(t, st, "alice@example.com"); len(b) != 0 {
		t.Errorf("bounced a message that was delivered: %q", b)
	}
}

// TestPermanentFailureBounces turns a 5xx into an RFC 3464 report in the
// sender's mailbox, sent to an alias of it.
func TestPermanentFailureBounces(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) {
		h.dataErrs = []error{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam detected"}}
	})
	st := openStore(t)
	enqueue(t, st, "al@example.com", []string{"bob@example.net"}, testMessage("bounce"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, nil))
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	b := mailboxMessages(t, st, "alice@example.com")
	if len(b) != 1 {
		t.Fatalf("%d bounces, want 1", len(b))
	}
	checkDSN(t, b[0], "al@example.com", map[string]string{"bob@example.net": "5.7.1"}, "Subject: bounce")
	if !strings.Contains(b[0], "Diagnostic-Code: smtp; 554 5.7.1 spam detected") {
		t.Errorf("no diagnostic code in\n%s", b[0])
	}
}

// checkDSN parses a bounce as multipart/report and checks its three parts.
func checkDSN(t *testing.T, raw, to string, status map[string]string, origHeader string) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("To"); got != "<"+to+">" {
		t.Errorf("To = %q", got)
	}
	if m.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Error("no Auto-Submitted header")
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	var dsn, headers string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p)
		ct := p.Header.Get("Content-Type")
		types = append(types, strings.SplitN(ct, ";", 2)[0])
		switch {
		case strings.HasPrefix(ct, "message/delivery-status"):
			dsn = string(body)
		case strings.HasPrefix(ct, "text/rfc822-headers"):
			headers = string(body)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Errorf("parts: %v", types)
	}
	// RFC 3464 §2.1: per-message fields, then a group per recipient, each
	// group separated by a blank line.
	groups := strings.Split(strings.TrimSpace(strings.ReplaceAll(dsn, "\r\n", "\n")), "\n\n")
	if len(groups) != 1+len(status) || !strings.HasPrefix(groups[0], "Reporting-MTA: dns; mail.example.com") {
		t.Fatalf("delivery-status groups: %q", groups)
	}
	for _, g := range groups[1:] {
		hdr, err := mail.ReadMessage(strings.NewReader(g + "\n\n"))
		if err != nil {
			t.Fatal(err)
		}
		rcpt := strings.TrimPrefix(hdr.Header.Get("Final-Recipient"), "rfc822; ")
		want, ok := status[rcpt]
		if !ok || hdr.Header.Get("Action") != "failed" || hdr.Header.Get("Status") != want {
			t.Errorf("recipient group %q: want status %q", g, want)
		}
	}
	if !strings.Contains(headers, origHeader) {
		t.Errorf("original headers %q lack %q", headers, origHeader)
	}
}

// TestNullSenderNotBounced: a message from <> that fails is dropped, never
// bounced (RFC 5321 §4.5.5), and no bounce goes anywhere else either.
func TestNullSenderNotBounced(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) {
		h.rcptErr["bob@example.net"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	})
	st := openStore(t)
	enqueue(t, st, "", []string{"bob@example.net"}, testMessage("null"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, nil))
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	if boxes, _ := st.Mailboxes(); len(boxes) != 0 {
		t.Errorf("a bounce was stored: mailboxes %v", boxes)
	}
}

// TestHangingNextHop gives up on a server that accepts and never answers,
// within the command timeout, and keeps the message for later.
func TestHangingNextHop(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) { h.hangGreet = true })
	st := openStore(t)
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("hang"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "starttls"}
	opt := fastOptions(noResolver{t}, 0, nil)
	opt.Timeout, opt.RetryBase, opt.RetryMax = 200*time.Millisecond, time.Hour, time.Hour
	start := time.Now()
	startRunner(t, st, s, opt)
	waitFor(t, "the timed-out attempt", func() bool {
		q, err := st.QueuedMessage(id)
		return err == nil && q.Attempts == 1
	})
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("gave up after %v; the timeout is 200ms", d)
	}
	q, _ := st.QueuedMessage(id)
	if !strings.Contains(q.LastError, "timeout") {
		t.Errorf("LastError = %q, want a timeout", q.LastError)
	}
}

// TestPartialFailure delivers to the recipients the next hop takes, bounces
// the one it refuses for good, and retries the one it defers.
func TestPartialFailure(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) {
		h.rcptErr["gone@example.net"] = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		h.rcptErr["full@example.net"] = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	})
	st := openStore(t)
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net", "gone@example.net", "full@example.net"}, testMessage("partial"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	opt := fastOptions(noResolver{t}, 0, nil)
	opt.RetryBase, opt.RetryMax = time.Hour, time.Hour
	r := startRunner(t, st, s, opt)
	waitFor(t, "the first attempt", func() bool {
		q, err := st.QueuedMessage(id)
		return err == nil && q.Attempts == 1
	})
	// Per recipient: one delivered, one bounced, one waiting.
	waitFor(t, "the attempt to end", func() bool { s := r.Stats(); return s.Deferred == 1 && s.InFlight == 0 })
	if got, want := r.Stats(), (Stats{Delivered: 1, Failed: 1, Deferred: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	q, _ := st.QueuedMessage(id)
	if strings.Join(q.To, ",") != "full@example.net" || !strings.Contains(q.LastError, "452") {
		t.Errorf("still queued for %v (%q), want only full@example.net", q.To, q.LastError)
	}
	if got := hop.messages(); len(got) != 1 || strings.Join(got[0].to, ",") != "bob@example.net" {
		t.Errorf("delivered: %+v", got)
	}
	b := mailboxMessages(t, st, "alice@example.com")
	if len(b) != 1 {
		t.Fatalf("%d bounces, want 1", len(b))
	}
	checkDSN(t, b[0], "alice@example.com", map[string]string{"gone@example.net": "5.1.1"}, "Subject: partial")
}

// TestExpiryBounces bounces what is still failing after max_attempts_for.
func TestExpiryBounces(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) {
		h.rcptErr["bob@example.net"] = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 5}, Message: "busy"}
	})
	st := openStore(t)
	enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("expire"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	s.MaxAttemptsFor = 150 * time.Millisecond
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, nil))
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	b := mailboxMessages(t, st, "alice@example.com")
	if len(b) != 1 {
		t.Fatalf("%d bounces, want 1", len(b))
	}
	checkDSN(t, b[0], "alice@example.com", map[string]string{"bob@example.net": "4.4.5"}, "Subject: expire")
	if !strings.Contains(b[0], "gave up retrying") {
		t.Errorf("the bounce does not say it expired:\n%s", b[0])
	}
}

// TestRestartDeliversQueue: entries queued while no runner ran (a crash,
// a restart) are delivered once one starts; Stop leaves the queue intact.
func TestRestartDeliversQueue(t *testing.T) {
	hop := startHop(t, plainHop, nil, nil)
	st := openStore(t)
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}

	// First run: no outbound settings, so nothing leaves.
	r := New(st, nil, slog.New(slog.DiscardHandler), fastOptions(noResolver{t}, 0, nil))
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("restart"+string(rune('a'+i))))
		r.Wake()
	}
	time.Sleep(100 * time.Millisecond)
	if err := r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := queueLen(t, st); n != 5 || len(hop.messages()) != 0 {
		t.Fatalf("before restart: %d queued, %d delivered", n, len(hop.messages()))
	}
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, nil))
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	if got := hop.messages(); len(got) != 5 {
		t.Errorf("delivered %d, want 5", len(got))
	}
}

// TestWakeAndRetryDrop: Retry makes a deferred entry due at once; Drop
// removes one without a bounce.
func TestWakeAndRetryDrop(t *testing.T) {
	hop := startHop(t, plainHop, nil, func(h *hopServer) {
		h.dataErrs = []error{&smtp.SMTPError{Code: 451, Message: "later"}, &smtp.SMTPError{Code: 451, Message: "later"}}
	})
	st := openStore(t)
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	opt := fastOptions(noResolver{t}, 0, nil)
	opt.RetryBase, opt.RetryMax, opt.Poll = time.Hour, time.Hour, time.Hour // only Wake and Retry move things
	r := startRunner(t, st, s, opt)
	a := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("a"))
	b := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("b"))
	r.Wake()
	waitFor(t, "both deferred", func() bool {
		qa, _ := st.QueuedMessage(a)
		qb, _ := st.QueuedMessage(b)
		return qa.Attempts == 1 && qb.Attempts == 1
	})
	if err := Drop(st, b); err != nil {
		t.Fatal(err)
	}
	if err := Retry(st, a, time.Now()); err != nil {
		t.Fatal(err)
	}
	r.Wake()
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	if got := hop.messages(); len(got) != 1 || !strings.Contains(got[0].data, "Subject: a") {
		t.Errorf("delivered %+v", got)
	}
	if err := Retry(st, b, time.Now()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("retry of a dropped entry: %v", err)
	}
}

// TestDKIMSigned signs with the stored key and verifies with go-msgauth
// against the TXT record `mailpost dns` prints.
func TestDKIMSigned(t *testing.T) {
	for _, alg := range []string{"ed25519", "rsa"} {
		t.Run(alg, func(t *testing.T) {
			hop := startHop(t, plainHop, nil, nil)
			st := openStore(t)
			s := baseSettings()
			s.Relay = &Relay{Address: hop.addr, TLS: "none"}
			s.DKIM = &DKIMSettings{Selector: "mail", Algorithm: alg}
			enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("dkim"))
			startRunner(t, st, s, fastOptions(noResolver{t}, 0, nil))
			waitFor(t, "delivery", func() bool { return len(hop.messages()) == 1 })

			key, err := LoadOrCreateKey(st, s.DKIM)
			if err != nil {
				t.Fatal(err)
			}
			switch key.Public().(type) {
			case ed25519.PublicKey:
				if alg != "ed25519" {
					t.Errorf("%s key is ed25519", alg)
				}
			case *rsa.PublicKey:
				if alg != "rsa" || key.Public().(*rsa.PublicKey).N.BitLen() != 2048 {
					t.Errorf("%s key is RSA-%d", alg, key.Public().(*rsa.PublicKey).N.BitLen())
				}
			}
			txt, err := DKIMRecord(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			data := hop.messages()[0].data
			if !strings.HasPrefix(data, "DKIM-Signature:") || !strings.HasSuffix(data, testMessage("dkim")) {
				t.Fatalf("signed message:\n%s", data)
			}
			lookups := 0
			vs, err := dkim.VerifyWithOptions(strings.NewReader(data), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
				lookups++
				if name != "mail._domainkey.example.com" {
					return nil, errors.New("unexpected lookup " + name)
				}
				return []string{txt}, nil
			}})
			if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" || lookups != 1 {
				t.Fatalf("verify: %v %+v", err, vs)
			}
			// A tampered body fails.
			bad := strings.Replace(data, "Hello Bob", "Hello Eve", 1)
			vs, _ = dkim.VerifyWithOptions(strings.NewReader(bad), &dkim.VerifyOptions{LookupTXT: func(string) ([]string, error) { return []string{txt}, nil }})
			if len(vs) != 1 || vs[0].Err == nil {
				t.Error("a tampered message still verifies")
			}
		})
	}
}

// TestDKIMForeignFromUnsigned leaves mail from another domain unsigned.
func TestDKIMForeignFromUnsigned(t *testing.T) {
	hop := startHop(t, plainHop, nil, nil)
	st := openStore(t)
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	s.DKIM = &DKIMSettings{Selector: "mail", Algorithm: "ed25519"}
	msg := strings.Replace(testMessage("foreign"), "alice@example.com", "alice@elsewhere.example", 1)
	enqueue(t, st, "alice@elsewhere.example", []string{"bob@example.net"}, msg)
	startRunner(t, st, s, fastOptions(noResolver{t}, 0, nil))
	waitFor(t, "delivery", func() bool { return len(hop.messages()) == 1 })
	if d := hop.messages()[0].data; d != msg {
		t.Errorf("foreign mail was changed:\n%s", d)
	}
}

// TestConcurrencyCap never runs more sessions to one destination than
// MaxPerDestination.
func TestConcurrencyCap(t *testing.T) {
	var active, peak int
	release := make(chan struct{})
	hop := startHop(t, plainHop, nil, nil)
	hop.mu.Lock()
	hop.onData = func(received) error {
		// Called with hop.mu held: count, then wait outside it.
		active++
		peak = max(peak, active)
		hop.mu.Unlock()
		<-release
		hop.mu.Lock()
		active--
		return nil
	}
	hop.mu.Unlock()
	st := openStore(t)
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	opt := fastOptions(noResolver{t}, 0, nil)
	opt.MaxConcurrent, opt.MaxPerDestination = 8, 2
	for i := range 6 {
		enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("c"+string(rune('a'+i))))
	}
	startRunner(t, st, s, opt)
	waitFor(t, "two sessions in DATA", func() bool {
		hop.mu.Lock()
		defer hop.mu.Unlock()
		return active == 2
	})
	time.Sleep(100 * time.Millisecond) // a third would show up now
	close(release)
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	hop.mu.Lock()
	defer hop.mu.Unlock()
	if peak != 2 {
		t.Errorf("peak sessions in DATA = %d, want 2", peak)
	}
}

func TestWriteDNSRecordsQuote(t *testing.T) {
	long := strings.Repeat("a", 300)
	if got := quoteTXT(long); got != `"`+long[:255]+`" "`+long[255:]+`"` {
		t.Errorf("quoteTXT split wrong: %s", got)
	}
}

// TestHangAfterData gives up on a next hop that takes the message and then
// never answers the final dot; the message stays queued for a retry
// (RFC 5321 §4.5.3.2.6 timeouts, and RFC 1047's duplicate risk accepted).
func TestHangAfterData(t *testing.T) {
	unblock := make(chan struct{})
	hop := startHop(t, plainHop, nil, nil)
	hop.mu.Lock()
	hop.onData = func(received) error {
		hop.mu.Unlock()
		<-unblock
		hop.mu.Lock()
		return errors.New("too late")
	}
	hop.mu.Unlock()
	t.Cleanup(func() { close(unblock) })
	st := openStore(t)
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("slowdot"))
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "none"}
	opt := fastOptions(noResolver{t}, 0, nil)
	opt.Timeout, opt.RetryBase, opt.RetryMax = 200*time.Millisecond, time.Hour, time.Hour
	startRunner(t, st, s, opt)
	waitFor(t, "the timed-out attempt", func() bool {
		q, err := st.QueuedMessage(id)
		return err == nil && q.Attempts == 1
	})
	q, _ := st.QueuedMessage(id)
	if !strings.Contains(q.LastError, "timeout") {
		t.Errorf("LastError = %q, want a timeout", q.LastError)
	}
	if b := mailboxMessages(t, st, "alice@example.com"); len(b) != 0 {
		t.Errorf("a timeout bounced the message")
	}
}

// TestConnectionReuse sends a run of messages to one relay over one
// authenticated TLS session, and opens a new one when the relay has
// closed the idle connection meanwhile.
func TestConnectionReuse(t *testing.T) {
	cert, roots := hopCert(t)
	hop := startHop(t, startTLSHop, &cert, func(h *hopServer) {
		h.user, h.pw = "u", "p"
		h.idleClose = 300 * time.Millisecond
	})
	st := openStore(t)
	s := baseSettings()
	s.Relay = &Relay{Address: hop.addr, TLS: "starttls", Username: "u", Password: "p"}
	opt := fastOptions(noResolver{t}, 0, roots)
	opt.MaxConcurrent = 1
	for i := range 5 {
		enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("reuse"+string(rune('a'+i))))
	}
	r := startRunner(t, st, s, opt)
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	hop.mu.Lock()
	sessions := hop.sessions
	hop.mu.Unlock()
	if sessions != 1 || len(hop.messages()) != 5 {
		t.Fatalf("%d messages over %d sessions, want 5 over 1", len(hop.messages()), sessions)
	}

	time.Sleep(600 * time.Millisecond) // the relay drops the idle session
	id := enqueue(t, st, "alice@example.com", []string{"bob@example.net"}, testMessage("after-idle"))
	r.Wake()
	waitFor(t, "the queue to empty", func() bool { return queueLen(t, st) == 0 })
	hop.mu.Lock()
	sessions = hop.sessions
	hop.mu.Unlock()
	if sessions != 2 || len(hop.messages()) != 6 {
		t.Errorf("after the relay closed the idle session: %d messages over %d sessions, want 6 over 2", len(hop.messages()), sessions)
	}
	if _, err := st.QueuedMessage(id); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("entry %d still queued: %v", id, err)
	}
}
