package config

import (
	"net/netip"
	"slices"
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

	// Service blocks are checked in file order, so a duplicate binding is
	// reported at the later of the two.
	env := &serviceEnv{cfg: cfg, hostOK: hostOK, certsKnown: certsKnown,
		anyCertBlock: len(raw.Certificates) > 0, bound: map[netip.AddrPort]hcl.Range{}}
	type service struct {
		at    hcl.Range
		check func()
	}
	var services []service
	if len(raw.POP3) > 0 {
		services = append(services, service{raw.POP3[0].DefRange, func() {
			pop, d := p.pop3(raw.POP3[0], env)
			diags = append(diags, d...)
			cfg.POP3 = pop
		}})
	}
	if len(raw.Submission) > 0 {
		services = append(services, service{raw.Submission[0].DefRange, func() {
			sub, d := p.submission(raw.Submission[0], env)
			diags = append(diags, d...)
			cfg.Submission = sub
		}})
	}
	if len(raw.Inbound) > 0 {
		services = append(services, service{raw.Inbound[0].DefRange, func() {
			in, d := p.inbound(raw.Inbound[0], env, domainsOK, len(raw.Domains))
			diags = append(diags, d...)
			cfg.Inbound = in
		}})
	}
	var httpPlain, httpTLS []binding
	if len(raw.HTTP) > 0 {
		services = append(services, service{raw.HTTP[0].DefRange, func() {
			h, plain, tls, d := p.httpBlock(raw.HTTP[0], env)
			diags = append(diags, d...)
			cfg.HTTP, httpPlain, httpTLS = h, plain, tls
		}})
	}
	if len(raw.Admin) > 0 {
		services = append(services, service{raw.Admin[0].DefRange, func() {
			a, d := p.adminBlock(raw.Admin[0], env)
			diags = append(diags, d...)
			cfg.Admin = a
		}})
	}
	slices.SortStableFunc(services, func(a, b service) int { return a.at.Start.Byte - b.at.Start.Byte })
	for _, s := range services {
		s.check()
	}
	diags = append(diags, extraBlocks("pop3", raw.POP3, func(b *rawPOP3) hcl.Range { return b.DefRange })...)
	diags = append(diags, extraBlocks("submission", raw.Submission, func(b *rawSubmission) hcl.Range { return b.DefRange })...)
	diags = append(diags, extraBlocks("inbound", raw.Inbound, func(b *rawInbound) hcl.Range { return b.DefRange })...)
	diags = append(diags, extraBlocks("http", raw.HTTP, func(b *rawHTTP) hcl.Range { return b.DefRange })...)
	diags = append(diags, extraBlocks("admin", raw.Admin, func(b *rawAdmin) hcl.Range { return b.DefRange })...)
	diags = append(diags, challengeBindings(p.acmeUses, httpPlain, httpTLS)...)

	out, odiags := p.outbound(raw.Outbound)
	cfg.Outbound = out
	diags = append(diags, odiags...)

	limits, ldiags := p.loginLimits(raw.LoginLimits)
	cfg.LoginLimits = limits
	diags = append(diags, ldiags...)

	diags = append(diags, p.mailboxes(raw, cfg, domainsOK, now)...)
	return cfg, diags
}

