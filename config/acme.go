package config

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// ACME challenge types (RFC 8555 §8.3, RFC 8737).
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// ACME defaults. http-01 is the default challenge because port 80 is the
// one a homelab most often already forwards (and a reverse proxy on 443
// would swallow tls-alpn-01 hellos). 720h is also autocert's cap on
// RenewBefore and Let's Encrypt's advice for 90-day certificates.
const (
	DefaultACMEDirectory   = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultACMEChallenge   = ChallengeHTTP01
	DefaultACMERenewBefore = 720 * time.Hour
	MaxACMERenewBefore     = 30 * 24 * time.Hour
)

// ACME is a certificate obtained and renewed from an ACME CA (RFC 8555).
// The certificate's Names are its Domains.
type ACME struct {
	Domains      []string // lower case, each with a dot, no wildcards
	Email        string   // account contact, may be empty
	DirectoryURL string
	CAFile       string // absolute, "" = system roots only
	CAPEM        []byte // contents of CAFile, checked to hold certificates
	Challenge    string // ChallengeHTTP01 or ChallengeTLSALPN01
	RenewBefore  time.Duration
}

// HTTP is mailpost's small web front: plain HTTP answers http-01
// challenges, HTTPS answers tls-alpn-01 ones.
type HTTP struct {
	Bindings    []netip.AddrPort
	TLSBindings []netip.AddrPort
}

// HTTPSPort is the port clients are told to use for mailpost's https
// listeners: 443 when one binds it, and 443 too when none does, because
// then a port map (container, router) is assumed to lead 443 to the
// first tls_binding, as `mailpost check` assumes for ACME challenges.
// The second result is the port actually bound, 0 without https.
func (h *HTTP) HTTPSPort() (published, bound int) {
	if h == nil || len(h.TLSBindings) == 0 {
		return 0, 0
	}
	for _, b := range h.TLSBindings {
		if b.Port() == 443 {
			return 443, 443
		}
	}
	return 443, int(h.TLSBindings[0].Port())
}

type rawACME struct {
	DefRange hcl.Range `hcl:",def_range"`

	Domains          []string  `hcl:"domains,optional"`
	DomainsRange     hcl.Range `hcl:"domains,attr_range"`
	Email            *string   `hcl:"email,optional"`
	EmailRange       hcl.Range `hcl:"email,attr_range"`
	DirectoryURL     *string   `hcl:"directory_url,optional"`
	DirectoryURLRng  hcl.Range `hcl:"directory_url,attr_range"`
	CAFile           *string   `hcl:"ca_file,optional"`
	CAFileRange      hcl.Range `hcl:"ca_file,attr_range"`
	Challenge        *string   `hcl:"challenge,optional"`
	ChallengeRange   hcl.Range `hcl:"challenge,attr_range"`
	RenewBefore      *string   `hcl:"renew_before,optional"`
	RenewBeforeRange hcl.Range `hcl:"renew_before,attr_range"`
}

type rawHTTP struct {
	DefRange hcl.Range `hcl:",def_range"`

	Bindings         []string  `hcl:"bindings,optional"`
	BindingsRange    hcl.Range `hcl:"bindings,attr_range"`
	TLSBindings      []string  `hcl:"tls_bindings,optional"`
	TLSBindingsRange hcl.Range `hcl:"tls_bindings,attr_range"`
}

// acmeUse remembers where an ACME block asked for its challenge, so the
// check against the http block can point there.
type acmeUse struct {
	challenge string
	rng       hcl.Range
}

