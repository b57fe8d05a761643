package outbound

import (
	"fmt"
	"io"

	"mailpost/config"
)

// WriteDNSRecords prints, in zone-file form, the records each local domain
// needs: MX, SPF, DKIM (dkimTXT, the value DKIMRecord returns; "" when
// signing is off), DMARC, the RFC 6186 SRV records that let clients find
// the POP3 and submission endpoints of external_connection_settings, and
// the autoconfig/autodiscover names that lead Thunderbird and Outlook to
// the http listeners.
func WriteDNSRecords(w io.Writer, cfg *config.Config, dkimTXT string) error {
	var err error
	p := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format+"\n", args...)
		}
	}
	host := cfg.Hostname + "."
	for i, d := range cfg.Domains {
		if i > 0 {
			p("")
		}
		p("; %s", d)
		p("%s.\t3600\tIN\tMX\t10 %s", d, host)
		// SPF (RFC 7208): the MX host sends for the domain. With a relay,
		// the provider's include: belongs in this record too.
		spf := "v=spf1 mx -all"
		if cfg.Outbound != nil && cfg.Outbound.Relay != nil {
			p("; mail leaves through the relay %s: add its SPF include (see the provider's documentation)", cfg.Outbound.Relay.Host)
			spf = "v=spf1 mx ~all"
		}
		p("%s.\t3600\tIN\tTXT\t%s", d, quoteTXT(spf))
		if cfg.Outbound != nil && cfg.Outbound.DKIM != nil && dkimTXT != "" {
			p("%s._domainkey.%s.\t3600\tIN\tTXT\t%s", cfg.Outbound.DKIM.Selector, d, quoteTXT(dkimTXT))
		}
		// DMARC (RFC 7489): start with p=none and aggregate reports, then
		// tighten once the reports look clean.
		p("_dmarc.%s.\t3600\tIN\tTXT\t%s", d, quoteTXT("v=DMARC1; p=none; rua=mailto:postmaster@"+d))
		var pop3, sub []config.ConnSetting
		if cfg.POP3 != nil {
			pop3 = cfg.POP3.ExternalConnectionSettings
		}
		if cfg.Submission != nil {
			sub = cfg.Submission.ExternalConnectionSettings
		}
		p("; clients find the servers (RFC 6186, RFC 8314 §5.1): lowest priority first, target \".\" = not offered")
		for _, r := range srvRecords(d, "pop3s", "pop3", pop3) {
			p("%s", r)
		}
		for _, r := range srvRecords(d, "submissions", "submission", sub) {
			p("%s", r)
		}
		writeClientSetupRecords(p, cfg, d)
	}
	return err
}

// quoteTXT renders a TXT value as quoted strings of at most 255 octets
// each (RFC 1035 §3.3.14); long RSA keys need several.
func quoteTXT(s string) string {
	out := ""
	for len(s) > 0 {
		n := min(len(s), 255)
		if out != "" {
			out += " "
		}
		out += `"` + s[:n] + `"`
		s = s[n:]
	}
	return out
}

// srvRecords renders the RFC 6186 records of one protocol: implicit TLS
// endpoints under secure (_pop3s, _submissions) and STARTTLS ones under
// plain (_pop3, _submission). Priorities run across both labels, implicit
// TLS first and otherwise in the order of the settings, because RFC 6186
// §3.4 and RFC 8314 §5.1 have clients that look up both pick by priority.
// A label with no endpoint gets "0 0 0 ." (the service is decidedly not
// offered, RFC 2782), so a client stops there instead of guessing ports.
// Plain-text settings are never published: a client that finds a server
// through DNS should not be sent to one that takes passwords in clear.
func srvRecords(domain, secure, plain string, settings []config.ConnSetting) []string {
	var out []string
	prio := 0
	add := func(service string, method config.Method) {
		found := false
		for _, s := range settings {
			if s.Method != method {
				continue
			}
			// RFC 2782: priority, weight, port, target. Weight 1 as in
			// RFC 6186's examples; there is nothing to balance.
			out = append(out, fmt.Sprintf("_%s._tcp.%s.\t3600\tIN\tSRV\t%d 1 %d %s.", service, domain, prio, s.Port, s.Host))
			prio += 10
			found = true
		}
		if !found {
			out = append(out, fmt.Sprintf("_%s._tcp.%s.\t3600\tIN\tSRV\t0 0 0 .", service, domain))
		}
	}
	add(secure, config.MethodSSL)
	add(plain, config.MethodTLS)
	return out
}

// writeClientSetupRecords prints the names mail clients try before any
// SRV record: Thunderbird fetches autoconfig.<domain> (https, then http),
// Outlook POSTs to https://autodiscover.<domain>, then GETs
// http://autodiscover.<domain> for a redirect, then looks up
// _autodiscover._tcp.<domain> ([MS-OXDISCO] §3.1.5). All of them are
// answered by the http listeners on the mail host.
func writeClientSetupRecords(p func(string, ...any), cfg *config.Config, d string) {
	host := cfg.Hostname + "."
	if cfg.HTTP == nil {
		p("; no http block: autoconfig and autodiscover are not served, so clients get no automatic setup beyond the SRV records above")
		return
	}
	p("; Thunderbird (autoconfig) and Outlook (autodiscover) find their settings on %s's http listeners", cfg.Hostname)
	p("; (a CNAME needs the name to have no other record; A/AAAA records with %s's addresses do the same)", cfg.Hostname)
	p("autoconfig.%s.\t3600\tIN\tCNAME\t%s", d, host)
	port, bound := cfg.HTTP.HTTPSPort()
	if port == 0 {
		p("; Outlook asks autodiscover over https only: add http { tls_bindings = [...] } to publish autodiscover")
		return
	}
	p("autodiscover.%s.\t3600\tIN\tCNAME\t%s", d, host)
	if cfg.CertificateFor("autodiscover."+d) == nil {
		// Outlook's second try is https://autodiscover.<domain>; the
		// redirect it tries next needs the same name, so dropping the
		// CNAME leaves only the SRV record.
		p("; no certificate covers autodiscover.%s: Outlook warns when it tries https://autodiscover.%s; add the name to a certificate (for acme, to its domains), or leave the CNAME out and Outlook finds %s through the SRV record below", d, d, cfg.Hostname)
	}
	if bound != port {
		p("; https listens on port %d: this assumes a port map from %d to it; write %d below if clients reach it directly", bound, port, bound)
	}
	p("_autodiscover._tcp.%s.\t3600\tIN\tSRV\t0 1 %d %s", d, port, host)
}