// extraBlocks reports every block of a kind after the first: each service
// is configured once.
func extraBlocks[T any](kind string, blocks []T, def func(T) hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i := 1; i < len(blocks); i++ {
		diags = append(diags, errorf(def(blocks[i]), "Duplicate "+kind+" block",
			"only one %s block is allowed; the first is on line %d", kind, def(blocks[0]).Start.Line))
	}
	return diags
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
	for _, s := range raw.Submission {
		unset(s.SSLBindings, &s.SSLBindingsRange)
		unset(s.TLSBindings, &s.TLSBindingsRange)
		unset(s.External, &s.ExternalRange)
		unset(s.Internal, &s.InternalRange)
	}
	for _, in := range raw.Inbound {
		unset(in.Bindings, &in.BindingsRange)
	}
	for _, h := range raw.HTTP {
		unset(h.Bindings, &h.BindingsRange)
		unset(h.TLSBindings, &h.TLSBindingsRange)
	}
	for _, c := range raw.Certificates {
		for _, a := range c.ACME {
			unset(a.Domains, &a.DomainsRange)
		}
	}
	for _, m := range raw.Mailboxes {
		unset(m.Aliases, &m.AliasesRange)
		unset(m.SendAs, &m.SendAsRange)
		for _, d := range m.Devices {
			unset(d.Allow, &d.AllowRange)
			unset(d.From, &d.FromRange)
		}
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

	// Exactly one source.
	static := rc.CertFile != nil || rc.KeyFile != nil
	selfSigned := rc.SelfSigned != nil && *rc.SelfSigned
	if len(rc.ACME) > 0 {
		return p.acmeCertificate(rc, c, static || selfSigned)
	}
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

// mailboxes checks the mailbox blocks. Addresses and aliases share one
// namespace: each may name only one mailbox. send_as is not part of it: it
// grants the right to use an address as a sender, which may be shared.
func (p *parser) mailboxes(raw *rawFile, cfg *Config, domainsOK bool, now time.Time) hcl.Diagnostics {
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
	// send_as entries naming someone else's address are judged once every
	// mailbox is known.
	type grant struct {
		m    *Mailbox
		addr string
		rng  hcl.Range
	}
	var grants []grant

	for _, rm := range raw.Mailboxes {
		// A mailbox with a bad or duplicate name is still checked through,
		// so its other problems show up now, but it is not kept.
		addr, keep := address(rm.Address, rm.AddressRange, "mailbox")
		keep = keep && claim(addr, rm.AddressRange, "a mailbox")
		shown := addr
		if !keep {
			shown = rm.Address
		}
		m := &Mailbox{Address: addr, POP3: true, Submission: true, RetentionDays: -1}
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
		m.SendAs = append([]string{addr}, m.Aliases...)
		if rm.SendAsRange.Filename != "" && p.ok(rm.SendAsRange) {
			m.SendAs = nil
			listed := map[string]bool{}
			for i, rng := range p.elemRanges(rm.SendAsRange, len(rm.SendAs)) {
				local, domain, err := parseAddress(rm.SendAs[i])
				if err != nil {
					diags = append(diags, errorf(rng, "Invalid send_as", "invalid send_as address: %s", err.Error()))
					continue
				}
				a := local + "@" + domain
				if listed[a] {
					diags = append(diags, warnf(rng, "Duplicate send_as",
						"the address %s is listed twice in the send_as of %s", a, shown))
					continue
				}
				listed[a] = true
				// A user may own an outside address (a personal mailbox
				// elsewhere); sending as it is allowed but worth a look,
				// since the other domain's SPF and DMARC decide whether
				// such mail is delivered.
				if checkDomains && len(cfg.Domains) > 0 && !cfg.IsLocalDomain(domain) {
					diags = append(diags, warnf(rng, "Foreign send_as",
						"the domain of send_as address %q is not listed in domains; keep it only if the owner of %s owns that address", rm.SendAs[i], shown))
				}
				m.SendAs = append(m.SendAs, a)
				grants = append(grants, grant{m, a, rng})
			}
			if keep && len(rm.SendAs) == 0 && m.Submission {
				diags = append(diags, warnf(rm.SendAsRange, "Empty send_as",
					"mailbox %s may submit mail but its send_as list is empty, so every message it sends is refused; list its addresses, or set submission = false", shown))
			}
		}
		if rm.Retention != nil && p.ok(rm.RetentionRange) {
			days, err := parseRetention(*rm.Retention)
			if err != nil {
				diags = append(diags, errorf(rm.RetentionRange, "Invalid retention", "the retention of %s is invalid: %s", shown, err.Error()))
			} else {
				m.RetentionDays = days
			}
		}
		if rm.SortOrder != nil && p.ok(rm.SortOrderRange) {
			switch strings.ToLower(strings.TrimSpace(*rm.SortOrder)) {
			case "ascending":
			case "descending":
				m.SortDescending = true
			default:
				diags = append(diags, errorf(rm.SortOrderRange, "Invalid sort_order",
					"sort_order must be \"ascending\" (oldest first, the default) or \"descending\" (newest first), not %q", *rm.SortOrder))
			}
		}
		if rm.NewLoginNotice != nil {
			m.NewLoginNotice = *rm.NewLoginNotice
		}
		diags = append(diags, p.devices(m, rm.Devices, shown, now)...)
		if !keep {
			continue
		}
		cfg.Mailboxes = append(cfg.Mailboxes, m)
		cfg.byAddr[m.Address] = m
		for _, a := range m.Aliases {
			cfg.byAddr[a] = m
		}
	}
	for _, g := range grants {
		other := cfg.byAddr[g.addr]
		if other == nil || other == g.m || cfg.byAddr[g.m.Address] != g.m {
			continue // nobody's, its own, or the granting mailbox was not kept
		}
		whose := "the address of mailbox " + other.Address
		if other.Address != g.addr {
			whose = "an alias of mailbox " + other.Address
		}
		diags = append(diags, warnf(g.rng, "Another mailbox's address",
			"mailbox %s may send as %s, %s", g.m.Address, g.addr, whose))
	}
	return diags
}
