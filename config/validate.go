package config

import (
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"mailpost/auth"
)

// validate turns the decoded file into a Config, applying defaults and
// checking every rule. It appends and continues, never stopping at the first
// problem; attributes gohcl already failed to decode are skipped so one
// mistake yields one diagnostic.
func (p *parser) validate(raw *rawFile) (*Config, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	nullMeansAbsent(raw)
	cfg := &Config{DataDir: DefaultDataDir, byAddr: map[string]*Mailbox{}}

	hostOK := false
	if raw.HostnameRange.Filename != "" && p.ok(raw.HostnameRange) {
		if validFQDN(raw.Hostname) {
			cfg.Hostname = normName(raw.Hostname)
			hostOK = true
		} else {
			diags = append(diags, errorf(raw.HostnameRange, "Invalid hostname",
				"hostname %q is not a fully qualified domain name such as mail.example.com", raw.Hostname))
		}
	}

	if raw.DataDir != nil && p.ok(raw.DataDirRange) {
		if *raw.DataDir == "" {
			diags = append(diags, errorf(raw.DataDirRange, "Empty data_dir",
				"the data_dir is empty; leave it out for the default %s", DefaultDataDir))
		} else {
			cfg.DataDir = p.resolvePath(*raw.DataDir)
		}
	} else {
		cfg.DataDir = p.resolvePath(DefaultDataDir)
	}

	domainsOK := p.ok(raw.DomainsRange)
	seenDomain := map[string]hcl.Range{}
	for i, rng := range p.elemRanges(raw.DomainsRange, len(raw.Domains)) {
		d := raw.Domains[i]
		if !validDNSName(d) {
			diags = append(diags, errorf(rng, "Invalid domain", "domain %q is not a valid DNS name", d))
			continue
		}
		d = normName(d)
		if first, dup := seenDomain[d]; dup {
			diags = append(diags, errorf(rng, "Duplicate domain",
				"domain %q is listed twice; the first is on line %d", d, first.Start.Line))
			continue
		}
		seenDomain[d] = rng
		cfg.Domains = append(cfg.Domains, d)
	}

	certsKnown := true // false when a certificate's names could not be learned
	seenCert := map[string]hcl.Range{}
	now := time.Now()
	for _, rc := range raw.Certificates {
		c, ok, cd := p.certificate(rc, cfg, hostOK, now)
		diags = append(diags, cd...)
		if first, dup := seenCert[rc.Name]; dup {
			diags = append(diags, errorf(rc.NameRange, "Duplicate certificate",
				"a certificate named %q is already declared on line %d", rc.Name, first.Start.Line))
			continue
		}
		seenCert[rc.Name] = rc.NameRange
		if !ok {
			certsKnown = false
			continue
		}
		cfg.Certificates = append(cfg.Certificates, c)
	}

	bound := map[netip.AddrPort]hcl.Range{}
	for _, extra := range raw.POP3[min(1, len(raw.POP3)):] {
		diags = append(diags, errorf(extra.DefRange, "Duplicate pop3 block",
			"only one pop3 block is allowed; the first is on line %d", raw.POP3[0].DefRange.Start.Line))
	}
	if len(raw.POP3) > 0 {
		pop, pd := p.pop3(raw.POP3[0], cfg, hostOK, certsKnown, len(raw.Certificates) > 0, bound)
		diags = append(diags, pd...)
		cfg.POP3 = pop
	}

	diags = append(diags, p.mailboxes(raw, cfg, domainsOK)...)
	return cfg, diags
}

// nullMeansAbsent follows the HCL convention that an attribute set to null
// is as if it were left out. gohcl decodes null lists as nil slices (and []
// as empty non-nil ones) but still records their ranges; clear those.
// Scalars are pointers, which null leaves nil already.
func nullMeansAbsent(raw *rawFile) {
	unset := func(list []string, rng *hcl.Range) {
		if list == nil {
			*rng = hcl.Range{}
		}
	}
	unset(raw.Domains, &raw.DomainsRange)
	for _, c := range raw.Certificates {
		unset(c.Names, &c.NamesRange)
	}
	for _, p := range raw.POP3 {
		unset(p.SSLBindings, &p.SSLBindingsRange)
		unset(p.TLSBindings, &p.TLSBindingsRange)
		unset(p.External, &p.ExternalRange)
		unset(p.Internal, &p.InternalRange)
	}
	for _, m := range raw.Mailboxes {
		unset(m.Aliases, &m.AliasesRange)
	}
}

