package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const ioTimeout = 5 * time.Second

// testServer is a Server on loopback with the fake backend.
type testServer struct {
	srv  *Server
	be   *fakeBackend
	logs *logBuf
}

func newTestServer(t *testing.T, s *Settings) *testServer {
	t.Helper()
	log, logs := testLogger(t)
	be := newFakeBackend()
	if s.Hostname == "" {
		s.Hostname = "pop.test"
	}
	ts := &testServer{srv: NewServer(be, s, log), be: be, logs: logs}
	t.Cleanup(func() {
		ts.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("sessions left after Close: %v", err)
		}
	})
	return ts
}

// listen starts Serve on a fresh 127.0.0.1 port; Serve's result arrives on
// the returned channel.
func (ts *testServer) listen(t *testing.T, implicitTLS bool) (string, chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- ts.srv.Serve(l, implicitTLS, "test "+l.Addr().String()) }()
	return l.Addr().String(), errc
}

// waitSessions waits until the server counts n sessions.
func (ts *testServer) waitSessions(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(ioTimeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ts.srv.Stats().Sessions == n {
			return
		}
	}
	t.Fatalf("sessions = %d, want %d", ts.srv.Stats().Sessions, n)
}

// client is a line-oriented POP3 client over TCP, optionally TLS.
type client struct {
	t   *testing.T
	raw net.Conn
	c   net.Conn
	tp  *textproto.Conn
}

func dial(t *testing.T, addr string, implicitTLS bool) *client {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	cl := &client{t: t, raw: raw, c: raw}
	if implicitTLS {
		tc := tls.Client(raw, clientTLSConfig())
		tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		cl.c = tc
	}
	cl.tp = textproto.NewConn(cl.c)
	return cl
}

func (cl *client) line() string {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := cl.tp.ReadLine()
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	return l
}

func (cl *client) send(line string) {
	cl.t.Helper()
	cl.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := cl.tp.PrintfLine("%s", line); err != nil {
		cl.t.Fatalf("write %q: %v", line, err)
	}
}

// cmd sends line and returns the one-line reply.
func (cl *client) cmd(line string) string {
	cl.t.Helper()
	cl.send(line)
	return cl.line()
}

// expect sends line and fails unless the reply starts with prefix.
func (cl *client) expect(line, prefix string) string {
	cl.t.Helper()
	got := cl.cmd(line)
	if !strings.HasPrefix(got, prefix) {
		cl.t.Fatalf("%s: got %q, want prefix %q", line, got, prefix)
	}
	return got
}

// dotLines reads a multi-line body after its status line.
func (cl *client) dotLines() []string {
	cl.t.Helper()
	cl.c.SetReadDeadline(time.Now().Add(ioTimeout))
	ls, err := cl.tp.ReadDotLines()
	if err != nil {
		cl.t.Fatalf("read multi-line: %v", err)
	}
	return ls
}

func (cl *client) capa() []string {
	cl.t.Helper()
	cl.expect("CAPA", "+OK")
	return cl.dotLines()
}

func (cl *client) starttls() {
	cl.t.Helper()
	cl.expect("STLS", "+OK")
	tc := tls.Client(cl.raw, clientTLSConfig())
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		cl.t.Fatalf("STLS handshake: %v", err)
	}
	cl.c = tc
	cl.tp = textproto.NewConn(tc)
}

// expectEOF fails unless the server closes the connection (after any lines
// matching the given prefixes).
func (cl *client) expectEOF(prefixes ...string) {
	cl.t.Helper()
	for _, p := range prefixes {
		if got := cl.line(); !strings.HasPrefix(got, p) {
			cl.t.Fatalf("got %q, want prefix %q", got, p)
		}
	}
	cl.c.SetReadDeadline(time.Now().Add(ioTimeout))
	if l, err := cl.tp.ReadLine(); !errors.Is(err, io.EOF) {
		cl.t.Fatalf("want EOF, got %q, %v", l, err)
	}
}

func (cl *client) login(user, pass string) {
	cl.t.Helper()
	cl.expect("USER "+user, "+OK")
	cl.expect("PASS "+pass, "+OK maildrop has")
}

func tlsSettings() *Settings { return &Settings{TLSConfig: serverTLSConfig()} }

