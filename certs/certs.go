// Package certs holds the certificate pool: the TLS certificates named by
// the configuration's `certificate` blocks, looked up by host name for
// listeners (their FQDN) and for clients (their SNI).
//
// A pool is built from Sources. Each source is one kind: static PEM files
// (parsed by the config package) or a self-signed certificate generated once
// and kept in the store, or an ACME certificate, which changes without a new
// pool (renewals) and is asked for at each lookup (see ACMEProvider).
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// KV is the part of the store the pool needs; storage.Store satisfies it.
// GetBlob returns (nil, nil) when the key is absent.
type KV interface {
	GetBlob(ns, key string) ([]byte, error)
	PutBlob(ns, key string, val []byte) error
}

// Source is one `certificate "name" {}` block. Exactly one kind is set.
type Source struct {
	Name       string
	Static     *tls.Certificate // static PEM files, parsed; Leaf set
	SelfSigned bool
	Names      []string // host names (or IP literals) for a self-signed certificate; the domains for ACME
	// ACME marks a certificate obtained from an ACME CA for Names. Provider
	// supplies the issued certificates; while it has none for a name (or is
	// nil, as when the server is not running), a self-signed stand-in is
	// served.
	ACME     bool
	Provider ACMEProvider
}

// Source kinds, as reported in Info.Source.
const (
	KindStatic     = "static"
	KindSelfSigned = "self-signed"
	KindACME       = "acme"
)

const (
	kvNamespace       = "certs"
	selfSignedPrefix  = "self-signed/"
	selfSignedValid   = 365 * 24 * time.Hour
	selfSignedRenewAt = 30 * 24 * time.Hour // regenerate when less than this is left
	backdate          = time.Hour           // tolerate clients whose clock is a little behind
)

// Pool is a set of certificates indexed by the names they cover. It is
// immutable once built and safe for concurrent use; to change certificates,
// build a new Pool and swap it in (see ServerTLSConfig).
type Pool struct {
	entries []*entry            // in source order
	byName  map[string][]*entry // exact SAN or "*.suffix" pattern → entries
}

type entry struct {
	name   string // source block name
	kind   string
	cert   *tls.Certificate
	names  []string // normalized SANs (DNS names, then IP literals)
	expiry time.Time
	acme   ACMEProvider // non-nil for KindACME with a provider; cert is then the stand-in
}