// certificate checks one certificate block. ok is false when the
// certificate cannot be used (its names are then unknown).
func (p *parser) certificate(rc *rawCertificate, cfg *Config, hostOK bool, now time.Time) (*Certificate, bool, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	c := &Certificate{Name: rc.Name, DefRange: rc.DefRange}
	for _, r := range []hcl.Range{rc.CertFileRange, rc.KeyFileRange, rc.SelfSignedRange, rc.NamesRange} {
		if !p.ok(r) {
			return nil, false, nil
		}
	}
	if rc.Name == "" {
		diags = append(diags, errorf(rc.NameRange, "Empty certificate name", "a certificate needs a non-empty name"))
	}

	// Exactly one source. A future acme block is one more entry here.
	static := rc.CertFile != nil || rc.KeyFile != nil
	selfSigned := rc.SelfSigned != nil && *rc.SelfSigned
	switch {
	case !static && !selfSigned:
		return nil, false, append(diags, errorf(rc.DefRange, "No certificate source",
			"certificate %q has no source; set cert_file and key_file, or self_signed = true", rc.Name))
	case static && selfSigned:
		return nil, false, append(diags, errorf(rc.SelfSignedRange, "Two certificate sources",
			"certificate %q sets both cert_file/key_file and self_signed = true; choose one source", rc.Name))
	case selfSigned:
		c.SelfSigned = true
		if len(rc.Names) == 0 && rc.NamesRange.Filename == "" {
			if !hostOK {
				return nil, false, diags
			}
			c.Names = []string{cfg.Hostname}
		}
		for i, rng := range p.elemRanges(rc.NamesRange, len(rc.Names)) {
			n := rc.Names[i]
			if ip, err := netip.ParseAddr(n); err == nil && ip.Zone() == "" {
				c.Names = append(c.Names, ip.String())
				continue
			}
			if !validDNSName(strings.TrimPrefix(n, "*.")) {
				diags = append(diags, errorf(rng, "Invalid certificate name",
					"%q is neither a DNS name nor an IP address", n))
				continue
			}
			c.Names = append(c.Names, normName(n))
		}
		if rc.NamesRange.Filename != "" && len(rc.Names) == 0 {
			diags = append(diags, errorf(rc.NamesRange, "No certificate names",
				"the names list is empty; list the names the certificate covers, or leave it out for the hostname"))
		}
		return c, !diags.HasErrors(), diags
	}

	if rc.NamesRange.Filename != "" {
		diags = append(diags, errorf(rc.NamesRange, "Names on a static certificate",
			"the names attribute applies only to self_signed certificates; certificate %q covers the names in its cert_file", rc.Name))
	}
	if rc.CertFile == nil {
		return nil, false, append(diags, errorf(rc.KeyFileRange, "Missing cert_file",
			"certificate %q sets key_file but no cert_file", rc.Name))
	}
	if rc.KeyFile == nil {
		return nil, false, append(diags, errorf(rc.CertFileRange, "Missing key_file",
			"certificate %q sets cert_file but no key_file", rc.Name))
	}
	diags = append(diags, p.loadStatic(rc, c, now)...)
	return c, !diags.HasErrors(), diags
}

// binding is a parsed listen address and where it was written.
type binding struct {
	ap  netip.AddrPort
	rng hcl.Range
}

// bindings parses one list of listen addresses, reporting duplicates against
// every binding seen so far in the file.
func (p *parser) bindings(vals []string, rng hcl.Range, bound map[netip.AddrPort]hcl.Range) ([]binding, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var out []binding
	for i, er := range p.elemRanges(rng, len(vals)) {
		ap, err := parseBinding(vals[i])
		if err != nil {
			diags = append(diags, errorf(er, "Invalid binding", "%s", err.Error()))
			continue
		}
		// Port 0 means "any free port": each such binding gets its own from
		// the kernel, so repeating 127.0.0.1:0 is not a collision.
		if first, dup := bound[ap]; dup && ap.Port() != 0 {
			diags = append(diags, errorf(er, "Duplicate binding",
				"the address %s is already bound on line %d", ap, first.Start.Line))
			continue
		}
		bound[ap] = er
		out = append(out, binding{ap, er})
	}
	return out, diags
}