func TestImplicitTLS(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	addr, _ := ts.listen(t, true)
	cl := dial(t, addr, true)
	if st := cl.c.(*tls.Conn).ConnectionState(); st.Version < tls.VersionTLS12 {
		t.Errorf("negotiated %s", tls.VersionName(st.Version))
	}
	if g := cl.line(); g != "+OK pop.test POP3 server ready" {
		t.Errorf("greeting %q", g)
	}
	caps := cl.capa()
	for _, want := range []string{"USER", "SASL PLAIN", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} {
		if !slices.Contains(caps, want) {
			t.Errorf("CAPA %q lacks %q", caps, want)
		}
	}
	if slices.Contains(caps, "STLS") {
		t.Errorf("CAPA on implicit TLS offers STLS: %q", caps)
	}
	cl.login("alice", "secret")
	cl.expect("RETR 2", "+OK 42 octets")
	if got, want := cl.dotLines(), []string{"Subject: dots", "", ".leading", "..two", ".", "end"}; !slices.Equal(got, want) {
		t.Errorf("RETR 2 = %q, want %q", got, want)
	}
	cl.expect("DELE 2", "+OK")
	cl.send("QUIT")
	cl.expectEOF("+OK bye, 5 messages left")
	ts.waitSessions(t, 0)

	commits, _ := ts.be.snapshot()
	if len(commits) != 1 || !slices.Equal(commits[0], []int{1}) {
		t.Errorf("commits = %v, want [[1]]", commits)
	}
	checkClosedOnce(t, ts.be)
	ci := ts.be.drops[0].ci
	if !ci.TLS || ci.Remote.Addr().String() != "127.0.0.1" || ci.Local.String() != addr || !strings.HasPrefix(ci.Listener, "test ") {
		t.Errorf("ConnInfo = %+v", ci)
	}
}

// TestTLSConfigUsed checks that the engine uses the caller's tls.Config:
// its MinVersion refuses TLS 1.1, on implicit TLS and on STLS alike.
func TestTLSConfigUsed(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	implicit, _ := ts.listen(t, true)
	plain, _ := ts.listen(t, false)

	old := clientTLSConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11

	raw, err := net.DialTimeout("tcp", implicit, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, old)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err == nil {
		t.Fatalf("TLS 1.1 handshake on implicit TLS succeeded")
	}

	cl := dial(t, plain, false)
	cl.line()
	cl.expect("STLS", "+OK")
	tc = tls.Client(cl.raw, old)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err == nil {
		t.Fatalf("TLS 1.1 handshake after STLS succeeded")
	}
	ts.waitSessions(t, 0)

	// The certificate served is the configured one.
	cl = dial(t, implicit, true)
	cert, _ := testCert()
	if got := cl.c.(*tls.Conn).ConnectionState().PeerCertificates[0]; !got.Equal(cert.Leaf) {
		t.Errorf("server presented another certificate")
	}
}

func TestSTLSLogin(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	addr, _ := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()
	caps := cl.capa()
	if !slices.Contains(caps, "STLS") || slices.Contains(caps, "USER") || slices.Contains(caps, "SASL PLAIN") {
		t.Errorf("plain CAPA = %q, want STLS and no USER/SASL", caps)
	}
	cl.expect("USER alice", "-ERR [AUTH] login needs TLS: use STLS first")
	cl.expect("PASS secret", "-ERR [AUTH] ")
	cl.expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "-ERR [AUTH] ")
	cl.starttls()
	caps = cl.capa()
	if slices.Contains(caps, "STLS") || !slices.Contains(caps, "USER") || !slices.Contains(caps, "SASL PLAIN") {
		t.Errorf("CAPA after STLS = %q, want USER and SASL, no STLS", caps)
	}
	cl.expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "+OK maildrop has 6 messages")
	caps = cl.capa()
	for _, no := range []string{"STLS", "USER", "SASL PLAIN"} {
		if slices.Contains(caps, no) {
			t.Errorf("CAPA after login offers %q", no)
		}
	}
	cl.send("QUIT")
	cl.expectEOF("+OK bye")
	ts.waitSessions(t, 0)
	if !ts.be.drops[0].ci.TLS {
		t.Errorf("login after STLS not marked TLS")
	}
}

func TestAuthPlainContinuation(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	addr, _ := ts.listen(t, true)

	cl := dial(t, addr, true)
	cl.line()
	if got := cl.cmd("AUTH PLAIN"); got != "+ " {
		t.Fatalf("AUTH PLAIN without initial response: %q, want %q", got, "+ ")
	}
	cl.expect("*", "-ERR authentication cancelled")
	if got := cl.cmd("AUTH PLAIN"); got != "+ " {
		t.Fatalf("second AUTH PLAIN: %q", got)
	}
	cl.expect("AGFsaWNlAHdyb25nMw==", "-ERR [AUTH] authentication failed")
	cl.cmd("AUTH PLAIN")
	cl.expect("AGJvYgBodW50ZXIy", "+OK maildrop has 0 messages")
	cl.send("QUIT")
	cl.expectEOF("+OK")

	// The failed attempt logged the fail2ban line documented in authFailed.
	re := regexp.MustCompile(`msg="pop3 auth failed" .*?remote_ip=(\S+) user=`)
	m := re.FindStringSubmatch(ts.logs.String())
	if m == nil || m[1] != "127.0.0.1" {
		t.Errorf("fail2ban regex match = %q in log", m)
	}
	if strings.Contains(ts.logs.String(), "AGFsaWNlAHdyb25nMw") || strings.Contains(ts.logs.String(), "wrong3") {
		t.Errorf("credentials leaked into the log")
	}
}

