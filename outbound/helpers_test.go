package outbound

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/storage"
)

// hopCert makes a self-signed certificate for 127.0.0.1 and the given
// names, and a pool that trusts it.
func hopCert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "next hop"},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// received is one message a test next hop accepted.
type received struct {
	from   string
	to     []string
	data   string
	tls    bool
	authed string
}

// hopServer is a go-smtp server with knobs, standing in for a relay or
// an MX on loopback.
type hopServer struct {
	addr string
	srv  *smtp.Server

	mu        sync.Mutex
	user, pw  string               // AUTH PLAIN required when user != ""
	rcptErr   map[string]error     // per-recipient refusals
	dataErrs  []error              // returned by successive DATA, then nil
	got       []received           // accepted messages
	sessions  int                  // connections seen
	remotes   map[string]bool      // client addresses seen
	hangGreet bool                 // accept and say nothing (set before use)
	hung      []net.Conn           // connections held by hangGreet
	onData    func(received) error // optional extra check
	idleClose time.Duration        // server read timeout; default 10s
}

type hopMode int

const (
	plainHop hopMode = iota
	startTLSHop
	implicitHop
)

func startHop(t testing.TB, mode hopMode, cert *tls.Certificate, setup func(*hopServer)) *hopServer {
	t.Helper()
	h := &hopServer{rcptErr: map[string]error{}}
	if setup != nil {
		setup(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	if h.hangGreet {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				h.mu.Lock()
				h.sessions++
				h.hung = append(h.hung, c)
				h.mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, c := range h.hung {
				c.Close()
			}
		})
		return h
	}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		// go-smtp starts a new session after STARTTLS: count
		// connections by their client address.
		h.mu.Lock()
		if h.remotes == nil {
			h.remotes = map[string]bool{}
		}
		if ra := c.Conn().RemoteAddr().String(); !h.remotes[ra] {
			h.remotes[ra] = true
			h.sessions++
		}
		h.mu.Unlock()
		return &hopSession{h: h, c: c}, nil
	}))
	s.Domain = "hop.test"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	if h.idleClose > 0 {
		s.ReadTimeout = h.idleClose
	}
	s.AllowInsecureAuth = mode == plainHop
	s.ErrorLog = nopLogger{}
	if cert != nil {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	var l net.Listener = ln
	if mode == implicitHop {
		l = tls.NewListener(ln, s.TLSConfig)
	}
	if mode == plainHop {
		s.TLSConfig = nil
	}
	h.srv = s
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return h
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

func (h *hopServer) messages() []received {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]received(nil), h.got...)
}

func (h *hopServer) port() int {
	ap := netip.MustParseAddrPort(h.addr)
	return int(ap.Port())
}

type hopSession struct {
	h      *hopServer
	c      *smtp.Conn
	authed string
	from   string
	to     []string
}

var _ smtp.AuthSession = (*hopSession)(nil)

func (s *hopSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *hopSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pw string) error {
		s.h.mu.Lock()
		defer s.h.mu.Unlock()
		if user != s.h.user || pw != s.h.pw {
			return smtp.ErrAuthFailed
		}
		s.authed = user
		return nil
	}), nil
}

func (s *hopSession) Mail(from string, _ *smtp.MailOptions) error {
	s.h.mu.Lock()
	need := s.h.user != ""
	s.h.mu.Unlock()
	if need && s.authed == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *hopSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.h.mu.Lock()
	err := s.h.rcptErr[to]
	s.h.mu.Unlock()
	if err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *hopSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.c.TLSConnectionState()
	m := received{from: s.from, to: s.to, data: string(b), tls: isTLS, authed: s.authed}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if len(s.h.dataErrs) > 0 {
		err := s.h.dataErrs[0]
		s.h.dataErrs = s.h.dataErrs[1:]
		if err != nil {
			return err
		}
	}
	if s.h.onData != nil {
		if err := s.h.onData(m); err != nil {
			return err
		}
	}
	s.h.got = append(s.h.got, m)
	return nil
}

func (s *hopSession) Reset()        { s.from, s.to = "", nil }
func (s *hopSession) Logout() error { return nil }

// stubResolver answers from maps and never touches the network.
type stubResolver struct {
	mx  map[string][]*net.MX
	ips map[string][]netip.Addr
	err error // returned by every lookup when set
}

func (r *stubResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if r.err != nil {
		return nil, r.err
	}
	if mx, ok := r.mx[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *stubResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if r.err != nil {
		return nil, r.err
	}
	if ips, ok := r.ips[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// noResolver fails any test that reaches for DNS it did not expect.
type noResolver struct{ t testing.TB }

func (r noResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	r.t.Errorf("unexpected MX lookup of %s", name)
	return nil, errors.New("no DNS in this test")
}

func (r noResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.t.Errorf("unexpected address lookup of %s", host)
	return nil, errors.New("no DNS in this test")
}

func openStore(t testing.TB) *storage.Store {
	t.Helper()
	st, err := storage.Open(filepath.Join(t.TempDir(), "mailpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testMessage is a small message from alice at a local domain.
func testMessage(subject string) string {
	return "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: " + subject +
		"\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + subject + "@example.com>\r\n\r\nHello Bob,\r\n.dot-stuffed line\r\nbye\r\n"
}

func enqueue(t testing.TB, st *storage.Store, from string, to []string, msg string) uint64 {
	t.Helper()
	res, err := st.Submit(strings.NewReader(msg), storage.Submission{Outbound: &storage.Outbound{From: from, To: to, Account: "alice@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Queued.ID
}

// baseSettings deliver for example.com, whose mailbox alice@example.com
// receives bounces.
func baseSettings() *Settings {
	return &Settings{
		Hostname:       "mail.example.com",
		MaxAttemptsFor: time.Hour,
		Domains:        []string{"example.com"},
		Mailbox: func(addr string) string {
			if strings.EqualFold(addr, "alice@example.com") || strings.EqualFold(addr, "al@example.com") {
				return "alice@example.com"
			}
			return ""
		},
	}
}

// fastOptions suit loopback tests: short timeouts and retries.
func fastOptions(res Resolver, port int, roots *x509.CertPool) Options {
	return Options{Resolver: res, Port: port, RootCAs: roots, Timeout: 2 * time.Second,
		SessionTimeout: 5 * time.Second, RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Poll: 50 * time.Millisecond}
}

func startRunner(t testing.TB, st *storage.Store, s *Settings, opt Options) *Runner {
	t.Helper()
	r := New(st, s, slog.New(slog.DiscardHandler), opt)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return r
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func queueLen(t testing.TB, st *storage.Store) int {
	t.Helper()
	q, err := st.Queue()
	if err != nil {
		t.Fatal(err)
	}
	return len(q)
}

// mailboxMessages reads every message in a local mailbox.
func mailboxMessages(t testing.TB, st *storage.Store, mailbox string) []string {
	t.Helper()
	list, err := st.List(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range list {
		rc, err := st.OpenMessage(mailbox, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