func (p *parser) pop3(rp *rawPOP3, cfg *Config, hostOK, certsKnown, anyCertBlock bool, bound map[netip.AddrPort]hcl.Range) (*POP3, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	pop := &POP3{
		LoginType:               SecureLogin,
		PreAuthenticatedTimeout: DefaultPreAuthenticatedTimeout,
		AuthenticatedTimeout:    DefaultAuthenticatedTimeout,
		MaxConnections:          DefaultMaxConnections,
		MaxConnectionsPerIP:     DefaultMaxConnectionsPerIP,
		MaxCommandSize:          DefaultMaxCommandSize,
		Banner:                  DefaultBanner,
	}

	// Bindings: both default only when neither list is written, so writing
	// one kind alone switches the other kind off.
	sslVals, sslRng := rp.SSLBindings, rp.SSLBindingsRange
	tlsVals, tlsRng := rp.TLSBindings, rp.TLSBindingsRange
	if sslRng.Filename == "" && tlsRng.Filename == "" {
		sslVals, sslRng = defaultSSLBindings, rp.DefRange
		tlsVals, tlsRng = defaultTLSBindings, rp.DefRange
	}
	var ssl, plain []binding
	if p.ok(sslRng) {
		var d hcl.Diagnostics
		ssl, d = p.bindings(sslVals, sslRng, bound)
		diags = append(diags, d...)
	}
	if p.ok(tlsRng) {
		var d hcl.Diagnostics
		plain, d = p.bindings(tlsVals, tlsRng, bound)
		diags = append(diags, d...)
	}
	for _, b := range ssl {
		pop.SSLBindings = append(pop.SSLBindings, b.ap)
	}
	for _, b := range plain {
		pop.UnencryptedOrTLSBindings = append(pop.UnencryptedOrTLSBindings, b.ap)
	}

	if rp.LoginType != nil && p.ok(rp.LoginTypeRange) {
		switch LoginType(*rp.LoginType) {
		case SecureLogin, PlainTextLogin:
			pop.LoginType = LoginType(*rp.LoginType)
		default:
			diags = append(diags, errorf(rp.LoginTypeRange, "Invalid login_type",
				"the login_type %q is not one of %q or %q", *rp.LoginType, SecureLogin, PlainTextLogin))
		}
	}

	if rp.PreAuthTimeout != nil && p.ok(rp.PreAuthTimeoutRange) {
		d, err := ParseDuration(*rp.PreAuthTimeout)
		switch {
		case err != nil:
			diags = append(diags, errorf(rp.PreAuthTimeoutRange, "Invalid duration", "the pre_authenticated_timeout is invalid: %s", err.Error()))
		case d <= 0:
			diags = append(diags, errorf(rp.PreAuthTimeoutRange, "Invalid duration", "the pre_authenticated_timeout must be longer than zero"))
		default:
			pop.PreAuthenticatedTimeout = d
		}
	}
	if rp.AuthTimeout != nil && p.ok(rp.AuthTimeoutRange) {
		d, err := ParseDuration(*rp.AuthTimeout)
		switch {
		case err != nil:
			diags = append(diags, errorf(rp.AuthTimeoutRange, "Invalid duration", "the authenticated_timeout is invalid: %s", err.Error()))
		case d <= 0:
			diags = append(diags, errorf(rp.AuthTimeoutRange, "Invalid duration", "the authenticated_timeout must be longer than zero"))
		default:
			pop.AuthenticatedTimeout = d
			// RFC 1939 §3: the autologout timer must be at least 10 minutes.
			if d < 10*time.Minute {
				diags = append(diags, warnf(rp.AuthTimeoutRange, "Short timeout",
					"the authenticated_timeout %q is shorter than the 10 minutes RFC 1939 section 3 asks for", *rp.AuthTimeout))
			}
		}
	}

	intAttr := func(v *int, rng hcl.Range, name string, min, max int, dst *int) {
		if v == nil || !p.ok(rng) {
			return
		}
		if *v < min || *v > max {
			diags = append(diags, errorf(rng, "Value out of range", "the %s must be between %d and %d, not %d", name, min, max, *v))
			return
		}
		*dst = *v
	}
	const maxInt = int(^uint(0) >> 1)
	intAttr(rp.MaxConnections, rp.MaxConnectionsRange, "max_connections", 1, maxInt, &pop.MaxConnections)
	intAttr(rp.MaxConnectionsPerIP, rp.MaxConnectionsPerIPRange, "max_connections_per_ip", 1, maxInt, &pop.MaxConnectionsPerIP)
	// RFC 2449 §4: command lines may be 255 octets, so no smaller limit.
	intAttr(rp.MaxCommandSize, rp.MaxCommandSizeRange, "max_command_size", MinMaxCommandSize, MaxMaxCommandSize, &pop.MaxCommandSize)
	if pop.MaxConnectionsPerIP > pop.MaxConnections {
		diags = append(diags, warnf(rp.MaxConnectionsPerIPRange, "Ineffective limit",
			"the max_connections_per_ip (%d) is larger than the max_connections (%d), so only max_connections applies",
			pop.MaxConnectionsPerIP, pop.MaxConnections))
	}

	if rp.Banner != nil && p.ok(rp.BannerRange) {
		if strings.ContainsFunc(*rp.Banner, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			diags = append(diags, errorf(rp.BannerRange, "Invalid banner",
				"the banner must be one line of text without control characters, because it is sent in the greeting"))
		} else {
			pop.Banner = *rp.Banner
		}
	}

	// The certificate name: written, or the hostname.
	nameKnown := false
	nameRng := rp.DefRange
	if rp.X509CertificateName != nil {
		if p.ok(rp.X509CertificateNameRange) {
			nameRng = rp.X509CertificateNameRange
			if validFQDN(*rp.X509CertificateName) {
				pop.X509CertificateName = normName(*rp.X509CertificateName)
				nameKnown = true
			} else {
				diags = append(diags, errorf(nameRng, "Invalid certificate name",
					"the x509_certificate_name %q is not a fully qualified domain name", *rp.X509CertificateName))
			}
		}
	} else if hostOK {
		pop.X509CertificateName = cfg.Hostname
		nameKnown = true
	}

	// Connection settings.
	type setting struct {
		cs  ConnSetting
		rng hcl.Range
	}
	settings := func(vals []string, rng hcl.Range, attr string) []setting {
		if !p.ok(rng) {
			return nil
		}
		var out []setting
		for i, er := range p.elemRanges(rng, len(vals)) {
			cs, err := parseConnSetting(vals[i])
			if err != nil {
				diags = append(diags, errorf(er, "Invalid connection setting", "%s", err.Error()))
				continue
			}
			var kind []binding
			kindAttr := "ssl_bindings"
			if cs.Method == MethodSSL {
				kind = ssl
			} else {
				kind, kindAttr = plain, "unencrypted_or_tls_bindings"
			}
			if cs.Method == MethodNone && pop.LoginType == SecureLogin {
				diags = append(diags, errorf(er, "Unusable connection setting",
					"the connection setting %q in %s is unencrypted but login_type is secure_login, so clients told to use it could never log in", vals[i], attr))
			}
			if len(kind) == 0 {
				diags = append(diags, errorf(er, "Connection setting without binding",
					"the connection setting %q in %s needs %s, but there are none", vals[i], attr, kindAttr))
			} else {
				match := false
				for _, b := range kind {
					if int(b.ap.Port()) == cs.Port || b.ap.Port() == 0 {
						match = true
						break
					}
				}
				if !match {
					diags = append(diags, warnf(er, "Port without binding",
						"port %d in %q matches none of %s; that is right only if a NAT or container port map forwards it", cs.Port, vals[i], kindAttr))
				}
			}
			out = append(out, setting{cs, er})
		}
		return out
	}
	var external []setting
	if rp.ExternalRange.Filename != "" {
		external = settings(rp.External, rp.ExternalRange, "external_connection_settings")
	} else if hostOK {
		// Derived: what a client outside should use, from the first binding
		// of each kind.
		if len(ssl) > 0 {
			external = append(external, setting{ConnSetting{cfg.Hostname, int(ssl[0].ap.Port()), MethodSSL}, rp.DefRange})
		}
		if len(plain) > 0 {
			external = append(external, setting{ConnSetting{cfg.Hostname, int(plain[0].ap.Port()), MethodTLS}, rp.DefRange})
		}
	}
	internal := settings(rp.Internal, rp.InternalRange, "internal_connection_settings")
	for _, s := range external {
		pop.ExternalConnectionSettings = append(pop.ExternalConnectionSettings, s.cs)
	}
	for _, s := range internal {
		pop.InternalConnectionSettings = append(pop.InternalConnectionSettings, s.cs)
	}

	// Coverage: every name clients are told to use must have a certificate.
	if len(ssl)+len(plain) == 0 {
		return pop, diags
	}
	if !anyCertBlock {
		return pop, append(diags, errorf(rp.DefRange, "No certificate",
			"POP3 needs TLS (ssl_bindings always, STLS on the others) but no certificate block is declared; add one, self_signed = true is enough to start"))
	}
	if !certsKnown {
		return pop, diags // a broken certificate might have covered the names
	}
	if nameKnown && cfg.CertificateFor(pop.X509CertificateName) == nil {
		if rp.X509CertificateName != nil {
			diags = append(diags, errorf(nameRng, "Uncovered certificate name",
				"no certificate covers x509_certificate_name %q", pop.X509CertificateName))
		} else {
			diags = append(diags, errorf(nameRng, "Uncovered certificate name",
				"no certificate covers the hostname %q, which x509_certificate_name defaults to", pop.X509CertificateName))
		}
	}
	for _, s := range external {
		if s.rng == rp.DefRange && nameKnown && s.cs.Host == pop.X509CertificateName {
			continue // derived from hostname, already checked above
		}
		if cfg.CertificateFor(s.cs.Host) == nil {
			diags = append(diags, errorf(s.rng, "Uncovered connection name",
				"no certificate covers %q, which external clients are told to use", s.cs.Host))
		}
	}
	for _, s := range internal {
		if cfg.CertificateFor(s.cs.Host) == nil {
			diags = append(diags, warnf(s.rng, "Uncovered connection name",
				"no certificate covers %q, so internal clients will see a name mismatch", s.cs.Host))
		}
	}
	return pop, diags
}

