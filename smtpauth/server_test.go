package smtpauth

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestInbound(t *testing.T) {
	ts := start(t, inboundSettings(), false, "127.0.0.1")
	r := dialRaw(t, ts.addr, false)
	r.expect("220 mx.example.org ESMTP")
	caps := r.ehloCaps()
	if !hasCap(caps, "STARTTLS") || hasCap(caps, "AUTH") {
		t.Errorf("inbound caps %q: want STARTTLS, no AUTH", caps)
	}
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "503 5.5.1")
	// Any sender, the null one too (RFC 5321 §4.5.5: bounces).
	r.cmd("MAIL FROM:<>", "250 ")
	r.cmd("RCPT TO:<someone@elsewhere.example>", "554 5.7.1 relay access denied")
	r.cmd("RCPT TO:<nobody@example.org>", "550 5.1.1")
	r.cmd("RCPT TO:<Bob@Example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: bounce\r\n\r\nreturned\r\n.\r\n")
	r.tp.W.Flush()
	r.expect("250 2.0.0 queued as ")

	// Opportunistic TLS: offered, never required; no AUTH after it either.
	r.starttls()
	if caps := r.ehloCaps(); hasCap(caps, "AUTH") || hasCap(caps, "STARTTLS") {
		t.Errorf("inbound caps after TLS %q", caps)
	}
	r.cmd("AUTH LOGIN", "503 5.5.1")
	r.cmd("MAIL FROM:<someone@elsewhere.example>", "250 ")
	r.cmd("RCPT TO:<alice@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: hello\r\n\r\nhi\r\n.\r\n")
	r.tp.W.Flush()
	r.expect("250 2.0.0 queued as ")

	msgs := ts.be.stored()
	if len(msgs) != 2 {
		t.Fatalf("stored %d", len(msgs))
	}
	if e := msgs[0].env; e.From != "" || e.Account != "" || e.To[0] != "Bob@Example.org" {
		t.Errorf("first envelope %+v", e)
	}
	if !strings.Contains(msgs[0].data, ") by mx.example.org (mailpost) with ESMTP id ") {
		t.Errorf("plain inbound Received: %q", msgs[0].data)
	}
	if !strings.Contains(msgs[1].data, " with ESMTPS id ") || msgs[1].ci.TLS != true {
		t.Errorf("TLS inbound Received: %q", msgs[1].data)
	}
	for _, ci := range ts.be.recipientCI {
		if ci.Helo != "client.example" {
			t.Errorf("Recipient saw HELO %q", ci.Helo)
		}
	}
}

// TestInboundNoTLS: without a TLS config STARTTLS is not offered, and
// submission on such a port can never authenticate.
func TestNoTLSConfig(t *testing.T) {
	s := inboundSettings()
	s.TLSConfig = nil
	ts := start(t, s, false, "127.0.0.1")
	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	if caps := r.ehloCaps(); hasCap(caps, "STARTTLS") || hasCap(caps, "AUTH") {
		t.Errorf("caps %q", caps)
	}
	r.cmd("STARTTLS", "502 5.5.1")

	s = submissionSettings()
	s.TLSConfig = nil
	ts = start(t, s, false, "127.0.0.1")
	r = dialRaw(t, ts.addr, false)
	r.expect("220 ")
	if caps := r.ehloCaps(); hasCap(caps, "STARTTLS") || hasCap(caps, "AUTH") {
		t.Errorf("caps %q", caps)
	}
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "530 5.7.0")
}

func TestInboundRateLimit(t *testing.T) {
	s := inboundSettings()
	s.RateLimitPerIP = 2
	ts := start(t, s, false, "127.0.0.1")
	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("MAIL FROM:<a@elsewhere.example>", "250 ")
	r.cmd("RSET", "250 ")
	// The bucket is per IP, not per connection.
	r2 := dialRaw(t, ts.addr, false)
	r2.expect("220 ")
	r2.cmd("EHLO c", "250 ")
	r2.cmd("MAIL FROM:<a@elsewhere.example>", "250 ")
	r.cmd("MAIL FROM:<a@elsewhere.example>", "450 4.7.0 rate limit exceeded, try again later")
	r.cmd("RCPT TO:<alice@example.org>", "502 5.5.1") // no transaction was opened

	// Submission is not rate limited by this setting.
	s = submissionSettings()
	s.RateLimitPerIP = 1
	ts = start(t, s, true, "127.0.0.1")
	r = dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	for range 3 {
		r.cmd("MAIL FROM:<alice@example.org>", "250 ")
		r.cmd("RSET", "250 ")
	}
}

