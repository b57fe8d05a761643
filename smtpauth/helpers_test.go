package smtpauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// certs holds one self-signed ECDSA certificate for the loopback addresses,
// generated once per test binary, and a pool that trusts it.
var certs = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "smtpauth test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
})

func serverTLS() *tls.Config {
	c, _ := certs()
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
}

func clientTLS() *tls.Config {
	_, pool := certs()
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// fakeUser is one account of the fake backend.
type fakeUser struct {
	pass     string
	disabled bool
	sendAs   []string
}

// stored is one message the fake backend accepted.
type stored struct {
	env  Envelope
	ci   ConnInfo
	data string
}

// fakeBackend is a Backend with knobs. Local mailboxes are in example.org;
// submission may relay anywhere, inbound only to existing local mailboxes.
type fakeBackend struct {
	mu          sync.Mutex
	users       map[string]fakeUser
	local       map[string]bool // existing local mailboxes, lower case
	fullAtRcpt  map[string]bool // Recipient answers ErrQuotaExceeded
	deliverErr  error           // Deliver fails with this after reading the body
	panicRcpt   string          // Recipient panics for this address
	hold        chan struct{}   // if set, Deliver waits for it to close after reading
	entered     chan struct{}   // if set, Deliver sends on it when called
	msgs        []stored
	deliveries  int     // Deliver calls
	readErrs    []error // body read errors seen by Deliver
	loginCalls  int
	lastPass    string
	rcptHints   []int64
	recipientCI []ConnInfo
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		users: map[string]fakeUser{
			"alice":    {pass: "wonderland", sendAs: []string{"alice@example.org", "Sales@Example.org"}},
			"mallory":  {pass: "secret", disabled: true, sendAs: []string{"mallory@example.org"}},
			"bob@host": {pass: "pw", sendAs: []string{"bob@example.org"}},
		},
		local:      map[string]bool{"alice@example.org": true, "bob@example.org": true, "carol@example.org": true},
		fullAtRcpt: map[string]bool{},
	}
}

func (f *fakeBackend) Login(ctx context.Context, ci ConnInfo, user, pass string) (*Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loginCalls++
	f.lastPass = pass
	u, ok := f.users[user]
	if !ok || u.pass != pass {
		return nil, ErrAuthFailed
	}
	if u.disabled {
		return nil, ErrAccessDisabled
	}
	return &Account{Name: user, SendAs: u.sendAs}, nil
}

func (f *fakeBackend) Recipient(ctx context.Context, ci ConnInfo, acct *Account, rcpt string, sizeHint int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rcpt == f.panicRcpt && rcpt != "" {
		panic("fake backend: panic on " + rcpt)
	}
	f.rcptHints = append(f.rcptHints, sizeHint)
	f.recipientCI = append(f.recipientCI, ci)
	addr := strings.ToLower(rcpt)
	_, domain, _ := strings.Cut(addr, "@")
	if domain != "example.org" {
		if acct == nil {
			return ErrRelayDenied
		}
		return nil
	}
	if !f.local[addr] {
		return ErrUnknownRecipient
	}
	if f.fullAtRcpt[addr] {
		return fmt.Errorf("fake: %s: %w", addr, ErrQuotaExceeded)
	}
	return nil
}

// Deliver is all-or-nothing: it reads the whole body first and stores only
// when that succeeded.
func (f *fakeBackend) Deliver(ctx context.Context, ci ConnInfo, env *Envelope, msg io.Reader) error {
	f.mu.Lock()
	f.deliveries++
	entered, hold := f.entered, f.hold
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	data, err := io.ReadAll(msg)
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.readErrs = append(f.readErrs, err)
		return fmt.Errorf("fake: reading message: %w", err)
	}
	if f.deliverErr != nil {
		return f.deliverErr
	}
	f.msgs = append(f.msgs, stored{env: *env, ci: ci, data: string(data)})
	return nil
}

func (f *fakeBackend) stored() []stored {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stored(nil), f.msgs...)
}

// logBuf collects log output for assertions and echoes it to t.Log while
// the test runs.
type logBuf struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
	buf  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.done && l.t != nil {
		l.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(t testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{t: t}
	t.Cleanup(func() {
		lb.mu.Lock()
		lb.done = true
		lb.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// testServer is a Server listening on loopback.
type testServer struct {
	*Server
	be     *fakeBackend
	logs   *logBuf
	addr   string
	served chan error // Serve's result
}

// submissionSettings is a typical port 587 configuration.
func submissionSettings() *Settings {
	return &Settings{
		Mode:            Submission,
		Hostname:        "mx.example.org",
		TLSConfig:       serverTLS(),
		MaxMessageBytes: 64 << 10,
		MaxRecipients:   3,
	}
}

func inboundSettings() *Settings {
	s := submissionSettings()
	s.Mode = Inbound
	return s
}

// start serves s on a new loopback listener ("127.0.0.1" or "::1") and
// stops everything when the test ends.
func start(t testing.TB, s *Settings, implicitTLS bool, host string) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testLogger(t)
	be := newFakeBackend()
	ts := &testServer{Server: NewServer(be, s, log), be: be, logs: logs, addr: l.Addr().String(), served: make(chan error, 1)}
	go func() { ts.served <- ts.Serve(l, implicitTLS, "test") }()
	t.Cleanup(func() {
		ts.Close()
		select {
		case <-ts.served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
		// Sessions end once go-smtp sees their connections closed.
		deadline := time.Now().Add(5 * time.Second)
		for ts.Stats().Sessions > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	})
	return ts
}

// raw is a hand-driven SMTP client, for what a client library would hide.
type raw struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

func dialRaw(t testing.TB, addr string, implicitTLS bool) *raw {
	t.Helper()
	var c net.Conn
	var err error
	if implicitTLS {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, clientTLS())
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := &raw{t: t, conn: c, tp: textproto.NewConn(c)}
	return r
}

// read returns the next reply as "code text", lines joined by "\n".
func (r *raw) read() string {
	r.t.Helper()
	code, msg, err := r.tp.ReadResponse(0)
	if err != nil {
		var perr *textproto.Error
		if !errors.As(err, &perr) {
			r.t.Fatalf("reading reply: %v", err)
		}
	}
	return fmt.Sprintf("%d %s", code, msg)
}

// expect reads a reply and checks its start.
func (r *raw) expect(prefix string) string {
	r.t.Helper()
	got := r.read()
	if !strings.HasPrefix(got, prefix) {
		r.t.Fatalf("reply %q, want prefix %q", got, prefix)
	}
	return got
}

// cmd sends one line and checks the reply's start.
func (r *raw) cmd(line, prefix string) string {
	r.t.Helper()
	if err := r.tp.PrintfLine("%s", line); err != nil {
		r.t.Fatalf("sending %q: %v", line, err)
	}
	return r.expect(prefix)
}

// starttls upgrades the connection.
func (r *raw) starttls() {
	r.t.Helper()
	r.cmd("STARTTLS", "220 2.0.0")
	tc := tls.Client(r.conn, clientTLS())
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.conn = tc
	r.tp = textproto.NewConn(tc)
}

// closed reports whether the server has closed the connection.
func (r *raw) closed() bool {
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.tp.R.ReadByte()
	return err != nil
}

// waitFor polls cond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// b64 is base64 of s, for hand-written AUTH lines.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
