package server

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailpost/auth"
)

// rewrite replaces the config file with src (the server's ConfigPath).
func rewrite(t *testing.T, dir, src string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "mailpost.hcl"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
}

// configText is testConfig's file with the given pop3 block and mailbox
// lines, for rewriting during reload tests.
func configText(pop3Block, aliceExtra string) string {
	return fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
}
%s
mailbox "alice@example.com" {
  password_hash = %q
  %s
}
`, pop3Block, demoHash, aliceExtra)
}

func mustReload(t *testing.T, s *testServer) ReloadResult {
	t.Helper()
	res := s.ReloadFile("test")
	if !res.OK {
		t.Fatalf("reload failed: %s\n%s", res.Error, res.Diagnostics)
	}
	return res
}

func refuses(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func TestReloadBindings(t *testing.T) {
	dir := t.TempDir()
	p1, p2, p3 := freePort(t), freePort(t), freePort(t)
	a1, a2, a3 := fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("127.0.0.1:%d", p2), fmt.Sprintf("127.0.0.1:%d", p3)
	block := func(ssl, plain string) string {
		return fmt.Sprintf(`pop3 {
  ssl_bindings = [%q]
  unencrypted_or_tls_bindings = [%q]
  login_type = "plain_text_login"
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}`, ssl, plain)
	}
	rewrite(t, dir, configText(block(a1, a2), ""))
	cfg := testConfig(t, dir, block(a1, a2)) // same text; testConfig also loads it
	rewrite(t, dir, configText(block(a1, a2), ""))
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A session in flight on a1 (implicit TLS) before the reload.
	inFlight := dialPOP(t, a1)
	if r := inFlight.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}

	// a1 moves from ssl to plain, a2 goes away, a3 is new (ssl).
	rewrite(t, dir, configText(block(a3, a1), ""))
	res := mustReload(t, s)
	if !res.Changed {
		t.Fatal("reload reported no change")
	}
	if g := greeting(t, a3, true); !strings.HasPrefix(g, "+OK") {
		t.Errorf("new ssl binding %s: %q", a3, g)
	}
	if g := greeting(t, a1, false); !strings.HasPrefix(g, "+OK") {
		t.Errorf("moved binding %s now plain: %q", a1, g)
	}
	if !refuses(t, a2) {
		t.Errorf("removed binding %s still accepts", a2)
	}
	// The session accepted before the reload carries on, over its TLS.
	if r := inFlight.cmd("STAT"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("in-flight session after reload: %q", r)
	}
	if r := inFlight.cmd("QUIT"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("in-flight QUIT: %q", r)
	}

	// The same file again is a no-op.
	if res := mustReload(t, s); res.Changed {
		t.Error("reloading an unchanged file reported a change")
	}
}

// A binding that cannot be opened fails the reload as a whole: nothing is
// opened or closed, and the error is kept for status.
func TestReloadBusyPortChangesNothing(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p1, p2 := freePort(t), freePort(t)
	a1, a2 := fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("127.0.0.1:%d", p2)
	cfg := testConfig(t, dir, fmt.Sprintf(`pop3 {
  ssl_bindings = [%q]
  unencrypted_or_tls_bindings = []
  external_connection_settings = ["mail.example.com:995:ssl"]
}`, a1))
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rev := s.Status().ConfigRevision
	rewrite(t, dir, configText(fmt.Sprintf(`pop3 {
  ssl_bindings = [%q]
  unencrypted_or_tls_bindings = [%q]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}`, a2, busy.Addr().String()), ""))
	res := s.ReloadFile("test")
	if res.OK || !strings.Contains(res.Error, busy.Addr().String()) {
		t.Fatalf("reload onto a busy port: %+v", res)
	}
	if g := greeting(t, a1, true); !strings.HasPrefix(g, "+OK") {
		t.Errorf("old binding stopped serving: %q", g)
	}
	if !refuses(t, a2) {
		t.Errorf("%s was opened by a reload that failed", a2)
	}
	if got := s.Status().ConfigRevision; got != rev {
		t.Errorf("running revision %d, want still %d", got, rev)
	}
	last, counts := s.LastReload()
	if last == nil || last.OK || counts.Failed != 1 {
		t.Errorf("last reload %+v counts %+v", last, counts)
	}
}

// A broken edit is refused with positioned diagnostics; the running config
// stays; fixing the file then reloads.
func TestReloadInvalidThenFixed(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, pop3sOnly)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := popsAddr(t, s)
	good := string(cfg.Source)
	rewrite(t, dir, strings.Replace(good, `hostname = "mail.example.com"`, `hostname = "mail.example.com"
