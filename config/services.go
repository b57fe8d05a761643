package config

import (
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// serviceEnv is what every service block is checked against: the parts of
// the file validated before it, and the addresses bound so far by any
// service (one address may be bound once in the whole file).
type serviceEnv struct {
	cfg          *Config
	hostOK       bool // cfg.Hostname is valid
	certsKnown   bool // every certificate block was usable, so coverage can be judged
	anyCertBlock bool // at least one certificate block is written
	bound        map[netip.AddrPort]hcl.Range
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

func addrPorts(bs []binding) []netip.AddrPort {
	var out []netip.AddrPort
	for _, b := range bs {
		out = append(out, b.ap)
	}
	return out
}

// intAttr checks an optional whole-number attribute against [lo, hi] and
// stores it in dst. It reports false when the attribute is written but
// unusable.
func (p *parser) intAttr(diags *hcl.Diagnostics, v *int, rng hcl.Range, name string, lo, hi int, dst *int) bool {
	if !p.ok(rng) {
		return false
	}
	if v == nil {
		return true
	}
	if *v < lo || *v > hi {
		*diags = append(*diags, errorf(rng, "Value out of range", "the %s must be between %d and %d, not %d", name, lo, hi, *v))
		return false
	}
	*dst = *v
	return true
}

const maxInt = int(^uint(0) >> 1)

// durationAttr parses an optional positive duration into dst and reports
// whether it was written and valid.
func (p *parser) durationAttr(diags *hcl.Diagnostics, v *string, rng hcl.Range, name string, dst *time.Duration) bool {
	if v == nil || !p.ok(rng) {
		return false
	}
	d, err := ParseDuration(*v)
	switch {
	case err != nil:
		*diags = append(*diags, errorf(rng, "Invalid duration", "the %s is invalid: %s", name, err.Error()))
		return false
	case d <= 0:
		*diags = append(*diags, errorf(rng, "Invalid duration", "the %s must be longer than zero", name))
		return false
	}
	*dst = d
	return true
}

// smtpTimeout is durationAttr for an SMTP server's inactivity timeout.
func (p *parser) smtpTimeout(diags *hcl.Diagnostics, v *string, rng hcl.Range, dst *time.Duration) {
	if p.durationAttr(diags, v, rng, "timeout", dst) && *dst < DefaultSMTPTimeout {
		*diags = append(*diags, warnf(rng, "Short timeout",
			"the timeout %q is shorter than the 5 minutes RFC 5321 section 4.5.3.2.7 asks a server to wait for the next command", *v))
	}
}

// messageSize parses an optional max_message_size into dst.
func (p *parser) messageSize(diags *hcl.Diagnostics, v *string, rng hcl.Range, dst *int64) {
	if v == nil || !p.ok(rng) {
		return
	}
	n, err := ParseSize(*v)
	switch {
	case err != nil:
		*diags = append(*diags, errorf(rng, "Invalid size", "the max_message_size is invalid: %s", err.Error()))
	case n < MinMaxMessageSize || n > MaxMaxMessageSize:
		*diags = append(*diags, errorf(rng, "Value out of range",
			"the max_message_size must be between 1KiB and 1GiB, not %q", *v))
	default:
		*dst = n
	}
}

// connLimits checks max_connections and max_connections_per_ip, and warns
// when the per-IP limit cannot bite.
func (p *parser) connLimits(diags *hcl.Diagnostics, maxV *int, maxRng hcl.Range, perIPV *int, perIPRng hcl.Range, maxDst, perIPDst *int) {
	okMax := p.intAttr(diags, maxV, maxRng, "max_connections", 1, maxInt, maxDst)
	okPerIP := p.intAttr(diags, perIPV, perIPRng, "max_connections_per_ip", 1, maxInt, perIPDst)
	// A broken max_connections still leaves its default to compare with;
	// a broken per-IP limit already has its diagnostic.
	if !okPerIP || *perIPDst <= *maxDst {
		return
	}
	if perIPRng.Filename == "" {
		// The per-IP limit is a default; the written max_connections is
		// what made it ineffective (unless that is broken too).
		if !okMax {
			return
		}
		*diags = append(*diags, warnf(maxRng, "Ineffective limit",
			"the max_connections (%d) is smaller than the default max_connections_per_ip (%d), so only max_connections applies",
			*maxDst, *perIPDst))
		return
	}
	*diags = append(*diags, warnf(perIPRng, "Ineffective limit",
		"the max_connections_per_ip (%d) is larger than the max_connections (%d), so only max_connections applies",
		*perIPDst, *maxDst))
}

// certName resolves a block's x509_certificate_name: the written name, or
// else the hostname. known is false when neither is usable; rng is where a
// coverage diagnostic about the name should point.
func (p *parser) certName(diags *hcl.Diagnostics, v *string, vRng, defRange hcl.Range, env *serviceEnv) (name string, known bool, rng hcl.Range) {
	if v == nil {
		if env.hostOK {
			return env.cfg.Hostname, true, defRange
		}
		return "", false, defRange
	}
	if !p.ok(vRng) {
		return "", false, defRange
	}
	if !validFQDN(*v) {
		*diags = append(*diags, errorf(vRng, "Invalid certificate name",
			"the x509_certificate_name %q is not a fully qualified domain name", *v))
		return "", false, vRng
	}
	return normName(*v), true, vRng
}

// tlsServiceIn is what a pop3 and a submission block share: Exchange's
// certificate name, implicit-TLS and plain-or-upgraded bindings, and the
// connection settings clients are told to use. The service-specific parts
// say what the defaults are and why unencrypted settings are refused.
type tlsServiceIn struct {
	defRange                     hcl.Range
	x509                         *string
	x509Rng                      hcl.Range
	ssl, tls, external, internal []string
	sslRng, tlsRng               hcl.Range
	externalRng, internalRng     hcl.Range

	defaultSSL, defaultTLS []string
	// needsTLS starts the error when no certificate block exists.
	needsTLS string
	// plainRefused, when set, is why a connection setting with an empty
	// method could never be used to log in.
	plainRefused string
}

// tlsServiceOut is the effective result of tlsServiceIn.
type tlsServiceOut struct {
	certName           string
	ssl, plain         []netip.AddrPort
	external, internal []ConnSetting
}

// tlsService checks the listener part of a pop3 or submission block:
// bindings (both lists default only when neither is written), connection
// settings against the bindings of their kind, and certificate coverage of
// every name a client is told to use.
func (p *parser) tlsService(in tlsServiceIn, env *serviceEnv) (tlsServiceOut, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var out tlsServiceOut

	// Writing one kind alone switches the other kind off.
	sslVals, sslRng := in.ssl, in.sslRng
	tlsVals, tlsRng := in.tls, in.tlsRng
	if sslRng.Filename == "" && tlsRng.Filename == "" {
		sslVals, sslRng = in.defaultSSL, in.defRange
		tlsVals, tlsRng = in.defaultTLS, in.defRange
	}
	var ssl, plain []binding
	if p.ok(sslRng) {
		var d hcl.Diagnostics
		ssl, d = p.bindings(sslVals, sslRng, env.bound)
		diags = append(diags, d...)
	}
	if p.ok(tlsRng) {
		var d hcl.Diagnostics
		plain, d = p.bindings(tlsVals, tlsRng, env.bound)
		diags = append(diags, d...)
	}
	out.ssl, out.plain = addrPorts(ssl), addrPorts(plain)

	name, nameKnown, nameRng := p.certName(&diags, in.x509, in.x509Rng, in.defRange, env)
	out.certName = name

	type setting struct {
		cs  ConnSetting
		rng hcl.Range
	}
	settings := func(vals []string, rng hcl.Range, attr string) []setting {
		if !p.ok(rng) {
			return nil
		}
		var res []setting
		for i, er := range p.elemRanges(rng, len(vals)) {
			cs, err := parseConnSetting(vals[i])
			if err != nil {
				diags = append(diags, errorf(er, "Invalid connection setting", "%s", err.Error()))
				continue
			}
			kind, kindAttr := ssl, "ssl_bindings"
			if cs.Method != MethodSSL {
				kind, kindAttr = plain, "unencrypted_or_tls_bindings"
			}
			if cs.Method == MethodNone && in.plainRefused != "" {
				diags = append(diags, errorf(er, "Unusable connection setting",
					"the connection setting %q in %s is unencrypted but %s, so clients told to use it could never log in", vals[i], attr, in.plainRefused))
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
			res = append(res, setting{cs, er})
		}
		return res
	}
	var external []setting
	if in.externalRng.Filename != "" {
		external = settings(in.external, in.externalRng, "external_connection_settings")
	} else if env.hostOK {
		// Derived: what a client outside should use, from the first binding
		// of each kind.
		if len(ssl) > 0 {
			external = append(external, setting{ConnSetting{env.cfg.Hostname, int(ssl[0].ap.Port()), MethodSSL}, in.defRange})
		}
		if len(plain) > 0 {
			external = append(external, setting{ConnSetting{env.cfg.Hostname, int(plain[0].ap.Port()), MethodTLS}, in.defRange})
		}
	}
	internal := settings(in.internal, in.internalRng, "internal_connection_settings")
	for _, s := range external {
		out.external = append(out.external, s.cs)
	}
	for _, s := range internal {
		out.internal = append(out.internal, s.cs)
	}

	// Coverage: every name clients are told to use must have a certificate.
	if len(ssl)+len(plain) == 0 {
		return out, diags
	}
	if !env.anyCertBlock {
		return out, append(diags, errorf(in.defRange, "No certificate",
			"%s but no certificate block is declared; add one, self_signed = true is enough to start", in.needsTLS))
	}
	if !env.certsKnown {
		return out, diags // a broken certificate might have covered the names
	}
	if nameKnown && env.cfg.CertificateFor(name) == nil {
		if in.x509 != nil {
			diags = append(diags, errorf(nameRng, "Uncovered certificate name",
				"no certificate covers x509_certificate_name %q", name))
		} else {
			diags = append(diags, errorf(nameRng, "Uncovered certificate name",
				"no certificate covers the hostname %q, which x509_certificate_name defaults to", name))
		}
	}
	for _, s := range external {
		if s.rng == in.defRange && nameKnown && s.cs.Host == name {
			continue // derived from hostname, already checked above
		}
		if env.cfg.CertificateFor(s.cs.Host) == nil {
			diags = append(diags, errorf(s.rng, "Uncovered connection name",
				"no certificate covers %q, which external clients are told to use", s.cs.Host))
		}
	}
	for _, s := range internal {
		if env.cfg.CertificateFor(s.cs.Host) == nil {
			diags = append(diags, warnf(s.rng, "Uncovered connection name",
				"no certificate covers %q, so internal clients will see a name mismatch", s.cs.Host))
		}
	}
	return out, diags
}

func (p *parser) pop3(rp *rawPOP3, env *serviceEnv) (*POP3, hcl.Diagnostics) {
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

	// login_type first: it decides whether unencrypted settings are usable.
	if rp.LoginType != nil && p.ok(rp.LoginTypeRange) {
		switch LoginType(*rp.LoginType) {
		case SecureLogin, PlainTextLogin:
			pop.LoginType = LoginType(*rp.LoginType)
		default:
			diags = append(diags, errorf(rp.LoginTypeRange, "Invalid login_type",
				"the login_type %q is not one of %q or %q", *rp.LoginType, SecureLogin, PlainTextLogin))
		}
	}
	in := tlsServiceIn{
		defRange: rp.DefRange,
		x509:     rp.X509CertificateName, x509Rng: rp.X509CertificateNameRange,
		ssl: rp.SSLBindings, sslRng: rp.SSLBindingsRange,
		tls: rp.TLSBindings, tlsRng: rp.TLSBindingsRange,
		external: rp.External, externalRng: rp.ExternalRange,
		internal: rp.Internal, internalRng: rp.InternalRange,
		defaultSSL: defaultSSLBindings, defaultTLS: defaultTLSBindings,
		needsTLS: "POP3 needs TLS (ssl_bindings always, STLS on the others)",
	}
	if pop.LoginType == SecureLogin {
		in.plainRefused = "login_type is secure_login"
	}
	svc, sd := p.tlsService(in, env)
	diags = append(diags, sd...)
	pop.X509CertificateName = svc.certName
	pop.SSLBindings, pop.UnencryptedOrTLSBindings = svc.ssl, svc.plain
	pop.ExternalConnectionSettings, pop.InternalConnectionSettings = svc.external, svc.internal

	p.durationAttr(&diags, rp.PreAuthTimeout, rp.PreAuthTimeoutRange, "pre_authenticated_timeout", &pop.PreAuthenticatedTimeout)
	if p.durationAttr(&diags, rp.AuthTimeout, rp.AuthTimeoutRange, "authenticated_timeout", &pop.AuthenticatedTimeout) &&
		pop.AuthenticatedTimeout < 10*time.Minute {
		// RFC 1939 §3: the autologout timer must be at least 10 minutes.
		diags = append(diags, warnf(rp.AuthTimeoutRange, "Short timeout",
			"the authenticated_timeout %q is shorter than the 10 minutes RFC 1939 section 3 asks for", *rp.AuthTimeout))
	}

	p.connLimits(&diags, rp.MaxConnections, rp.MaxConnectionsRange, rp.MaxConnectionsPerIP, rp.MaxConnectionsPerIPRange,
		&pop.MaxConnections, &pop.MaxConnectionsPerIP)
	// RFC 2449 §4: command lines may be 255 octets, so no smaller limit.
	p.intAttr(&diags, rp.MaxCommandSize, rp.MaxCommandSizeRange, "max_command_size", MinMaxCommandSize, MaxMaxCommandSize, &pop.MaxCommandSize)

	if rp.Banner != nil && p.ok(rp.BannerRange) {
		if strings.ContainsFunc(*rp.Banner, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			diags = append(diags, errorf(rp.BannerRange, "Invalid banner",
				"the banner must be one line of text without control characters, because it is sent in the greeting"))
		} else {
			pop.Banner = *rp.Banner
		}
	}
	return pop, diags
}

// submission checks the submission block: the same listener rules as POP3,
// except that an unencrypted connection setting is always an error, since
// AUTH is refused before TLS and there is no plain_text_login to allow it.
func (p *parser) submission(rs *rawSubmission, env *serviceEnv) (*Submission, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	sub := &Submission{
		MaxMessageSize:      DefaultMaxMessageSize,
		MaxRecipients:       DefaultMaxRecipients,
		Timeout:             DefaultSMTPTimeout,
		MaxConnections:      DefaultSubmissionMaxConnections,
		MaxConnectionsPerIP: DefaultSubmissionMaxConnectionsPerIP,
	}
	svc, sd := p.tlsService(tlsServiceIn{
		defRange: rs.DefRange,
		x509:     rs.X509CertificateName, x509Rng: rs.X509CertificateNameRange,
		ssl: rs.SSLBindings, sslRng: rs.SSLBindingsRange,
		tls: rs.TLSBindings, tlsRng: rs.TLSBindingsRange,
		external: rs.External, externalRng: rs.ExternalRange,
		internal: rs.Internal, internalRng: rs.InternalRange,
		defaultSSL: defaultSubmissionSSLBindings, defaultTLS: defaultSubmissionTLSBindings,
		needsTLS: "Submission needs TLS (ssl_bindings always, STARTTLS before AUTH on the others)",
		// RFC 4954 §4 and RFC 8314 §3.3: credentials travel only over TLS.
		plainRefused: "submission accepts AUTH only over TLS",
	}, env)
	diags = append(diags, sd...)
	sub.X509CertificateName = svc.certName
	sub.SSLBindings, sub.UnencryptedOrTLSBindings = svc.ssl, svc.plain
	sub.ExternalConnectionSettings, sub.InternalConnectionSettings = svc.external, svc.internal

	p.messageSize(&diags, rs.MaxMessageSize, rs.MaxMessageSizeRange, &sub.MaxMessageSize)
	p.intAttr(&diags, rs.MaxRecipients, rs.MaxRecipientsRange, "max_recipients", 1, MaxMaxRecipients, &sub.MaxRecipients)
	p.smtpTimeout(&diags, rs.Timeout, rs.TimeoutRange, &sub.Timeout)
	p.connLimits(&diags, rs.MaxConnections, rs.MaxConnectionsRange, rs.MaxConnectionsPerIP, rs.MaxConnectionsPerIPRange,
		&sub.MaxConnections, &sub.MaxConnectionsPerIP)
	return sub, diags
}

// inbound checks the inbound block. Its TLS is opportunistic (RFC 3207 §4:
// a publicly referenced server must not require it), so a missing
// certificate costs encryption, not mail, and is only a warning.
func (p *parser) inbound(ri *rawInbound, env *serviceEnv, domainsOK bool, nDomains int) (*Inbound, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	in := &Inbound{
		MaxMessageSize:      DefaultMaxMessageSize,
		MaxRecipients:       DefaultMaxRecipients,
		Timeout:             DefaultSMTPTimeout,
		MaxConnections:      DefaultInboundMaxConnections,
		MaxConnectionsPerIP: DefaultInboundMaxConnectionsPerIP,
		RateLimitPerIP:      DefaultInboundRateLimitPerIP,
	}
	if domainsOK && nDomains == 0 {
		diags = append(diags, errorf(ri.DefRange, "Missing domains",
			"inbound mail is enabled but the domains list is empty, so there is nothing to receive mail for; list the local domains in domains"))
	}

	vals, rng := ri.Bindings, ri.BindingsRange
	if rng.Filename == "" {
		vals, rng = defaultInboundBindings, ri.DefRange
	}
	var bs []binding
	bindingsOK := p.ok(rng)
	if bindingsOK {
		var d hcl.Diagnostics
		bs, d = p.bindings(vals, rng, env.bound)
		diags = append(diags, d...)
		bindingsOK = !d.HasErrors() // a rejected entry may have been the port 25 one
	}
	in.Bindings = addrPorts(bs)
	if bindingsOK && len(bs) > 0 {
		on25 := false
		for _, b := range bs {
			if b.ap.Port() == 25 || b.ap.Port() == 0 {
				on25 = true
				break
			}
		}
		if !on25 {
			// RFC 5321 §4.5.4.2: servers listen on the SMTP port, 25, which
			// is the only one other servers deliver to.
			diags = append(diags, warnf(rng, "Port without binding",
				"no binding is on port 25, the only port other servers deliver to; that is right only if a NAT or container port map forwards it"))
		}
	}

	name, nameKnown, nameRng := p.certName(&diags, ri.X509CertificateName, ri.X509CertificateNameRange, ri.DefRange, env)
	in.X509CertificateName = name
	if len(bs) > 0 && nameKnown {
		switch {
		case !env.anyCertBlock:
			diags = append(diags, warnf(ri.DefRange, "No STARTTLS",
				"no certificate block is declared, so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted; add a certificate covering %q", name))
		case !env.certsKnown:
			// A broken certificate might have covered the name.
		case env.cfg.CertificateFor(name) == nil && ri.X509CertificateName != nil:
			diags = append(diags, warnf(nameRng, "No STARTTLS",
				"no certificate covers x509_certificate_name %q, so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted", name))
		case env.cfg.CertificateFor(name) == nil:
			diags = append(diags, warnf(nameRng, "No STARTTLS",
				"no certificate covers the hostname %q, which x509_certificate_name defaults to, so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted", name))
		}
	}

	p.messageSize(&diags, ri.MaxMessageSize, ri.MaxMessageSizeRange, &in.MaxMessageSize)
	p.intAttr(&diags, ri.MaxRecipients, ri.MaxRecipientsRange, "max_recipients", 1, MaxMaxRecipients, &in.MaxRecipients)
	p.smtpTimeout(&diags, ri.Timeout, ri.TimeoutRange, &in.Timeout)
	p.connLimits(&diags, ri.MaxConnections, ri.MaxConnectionsRange, ri.MaxConnectionsPerIP, ri.MaxConnectionsPerIPRange,
		&in.MaxConnections, &in.MaxConnectionsPerIP)
	p.intAttr(&diags, ri.RateLimitPerIP, ri.RateLimitPerIPRange, "rate_limit_per_ip", 0, maxInt, &in.RateLimitPerIP)
	return in, diags
}