// Build makes the pool from sources. Static certificates are used as given.
// A self-signed certificate (ECDSA P-256, valid one year from now, backdated
// one hour, SANs = Names) is kept in kv under namespace "certs", key
// "self-signed/<name>", and reused while it covers exactly the same names
// and has more than 30 days left; otherwise a new one is generated and
// saved. A nil kv means self-signed certificates are generated fresh and not
// kept (useful for checking a configuration). now is the current time.
func Build(sources []Source, kv KV, now time.Time) (*Pool, error) {
	p := &Pool{byName: make(map[string][]*entry)}
	seen := make(map[string]bool)
	for _, s := range sources {
		if s.Name == "" {
			return nil, errors.New("certs: certificate with an empty name")
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("certs: certificate %q defined twice", s.Name)
		}
		seen[s.Name] = true
		var (
			cert *tls.Certificate
			kind string
			err  error
		)
		if s.ACME {
			es, err := acmeEntries(s, now)
			if err != nil {
				return nil, fmt.Errorf("certs: certificate %q: %w", s.Name, err)
			}
			for _, e := range es {
				p.entries = append(p.entries, e)
				p.byName[e.names[0]] = append(p.byName[e.names[0]], e)
			}
			continue
		}
		switch {
		case s.Static != nil && s.SelfSigned:
			return nil, fmt.Errorf("certs: certificate %q: both static files and self-signed; choose one", s.Name)
		case s.Static != nil:
			kind = KindStatic
			cert, err = staticCert(s.Static)
		case s.SelfSigned:
			kind = KindSelfSigned
			cert, err = selfSignedFromStore(s, kv, now)
		default:
			return nil, fmt.Errorf("certs: certificate %q: no source (static files or self-signed)", s.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("certs: certificate %q: %w", s.Name, err)
		}
		e := &entry{name: s.Name, kind: kind, cert: cert, names: leafNames(cert.Leaf), expiry: cert.Leaf.NotAfter}
		if len(e.names) == 0 {
			return nil, fmt.Errorf("certs: certificate %q covers no names (no DNS or IP subject alternative names)", s.Name)
		}
		p.entries = append(p.entries, e)
		for _, n := range e.names {
			p.byName[n] = append(p.byName[n], e)
		}
	}
	return p, nil
}

func staticCert(c *tls.Certificate) (*tls.Certificate, error) {
	if len(c.Certificate) == 0 {
		return nil, errors.New("static certificate has no certificate data")
	}
	if c.PrivateKey == nil {
		return nil, errors.New("static certificate has no private key")
	}
	if c.Leaf != nil {
		return c, nil
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing static leaf certificate: %w", err)
	}
	cc := *c // do not modify the caller's value
	cc.Leaf = leaf
	return &cc, nil
}

// selfSignedFromStore returns the stored certificate for s if it is still
// good for s.Names, or makes and stores a new one.
func selfSignedFromStore(s Source, kv KV, now time.Time) (*tls.Certificate, error) {
	want, err := normalizeNames(s.Names)
	if err != nil {
		return nil, err
	}
	key := selfSignedPrefix + s.Name
	if kv != nil {
		data, err := kv.GetBlob(kvNamespace, key)
		if err != nil {
			return nil, fmt.Errorf("reading stored self-signed certificate: %w", err)
		}
		// A stored value that does not parse (truncated, hand-edited) is
		// replaced: nothing trusts a self-signed certificate by its chain,
		// so a new one loses nothing a broken one had.
		if c, err := parseStored(data); err == nil && reusable(c.Leaf, want, now) {
			return c, nil
		}
	}
	c, err := SelfSigned(want, now, selfSignedValid)
	if err != nil {
		return nil, err
	}
	if kv != nil {
		data, err := encodeStored(&c)
		if err != nil {
			return nil, err
		}
		if err := kv.PutBlob(kvNamespace, key, data); err != nil {
			return nil, fmt.Errorf("saving self-signed certificate: %w", err)
		}
	}
	return &c, nil
}

// reusable reports whether leaf covers exactly want (as a set) and is valid
// for more than selfSignedRenewAt from now.
func reusable(leaf *x509.Certificate, want []string, now time.Time) bool {
	if now.Before(leaf.NotBefore) || leaf.NotAfter.Sub(now) <= selfSignedRenewAt {
		return false
	}
	have := leafNames(leaf)
	w := slices.Clone(want)
	slices.Sort(have)
	slices.Sort(w)
	return slices.Equal(have, w)
}

func parseStored(data []byte) (*tls.Certificate, error) {
	if data == nil {
		return nil, errors.New("absent")
	}
	// The stored value holds both PEM blocks; X509KeyPair picks the
	// CERTIFICATE blocks from the first argument and the key from the second.
	c, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func encodeStored(c *tls.Certificate) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encoding self-signed key: %w", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	return append(b, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
}

// SelfSigned makes a fresh self-signed ECDSA P-256 certificate for names
// (DNS names, "*.domain" wildcards or IP literals), valid from now-1h for
// validFor. Nothing is stored; other packages' tests use it directly.
func SelfSigned(names []string, now time.Time, validFor time.Duration) (tls.Certificate, error) {
	names, err := normalizeNames(names)
	if err != nil {
		return tls.Certificate{}, err
	}
	if validFor <= 0 {
		return tls.Certificate{}, fmt.Errorf("certs: self-signed validity %v is not positive", validFor)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: generating key: %w", err)
	}
	// RFC 5280 §4.1.2.2: serial numbers are positive and at most 20 octets.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: generating serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{Organization: []string{"mailpost self-signed"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	// RFC 5280 §4.1.2.6 caps a common name at 64 characters; clients match
	// on SANs anyway, the CN only helps a human reading the certificate.
	if len(names[0]) <= 64 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: creating self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: parsing new certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// normalizeNames lower-cases names, drops a trailing root dot and
// duplicates, and rejects what cannot go in a SAN.
func normalizeNames(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, errors.New("certs: self-signed certificate needs at least one name")
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = normalize(n)
		if n == "" || (strings.ContainsAny(n, " \t/\\@:") && net.ParseIP(n) == nil) {
			return nil, fmt.Errorf("certs: %q is not a host name or IP address", n)
		}
		if i := strings.LastIndexByte(n, '*'); i > 0 || (i == 0 && !strings.HasPrefix(n, "*.")) {
			return nil, fmt.Errorf("certs: %q: a wildcard must be a whole first label (*.domain)", n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
}

// leafNames returns the normalized names a leaf covers: DNS SANs and IP
// SANs. The subject CN is ignored, as modern clients (and crypto/x509) do.
func leafNames(leaf *x509.Certificate) []string {
	var out []string
	for _, n := range leaf.DNSNames {
		out = append(out, normalize(n))
	}
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// lookup returns the certificate covering name: an exact SAN or a one-label
// wildcard (RFC 6125 §6.4.3: "*" matches exactly one whole left-most label).
// Among several it prefers one the client can use, then the one expiring
// last, then an exact match, then the earliest source.
func (p *Pool) lookup(name string, hello *tls.ClientHelloInfo) *tls.Certificate {
	if p == nil {
		return nil
	}
	name = normalize(name)
	if name == "" {
		return nil
	}
	if ip := net.ParseIP(name); ip != nil {
		name = ip.String()
	}
	cands := p.byName[name]
	if dot := strings.IndexByte(name, '.'); dot > 0 && !strings.Contains(name, "*") {
		if w := p.byName["*"+name[dot:]]; len(w) > 0 {
			cands = append(slices.Clip(cands), w...)
		}
	}
	var best *tls.Certificate
	var bestExpiry time.Time
	bestOK := false
	for _, e := range cands { // exact matches come first, so ties keep them
		cert, expiry := e.current()
		ok := hello != nil && hello.SupportsCertificate(cert) == nil
		switch {
		case best == nil,
			ok && !bestOK,
			ok == bestOK && expiry.After(bestExpiry):
			best, bestExpiry, bestOK = cert, expiry, ok
		}
	}
	return best
}

// Get returns the certificate for a TLS handshake: the one covering
// hello.ServerName, else the one covering fallback (the configured host
// name; clients that connect by IP address send no SNI, RFC 6066 §3), else
// an error.
func (p *Pool) Get(hello *tls.ClientHelloInfo, fallback string) (*tls.Certificate, error) {
	if hello == nil {
		hello = &tls.ClientHelloInfo{}
	}
	if c := p.lookup(hello.ServerName, hello); c != nil {
		return c, nil
	}
	if c := p.lookup(fallback, hello); c != nil {
		return c, nil
	}
	if hello.ServerName == "" {
		return nil, fmt.Errorf("certs: no SNI and no certificate for fallback name %q", fallback)
	}
	return nil, fmt.Errorf("certs: no certificate for %q (nor fallback %q)", hello.ServerName, fallback)
}

// ForName returns the certificate covering name, preferring the one that
// expires last, or nil.
func (p *Pool) ForName(name string) *tls.Certificate {
	return p.lookup(name, nil)
}

// Info describes one certificate of the pool for status pages and logs.
type Info struct {
	Name     string    // source block name
	Source   string    // KindStatic or KindSelfSigned
	Names    []string  // names covered
	Issuer   string    // issuer distinguished name
	NotAfter time.Time // expiry of the leaf
	SHA256   string    // leaf fingerprint, upper-case hex pairs joined by colons (as openssl prints it); "" while an ACME certificate is pending

	// ACME only.
	Pending     string    // why no certificate is issued yet (a stand-in is served); "" once one is
	LastError   string    // the CA's last error, kept until an issuance succeeds
	NextRenewal time.Time // when renewal is due
}

// Infos lists the pool's certificates in source order.
func (p *Pool) Infos() []Info {
	if p == nil {
		return nil
	}
	out := make([]Info, 0, len(p.entries))
	for _, e := range p.entries {
		if e.kind == KindACME {
			out = append(out, e.acmeInfo())
			continue
		}
		out = append(out, Info{
			Name:     e.name,
			Source:   e.kind,
			Names:    slices.Clone(e.names),
			Issuer:   e.cert.Leaf.Issuer.String(),
			NotAfter: e.expiry,
			SHA256:   Fingerprint(e.cert.Leaf),
		})
	}
	return out
}

// Fingerprint returns the SHA-256 of the certificate's DER as "AB:CD:…".
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	const hexdigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(sum)*3-1)
	for i, v := range sum {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexdigits[v>>4], hexdigits[v&0xf])
	}
	return string(b)
}

// ServerTLSConfig returns a server tls.Config (TLS 1.2 at least, RFC 8996
// deprecates 1.0 and 1.1) whose GetCertificate calls get for each handshake.
// The caller passes a closure that reads its current pool, so certificates
// change without touching listeners.
func ServerTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
	}
}