func TestRateLimiter(t *testing.T) {
	rl := newRateLimiter(4)
	now := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if !rl.allow(a, 3, now) {
			t.Fatalf("message %d refused", i+1)
		}
	}
	if rl.allow(a, 3, now) {
		t.Fatal("4th message in the same instant allowed")
	}
	// 3 per minute: one token back every 20 s.
	if rl.allow(a, 3, now.Add(19*time.Second)) {
		t.Fatal("allowed before a token was back")
	}
	if !rl.allow(a, 3, now.Add(21*time.Second)) {
		t.Fatal("refused after a token was back")
	}
	// One IPv6 /64 is one client.
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	if !rl.allow(v6a, 1, now) || rl.allow(v6b, 1, now) {
		t.Error("two addresses of one /64 got separate buckets")
	}
	if !rl.allow(netip.MustParseAddr("2001:db8:0:1::1"), 1, now) {
		t.Error("another /64 shares the bucket")
	}
	// The table never grows past its cap, however many clients come.
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		rl.allow(ip, 5, now.Add(time.Duration(i)*time.Millisecond))
		if n := rl.len(); n > 4 {
			t.Fatalf("%d buckets, cap 4", n)
		}
	}
}

func TestConnectionCaps(t *testing.T) {
	s := submissionSettings()
	s.MaxConnectionsPerIP = 1
	ts := start(t, s, false, "127.0.0.1")
	r1 := dialRaw(t, ts.addr, false)
	r1.expect("220 ")
	r2 := dialRaw(t, ts.addr, false)
	r2.expect("421 4.7.0 too many connections")
	if !r2.closed() {
		t.Error("refused connection left open")
	}
	r1.cmd("QUIT", "221 ")
	waitFor(t, "first session to end", func() bool { return ts.Stats().Sessions == 0 })
	r3 := dialRaw(t, ts.addr, false)
	r3.expect("220 ")
	if st := ts.Stats(); st.Rejected != 1 || st.Accepted != 2 || st.Sessions != 1 {
		t.Errorf("stats %+v", st)
	}

	// On implicit TLS the refusal comes after the handshake, encrypted.
	s = submissionSettings()
	s.MaxConnections = 1
	ts = start(t, s, true, "127.0.0.1")
	r1 = dialRaw(t, ts.addr, true)
	r1.expect("220 ")
	r2 = dialRaw(t, ts.addr, true)
	r2.expect("421 4.7.0 too many connections")
	if !r2.closed() {
		t.Error("refused TLS connection left open")
	}

	// SetSettings applies to the next connection: the cap is lifted.
	s2 := submissionSettings()
	ts.SetSettings(s2)
	r3 = dialRaw(t, ts.addr, true)
	r3.expect("220 ")
}

// TestSettingsSnapshot: a running session keeps the settings it was
// accepted with.
func TestSettingsSnapshot(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	old := dialRaw(t, ts.addr, true)
	old.expect("220 mx.example.org ")
	s := submissionSettings()
	s.Hostname = "new.example.org"
	s.MaxMessageBytes = 500
	ts.SetSettings(s)
	if caps := old.ehloCaps(); !hasCap(caps, "SIZE 65536") {
		t.Errorf("old session caps %q", caps)
	}
	nu := dialRaw(t, ts.addr, true)
	nu.expect("220 new.example.org ")
	if caps := nu.ehloCaps(); !hasCap(caps, "SIZE 500") {
		t.Errorf("new session caps %q", caps)
	}
}

func TestTimeoutsAndLimits(t *testing.T) {
	s := submissionSettings()
	s.ReadTimeout = 150 * time.Millisecond
	ts := start(t, s, false, "127.0.0.1")
	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.expect("421 4.4.2") // idle
	if !r.closed() {
		t.Error("idle connection left open")
	}

	// A stalled DATA body times out too (go-smtp alone would wait forever
	// between its per-command deadlines), and nothing is stored.
	r = dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.starttls()
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: slow\r\n\r\nand then noth")
	r.tp.W.Flush()
	r.expect("451 4.3.0")
	r.expect("421 4.4.2")
	if !r.closed() {
		t.Error("stalled DATA left open")
	}
	waitFor(t, "sessions to end", func() bool { return ts.Stats().Sessions == 0 })
	if n := len(ts.be.stored()); n != 0 {
		t.Errorf("stored %d", n)
	}

	// A command line longer than the limit closes the session.
	r = dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.tp.PrintfLine("EHLO %s", strings.Repeat("x", maxLineLength+10))
	r.expect("500 5.4.0")
}

func TestPanicRecovered(t *testing.T) {
	ts := start(t, inboundSettings(), false, "127.0.0.1")
	ts.be.panicRcpt = "boom@example.org"
	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("MAIL FROM:<>", "250 ")
	r.cmd("RCPT TO:<boom@example.org>", "421 4.0.0")
	if !r.closed() {
		t.Error("connection open after a panic")
	}
	// go-smtp replies and closes before it logs the panic.
	waitFor(t, "the panic to be logged", func() bool {
		return strings.Contains(ts.logs.String(), `msg="smtp panic in session"`)
	})
	// The server lives on.
	r = dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	waitFor(t, "panicked session to be released", func() bool { return ts.Stats().Sessions == 1 })
}

