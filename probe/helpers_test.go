package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailpost/auth"
	"mailpost/config"
	"mailpost/server"
	"mailpost/storage"
)

// demoHash is the argon2id hash of "demo-password".
const demoHash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"

// testPKI is a CA and the means to issue leaves from it.
type testPKI struct {
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	roots *x509.CertPool
}

func newPKI(t testing.TB, cn string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		// Older than any leaf the tests issue, as real CAs are.
		NotBefore: time.Now().Add(-365 * 24 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &testPKI{ca: ca, key: key, roots: roots}
}

// leaf issues a server certificate; a nil pki makes it self-signed.
func (p *testPKI) leaf(t testing.TB, notBefore, notAfter time.Time, names ...string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := tmpl, key
	if p != nil {
		parent, signer = p.ca, p.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// writeLeaf writes a fresh leaf for names into dir and returns the paths.
func (p *testPKI) writeLeaf(t testing.TB, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	c, key := p.leaf(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour), names...)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// mailServer is a real mailpost server (POP3 and submission on every
// method) on ephemeral loopback ports.
type mailServer struct {
	srv   *server.Server
	store *storage.Store
	cfg   *config.Config
	addr  map[string]string // proto ("pop3s", "pop3", "submissions", "submission") → address
}

func startMailServer(t testing.TB, pki *testPKI) *mailServer {
	return startMailServerWith(t, pki, "")
}

// startMailServerWith adds mailboxAttrs to alice's mailbox block.
func startMailServerWith(t testing.TB, pki *testPKI, mailboxAttrs string) *mailServer {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := pki.writeLeaf(t, dir, "mail.example.com")
	src := fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "test" {
  cert_file = %q
  key_file  = %q
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}
submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}
mailbox "alice@example.com" {
  password_hash = %q
  %s
}
`, certFile, keyFile, demoHash, mailboxAttrs)
	path := filepath.Join(dir, "mailpost.hcl")
	cfg, diags := config.Parse(path, []byte(src))
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	if err := server.EnsureDataDir(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(server.DatabasePath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A cheap failed-login throttle keeps the wrong-password case quick.
	s, err := server.New(cfg, st, log, server.Options{Throttle: auth.ThrottleOptions{Base: time.Millisecond, Max: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	ms := &mailServer{srv: s, store: st, cfg: cfg, addr: map[string]string{}}
	for _, l := range s.Listeners() {
		ms.addr[l.Proto] = l.Addr
	}
	for _, p := range []string{"pop3s", "pop3", "submissions", "submission"} {
		if ms.addr[p] == "" {
			t.Fatalf("no %s listener: %v", p, s.Listeners())
		}
	}
	return ms
}

// messages returns the texts in alice's maildrop.
func (ms *mailServer) messages(t testing.TB) []string {
	t.Helper()
	list, err := ms.store.List("alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range list {
		rc, err := ms.store.OpenMessage("alice@example.com", m.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		out = append(out, string(b))
	}
	return out
}

// options aims a run at ms: submission and POP3 by the given methods,
// verified against pki.
func (ms *mailServer) options(pki *testPKI, subMethod, popMethod string) Options {
	sub, pop := "submission", "pop3"
	if subMethod == MethodSSL {
		sub = "submissions"
	}
	if popMethod == MethodSSL {
		pop = "pop3s"
	}
	return Options{
		Submission: Endpoint{Addr: ms.addr[sub], Method: subMethod, ServerName: "mail.example.com"},
		POP3:       Endpoint{Addr: ms.addr[pop], Method: popMethod, ServerName: "mail.example.com"},
		User:       "alice@example.com",
		Password:   "demo-password",
		RootCAs:    pki.roots,
		Timeout:    5 * time.Second,
		Wait:       5 * time.Second,
	}
}

// names lists the step names of a report.
func names(r Report) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

func dump(r Report) string {
	var b strings.Builder
	r.Write(&b)
	return b.String()
}

// stepNamed finds a step by name (the first when it repeats).
func stepNamed(t *testing.T, r Report, name string) Step {
	t.Helper()
	for _, s := range r.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %q in\n%s", name, dump(r))
	return Step{}
}
