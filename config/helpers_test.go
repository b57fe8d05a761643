package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// certSpec describes a test certificate to generate.
type certSpec struct {
	dns       []string
	ips       []net.IP
	notBefore time.Time
	notAfter  time.Time
	wrongKey  bool // write a different key than the certificate's
}

// writeCert generates a self-signed ECDSA certificate into dir as
// base.crt/base.key and returns the leaf.
func writeCert(t testing.TB, dir, base string, s certSpec) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if s.notBefore.IsZero() {
		s.notBefore = time.Now().Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: base},
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
		NotBefore:    s.notBefore,
		NotAfter:     s.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if s.wrongKey {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, base+".crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, filepath.Join(dir, base+".key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	return leaf
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// certDir is the set of certificates the table tests refer to by relative
// path; leaves are kept so expected messages can quote their dates.
type certDir struct {
	dir    string
	leaves map[string]*x509.Certificate
}

func newCertDir(t testing.TB) *certDir {
	t.Helper()
	now := time.Now()
	d := &certDir{dir: t.TempDir(), leaves: map[string]*x509.Certificate{}}
	specs := map[string]certSpec{
		"valid":    {dns: []string{"mail.example.com", "Mail.Example.NET"}, ips: []net.IP{net.ParseIP("192.0.2.7")}},
		"wildcard": {dns: []string{"*.example.com"}},
		"other":    {dns: []string{"other.example.org"}},
		"expired":  {dns: []string{"mail.example.com"}, notBefore: now.Add(-60 * 24 * time.Hour), notAfter: now.Add(-24 * time.Hour)},
		"future":   {dns: []string{"mail.example.com"}, notBefore: now.Add(48 * time.Hour), notAfter: now.Add(90 * 24 * time.Hour)},
		"soon":     {dns: []string{"mail.example.com"}, notAfter: now.Add(5 * 24 * time.Hour)},
		"wrongkey": {dns: []string{"mail.example.com"}, wrongKey: true},
	}
	for name, s := range specs {
		d.leaves[name] = writeCert(t, d.dir, name, s)
	}
	writeFile(t, filepath.Join(d.dir, "garbage.crt"), "this is not PEM\n")
	writeFile(t, filepath.Join(d.dir, "garbage.key"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	// A certificate file given as a key: PEM, but no private key in it.
	data, err := os.ReadFile(filepath.Join(d.dir, "valid.crt"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.dir, "nokey.key"), string(data))
	return d
}

// parseIn parses src as the file t.hcl inside dir and returns the config
// and the diagnostics rendered without snippets, one per line, with dir
// removed so expectations are stable.
func parseIn(t testing.TB, dir, src string) (*Config, []string, hcl.Diagnostics) {
	t.Helper()
	cfg, diags := Parse(filepath.Join(dir, "t.hcl"), []byte(src))
	if diags.HasErrors() != (cfg == nil) {
		t.Errorf("cfg nil = %v but HasErrors = %v", cfg == nil, diags.HasErrors())
	}
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, diags, nil); err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(buf.String(), dir+string(filepath.Separator), "")
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return cfg, lines, diags
}
