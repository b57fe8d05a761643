package probe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestCertVerdict(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	date := func(d time.Duration) string { return now.Add(d).Format(time.DateTime) + " UTC" }
	pki := newPKI(t, "Homelab CA")
	other := newPKI(t, "Other CA")
	good, _ := pki.leaf(t, now.Add(-day), now.Add(30*day), "mail.example.com", "smtp.example.com")
	wild, _ := pki.leaf(t, now.Add(-day), now.Add(30*day), "*.example.com")
	expired, _ := pki.leaf(t, now.Add(-90*day), now.Add(-2*day), "mail.example.com")
	future, _ := pki.leaf(t, now.Add(3*day), now.Add(90*day), "mail.example.com")
	self, _ := (*testPKI)(nil).leaf(t, now.Add(-day), now.Add(30*day), "mail.example.com")
	selfExpired, _ := (*testPKI)(nil).leaf(t, now.Add(-90*day), now.Add(-day), "box.lan")
	foreign, _ := other.leaf(t, now.Add(-day), now.Add(30*day), "mail.example.com")

	cases := []struct {
		name   string
		chain  []*x509.Certificate
		server string
		ok     bool
		want   []string // the verdict is these, in order, and maybe more between
		exact  bool     // the verdict is exactly want[0]
	}{
		{"trusted", []*x509.Certificate{good}, "mail.example.com", true,
			[]string{"valid for mail.example.com, issued by Homelab CA, expires " + now.Add(30*day).Format(time.DateOnly) + " (30 days)"}, false},
		{"second SAN", []*x509.Certificate{good}, "SMTP.example.com", true, []string{"valid for SMTP.example.com"}, false},
		{"wildcard", []*x509.Certificate{wild}, "pop.example.com", true, []string{"valid for pop.example.com"}, false},
		{"wildcard covers one label only", []*x509.Certificate{wild}, "a.b.example.com", false,
			[]string{"certificate is valid for *.example.com, not a.b.example.com"}, false},
		{"name mismatch", []*x509.Certificate{good}, "mx.example.org", false,
			[]string{"certificate is valid for mail.example.com, smtp.example.com, not mx.example.org"}, false},
		{"expired", []*x509.Certificate{expired}, "mail.example.com", false,
			[]string{"certificate expired on " + date(-2*day)}, true},
		{"not yet valid", []*x509.Certificate{future}, "mail.example.com", false,
			[]string{"certificate is not valid before " + date(3*day)}, true},
		{"self-signed", []*x509.Certificate{self}, "mail.example.com", false,
			[]string{"certificate for mail.example.com is self-signed (not signed by a trusted authority)"}, true},
		{"unknown CA", []*x509.Certificate{foreign}, "mail.example.com", false,
			[]string{"certificate for mail.example.com is signed by an unknown authority (CN=Other CA"}, false},
		// Every problem is named, not only the first one found.
		{"self-signed, expired and for another name", []*x509.Certificate{selfExpired}, "mail.example.com", false,
			[]string{"certificate is valid for box.lan, not mail.example.com", "; certificate expired on ", "; certificate for box.lan is self-signed"}, false},
		{"no name to check", []*x509.Certificate{good}, "", false, []string{"no server name to check the certificate against"}, false},
		{"no certificate", nil, "mail.example.com", false, []string{"the server presented no certificate"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := certVerdict(c.chain, c.server, pki.roots, now)
			if ok != c.ok {
				t.Errorf("ok = %v, want %v (%s)", ok, c.ok, got)
			}
			if c.exact && got != c.want[0] {
				t.Errorf("verdict %q\nwant    %q", got, c.want[0])
			}
			rest := got
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("verdict %q lacks %q (in order)", got, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// A leaf from an intermediate verifies when the server sends the
// intermediate, and is "unknown authority" when it does not.
func TestCertVerdictIntermediate(t *testing.T) {
	now := time.Now()
	root := newPKI(t, "Root CA")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Intermediate CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.ca, &key.PublicKey, root.key)
	if err != nil {
		t.Fatal(err)
	}
	ic, _ := x509.ParseCertificate(der)
	inter := &testPKI{ca: ic, key: key}
	leaf, _ := inter.leaf(t, now.Add(-time.Hour), now.Add(24*time.Hour), "mail.example.com")

	if got, ok := certVerdict([]*x509.Certificate{leaf, ic}, "mail.example.com", root.roots, now); !ok {
		t.Errorf("full chain: %s", got)
	}
	got, ok := certVerdict([]*x509.Certificate{leaf}, "mail.example.com", root.roots, now)
	if ok || !strings.Contains(got, "unknown authority (CN=Intermediate CA") || !strings.Contains(got, "missing intermediate") {
		t.Errorf("chain without the intermediate: %v %s", ok, got)
	}
}
