package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// dial opens a TCP connection to addr within the step timeout, and turns
// the usual failures into plain words.
func (r *run) dial(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	c, err := r.o.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, dialError(addr, r.o.Timeout, err)
	}
	return c, nil
}

func dialError(addr string, timeout time.Duration, err error) error {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused: nothing listens on %s (is the server running, is the port right?)", addr)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("connecting to %s timed out after %s (firewall, or wrong address?)", addr, timeout)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("cannot resolve %s: %w", dnsErr.Name, err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("%s is unreachable: %w", addr, err)
	}
	return fmt.Errorf("connecting to %s: %w", addr, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ioError names what was being done when a read or write failed, and says
// "timed out" in words rather than as an i/o deadline.
func (r *run) ioError(what string, err error) error {
	if isTimeout(err) {
		return fmt.Errorf("%s: no answer within %s", what, r.o.Timeout)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tlsConfig asks for the endpoint's name by SNI but does not verify in the
// handshake: the certificate is judged afterwards, as its own step, so
// that a self-signed box can still be tested end to end.
func tlsConfig(ep Endpoint) *tls.Config {
	return &tls.Config{
		ServerName:         ep.ServerName,
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
	}
}

// handshake runs the TLS handshake on c within the step timeout.
func (r *run) handshake(c net.Conn, ep Endpoint) (*tls.Conn, error) {
	tc := tls.Client(c, tlsConfig(ep))
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, handshakeError(err, r.o.Timeout)
	}
	return tc, nil
}

// handshakeError explains a failed handshake: the alert the server sent,
// or the hint that the port does not speak TLS at all.
func handshakeError(err error, timeout time.Duration) error {
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &rh):
		return fmt.Errorf("TLS handshake failed: the server did not answer in TLS (%q…); is this a plain-text port that wants STARTTLS/STLS?", printable(rh.RecordHeader[:]))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("TLS handshake: no answer within %s", timeout)
	}
	// A remote alert reads "remote error: tls: handshake failure".
	return fmt.Errorf("TLS handshake failed: %w", err)
}

func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '.'
		}
		return r
	}, string(b))
}

// tlsSummary is "TLS 1.3, TLS_AES_128_GCM_SHA256".
func tlsSummary(cs tls.ConnectionState) string {
	return tls.VersionName(cs.Version) + ", " + tls.CipherSuiteName(cs.CipherSuite)
}

// certStep records the verdict on the certificate the server presented.
// Problems are warnings, not failures: the test goes on over the
// unverified connection, and -strict decides what a warning means.
func (r *run) certStep(cs tls.ConnectionState, ep Endpoint) {
	r.step("certificate", func(s *Step) error {
		if len(cs.PeerCertificates) == 0 {
			// Nothing to judge: not a server to trust with a password.
			return errors.New("the server presented no certificate")
		}
		detail, ok := certVerdict(cs.PeerCertificates, ep.ServerName, r.o.RootCAs, r.o.Now())
		s.Detail, s.Warning = detail, !ok
		return nil
	})
}

// certVerdict checks the chain against roots (nil: the system's) at now,
// and the leaf against name, the way a mail client does (RFC 6125). It
// returns a one-line account and whether the certificate passed; every
// problem found is named, not only the first.
func certVerdict(chain []*x509.Certificate, name string, roots *x509.CertPool, now time.Time) (string, bool) {
	if len(chain) == 0 {
		return "the server presented no certificate", false
	}
	leaf := chain[0]
	var problems []string

	if name == "" {
		problems = append(problems, "no server name to check the certificate against")
	} else if err := leaf.VerifyHostname(name); err != nil {
		problems = append(problems, fmt.Sprintf("certificate is valid for %s, not %s", coveredNames(leaf), name))
	}

	switch {
	case now.After(leaf.NotAfter):
		problems = append(problems, "certificate expired on "+leaf.NotAfter.UTC().Format(time.DateTime+" MST"))
	case now.Before(leaf.NotBefore):
		problems = append(problems, "certificate is not valid before "+leaf.NotBefore.UTC().Format(time.DateTime+" MST"))
	}

	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	// The name and dates were judged above, each in its own words; here
	// only the chain, at the moment of the leaf's validity nearest to now,
	// so that an expired leaf does not hide an unknown issuer.
	at := now
	switch {
	case at.After(leaf.NotAfter):
		at = leaf.NotAfter
	case at.Before(leaf.NotBefore):
		at = leaf.NotBefore
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case err == nil:
	case errors.As(err, &ua) && selfSigned(leaf):
		problems = append(problems, fmt.Sprintf("certificate for %s is self-signed (not signed by a trusted authority)", subjectName(leaf)))
	case errors.As(err, &ua):
		problems = append(problems, fmt.Sprintf("certificate for %s is signed by an unknown authority (%s; private CA or missing intermediate?)", subjectName(leaf), leaf.Issuer))
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		problems = append(problems, "a certificate in the chain is outside its validity period: "+ci.Error())
	default:
		problems = append(problems, "certificate chain does not verify: "+err.Error())
	}

	if len(problems) > 0 {
		return strings.Join(problems, "; "), false
	}
	days := int(leaf.NotAfter.Sub(now).Hours() / 24)
	return fmt.Sprintf("valid for %s, issued by %s, expires %s (%d days)", name, issuerName(leaf), leaf.NotAfter.UTC().Format(time.DateOnly), days), true
}

func selfSigned(c *x509.Certificate) bool {
	// CheckSignatureFrom would insist that the "parent" be a CA; a
	// self-signed server certificate usually is not.
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// coveredNames lists the DNS names and IP addresses a certificate is valid
// for, "X, Y"; the Subject CN only when there are no SANs (Go ignores it,
// but the operator looking at the file will see it).
func coveredNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		if c.Subject.CommonName != "" {
			return "no names (only the obsolete Subject CN " + c.Subject.CommonName + ")"
		}
		return "no names"
	}
	return strings.Join(names, ", ")
}

func subjectName(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}