// TestShutdownDrains: an idle session is closed with 421, a session in a
// mail transaction may finish it, and Shutdown returns when all are gone.
func TestShutdownDrains(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	idle := dialRaw(t, ts.addr, true)
	idle.expect("220 ")
	idle.cmd("EHLO c", "250 ")

	busy := dialRaw(t, ts.addr, true)
	busy.expect("220 ")
	busy.cmd("EHLO c", "250 ")
	busy.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	busy.cmd("MAIL FROM:<alice@example.org>", "250 ")
	busy.cmd("RCPT TO:<bob@example.org>", "250 ")
	waitFor(t, "two sessions", func() bool { return ts.Stats().Sessions == 2 })

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	idle.expect("421 ")
	if !idle.closed() {
		t.Error("idle session left open")
	}
	select {
	case err := <-ts.served:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		ts.served <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if c, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a transaction in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	busy.cmd("DATA", "354 ")
	busy.tp.W.WriteString("Subject: last\r\n\r\nmade it\r\n.\r\n")
	busy.tp.W.Flush()
	busy.expect("250 2.0.0 queued as ")
	busy.expect("421 ") // and then it is told to go
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if n := len(ts.be.stored()); n != 1 {
		t.Errorf("stored %d", n)
	}
	late, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(late, false, "late"); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

// TestShutdownDeadline: a transaction that does not finish in time is cut
// off when ctx ends, and the Deliver running for it is cancelled.
func TestShutdownDeadline(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	ts.be.hold = make(chan struct{}) // never closed: Deliver waits for ctx
	ts.be.entered = make(chan struct{}, 1)
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	r.cmd("DATA", "354 ")
	r.tp.W.WriteString("Subject: stuck\r\n\r\nx\r\n.\r\n")
	r.tp.W.Flush()
	<-ts.be.entered

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := ts.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	if !r.closed() {
		t.Error("connection open after the drain deadline")
	}
	waitFor(t, "sessions to end", func() bool { return ts.Stats().Sessions == 0 })
	if n := len(ts.be.stored()); n != 0 {
		t.Errorf("stored %d", n)
	}
}

func TestBDAT(t *testing.T) {
	ts := start(t, submissionSettings(), true, "127.0.0.1")
	r := dialRaw(t, ts.addr, true)
	r.expect("220 ")
	r.cmd("EHLO c", "250 ")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235 ")
	r.cmd("MAIL FROM:<alice@example.org>", "250 ")
	r.cmd("RCPT TO:<bob@example.org>", "250 ")
	chunk := "Subject: chunked\r\n\r\nbody\r\n"
	r.tp.W.WriteString("BDAT 9\r\n" + chunk[:9])
	r.tp.W.Flush()
	r.expect("250 ")
	r.tp.W.WriteString("BDAT " + strconv.Itoa(len(chunk)-9) + " LAST\r\n" + chunk[9:])
	r.tp.W.Flush()
	r.expect("250 2.0.0 queued as ")
	msgs := ts.be.stored()
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0].data, "Received: ") || !strings.HasSuffix(msgs[0].data, chunk) {
		t.Fatalf("stored %+v", msgs)
	}
}

func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	auth := func(u, p string) error { gotUser, gotPass = u, p; return nil }

	s := newLoginServer(auth)
	ch, done, err := s.Next(nil)
	if string(ch) != "Username:" || done || err != nil {
		t.Fatalf("first step %q %v %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("u"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("second step %q %v %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("p")); !done || err != nil || gotUser != "u" || gotPass != "p" {
		t.Fatalf("third step %v %v %q %q", done, err, gotUser, gotPass)
	}
	if _, _, err = s.Next([]byte("more")); err == nil {
		t.Error("response after done accepted")
	}

	// The user name as initial response skips the first challenge.
	s = newLoginServer(auth)
	if ch, _, _ := s.Next([]byte("v")); string(ch) != "Password:" {
		t.Fatalf("challenge after initial response %q", ch)
	}
	failed := errors.New("no")
	s = newLoginServer(func(u, p string) error { return failed })
	s.Next([]byte("v"))
	if _, _, err := s.Next([]byte("w")); err != failed {
		t.Errorf("error %v", err)
	}
}

func TestReceivedHeaderUnit(t *testing.T) {
	when := time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", 3600))
	ci := ConnInfo{Remote: netip.MustParseAddrPort("192.0.2.7:1234"), Helo: "[192.0.2.7]"}
	env := &Envelope{ID: "abc.1", To: []string{"a@b", "c@d"}}
	got := receivedHeader(ci, "mx.example", false, env, when)
	want := "Received: from [192.0.2.7] ([192.0.2.7]) by mx.example (mailpost) with ESMTP id abc.1;\r\n\tTue, 04 Mar 2025 05:06:07 +0100\r\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	ci = ConnInfo{Helo: "", TLS: true}
	env.To = []string{"x\x01y@z"}
	got = receivedHeader(ci, "mx", true, env, when)
	if !strings.HasPrefix(got, "Received: from unknown (unknown) by mx (mailpost) with ESMTPSA id abc.1 for <xy@z>;\r\n\t") {
		t.Errorf("got %q", got)
	}
}
