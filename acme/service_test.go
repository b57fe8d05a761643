package acme

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailpost/acme/acmetest"
	"mailpost/config"
	"mailpost/storage"
)

func openStore(t *testing.T) *storage.Store {
	t.Helper()
	st, err := storage.Open(filepath.Join(t.TempDir(), "mailpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// serveHTTP answers on a fixed loopback port with h until the test ends.
func serveHTTP(t *testing.T, port int, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveALPN answers tls-alpn-01 on a fixed loopback port.
func serveALPN(t *testing.T, port int, svc *Service) {
	t.Helper()
	cfg := &tls.Config{NextProtos: []string{ALPNProto}, GetCertificate: svc.ChallengeCertificate}
	ln, err := tls.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port), cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func acmeCert(p *acmetest.Pebble, dirURL, challenge string, renew time.Duration, domains ...string) *config.Certificate {
	ca, _ := os.ReadFile(p.CAFile)
	return &config.Certificate{Name: "public", Names: domains, ACME: &config.ACME{
		Domains: domains, Email: "postmaster@example.com", DirectoryURL: dirURL, CAFile: p.CAFile, CAPEM: ca,
		Challenge: challenge, RenewBefore: renew}}
}

// waitCert polls until svc has a certificate for name that differs from
// not (nil: any), within limit.
func waitCert(t *testing.T, svc *Service, name string, not *tls.Certificate, limit time.Duration) *tls.Certificate {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c := svc.Certificate(name)
		if c != nil && (not == nil || c.Leaf.SerialNumber.Cmp(not.Leaf.SerialNumber) != 0) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s after %s; state %+v", name, limit, svc.State(name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// verify checks c's chain against Pebble's root, for name.
func verify(t *testing.T, c *tls.Certificate, roots *x509.CertPool, name string) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("certificate for %s does not verify against Pebble's root: %v", name, err)
	}
}

// TestIssueHTTP01 gets a certificate through http-01 from a real Pebble,
// with tls-alpn-01 hidden (nothing listens for it: trying it would fail).
func TestIssueHTTP01(t *testing.T) {
	dns := acmetest.StartDNS(t)
	httpPort := acmetest.FreePort(t)
	// Something listens on the tls-alpn-01 port and counts connections:
	// Pebble must never come there.
	var tlsProbes atomic.Int32
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := probe.Accept()
			if err != nil {
				return
			}
			tlsProbes.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { probe.Close() })
	p := acmetest.Start(t, acmetest.Options{DNS: dns, HTTPPort: httpPort, TLSPort: probe.Addr().(*net.TCPAddr).Port})
	st := openStore(t)
	svc := New(Options{Store: st, Log: testLog(t), MinBackoff: 100 * time.Millisecond})
	t.Cleanup(svc.Close)
	serveHTTP(t, httpPort, svc.HTTPHandler())
	if err := svc.Configure([]*config.Certificate{acmeCert(p, p.DirectoryURL, config.ChallengeHTTP01, 720*time.Hour, "mail.example.com")}); err != nil {
		t.Fatal(err)
	}
	c := waitCert(t, svc, "mail.example.com", nil, 20*time.Second)
	verify(t, c, p.Roots(t), "mail.example.com")
	if st := svc.State("mail.example.com"); st.Pending != "" || st.LastError != "" ||
		!st.NextRenewal.Equal(c.Leaf.NotAfter.Add(-720*time.Hour)) {
		t.Errorf("state = %+v", st)
	}
	if !strings.Contains(p.Log(), "validate w/ HTTP") {
		t.Errorf("Pebble's log shows no http-01 validation:\n%s", p.Log())
	}
	if n := tlsProbes.Load(); n != 0 {
		t.Errorf("Pebble connected %d times to the tls-alpn-01 port although the config says http-01", n)
	}
	// The certificate and the account key are in the store.
	if data, _ := st.GetBlob(namespace, p.DirectoryURL+" mail.example.com"); data == nil {
		t.Error("certificate not in the store")
	}
	if data, _ := st.GetBlob(namespace, p.DirectoryURL+" acme_account+key"); data == nil {
		t.Error("account key not in the store")
	}

	// A second service on the same store (a restart) serves the stored
	// certificate at once, without asking the CA.
	p.Stop()
	svc2 := New(Options{Store: st, Log: testLog(t)})
	t.Cleanup(svc2.Close)
	if err := svc2.Configure([]*config.Certificate{acmeCert(p, p.DirectoryURL, config.ChallengeHTTP01, 720*time.Hour, "mail.example.com")}); err != nil {
		t.Fatal(err)
	}
	if c2 := svc2.Certificate("mail.example.com"); c2 == nil || c2.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
		t.Error("restart did not serve the stored certificate")
	}

	// Requests that are not challenges get a 404.
	srv := &http.Client{Timeout: 5 * time.Second}
	resp, err := srv.Get(fmt.Sprintf("http://127.0.0.1:%d/", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "not found") {
		t.Errorf("GET / = %d %q", resp.StatusCode, body)
	}
}

// TestIssueTLSALPN01AndRenew gets a certificate through tls-alpn-01, then
// renews it: Pebble issues 8-second certificates and renew_before is 6s, so
// autocert's timer renews within a few seconds and the cache hook must
// publish the new one. Then the CA stops and the failed renewal must show.
func TestIssueTLSALPN01AndRenew(t *testing.T) {
	dns := acmetest.StartDNS(t)
	tlsPort := acmetest.FreePort(t)
	p := acmetest.Start(t, acmetest.Options{DNS: dns, HTTPPort: acmetest.FreePort(t), TLSPort: tlsPort, Validity: 8 * time.Second})
	svc := New(Options{Store: openStore(t), Log: testLog(t), MinBackoff: 100 * time.Millisecond})
	t.Cleanup(svc.Close)
	serveALPN(t, tlsPort, svc)
	if err := svc.Configure([]*config.Certificate{acmeCert(p, p.DirectoryURL, config.ChallengeTLSALPN01, 6*time.Second, "pop.example.com")}); err != nil {
		t.Fatal(err)
	}
	first := waitCert(t, svc, "pop.example.com", nil, 20*time.Second)
	roots := p.Roots(t)
	verify(t, first, roots, "pop.example.com")
	renewed := waitCert(t, svc, "pop.example.com", first, 20*time.Second)
	verify(t, renewed, roots, "pop.example.com")
	if !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the first's %v", renewed.Leaf.NotAfter, first.Leaf.NotAfter)
	}

	// The CA goes away: the next renewal fails inside autocert's timer,
	// and the state says so with the transport's error.
	p.Stop()
	deadline := time.Now().Add(15 * time.Second)
	for st := svc.State("pop.example.com"); !strings.Contains(st.LastError, "renewal overdue") ||
		!strings.Contains(st.LastError, "connection refused"); st = svc.State("pop.example.com") {
		if time.Now().After(deadline) {
			t.Fatalf("a failed renewal never showed: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCADownAtStart: the directory does not answer at first; the error is
// kept for status and retried, and once the CA is up the certificate comes.
func TestCADownAtStart(t *testing.T) {
	dns := acmetest.StartDNS(t)
	httpPort, caPort := acmetest.FreePort(t), acmetest.FreePort(t)
	svc := New(Options{Store: openStore(t), Log: testLog(t), MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	t.Cleanup(svc.Close)
	serveHTTP(t, httpPort, svc.HTTPHandler())
	dirURL := fmt.Sprintf("https://127.0.0.1:%d/dir", caPort)
	ca := acmetest.ModuleDir(t) + "/test/certs/pebble.minica.pem"
	pem, _ := os.ReadFile(ca)
	cert := &config.Certificate{Name: "public", ACME: &config.ACME{Domains: []string{"mail.example.com"}, DirectoryURL: dirURL,
		CAFile: ca, CAPEM: pem, Challenge: config.ChallengeHTTP01, RenewBefore: time.Hour}}
	if err := svc.Configure([]*config.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st := svc.State("mail.example.com"); !strings.Contains(st.LastError, "connection refused") || !strings.Contains(st.Pending, "failed"); st = svc.State("mail.example.com") {
		if time.Now().After(deadline) {
			t.Fatalf("state never showed the CA's error: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if svc.Certificate("mail.example.com") != nil {
		t.Fatal("a certificate while the CA is down")
	}
	p := acmetest.Start(t, acmetest.Options{DNS: dns, HTTPPort: httpPort, Port: caPort})
	c := waitCert(t, svc, "mail.example.com", nil, 20*time.Second)
	verify(t, c, p.Roots(t), "mail.example.com")
	if st := svc.State("mail.example.com"); st.LastError != "" || st.Pending != "" {
		t.Errorf("state after issuance = %+v", st)
	}
}
