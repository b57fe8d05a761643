package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mailpost/auth"
	"mailpost/config"
	"mailpost/storage"
)

// demoHash is the argon2id hash of "demo-password".
const demoHash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"

func testConfig(t *testing.T, dir, pop3Block string) *config.Config {
	t.Helper()
	src := fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
}
%s
mailbox "alice@example.com" {
  password_hash = %q
  aliases = ["a.smith@example.com"]
  quota = "1KiB"
}
mailbox "off@example.com" {
  password_hash = %q
  pop3 = false
}
`, pop3Block, demoHash, demoHash)
	return loadFile(t, dir, src)
}

type testServer struct {
	*Server
	store *storage.Store
	cfg   *config.Config
	stop  func() // Shutdown, once; also run at cleanup, before the store closes
}

func startServer(t *testing.T, cfg *config.Config) (*testServer, error) {
	t.Helper()
	return startServerWith(t, cfg, nil, nil)
}

// startServerWith opens cfg's store and starts a Server on it, logging to
// log (nil: nowhere), with options tweak may adjust; failed-login delays
// are cut to milliseconds so tests of wrong passwords stay quick. The
// server stops and the store closes at cleanup. An error from Start is
// returned (tests of refused start-ups want it); anything else fails t.
func startServerWith(t *testing.T, cfg *config.Config, log *slog.Logger, tweak func(*Options)) (*testServer, error) {
	t.Helper()
	if err := EnsureDataDir(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(DatabasePath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opt := Options{ConfigPath: cfg.Filename, Throttle: auth.ThrottleOptions{Base: time.Millisecond, Max: 10 * time.Millisecond}}
	if tweak != nil {
		tweak(&opt)
	}
	s, err := New(cfg, st, log, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.Shutdown(ctx)
		})
	}
	t.Cleanup(stop)
	return &testServer{Server: s, store: st, cfg: cfg, stop: stop}, nil
}

// loadFile writes src as dir/mailpost.hcl and loads it.
func loadFile(t *testing.T, dir, src string) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "mailpost.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	return cfg
}

// freePort finds a TCP port free on both the IPv4 and IPv6 wildcards.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		l4, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l4.Addr().(*net.TCPAddr).Port
		l6, err := net.Listen("tcp6", fmt.Sprintf("[::]:%d", port))
		l4.Close()
		if err == nil {
			l6.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func greeting(t *testing.T, addr string, useTLS bool) string {
	t.Helper()
	var c net.Conn
	var err error
	if useTLS {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting from %s: %v", addr, err)
	}
	return line
}

// The Exchange-style default pair "[::]:P" + "0.0.0.0:P" must both bind:
// the IPv6 wildcard is bound v6-only. Both are reached over loopback only.
func TestDualStackWildcardsDoNotCollide(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	cfg := testConfig(t, dir, fmt.Sprintf(`pop3 {
  ssl_bindings = ["[::]:%d", "0.0.0.0:%d"]
  unencrypted_or_tls_bindings = ["[::]:%d", "0.0.0.0:%d"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}`, p1, p1, p2, p2))
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatalf("start with both wildcards: %v", err)
	}
	if n := len(s.Listeners()); n != 4 {
		t.Fatalf("%d listeners, want 4: %v", n, s.Listeners())
	}
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("[::1]:%d", p1)} {
		if g := greeting(t, addr, true); !strings.HasPrefix(g, "+OK") {
			t.Errorf("greeting on %s = %q", addr, g)
		}
	}
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", p2), fmt.Sprintf("[::1]:%d", p2)} {
		if g := greeting(t, addr, false); !strings.HasPrefix(g, "+OK") {
			t.Errorf("greeting on %s = %q", addr, g)
		}
	}
}

// A binding that cannot be opened fails start-up as a whole, with the
// address in the message, and leaves nothing listening.
func TestStartFailsWholeOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	free := freePort(t)
	cfg := testConfig(t, dir, fmt.Sprintf(`pop3 {
  ssl_bindings = ["127.0.0.1:%d"]
  unencrypted_or_tls_bindings = [%q]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}`, free, busy.Addr().String()))
	_, err = startServer(t, cfg)
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("start with a busy port: err = %v, want one naming %s", err, busy.Addr())
	}
	// The port that did open was closed again.
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", free), time.Second)
	if err == nil {
		c.Close()
		t.Errorf("127.0.0.1:%d still accepts after the failed start", free)
	}
}

func TestDeliverThroughControlSocket(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, `pop3 {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = []
  external_connection_settings = ["mail.example.com:995:ssl"]
}`)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(ControlSocketPath(cfg.DataDir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	c := NewClient(cfg.DataDir)
	res, err := c.Deliver("A.Smith@Example.com", strings.NewReader("Subject: hi\n\nhello\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Mailbox != "alice@example.com" || res.Size != int64(len("Subject: hi\r\n\r\nhello\r\n")) {
		t.Errorf("deliver result = %+v", res)
	}
	if _, err := c.Deliver("nobody@example.com", strings.NewReader("x\n")); err == nil || !strings.Contains(err.Error(), "no such mailbox") {
		t.Errorf("unknown recipient: %v", err)
	}
	// The 1 KiB quota refuses a bigger message and keeps the first.
	if _, err := c.Deliver("alice@example.com", strings.NewReader(strings.Repeat("x", 2000))); err == nil || !strings.Contains(err.Error(), "quota") {
		t.Errorf("over quota: %v", err)
	}
	n, _, _ := s.store.Usage("alice@example.com")
	if n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
	st, err := c.Status()
	if err != nil || st.ConfigRevision == 0 || len(st.Listeners) != 1 {
		t.Errorf("status = %+v, %v", st, err)
	}
	text, err := c.Settings()
	if err != nil || !strings.Contains(text, "alice@example.com") || !strings.Contains(text, "SSLBindings") {
		t.Errorf("settings = %q, %v", text, err)
	}
}

func TestControlClientWithoutServer(t *testing.T) {
	_, err := NewClient(t.TempDir()).Status()
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("status with no server: %v, want ErrNotRunning", err)
	}
}

// After shutdown nothing listens and the control socket is gone.
func TestShutdownClosesEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, `pop3 {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}`)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	addrs := s.Listeners()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, l := range addrs {
		if c, err := net.DialTimeout("tcp", l.Addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after shutdown", l.Addr)
		}
	}
	if _, err := os.Stat(ControlSocketPath(cfg.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// popClient is a minimal POP3 client over implicit TLS for these tests.
type popClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialPOP(t *testing.T, addr string) *popClient {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	p := &popClient{t: t, c: c, r: bufio.NewReader(c)}
	t.Cleanup(func() { c.Close() })
	p.line()
	return p
}

func (p *popClient) line() string {
	p.t.Helper()
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("reading reply: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (p *popClient) cmd(format string, args ...any) string {
	p.t.Helper()
	fmt.Fprintf(p.c, format+"\r\n", args...)
	return p.line()
}

func (p *popClient) login(user, pass string) string {
	p.t.Helper()
	if r := p.cmd("USER %s", user); !strings.HasPrefix(r, "+OK") {
		return r
	}
	return p.cmd("PASS %s", pass)
}

func popsAddr(t *testing.T, s *testServer) string {
	t.Helper()
	for _, l := range s.Listeners() {
		if l.Proto == "pop3s" {
			return l.Addr
		}
	}
	t.Fatal("no pop3s listener")
	return ""
}

const pop3sOnly = `pop3 {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = []
  external_connection_settings = ["mail.example.com:995:ssl"]
}`

// The backend's policy, seen through a real POP3 session over TLS.
func TestLoginPolicy(t *testing.T) {
	dir := t.TempDir()
	s, err := startServer(t, testConfig(t, dir, pop3sOnly))
	if err != nil {
		t.Fatal(err)
	}
	addr := popsAddr(t, s)
	cases := []struct{ user, pass, want string }{
		{"alice@example.com", "wrong", "-ERR [AUTH]"},
		{"nobody@example.com", "demo-password", "-ERR [AUTH]"},
		{"a.smith@example.com", "demo-password", "-ERR [AUTH]"}, // aliases are not login names
		{"off@example.com", "wrong", "-ERR [AUTH]"},             // disabled, but the password decides first
		{"off@example.com", "demo-password", "-ERR [SYS/PERM]"},
		{"ALICE@Example.COM", "demo-password", "+OK"},
	}
	for _, c := range cases {
		p := dialPOP(t, addr)
		if got := p.login(c.user, c.pass); !strings.HasPrefix(got, c.want) {
			t.Errorf("login %s/%s = %q, want %s", c.user, c.pass, got, c.want)
		}
		p.cmd("QUIT")
	}
	// RFC 1939 exclusive access: a second session on the same maildrop.
	first := dialPOP(t, addr)
	if r := first.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	second := dialPOP(t, addr)
	if r := second.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "-ERR [IN-USE]") {
		t.Errorf("second session = %q, want -ERR [IN-USE]", r)
	}
	first.cmd("QUIT")
	third := dialPOP(t, addr)
	if r := third.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("after the first QUIT = %q, want +OK", r)
	}
}

// Removing a mailbox from the config never deletes its mail; declaring it
// again brings the mail back.
func TestRemovedMailboxKeepsMail(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, pop3sOnly)
	if err := EnsureDataDir(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(DatabasePath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Deliver(cfg, st, "alice@example.com", strings.NewReader("Subject: keep me\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	st.Close()

	without, diags := config.Parse(filepath.Join(dir, "mailpost.hcl"), []byte(strings.Replace(string(cfg.Source),
		`mailbox "alice@example.com"`, `mailbox "carol@example.com"`, 1)))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	s, err := startServer(t, without)
	if err != nil {
		t.Fatal(err)
	}
	if r := dialPOP(t, popsAddr(t, s)).login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "-ERR [AUTH]") {
		t.Errorf("login to a removed mailbox = %q", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	s.store.Close()

	s, err = startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := dialPOP(t, popsAddr(t, s))
	if r := p.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	if r := p.cmd("STAT"); !strings.HasPrefix(r, "+OK 1 ") {
		t.Errorf("STAT after the mailbox came back = %q, want one message", r)
	}
}
