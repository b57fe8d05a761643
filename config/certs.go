package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// timeFormat is how certificate dates appear in diagnostics.
const timeFormat = "2006-01-02 15:04 UTC"

// readFileReason explains why path could not be read, without the Go error
// text (which would repeat the path).
func readFileReason(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "it does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "permission was denied"
	case errors.As(err, &pe):
		return "it could not be read (" + pe.Err.Error() + ")"
	}
	return "it could not be read"
}

// loadStatic reads, parses and checks a cert_file/key_file pair the way
// tls.LoadX509KeyPair would, but reports each failure at the attribute that
// names the offending file.
func (p *parser) loadStatic(rc *rawCertificate, c *Certificate, now time.Time) hcl.Diagnostics {
	var diags hcl.Diagnostics
	certName, keyName := *rc.CertFile, *rc.KeyFile
	c.CertFile, c.KeyFile = p.resolvePath(certName), p.resolvePath(keyName)

	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		diags = append(diags, errorf(rc.CertFileRange, "Unreadable certificate",
			"cannot read cert_file %q: %s", certName, readFileReason(err)))
	}
	keyPEM, kerr := os.ReadFile(c.KeyFile)
	if kerr != nil {
		diags = append(diags, errorf(rc.KeyFileRange, "Unreadable key",
			"cannot read key_file %q: %s", keyName, readFileReason(kerr)))
	}
	if err != nil || kerr != nil {
		return diags
	}

	var leafDER []byte
	for rest := certPEM; len(rest) > 0; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			leafDER = b.Bytes
			break
		}
	}
	if leafDER == nil {
		return append(diags, errorf(rc.CertFileRange, "No certificate",
			"the cert_file %q contains no PEM certificate", certName))
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return append(diags, errorf(rc.CertFileRange, "Bad certificate",
			"the first certificate in cert_file %q cannot be parsed", certName))
	}
	hasKey := false
	for rest := keyPEM; len(rest) > 0; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			hasKey = true
			break
		}
	}
	if !hasKey {
		return append(diags, errorf(rc.KeyFileRange, "No private key",
			"the key_file %q contains no PEM private key", keyName))
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return append(diags, errorf(rc.KeyFileRange, "Key mismatch",
				"the private key in key_file %q does not match the certificate in cert_file %q", keyName, certName))
		}
		return append(diags, errorf(rc.KeyFileRange, "Bad private key",
			"the private key in key_file %q cannot be used: %s", keyName, strings.TrimPrefix(err.Error(), "tls: ")))
	}
	if pair.Leaf == nil {
		pair.Leaf = leaf
	}

	switch {
	case now.Before(leaf.NotBefore):
		diags = append(diags, errorf(rc.CertFileRange, "Certificate not yet valid",
			"the certificate in cert_file %q is not valid until %s", certName, leaf.NotBefore.UTC().Format(timeFormat)))
	case now.After(leaf.NotAfter):
		diags = append(diags, errorf(rc.CertFileRange, "Certificate expired",
			"the certificate in cert_file %q expired on %s", certName, leaf.NotAfter.UTC().Format(timeFormat)))
	case leaf.NotAfter.Sub(now) < ExpiryWarning:
		diags = append(diags, warnf(rc.CertFileRange, "Certificate expires soon",
			"the certificate in cert_file %q expires on %s, within 14 days; renew it", certName, leaf.NotAfter.UTC().Format(timeFormat)))
	}
	if diags.HasErrors() {
		return diags
	}

	c.Static = &pair
	for _, n := range leaf.DNSNames {
		c.Names = append(c.Names, normName(n))
	}
	for _, ip := range leaf.IPAddresses {
		c.Names = append(c.Names, ip.String())
	}
	return diags
}
