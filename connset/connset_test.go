package connset

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const ioTimeout = 5 * time.Second

// member stands for a protocol session: it records how the set treated it.
type member struct {
	c       net.Conn
	prods   atomic.Int32
	aborted atomic.Bool
}

func newSet() *Set[*member] {
	return New(
		func(m *member) { m.prods.Add(1); m.c.SetReadDeadline(time.Now()) },
		func(m *member) { m.aborted.Store(true); m.c.Close() },
	)
}

// listen opens a loopback listener on network ("tcp4", or "tcp" on [::] for
// dual stack) that the test closes.
func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// connect dials l's port on to (an IP literal) from the local IP from (""
// for any) and returns the server side of the connection.
func connect(t *testing.T, l net.Listener, from, to string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	port := l.Addr().(*net.TCPAddr).Port
	cc, err := d.Dial("tcp", net.JoinHostPort(to, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("dial %s from %q: %v", to, from, err)
	}
	t.Cleanup(func() { cc.Close() })
	if tl, ok := l.(*net.TCPListener); ok {
		tl.SetDeadline(time.Now().Add(ioTimeout))
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { sc.Close() })
	return sc
}

// admit runs Admit with a fresh member for c.
func admit(s *Set[*member], c net.Conn, total, perIP int) (*member, Verdict) {
	return s.Admit(c, total, perIP, func() *member { return &member{c: c} })
}

func TestTotalCapAndRelease(t *testing.T) {
	s := newSet()
	l := listen(t, "tcp4", "127.0.0.1:0")
	var ms []*member
	for i := range 2 {
		m, v := admit(s, connect(t, l, "", "127.0.0.1"), 2, 0)
		if v != Accepted || m == nil {
			t.Fatalf("connection %d: verdict %v, member %v; want Accepted", i, v, m)
		}
		ms = append(ms, m)
	}
	over := connect(t, l, "", "127.0.0.1")
	opened := false
	m, v := s.Admit(over, 2, 0, func() *member { opened = true; return &member{} })
	if v != Refused || m != nil || opened {
		t.Fatalf("third connection: verdict %v, member %v, opened %v; want Refused without a session", v, m, opened)
	}
	if n := s.Len(); n != 2 {
		t.Errorf("Len = %d with one refused, want 2", n)
	}
	s.EndRefusal(over)

	s.Release(ms[0])
	s.Release(ms[0]) // a second release must not free another slot
	if n := s.Len(); n != 1 {
		t.Errorf("Len = %d after a release, want 1", n)
	}
	if _, v := admit(s, connect(t, l, "", "127.0.0.1"), 2, 0); v != Accepted {
		t.Errorf("after a release: verdict %v, want Accepted", v)
	}
	if _, v := admit(s, connect(t, l, "", "127.0.0.1"), 2, 0); v != Refused {
		t.Errorf("full again: verdict %v, want Refused", v)
	}
	// No cap: anything goes.
	for range 3 {
		if _, v := admit(s, connect(t, l, "", "127.0.0.1"), 0, 0); v != Accepted {
			t.Fatalf("uncapped: verdict %v, want Accepted", v)
		}
	}
}

func TestPerIPCapAndRelease(t *testing.T) {
	s := newSet()
	l := listen(t, "tcp4", "127.0.0.1:0")
	a1, v := admit(s, connect(t, l, "127.0.0.1", "127.0.0.1"), 0, 1)
	if v != Accepted {
		t.Fatalf("first from 127.0.0.1: %v", v)
	}
	if _, v := admit(s, connect(t, l, "127.0.0.1", "127.0.0.1"), 0, 1); v != Refused {
		t.Errorf("second from 127.0.0.1: %v, want Refused", v)
	}
	// Another client is not held back by the first one's cap. Linux answers
	// the whole of 127.0.0.0/8 on lo.
	if _, v := admit(s, connect(t, l, "127.0.0.2", "127.0.0.1"), 0, 1); v != Accepted {
		t.Errorf("first from 127.0.0.2: %v, want Accepted", v)
	}
	s.Release(a1)
	if _, v := admit(s, connect(t, l, "127.0.0.1", "127.0.0.1"), 0, 1); v != Accepted {
		t.Errorf("127.0.0.1 after its release: %v, want Accepted", v)
	}
	s.mu.Lock()
	n := len(s.perIP)
	s.mu.Unlock()
	if n != 2 {
		t.Errorf("%d IPs counted, want 2", n)
	}
}

func TestPerIPReleaseForgetsIP(t *testing.T) {
	s := newSet()
	l := listen(t, "tcp4", "127.0.0.1:0")
	m, _ := admit(s, connect(t, l, "", "127.0.0.1"), 0, 1)
	s.Release(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.perIP) != 0 || len(s.members) != 0 {
		t.Errorf("after the last release: perIP %v, members %d; want both empty", s.perIP, len(s.members))
	}
}

// A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d; that must be
// the same client as on an IPv4 listener.
func TestMappedIPv4CountsAsIPv4(t *testing.T) {
	s := newSet()
	v4 := listen(t, "tcp4", "127.0.0.1:0")
	dual := listen(t, "tcp", "[::]:0")

	viaDual := connect(t, dual, "", "127.0.0.1")
	raw := viaDual.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	if !raw.Is4In6() {
		t.Fatalf("dual-stack listener reported %v, expected an IPv4-mapped address to test with", raw)
	}
	if got := AddrPort(viaDual.RemoteAddr()).Addr(); got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("AddrPort of %v = %v, want 127.0.0.1", viaDual.RemoteAddr(), got)
	}

	if _, v := admit(s, connect(t, v4, "", "127.0.0.1"), 0, 1); v != Accepted {
		t.Fatalf("via IPv4 listener: %v", v)
	}
	if _, v := admit(s, viaDual, 0, 1); v != Refused {
		t.Errorf("same client via dual-stack listener: %v, want Refused", v)
	}
	// A real IPv6 client is someone else.
	if _, v := admit(s, connect(t, dual, "", "::1"), 0, 1); v != Accepted {
		t.Errorf("::1 via dual-stack listener: %v, want Accepted", v)
	}
}