// mailboxes checks the mailbox blocks. Addresses and aliases share one
// namespace: each may name only one mailbox.
func (p *parser) mailboxes(raw *rawFile, cfg *Config, domainsOK bool) hcl.Diagnostics {
	var diags hcl.Diagnostics
	checkDomains := domainsOK
	if len(raw.Mailboxes) > 0 && domainsOK && len(raw.Domains) == 0 {
		diags = append(diags, errorf(raw.Mailboxes[0].AddressRange, "Missing domains",
			"mailboxes are declared but the domains list, which names the local domains, is empty"))
		checkDomains = false
	}
	type owner struct {
		rng  hcl.Range
		what string
	}
	seen := map[string]owner{}
	claim := func(addr string, rng hcl.Range, what string) bool {
		if o, dup := seen[addr]; dup {
			diags = append(diags, errorf(rng, "Duplicate address",
				"the address %s is already used as %s on line %d", addr, o.what, o.rng.Start.Line))
			return false
		}
		seen[addr] = owner{rng, what}
		return true
	}
	address := func(s string, rng hcl.Range, kind string) (string, bool) {
		local, domain, err := parseAddress(s)
		if err != nil {
			diags = append(diags, errorf(rng, "Invalid "+kind, "invalid %s name: %s", kind, err.Error()))
			return "", false
		}
		if checkDomains && len(cfg.Domains) > 0 && !cfg.IsLocalDomain(domain) {
			diags = append(diags, errorf(rng, "Foreign domain",
				"the domain of %s %q is not listed in domains", kind, s))
			return "", false
		}
		return local + "@" + domain, true
	}

	for _, rm := range raw.Mailboxes {
		// A mailbox with a bad or duplicate name is still checked through,
		// so its other problems show up now, but it is not kept.
		addr, keep := address(rm.Address, rm.AddressRange, "mailbox")
		keep = keep && claim(addr, rm.AddressRange, "a mailbox")
		shown := addr
		if !keep {
			shown = rm.Address
		}
		m := &Mailbox{Address: addr, POP3: true, Submission: true}
		if rm.POP3 != nil {
			m.POP3 = *rm.POP3
		}
		if rm.Submission != nil {
			m.Submission = *rm.Submission
		}
		if p.ok(rm.PasswordHashRange) {
			if rm.PasswordHash == nil || *rm.PasswordHash == "" {
				if keep {
					diags = append(diags, warnf(rm.AddressRange, "No password",
						"mailbox %s has no password_hash, so nobody can log in to it", shown))
				}
			} else if err := auth.ValidateHash(*rm.PasswordHash); err != nil {
				diags = append(diags, errorf(rm.PasswordHashRange, "Invalid password hash",
					"the password_hash of %s is not usable: %s", shown, err.Error()))
			} else {
				m.PasswordHash = *rm.PasswordHash
			}
		}
		if p.ok(rm.AliasesRange) {
			for i, rng := range p.elemRanges(rm.AliasesRange, len(rm.Aliases)) {
				a, ok := address(rm.Aliases[i], rng, "alias")
				if !ok || !claim(a, rng, "an alias of "+shown) {
					continue
				}
				m.Aliases = append(m.Aliases, a)
			}
		}
		if rm.Quota != nil && p.ok(rm.QuotaRange) {
			q, err := ParseSize(*rm.Quota)
			if err != nil {
				diags = append(diags, errorf(rm.QuotaRange, "Invalid quota", "the quota is invalid: %s", err.Error()))
			} else {
				m.Quota = q
			}
		}
		if !keep {
			continue
		}
		cfg.Mailboxes = append(cfg.Mailboxes, m)
		cfg.byAddr[m.Address] = m
		for _, a := range m.Aliases {
			cfg.byAddr[a] = m
		}
	}
	return diags
}