// acme checks one acme block inside a certificate block. ok is false when
// the certificate cannot be used.
func (p *parser) acme(ra *rawACME, c *Certificate, seen map[string]string) (bool, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	a := &ACME{DirectoryURL: DefaultACMEDirectory, Challenge: DefaultACMEChallenge, RenewBefore: DefaultACMERenewBefore}
	if ra.DomainsRange.Filename == "" || len(ra.Domains) == 0 {
		rng := ra.DefRange
		if ra.DomainsRange.Filename != "" {
			rng = ra.DomainsRange
		}
		diags = append(diags, errorf(rng, "No ACME domains",
			"the acme block of certificate %q needs domains, the names to get a certificate for", c.Name))
	}
	if p.ok(ra.DomainsRange) {
		for i, rng := range p.elemRanges(ra.DomainsRange, len(ra.Domains)) {
			d := ra.Domains[i]
			switch {
			case strings.HasPrefix(d, "*."):
				// RFC 8555 §7.1.3: wildcards need dns-01, which needs
				// access to the zone; mailpost answers http-01 and
				// tls-alpn-01 only.
				diags = append(diags, errorf(rng, "Wildcard ACME domain",
					"%q is a wildcard; ACME issues wildcards only through DNS challenges, which mailpost does not answer; list each name", d))
				continue
			case !validFQDN(d):
				// autocert refuses names without a dot, so "localhost"
				// can never be issued.
				diags = append(diags, errorf(rng, "Invalid ACME domain",
					"%q is not a fully qualified domain name such as mail.example.com", d))
				continue
			}
			d = normName(d)
			if other, dup := seen[d]; dup {
				diags = append(diags, errorf(rng, "Duplicate ACME domain",
					"%q is already obtained by certificate %q", d, other))
				continue
			}
			seen[d] = c.Name
			a.Domains = append(a.Domains, d)
		}
	}
	if ra.Email != nil && p.ok(ra.EmailRange) && *ra.Email != "" {
		if _, _, err := parseAddress(*ra.Email); err != nil {
			diags = append(diags, errorf(ra.EmailRange, "Invalid ACME email", "the email is not an address: %s", err.Error()))
		} else {
			a.Email = strings.TrimSpace(*ra.Email)
		}
	}
	if ra.DirectoryURL != nil && p.ok(ra.DirectoryURLRng) {
		if why := checkDirectoryURL(*ra.DirectoryURL); why != "" {
			diags = append(diags, errorf(ra.DirectoryURLRng, "Invalid directory_url", "the directory_url %q %s", *ra.DirectoryURL, why))
		} else {
			a.DirectoryURL = *ra.DirectoryURL
		}
	}
	if ra.CAFile != nil && p.ok(ra.CAFileRange) {
		a.CAFile = p.resolvePath(*ra.CAFile)
		pemData, err := os.ReadFile(a.CAFile)
		switch {
		case err != nil:
			diags = append(diags, errorf(ra.CAFileRange, "Unreadable ca_file", "cannot read ca_file %q: %s", *ra.CAFile, readFileReason(err)))
		case !holdsCertificates(pemData):
			diags = append(diags, errorf(ra.CAFileRange, "No CA certificate", "the ca_file %q contains no PEM certificate", *ra.CAFile))
		default:
			a.CAPEM = pemData
		}
	}
	if ra.Challenge != nil && p.ok(ra.ChallengeRange) {
		switch *ra.Challenge {
		case ChallengeHTTP01, ChallengeTLSALPN01:
			a.Challenge = *ra.Challenge
		default:
			diags = append(diags, errorf(ra.ChallengeRange, "Invalid challenge",
				"the challenge %q is not one mailpost answers; use %q or %q", *ra.Challenge, ChallengeHTTP01, ChallengeTLSALPN01))
		}
	}
	if p.durationAttr(&diags, ra.RenewBefore, ra.RenewBeforeRange, "renew_before", &a.RenewBefore) && a.RenewBefore > MaxACMERenewBefore {
		diags = append(diags, warnf(ra.RenewBeforeRange, "Long renew_before",
			"renew_before is longer than 30 days; certificates are renewed 30 days before expiry at the earliest"))
		a.RenewBefore = MaxACMERenewBefore
	}
	if diags.HasErrors() {
		return false, diags
	}
	c.ACME = a
	c.Names = a.Domains
	return true, diags
}

// checkDirectoryURL says what is wrong with a directory URL, or "". The
// directory is fetched over TLS (RFC 8555 §6.1); plain http is allowed only
// to a loopback address, for a test CA on the same machine.
func checkDirectoryURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "is not an absolute URL"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return ""
		}
		return "uses http; ACME requires https (plain http is accepted only for a loopback test CA)"
	}
	return "must start with https://"
}

func holdsCertificates(data []byte) bool {
	for rest := data; len(rest) > 0; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err == nil {
				return true
			}
		}
	}
	return false
}