type strAddr string

func (a strAddr) Network() string { return "test" }
func (a strAddr) String() string  { return string(a) }

func TestAddrPort(t *testing.T) {
	tests := []struct {
		in   net.Addr
		want string // "" = zero AddrPort
	}{
		{nil, ""},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 110}, "192.0.2.1:110"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1").To4(), Port: 110}, "192.0.2.1:110"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 995}, "192.0.2.1:995"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 587}, "[2001:db8::1]:587"},
		{&net.UDPAddr{IP: net.ParseIP("::ffff:198.51.100.7"), Port: 25}, "198.51.100.7:25"},
		{strAddr("[::ffff:203.0.113.9]:465"), "203.0.113.9:465"},
		{strAddr("pipe"), ""},
	}
	for _, tt := range tests {
		got := AddrPort(tt.in)
		if tt.want == "" {
			if got.IsValid() || got.Addr().IsValid() {
				t.Errorf("AddrPort(%v) = %v, want zero", tt.in, got)
			}
			continue
		}
		if got.String() != tt.want {
			t.Errorf("AddrPort(%v) = %v, want %s", tt.in, got, tt.want)
		}
	}
}

// A connection without an IP (net.Pipe) counts toward the total cap but
// never toward a per-IP cap.
func TestPipeCountsTowardTotalOnly(t *testing.T) {
	s := newSet()
	var ms []*member
	for range 3 {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		m, v := admit(s, a, 3, 1)
		if v != Accepted {
			t.Fatalf("pipe: %v, want Accepted", v)
		}
		ms = append(ms, m)
	}
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	if _, v := admit(s, a, 3, 1); v != Refused {
		t.Errorf("fourth pipe with total cap 3: %v, want Refused", v)
	}
	s.EndRefusal(a)
	s.Release(ms[2])
	if _, v := admit(s, a, 3, 1); v != Accepted {
		t.Errorf("after a release: %v, want Accepted", v)
	}
}

// Stop(false) prods sessions, makes refusals' reads return, closes
// listeners and admits nothing after; Wait gives up at its deadline while a
// session is left and returns once it is released.
func TestDrainWaitsWithDeadline(t *testing.T) {
	s := newSet()
	l := listen(t, "tcp4", "127.0.0.1:0")
	busy, _ := admit(s, connect(t, l, "", "127.0.0.1"), 1, 0)
	refused := connect(t, l, "", "127.0.0.1")
	if _, v := admit(s, refused, 1, 0); v != Refused {
		t.Fatalf("second: %v, want Refused", v)
	}
	// A refusal blocked reading must be woken by Stop.
	readErr := make(chan error, 1)
	go func() {
		refused.SetReadDeadline(time.Now().Add(ioTimeout))
		_, err := refused.Read(make([]byte, 1))
		readErr <- err
	}()

	served := listen(t, "tcp4", "127.0.0.1:0")
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- s.Serve(served, "test", func(c net.Conn) { c.Close() }, slog.New(slog.DiscardHandler), "test")
	}()
	waitFor(t, "listener tracked", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.listeners) == 1
	})

	if err := s.Stop(false); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !s.Draining() {
		t.Error("Draining() = false after Stop")
	}
	if n := busy.prods.Load(); n != 1 || busy.aborted.Load() {
		t.Errorf("session prodded %d times, aborted %v; want 1, false", n, busy.aborted.Load())
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("refused connection's read: %v, want a deadline error", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("refused connection's read was not woken by Stop")
	}
	select {
	case err := <-serveErr:
		if !errors.Is(err, ErrStopped) {
			t.Errorf("Serve after Stop: %v, want ErrStopped", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return after Stop")
	}
	if _, v := admit(s, connect(t, l, "", "127.0.0.1"), 0, 0); v != Stopping {
		t.Errorf("Admit while draining: %v, want Stopping", v)
	}
	// Serve on a new listener refuses at once and closes it.
	late := listen(t, "tcp4", "127.0.0.1:0")
	if err := s.Serve(late, "late", func(net.Conn) { t.Error("handle called while draining") }, slog.New(slog.DiscardHandler), "test"); !errors.Is(err, ErrStopped) {
		t.Errorf("Serve while draining: %v, want ErrStopped", err)
	}
	if _, err := late.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener handed to Serve while draining: Accept = %v, want closed", err)
	}

	// The session and the refusal are still there: the deadline wins.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with work left: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("Wait returned after %v, before its deadline", d)
	}

	// Held work keeps Wait waiting after the last session is released.
	s.Hold()
	s.EndRefusal(refused)
	s.Release(busy)
	done := make(chan error, 1)
	go func() { done <- s.Wait(t.Context()) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with held work left", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.Unhold()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Wait after the last release: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Wait did not return once nothing was left")
	}
}