// TestSTLSInjection sends commands in the same packet as STLS: they were
// sent in plaintext and must be dropped, not run inside the TLS session.
func TestSTLSInjection(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	addr, _ := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()
	cl.raw.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(cl.raw, "STLS\r\nUSER alice\r\nPASS secret\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := cl.line(); got != "+OK begin TLS negotiation" {
		t.Fatalf("STLS: %q", got)
	}
	tc := tls.Client(cl.raw, clientTLSConfig())
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	cl.c, cl.tp = tc, textproto.NewConn(tc)
	cl.expect("STAT", "-ERR command not valid in this state")
	cl.expect("PASS secret", "-ERR USER first")
	if len(ts.be.drops) != 0 {
		t.Errorf("injected login opened a maildrop")
	}
}

func TestConnectionCapPerIP(t *testing.T) {
	s := tlsSettings()
	s.MaxConnectionsPerIP = 2
	ts := newTestServer(t, s)
	plain, _ := ts.listen(t, false)
	implicit, _ := ts.listen(t, true)

	a := dial(t, plain, false)
	a.line()
	b := dial(t, implicit, true)
	b.line()
	// The cap counts across listeners: a third connection is refused on
	// either, with the reply encrypted on implicit TLS.
	c := dial(t, plain, false)
	c.expectEOF("-ERR [SYS/TEMP] too many connections")
	d := dial(t, implicit, true)
	d.expectEOF("-ERR [SYS/TEMP] too many connections")
	if st := ts.srv.Stats(); st.Sessions != 2 || st.Rejected != 2 {
		t.Errorf("stats = %+v", st)
	}
	// Sessions still work, and a slot frees up when one ends.
	a.expect("CAPA", "+OK")
	a.dotLines()
	a.send("QUIT")
	a.expectEOF("+OK bye")
	ts.waitSessions(t, 1)
	e := dial(t, plain, false)
	if g := e.line(); !strings.HasPrefix(g, "+OK") {
		t.Errorf("after a slot freed: %q", g)
	}
}

func TestConnectionCapGlobal(t *testing.T) {
	ts := newTestServer(t, &Settings{MaxConnections: 1})
	addr, _ := ts.listen(t, false)
	a := dial(t, addr, false)
	a.line()
	b := dial(t, addr, false)
	b.expectEOF("-ERR [SYS/TEMP] too many connections")
	a.expect("QUIT", "+OK bye")
	ts.waitSessions(t, 0)
	c := dial(t, addr, false)
	c.line()
	c.expect("QUIT", "+OK bye")
}

func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t, &Settings{PreAuthTimeout: 150 * time.Millisecond, AllowInsecureAuth: true})
	addr, _ := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()
	start := time.Now()
	cl.expectEOF("-ERR [SYS/TEMP] autologout; idle for too long")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("timed out after %v, before the 150ms limit", d)
	}
	ts.waitSessions(t, 0)
}

// TestEndlessLine sends 10 MB without a newline: the session must close
// without buffering it, and the server must serve the next client.
func TestEndlessLine(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	addr, _ := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	werr := make(chan error, 1)
	go func() {
		chunk := []byte(strings.Repeat("A", 64<<10))
		cl.raw.SetWriteDeadline(time.Now().Add(ioTimeout))
		var err error
		for sent := 0; sent < 10<<20 && err == nil; sent += len(chunk) {
			_, err = cl.raw.Write(chunk)
		}
		werr <- err
	}()
	cl.expectEOF("-ERR command line too long")
	<-werr // the write fails (reset) or completes; either way it is over
	cl.raw.Close()
	ts.waitSessions(t, 0)
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("allocated %d bytes while a 10 MB line arrived", grown)
	}

	next := dial(t, addr, false)
	next.line()
	next.login("alice", "secret")
}

