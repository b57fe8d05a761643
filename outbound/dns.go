package outbound

import (
	"fmt"
	"io"

	"mailpost/config"
)

// WriteDNSRecords prints, in zone-file form, the records each local domain
// needs: MX, SPF, DKIM (dkimTXT, the value DKIMRecord returns; "" when
// signing is off), DMARC, and the RFC 6186 SRV records that let clients
// find the POP3 and submission endpoints of external_connection_settings.
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
		srv := func(service string, settings []config.ConnSetting, method config.Method) {
			found := false
			for _, s := range settings {
				if s.Method == method {
					// RFC 6186 §3: priority, weight, port, target.
					p("_%s._tcp.%s.\t3600\tIN\tSRV\t0 1 %d %s.", service, d, s.Port, s.Host)
					found = true
				}
			}
			if !found {
				// RFC 6186 §3.4: "." says the service is not offered.
				p("_%s._tcp.%s.\t3600\tIN\tSRV\t0 0 0 .", service, d)
			}
		}
		var pop3, sub []config.ConnSetting
		if cfg.POP3 != nil {
			pop3 = cfg.POP3.ExternalConnectionSettings
		}
		if cfg.Submission != nil {
			sub = cfg.Submission.ExternalConnectionSettings
		}
		srv("pop3s", pop3, config.MethodSSL)
		srv("pop3", pop3, config.MethodTLS)
		srv("submissions", sub, config.MethodSSL)
		srv("submission", sub, config.MethodTLS)
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