// Stop(true) aborts sessions and closes refusals; a later Stop is harmless.
func TestStopHard(t *testing.T) {
	s := newSet()
	l := listen(t, "tcp4", "127.0.0.1:0")
	m, _ := admit(s, connect(t, l, "", "127.0.0.1"), 1, 0)
	refused := connect(t, l, "", "127.0.0.1")
	if _, v := admit(s, refused, 1, 0); v != Refused {
		t.Fatalf("second: %v, want Refused", v)
	}
	if err := s.Stop(true); err != nil {
		t.Fatalf("Stop(true): %v", err)
	}
	if !m.aborted.Load() || m.prods.Load() != 0 {
		t.Errorf("session aborted %v, prodded %d; want true, 0", m.aborted.Load(), m.prods.Load())
	}
	if _, err := refused.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("refused connection after Stop(true): read %v, want closed", err)
	}
	if err := s.Stop(true); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// Serve hands every connection to handle, returns nil when the caller
// closes the listener, and retries temporary accept errors with a warning.
func TestServe(t *testing.T) {
	s := newSet()
	inner := listen(t, "tcp4", "127.0.0.1:0")
	l := &flakyListener{Listener: inner, fails: 2}
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))

	got := make(chan net.Conn, 4)
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(l, "pop3 127.0.0.1", func(c net.Conn) { got <- c }, log, "pop3") }()

	for i := range 2 {
		cc, err := net.DialTimeout("tcp", inner.Addr().String(), ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		select {
		case c := <-got:
			if c.RemoteAddr().String() != cc.LocalAddr().String() {
				t.Errorf("handled %v, dialled from %v", c.RemoteAddr(), cc.LocalAddr())
			}
			c.Close()
		case <-time.After(ioTimeout):
			t.Fatalf("connection %d not handed over", i)
		}
	}
	logs := logBuf.String()
	if n := strings.Count(logs, `msg="pop3 accept failed, retrying"`); n != 2 {
		t.Errorf("%d retry warnings, want 2; log:\n%s", n, logs)
	}
	if !strings.Contains(logs, `listener="pop3 127.0.0.1"`) || !strings.Contains(logs, "delay=10ms") {
		t.Errorf("retry warnings lack the listener or the growing delay:\n%s", logs)
	}

	inner.Close()
	select {
	case err := <-serveErr:
		if err != nil {
			t.Errorf("Serve after the caller closed the listener: %v, want nil", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return when its listener was closed")
	}
	if s.Draining() {
		t.Error("a listener closed by the caller must not drain the set")
	}
	s.mu.Lock()
	n := len(s.listeners)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d listeners still tracked after Serve returned", n)
	}
}

// A permanent accept error is returned wrapped with the listener's name.
func TestServePermanentError(t *testing.T) {
	s := newSet()
	boom := errors.New("boom")
	l := &flakyListener{Listener: listen(t, "tcp4", "127.0.0.1:0"), perm: boom}
	err := s.Serve(l, "smtp 127.0.0.1", func(net.Conn) {}, slog.New(slog.DiscardHandler), "smtp")
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "accept on smtp 127.0.0.1") {
		t.Errorf("Serve = %v, want boom wrapped with the listener name", err)
	}
}

// flakyListener fails Accept fails times with a temporary error, or always
// with perm.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	perm  error
}

type tempErr struct{}

func (tempErr) Error() string   { return "too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.perm != nil {
		l.mu.Unlock()
		return nil, l.perm
	}
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, tempErr{}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func BenchmarkAdmitRelease(b *testing.B) {
	s := newSet()
	a, c := net.Pipe()
	defer a.Close()
	defer c.Close()
	conn := &addrConn{Conn: a, remote: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}}
	b.ReportAllocs()
	for b.Loop() {
		m, v := s.Admit(conn, 100, 10, func() *member { return &member{c: conn} })
		if v != Accepted {
			b.Fatalf("verdict %v", v)
		}
		s.Release(m)
	}
}

// addrConn is a connection with a chosen remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }
