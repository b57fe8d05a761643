package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// memKV is an in-memory KV with knobs for failures.
type memKV struct {
	mu      sync.Mutex
	m       map[string][]byte
	puts    int
	getErr  error
	putErr  error
	getKeys []string
}

func newMemKV() *memKV { return &memKV{m: make(map[string][]byte)} }

func (k *memKV) GetBlob(ns, key string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.getKeys = append(k.getKeys, ns+"/"+key)
	if k.getErr != nil {
		return nil, k.getErr
	}
	v, ok := k.m[ns+"\x00"+key]
	if !ok {
		return nil, nil
	}
	return bytes.Clone(v), nil
}

func (k *memKV) PutBlob(ns, key string, val []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.putErr != nil {
		return k.putErr
	}
	k.puts++
	k.m[ns+"\x00"+key] = bytes.Clone(val)
	return nil
}

func (k *memKV) get(ns, key string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[ns+"\x00"+key]
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func fingerprint(c *tls.Certificate) string {
	s := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(s[:])
}

func buildOne(t *testing.T, kv KV, now time.Time, names ...string) *tls.Certificate {
	t.Helper()
	p, err := Build([]Source{{Name: "mail", SelfSigned: true, Names: names}}, kv, now)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	c := p.ForName(names[0])
	if c == nil {
		t.Fatalf("ForName(%q) = nil", names[0])
	}
	return c
}

func TestSelfSignedStoredAndReused(t *testing.T) {
	kv := newMemKV()
	c1 := buildOne(t, kv, t0, "mail.example.com", "127.0.0.1")
	if kv.puts != 1 {
		t.Fatalf("first Build stored %d times, want 1", kv.puts)
	}
	stored := kv.get("certs", "self-signed/mail")
	if !bytes.Contains(stored, []byte("-----BEGIN CERTIFICATE-----")) || !bytes.Contains(stored, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatalf("stored value is not PEM cert+key:\n%s", stored)
	}
	leaf := c1.Leaf
	if !leaf.NotBefore.Equal(t0.Add(-time.Hour)) || !leaf.NotAfter.Equal(t0.Add(365*24*time.Hour)) {
		t.Errorf("validity %v..%v, want now-1h..now+1y", leaf.NotBefore, leaf.NotAfter)
	}
	if got := leaf.PublicKeyAlgorithm.String(); got != "ECDSA" {
		t.Errorf("key algorithm %s, want ECDSA", got)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "mail.example.com" || len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("SANs = %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if err := leaf.VerifyHostname("mail.example.com"); err != nil {
		t.Errorf("VerifyHostname: %v", err)
	}

	// A second Build (a restart, a reload) a month later reuses it, even
	// with the names given in another order and case.
	c2 := buildOne(t, kv, t0.Add(30*24*time.Hour), "127.0.0.1", "MAIL.example.com.")
	if fingerprint(c1) != fingerprint(c2) {
		t.Error("second Build regenerated the certificate instead of reusing it")
	}
	if kv.puts != 1 {
		t.Errorf("reuse stored again (%d puts)", kv.puts)
	}
	if !bytes.Equal(kv.get("certs", "self-signed/mail"), stored) {
		t.Error("stored value changed on reuse")
	}
}

func TestSelfSignedRegenerated(t *testing.T) {
	kv := newMemKV()
	orig := fingerprint(buildOne(t, kv, t0, "mail.example.com"))

	// Names changed: a new certificate, saved.
	c := buildOne(t, kv, t0, "mail.example.com", "pop.example.com")
	if fingerprint(c) == orig {
		t.Fatal("names changed but certificate reused")
	}
	if kv.puts != 2 {
		t.Errorf("puts = %d, want 2", kv.puts)
	}
	if got := c.Leaf.DNSNames; len(got) != 2 {
		t.Errorf("new cert names %v", got)
	}
	withPop := fingerprint(c)

	// 31 days left: still reused.
	if fingerprint(buildOne(t, kv, t0.Add(334*24*time.Hour), "mail.example.com", "pop.example.com")) != withPop {
		t.Error("31 days left: regenerated too early")
	}
	// 30 days left or less: regenerated, valid a year from the new now.
	later := t0.Add(335 * 24 * time.Hour)
	c = buildOne(t, kv, later, "mail.example.com", "pop.example.com")
	if fingerprint(c) == withPop {
		t.Fatal("30 days left: not regenerated")
	}
	if !c.Leaf.NotAfter.Equal(later.Add(365 * 24 * time.Hour)) {
		t.Errorf("regenerated NotAfter %v", c.Leaf.NotAfter)
	}
	// The regenerated one is what the next Build reuses.
	if fingerprint(buildOne(t, kv, later.Add(time.Hour), "pop.example.com", "mail.example.com")) != fingerprint(c) {
		t.Error("regenerated certificate was not saved")
	}

	// A clock that went backwards before NotBefore: regenerate rather than
	// serve a not-yet-valid certificate.
	if fingerprint(buildOne(t, kv, later.Add(-2*time.Hour), "mail.example.com", "pop.example.com")) == fingerprint(c) {
		t.Error("not-yet-valid stored certificate reused")
	}

	// Corrupt stored value: replaced.
	kv.PutBlob("certs", "self-signed/mail", []byte("garbage"))
	buildOne(t, kv, t0, "mail.example.com")
	if _, err := parseStored(kv.get("certs", "self-signed/mail")); err != nil {
		t.Errorf("corrupt value was not replaced: %v", err)
	}
}

func TestBuildStoreErrors(t *testing.T) {
	kv := newMemKV()
	kv.getErr = errors.New("disk on fire")
	_, err := Build([]Source{{Name: "m", SelfSigned: true, Names: []string{"a.example"}}}, kv, t0)
	if err == nil || !errors.Is(err, kv.getErr) || !strings.Contains(err.Error(), `"m"`) {
		t.Errorf("get failure: err = %v", err)
	}
	kv = newMemKV()
	kv.putErr = errors.New("read-only")
	_, err = Build([]Source{{Name: "m", SelfSigned: true, Names: []string{"a.example"}}}, kv, t0)
	if !errors.Is(err, kv.putErr) {
		t.Errorf("put failure: err = %v", err)
	}
	// No store: generated, not kept.
	p, err := Build([]Source{{Name: "m", SelfSigned: true, Names: []string{"a.example"}}}, nil, t0)
	if err != nil || p.ForName("a.example") == nil {
		t.Errorf("nil kv: %v", err)
	}
}

func TestBuildValidation(t *testing.T) {
	st, err := SelfSigned([]string{"x.example"}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	noLeaf := st
	noLeaf.Leaf = nil
	for _, tc := range []struct {
		name string
		srcs []Source
		want string // "" = ok
	}{
		{"static ok", []Source{{Name: "a", Static: &st}}, ""},
		{"static leaf parsed if missing", []Source{{Name: "a", Static: &noLeaf}}, ""},
		{"empty name", []Source{{SelfSigned: true, Names: []string{"a.example"}}}, "empty name"},
		{"duplicate", []Source{{Name: "a", Static: &st}, {Name: "a", Static: &st}}, `"a" defined twice`},
		{"no source", []Source{{Name: "a"}}, "no source"},
		{"both", []Source{{Name: "a", Static: &st, SelfSigned: true, Names: []string{"x"}}}, "both static files and self-signed"},
		{"no cert data", []Source{{Name: "a", Static: &tls.Certificate{}}}, "no certificate data"},
		{"no key", []Source{{Name: "a", Static: &tls.Certificate{Certificate: st.Certificate, Leaf: st.Leaf}}}, "no private key"},
		{"self-signed no names", []Source{{Name: "a", SelfSigned: true}}, "at least one name"},
		{"bad name", []Source{{Name: "a", SelfSigned: true, Names: []string{"a b"}}}, "not a host name"},
		{"bad wildcard", []Source{{Name: "a", SelfSigned: true, Names: []string{"a.*.example"}}}, "wildcard must be a whole first label"},
		{"partial wildcard", []Source{{Name: "a", SelfSigned: true, Names: []string{"w*.example"}}}, "wildcard must be a whole first label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Build(tc.srcs, newMemKV(), t0)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.ForName("x.example") == nil {
					t.Error("ForName(x.example) = nil")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if noLeaf.Leaf != nil {
		t.Error("Build modified the caller's static certificate")
	}
}

// static makes a static source whose leaf expires validFor after t0.
func static(t *testing.T, name string, validFor time.Duration, names ...string) Source {
	t.Helper()
	c, err := SelfSigned(names, t0, validFor)
	if err != nil {
		t.Fatal(err)
	}
	return Source{Name: name, Static: &c}
}

func TestGetSelection(t *testing.T) {
	short := static(t, "short", 30*24*time.Hour, "mail.example.com")
	long := static(t, "long", 90*24*time.Hour, "mail.example.com", "smtp.example.com")
	wild := static(t, "wild", 60*24*time.Hour, "*.example.com")
	wildLong := static(t, "wild-long", 400*24*time.Hour, "*.other.example")
	exactShort := static(t, "exact-short", 10*24*time.Hour, "imap.other.example")
	fb := static(t, "fallback", 60*24*time.Hour, "mx.example.net", "192.0.2.1")
	p, err := Build([]Source{short, long, wild, wildLong, exactShort, fb}, newMemKV(), t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sni, fallback string
		want          *tls.Certificate // nil = error
	}{
		{"mail.example.com", "", long.Static},            // two exact: the later expiry
		{"MAIL.Example.COM.", "", long.Static},           // case and root dot
		{"smtp.example.com", "", long.Static},            // exact 90d beats wildcard 60d
		{"pop.example.com", "", wild.Static},             // one-label wildcard
		{"imap.other.example", "", wildLong.Static},      // wildcard expiring later beats exact
		{"a.b.example.com", "mx.example.net", fb.Static}, // wildcard covers one label only
		{"example.com", "mx.example.net", fb.Static},     // wildcard does not cover the bare domain
		{"", "mx.example.net", fb.Static},                // no SNI (client connected by IP)
		{"", "192.0.2.1", fb.Static},                     // fallback by IP SAN
		{"", "pop.example.com", wild.Static},             // fallback may be covered by a wildcard
		{"unknown.test", "", nil},
		{"", "", nil},
		{"", "nothing.test", nil},
	} {
		got, err := p.Get(&tls.ClientHelloInfo{ServerName: tc.sni}, tc.fallback)
		if tc.want == nil {
			if err == nil {
				t.Errorf("Get(%q, %q) = %v, want error", tc.sni, tc.fallback, got.Leaf.DNSNames)
			}
			continue
		}
		if err != nil {
			t.Errorf("Get(%q, %q): %v", tc.sni, tc.fallback, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Get(%q, %q) = cert for %v (expires %v), want %v", tc.sni, tc.fallback,
				got.Leaf.DNSNames, got.Leaf.NotAfter, tc.want.Leaf.DNSNames)
		}
	}
	if c := p.ForName("pop.example.com"); c != wild.Static {
		t.Errorf("ForName(pop.example.com) = %v", c)
	}
	if c := p.ForName("nope.test"); c != nil {
		t.Errorf("ForName(nope.test) = %v, want nil", c.Leaf.DNSNames)
	}
}

// rsaStatic makes a static RSA certificate, so a pool can hold two key
// types for one name.
func rsaStatic(t *testing.T, name string, validFor time.Duration, host string) Source {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(validFor),
		DNSNames:     []string{host},
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
	return Source{Name: name, Static: &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}
}

func TestGetPrefersSupportedCertificate(t *testing.T) {
	// Same name, the RSA one expiring later: a client that offers only
	// ECDSA signature schemes must get the ECDSA one, not the later expiry
	// it could not use; one offering only RSA-PSS gets the RSA one.
	ec := static(t, "ec", 30*24*time.Hour, "mail.example.com")
	rs := rsaStatic(t, "rsa", 90*24*time.Hour, "mail.example.com")
	p, err := Build([]Source{ec, rs}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	hello := func(s tls.SignatureScheme) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{
			ServerName:        "mail.example.com",
			SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes:  []tls.SignatureScheme{s},
			SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
			CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256},
		}
	}
	if got, _ := p.Get(hello(tls.ECDSAWithP256AndSHA256), ""); got != ec.Static {
		t.Error("ECDSA-only client did not get the ECDSA certificate")
	}
	if got, _ := p.Get(hello(tls.PSSWithSHA256), ""); got != rs.Static {
		t.Error("RSA-only client did not get the RSA certificate")
	}
	// Nothing known about the client: the later expiry.
	if got := p.ForName("mail.example.com"); got != rs.Static {
		t.Error("ForName did not prefer the later expiry")
	}
}

func TestInfos(t *testing.T) {
	kv := newMemKV()
	st := static(t, "files", 90*24*time.Hour, "smtp.example.com")
	p, err := Build([]Source{st, {Name: "self", SelfSigned: true, Names: []string{"Mail.Example.com"}}}, kv, t0)
	if err != nil {
		t.Fatal(err)
	}
	infos := p.Infos()
	if len(infos) != 2 {
		t.Fatalf("%d infos, want 2", len(infos))
	}
	in := infos[0]
	if in.Name != "files" || in.Source != "static" || len(in.Names) != 1 || in.Names[0] != "smtp.example.com" ||
		!in.NotAfter.Equal(t0.Add(90*24*time.Hour)) || !strings.Contains(in.Issuer, "O=mailpost self-signed") {
		t.Errorf("static info = %+v", in)
	}
	sum := sha256.Sum256(st.Static.Certificate[0])
	want := strings.ToUpper(hex.EncodeToString(sum[:]))
	if got := strings.ReplaceAll(in.SHA256, ":", ""); got != want || len(in.SHA256) != 32*3-1 {
		t.Errorf("fingerprint %q, want colon-separated %s", in.SHA256, want)
	}
	if in := infos[1]; in.Name != "self" || in.Source != "self-signed" || in.Names[0] != "mail.example.com" {
		t.Errorf("self-signed info = %+v", in)
	}
}

func TestSelfSignedHelper(t *testing.T) {
	c, err := SelfSigned([]string{"a.example", "::1"}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotAfter.Equal(t0.Add(time.Hour)) || c.Leaf.Subject.CommonName != "a.example" {
		t.Errorf("leaf = %v %v", c.Leaf.NotAfter, c.Leaf.Subject)
	}
	if err := c.Leaf.VerifyHostname("::1"); err != nil {
		t.Errorf("IPv6 SAN: %v", err)
	}
	if _, err := SelfSigned(nil, t0, time.Hour); err == nil {
		t.Error("no names accepted")
	}
	if _, err := SelfSigned([]string{"a.example"}, t0, 0); err == nil {
		t.Error("zero validity accepted")
	}
}
