package server

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mailpost/acme"
	"mailpost/acme/acmetest"
	"mailpost/config"
)

// acmeConfigText is a config with ACME certificates from a test CA; extra
// is appended (another certificate block, for the reload case).
func acmeConfigText(dirURL, caFile string, httpPort, tlsPort int, extra string) string {
	return fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "public" {
  acme {
    domains       = ["mail.example.com"]
    email         = "postmaster@example.com"
    directory_url = %q
    ca_file       = %q
    challenge     = "http-01"
    renew_before  = "6s"
  }
}
%s
pop3 {
  x509_certificate_name       = "mail.example.com"
  ssl_bindings                = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = []
}
http {
  bindings     = ["127.0.0.1:%d"]
  tls_bindings = ["127.0.0.1:%d"]
}
`, dirURL, caFile, extra, httpPort, tlsPort)
}

func startACMEServer(t *testing.T, dir, src string) *testServer {
	t.Helper()
	rewrite(t, dir, src)
	cfg, diags := config.Load(filepath.Join(dir, "mailpost.hcl"))
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err := startServerWith(t, cfg, log, func(o *Options) {
		o.ACME = acme.Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// popLeaf connects to a POP3S address the way a mail client does: with
// serverName as SNI (none when empty) and, when roots is set, verifying the
// chain. It returns the leaf after reading the +OK greeting.
func popLeaf(addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots}
	if roots == nil {
		cfg.InsecureSkipVerify = true
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "+OK") {
		return nil, fmt.Errorf("greeting %q", line)
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// certStatus finds the status of the certificate covering name.
func certStatus(s *testServer, name string) (CertStatus, bool) {
	for _, cs := range s.Status().Certificates {
		for _, n := range cs.Names {
			if n == name {
				return cs, true
			}
		}
	}
	return CertStatus{}, false
}

func eventually(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestACMEEndToEnd runs mailpost against a real Pebble: the CA is down at
// start (stand-in served, status shows the CA's error), comes up (the
// certificate is issued over http-01 and POP3 clients verify it against
// Pebble's root), is renewed (8-second certificates), and a reload adds a
// name obtained over tls-alpn-01 on the https listener. From the first
// issuance on, a POP3 client verifies the chain continuously and must
// never fail.
func TestACMEEndToEnd(t *testing.T) {
	dns := acmetest.StartDNS(t)
	caFile := filepath.Join(acmetest.ModuleDir(t), "test", "certs", "pebble.minica.pem")
	httpPort, tlsPort, caPort := acmetest.FreePort(t), acmetest.FreePort(t), acmetest.FreePort(t)
	dirURL := fmt.Sprintf("https://127.0.0.1:%d/dir", caPort)
	dir := t.TempDir()
	s := startACMEServer(t, dir, acmeConfigText(dirURL, caFile, httpPort, tlsPort, ""))
	pop := popsAddr(t, s)

	// CA down: the stand-in is served, and status says why.
	eventually(t, 10*time.Second, "status never showed the CA's error", func() bool {
		cs, _ := certStatus(s, "mail.example.com")
		return strings.Contains(cs.LastError, "connection refused") && strings.HasPrefix(cs.Pending, "attempt")
	})
	leaf, err := popLeaf(pop, "mail.example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Issuer.String() != leaf.Subject.String() || leaf.DNSNames[0] != "mail.example.com" {
		t.Errorf("stand-in: issuer %v, names %v", leaf.Issuer, leaf.DNSNames)
	}
	cs, _ := certStatus(s, "mail.example.com")
	if cs.Source != "acme" || cs.SHA256 != "" {
		t.Errorf("pending status = %+v", cs)
	}
	var settings strings.Builder
	rt := s.cur.Load()
	WriteSettings(&settings, rt.cfg, rt.pool, nil)
	if !strings.Contains(settings.String(), "pending: attempt") || !strings.Contains(settings.String(), "connection refused") {
		t.Errorf("settings do not show the pending certificate:\n%s", settings.String())
	}

	var status strings.Builder
	WriteCertStatus(&status, s.Status().Certificates)
	if !strings.Contains(status.String(), "PENDING (self-signed stand-in served): attempt") || !strings.Contains(status.String(), "last error: ACME directory") {
		t.Errorf("status text does not show the pending certificate:\n%s", status.String())
	}

	// The http listener answers what is not a challenge with a 404.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / on the http listener = %d", resp.StatusCode)
	}

	// The CA comes up: certificates live 8 seconds, so with renew_before
	// 6s autocert renews every 2 seconds or so.
	p := acmetest.Start(t, acmetest.Options{DNS: dns, HTTPPort: httpPort, TLSPort: tlsPort, Port: caPort, Validity: 8 * time.Second})
	roots := p.Roots(t)
	var first *x509.Certificate
	eventually(t, 20*time.Second, "no verifiable certificate after the CA came up", func() bool {
		first, err = popLeaf(pop, "mail.example.com", roots)
		return err == nil
	})
	cs, _ = certStatus(s, "mail.example.com")
	if cs.Pending != "" || cs.LastError != "" || !strings.Contains(cs.Issuer, "Pebble") || cs.ExpirySeconds <= 0 || cs.ExpirySeconds > 8 ||
		cs.NextRenewal.IsZero() || cs.SHA256 == "" {
		t.Errorf("status after issuance = %+v", cs)
	}

	// From now on a client verifies continuously.
	var checks, failures atomic.Int32
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			checks.Add(1)
			if _, err := popLeaf(pop, "mail.example.com", roots); err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		if n := failures.Load(); n > 0 {
			t.Errorf("%d of %d verified POP3 connections failed; first: %v", n, checks.Load(), firstFailure.Load())
		}
	}()

	// Renewal reaches POP3 clients without a reload.
	eventually(t, 20*time.Second, "the certificate was never renewed", func() bool {
		l, err := popLeaf(pop, "mail.example.com", roots)
		return err == nil && l.SerialNumber.Cmp(first.SerialNumber) != 0
	})

	// A client that connects by IP sends no SNI: it gets the certificate
	// of x509_certificate_name.
	noSNI, err := popLeaf(pop, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := noSNI.VerifyHostname("mail.example.com"); err != nil || noSNI.Issuer.String() == noSNI.Subject.String() {
		t.Errorf("no-SNI client got %v issued by %v", noSNI.DNSNames, noSNI.Issuer)
	}

	// A reload adds a name, obtained over tls-alpn-01 on the https
	// listener.
	rewrite(t, dir, acmeConfigText(dirURL, caFile, httpPort, tlsPort, fmt.Sprintf(`
certificate "pop" {
  acme {
    domains       = ["pop.example.com"]
    directory_url = %q
    ca_file       = %q
    challenge     = "tls-alpn-01"
  }
}`, dirURL, caFile)))
	mustReload(t, s)
	eventually(t, 20*time.Second, "the name added by reload was never issued", func() bool {
		_, err := popLeaf(pop, "pop.example.com", roots)
		return err == nil
	})
	if cs, ok := certStatus(s, "pop.example.com"); !ok || cs.Name != "pop" || cs.Pending != "" {
		t.Errorf("status of the new name = %+v", cs)
	}
	if !strings.Contains(p.Log(), "validate w/ HTTP: http://mail.example.com:") {
		t.Error("Pebble never validated mail.example.com over http-01")
	}
}

func TestExpiresIn(t *testing.T) {
	for d, want := range map[time.Duration]string{
		365*24*time.Hour - 3*time.Second: "in 364 days",
		50 * time.Hour:                   "in 2 days",
		47*time.Hour + 30*time.Second:    "in 47h0m0s",
		-90 * time.Minute:                "EXPIRED 1h30m0s ago",
	} {
		if got := expiresIn(d); got != want {
			t.Errorf("expiresIn(%v) = %q, want %q", d, got, want)
		}
	}
}