// httpBlock checks the http block's bindings against every other binding
// in the file.
func (p *parser) httpBlock(rh *rawHTTP, env *serviceEnv) (*HTTP, []binding, []binding, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	h := &HTTP{}
	var plain, tls []binding
	if p.ok(rh.BindingsRange) {
		var d hcl.Diagnostics
		plain, d = p.bindings(rh.Bindings, rh.BindingsRange, env.bound)
		diags = append(diags, d...)
		h.Bindings = addrPorts(plain)
	}
	if p.ok(rh.TLSBindingsRange) {
		var d hcl.Diagnostics
		tls, d = p.bindings(rh.TLSBindings, rh.TLSBindingsRange, env.bound)
		diags = append(diags, d...)
		h.TLSBindings = addrPorts(tls)
	}
	return h, plain, tls, diags
}

// challengeBindings checks that every challenge some acme block asks for
// has a binding of its kind, and warns about ports a public CA never
// connects to (RFC 8555 §8.3: http-01 on 80; RFC 8737 §3: tls-alpn-01 on
// 443). Behind a container port map the inside port may differ, which is
// why that is a warning and not an error.
func challengeBindings(uses []acmeUse, plain, tls []binding) hcl.Diagnostics {
	var diags hcl.Diagnostics
	need := map[string]bool{}
	for _, u := range uses {
		switch {
		case u.challenge == ChallengeHTTP01 && len(plain) == 0:
			diags = append(diags, errorf(u.rng, "No http-01 binding",
				"the http-01 challenge needs an http block with bindings (the CA connects to port 80), as in http { bindings = [\"[::]:80\"] }"))
		case u.challenge == ChallengeTLSALPN01 && len(tls) == 0:
			diags = append(diags, errorf(u.rng, "No tls-alpn-01 binding",
				"the tls-alpn-01 challenge needs an http block with tls_bindings (the CA connects to port 443), as in http { tls_bindings = [\"[::]:443\"] }"))
		}
		need[u.challenge] = true
	}
	warn := func(bs []binding, port uint16, challenge string) {
		if !need[challenge] {
			return
		}
		for _, b := range bs {
			if b.ap.Port() != port {
				diags = append(diags, warnf(b.rng, "Challenge port",
					"the CA connects to port %d for %s, not %d; this works only if a NAT or container port map forwards port %d here (for example docker -p %d:%d)",
					port, challenge, b.ap.Port(), port, port, b.ap.Port()))
			}
		}
	}
	warn(plain, 80, ChallengeHTTP01)
	warn(tls, 443, ChallengeTLSALPN01)
	return diags
}

// acmeCertificate checks a certificate block that has an acme block.
func (p *parser) acmeCertificate(rc *rawCertificate, c *Certificate, otherSource bool) (*Certificate, bool, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	ra := rc.ACME[0]
	for _, extra := range rc.ACME[1:] {
		diags = append(diags, errorf(extra.DefRange, "Duplicate acme block",
			"certificate %q has more than one acme block; list every name in the first one's domains", rc.Name))
	}
	if otherSource {
		rng := rc.SelfSignedRange
		if rc.CertFile != nil {
			rng = rc.CertFileRange
		} else if rc.KeyFile != nil {
			rng = rc.KeyFileRange
		}
		diags = append(diags, errorf(rng, "Two certificate sources",
			"certificate %q has an acme block and also cert_file/key_file or self_signed; choose one source", rc.Name))
	}
	if rc.NamesRange.Filename != "" {
		diags = append(diags, errorf(rc.NamesRange, "Names on an ACME certificate",
			"the names attribute applies only to self_signed certificates; an ACME certificate covers its acme domains"))
	}
	if p.acmeDomains == nil {
		p.acmeDomains = map[string]string{}
	}
	ok, d := p.acme(ra, c, p.acmeDomains)
	diags = append(diags, d...)
	if ok {
		rng := ra.DefRange
		if ra.ChallengeRange.Filename != "" {
			rng = ra.ChallengeRange
		}
		p.acmeUses = append(p.acmeUses, acmeUse{c.ACME.Challenge, rng})
	}
	return c, ok && !diags.HasErrors(), diags
}