pop3_typo = true`, 1))
	res := s.ReloadFile("test")
	path := filepath.Join(dir, "mailpost.hcl")
	if res.OK || !strings.Contains(res.Diagnostics, path+":3:1: error:") {
		t.Fatalf("broken edit: ok=%v error=%q diagnostics:\n%s", res.OK, res.Error, res.Diagnostics)
	}
	if g := greeting(t, addr, true); !strings.HasPrefix(g, "+OK") {
		t.Errorf("server stopped serving after a broken edit: %q", g)
	}
	rewrite(t, dir, strings.Replace(good, `banner`, `banner`, 1)+"\n# fixed\n")
	if res := mustReload(t, s); !res.Changed {
		t.Error("the fix was not applied")
	}
}

// Access rules apply at once: a revoked or re-passworded mailbox cannot log
// in, and its open session ends at its next command with a clear -ERR.
func TestReloadAccessRevocation(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, pop3sOnly)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := popsAddr(t, s)
	open := dialPOP(t, addr)
	if r := open.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	rewrite(t, dir, configText(pop3sOnly, "pop3 = false"))
	mustReload(t, s)
	if r := open.cmd("STAT"); !strings.HasPrefix(r, "-ERR [SYS/PERM]") || !strings.Contains(r, "switched off") {
		t.Errorf("open session after revocation: %q", r)
	}
	if r := dialPOP(t, addr).login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "-ERR [SYS/PERM]") {
		t.Errorf("new login after revocation: %q", r)
	}

	// Back on, then a new password: the old one stops working at once.
	rewrite(t, dir, configText(pop3sOnly, ""))
	mustReload(t, s)
	open = dialPOP(t, addr)
	if r := open.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	newHash, err := auth.HashPasswordParams("new-password", auth.Argon2Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, dir, strings.Replace(configText(pop3sOnly, ""), demoHash, newHash, 1))
	mustReload(t, s)
	if r := open.cmd("LIST"); !strings.HasPrefix(r, "-ERR [SYS/PERM]") || !strings.Contains(r, "password") {
		t.Errorf("open session after a password change: %q", r)
	}
	if r := dialPOP(t, addr).login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "-ERR [AUTH]") {
		t.Errorf("old password after the change: %q", r)
	}
	if r := dialPOP(t, addr).login("alice@example.com", "new-password"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("new password: %q", r)
	}
}

// A certificate file renewed in place (certbot) under an unchanged config
// is picked up by a reload and seen by the next handshake; a session
// already in TLS carries on.
func TestReloadCertificateSwap(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 1)
	cfg := testConfig(t, dir, pop3sOnly)
	src := strings.Replace(string(cfg.Source), "self_signed = true",
		fmt.Sprintf("cert_file = %q\n  key_file = %q", certFile, keyFile), 1)
	rewrite(t, dir, src)
	cfg = testConfig(t, dir, pop3sOnly)
	rewrite(t, dir, src)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.ReloadFile("test") // pick up the static certificate from the file
	addr := popsAddr(t, s)
	before := peerSerial(t, addr)
	open := dialPOP(t, addr)
	if r := open.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	writeCert(t, certFile, keyFile, 2)
	if res := mustReload(t, s); !res.Changed {
		t.Fatal("a renewed certificate file was not seen as a change")
	}
	if after := peerSerial(t, addr); after != 2 || before != 1 {
		t.Errorf("certificate serial before/after reload = %d/%d, want 1/2", before, after)
	}
	if r := open.cmd("STAT"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("TLS session across the certificate swap: %q", r)
	}
}

func peerSerial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bufio.NewReader(c).ReadString('\n')
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "mail.example.com"},
		DNSNames:  []string{"mail.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}