func TestShutdownDrains(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	addr, serveErr := ts.listen(t, false)

	idle := dial(t, addr, false)
	idle.line()
	idle.login("alice", "secret")
	idle.expect("DELE 1", "+OK")

	// busy is inside Login when Shutdown starts.
	ts.be.loginEnter = make(chan struct{}, 1)
	ts.be.loginGate = make(chan struct{})
	busy := dial(t, addr, false)
	busy.line()
	busy.expect("USER bob", "+OK")
	busy.send("PASS hunter2")
	<-ts.be.loginEnter

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	// The idle session is prodded and told at once.
	idle.expectEOF(lineShutdown)
	select {
	case err := <-serveErr:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return")
	}
	if _, err := net.DialTimeout("tcp", addr, ioTimeout); err == nil {
		t.Errorf("listener still accepts after Shutdown")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a login was in progress", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The busy session finishes its command, then hears about the shutdown.
	close(ts.be.loginGate)
	if got := busy.line(); !strings.HasPrefix(got, "+OK maildrop has 0") {
		t.Errorf("PASS during shutdown: %q", got)
	}
	busy.expectEOF(lineShutdown)
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	commits, _ := ts.be.snapshot()
	if len(commits) != 0 {
		t.Errorf("shutdown committed %v", commits)
	}
	checkClosedOnce(t, ts.be)
}

// TestShutdownWaitsForCommit: a QUIT in progress completes its Commit and
// reply even though Shutdown starts in the middle of it.
func TestShutdownWaitsForCommit(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	addr, _ := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()
	cl.login("alice", "secret")
	cl.expect("DELE 3", "+OK")
	ts.be.commitGate = make(chan struct{})
	cl.send("QUIT")
	time.Sleep(20 * time.Millisecond) // let the session reach Commit
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	time.Sleep(20 * time.Millisecond)
	close(ts.be.commitGate)
	cl.expectEOF("+OK bye, 5 messages left")
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	commits, _ := ts.be.snapshot()
	if len(commits) != 1 || !slices.Equal(commits[0], []int{2}) {
		t.Errorf("commits = %v, want [[2]]", commits)
	}
}

func TestShutdownTimeout(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	addr, _ := ts.listen(t, false)
	ts.be.loginEnter = make(chan struct{}, 1)
	ts.be.loginGate = make(chan struct{})
	cl := dial(t, addr, false)
	cl.line()
	cl.expect("USER bob", "+OK")
	cl.send("PASS hunter2")
	<-ts.be.loginEnter
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	close(ts.be.loginGate)
}

func TestDroppedConnectionCommitsNothing(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	addr, _ := ts.listen(t, true)
	cl := dial(t, addr, true)
	cl.line()
	cl.login("alice", "secret")
	cl.expect("DELE 1", "+OK")
	cl.expect("DELE 2", "+OK")
	cl.raw.Close()
	ts.waitSessions(t, 0)
	commits, closes := ts.be.snapshot()
	if len(commits) != 0 {
		t.Errorf("dropped connection committed %v", commits)
	}
	if !slices.Equal(closes, []int{1}) {
		t.Errorf("maildrop closes = %v, want [1]", closes)
	}
}

// TestListenerClosedByCaller: a hot reload that removes a binding closes
// its listener; Serve returns nil and the sessions go on.
func TestListenerClosedByCaller(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- ts.srv.Serve(l, false, "removed") }()
	cl := dial(t, l.Addr().String(), false)
	cl.line()
	l.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return")
	}
	cl.login("alice", "secret")
	cl.expect("STAT", "+OK 6 175")
}

func TestClose(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	addr, serveErr := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()
	cl.login("alice", "secret")
	if err := ts.srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	cl.expectEOF()
	if err := <-serveErr; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	ts.waitSessions(t, 0)
	checkClosedOnce(t, ts.be)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.Serve(l, false, "late"); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close = %v", err)
	}
}

func TestPanicKeepsServerRunning(t *testing.T) {
	ts := newTestServer(t, &Settings{AllowInsecureAuth: true})
	addr, _ := ts.listen(t, false)
	cl := dial(t, addr, false)
	cl.line()
	cl.expect("USER panic", "+OK")
	cl.send("PASS x")
	cl.expectEOF("-ERR [SYS/TEMP] internal error")
	next := dial(t, addr, false)
	next.line()
	next.login("alice", "secret")
}

func TestSetSettings(t *testing.T) {
	ts := newTestServer(t, &Settings{Banner: "old", AllowInsecureAuth: true})
	addr, _ := ts.listen(t, false)
	a := dial(t, addr, false)
	if g := a.line(); g != "+OK pop.test old" {
		t.Errorf("greeting %q", g)
	}
	ts.srv.SetSettings(&Settings{Banner: "new"})
	b := dial(t, addr, false)
	if g := b.line(); g != "+OK new" {
		t.Errorf("greeting after SetSettings %q", g)
	}
	// The old session keeps its snapshot: insecure login still allowed.
	a.login("alice", "secret")
	b.expect("USER alice", "-ERR [AUTH]")
}
