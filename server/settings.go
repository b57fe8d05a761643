package server

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"mailpost/certs"
	"mailpost/config"
	"mailpost/storage"
)

// WriteSettings prints the effective settings the way Exchange's
// `Get-PopSettings | Format-List` does: one "Name : value" line per setting,
// defaults filled in, then the certificate chosen and per-mailbox access.
// store may be nil (usage is then left out).
func WriteSettings(w io.Writer, cfg *config.Config, pool *certs.Pool, store *storage.Store) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	kv := func(k string, v any) { fmt.Fprintf(tw, "%s\t: %v\n", k, v) }
	kv("Hostname", cfg.Hostname)
	kv("DataDir", cfg.DataDir)
	kv("Database", DatabasePath(cfg.DataDir))
	kv("Domains", list(cfg.Domains))
	if p := cfg.POP3; p == nil {
		kv("POP3", "off (no pop3 block)")
	} else {
		kv("X509CertificateName", p.X509CertificateName)
		kv("SSLBindings", addrList(p.SSLBindings))
		kv("UnencryptedOrTLSBindings", addrList(p.UnencryptedOrTLSBindings))
		kv("ExternalConnectionSettings", settingList(p.ExternalConnectionSettings))
		kv("InternalConnectionSettings", settingList(p.InternalConnectionSettings))
		kv("LoginType", p.LoginType)
		kv("PreAuthenticatedConnectionTimeout", p.PreAuthenticatedTimeout)
		kv("AuthenticatedConnectionTimeout", p.AuthenticatedTimeout)
		kv("MaxConnections", p.MaxConnections)
		kv("MaxConnectionsPerIP", p.MaxConnectionsPerIP)
		kv("MaxCommandSize", p.MaxCommandSize)
		kv("Banner", p.Banner)
		if pool != nil {
			if c := pool.ForName(p.X509CertificateName); c != nil && c.Leaf != nil {
				kv("Certificate", fmt.Sprintf("%s, issuer %q, expires %s (in %d days)",
					list(c.Leaf.DNSNames), c.Leaf.Issuer.CommonName, c.Leaf.NotAfter.UTC().Format(time.RFC3339),
					int(time.Until(c.Leaf.NotAfter).Hours()/24)))
			} else {
				kv("Certificate", "none covers "+p.X509CertificateName)
			}
		}
	}
	l := cfg.LoginLimits
	kv("LoginLimits", fmt.Sprintf("failures per %s: IPv4 /32 %s, /26 %s, /21 %s; IPv6 /64 %s, /48 %s, /32 %s; account %s",
		l.Window, limit(l.IPv4_32), limit(l.IPv4_26), limit(l.IPv4_21), limit(l.IPv6_64), limit(l.IPv6_48), limit(l.IPv6_32), limit(l.Account)))
	kv("LoginExemptAfterSuccess", l.ExemptAfterSuccess)
	tw.Flush()

	if pool != nil {
		fmt.Fprintln(w, "\nCertificates:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSOURCE\tNAMES\tISSUER\tNOT AFTER\tSHA-256\tNEXT RENEWAL\tSTATE")
		for _, ci := range pool.Infos() {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ci.Name, ci.Source, strings.Join(ci.Names, ","),
				ci.Issuer, ci.NotAfter.UTC().Format(time.RFC3339), orDash(ci.SHA256), renewal(ci), certState(ci))
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nMailboxes:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ADDRESS\tPOP3\tSUBMISSION\tALIASES\tQUOTA\tEXPIRE\tORDER\tDEVICES\tMESSAGES\tSIZE")
	for _, mb := range cfg.Mailboxes {
		quota := "unlimited"
		if mb.Quota > 0 {
			quota = humanBytes(mb.Quota)
		}
		count, size := "-", "-"
		if store != nil {
			if n, b, err := store.Usage(mb.Address); err == nil {
				count, size = fmt.Sprint(n), humanBytes(b)
			}
		}
		expire, order := "NEVER", "ascending"
		if mb.RetentionDays >= 0 {
			expire = fmt.Sprint(mb.RetentionDays)
		}
		if mb.SortDescending {
			order = "descending"
		}
		devices := make([]string, len(mb.Devices))
		for i, d := range mb.Devices {
			devices[i] = d.Name + "(" + strings.Join(d.Allow, "+") + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mb.Address, onOff(mb.POP3), onOff(mb.Submission),
			list(mb.Aliases), quota, expire, order, list(devices), count, size)
	}
	tw.Flush()
}

// limit renders a login limit; 0 switches the tier off.
func limit(n int) string {
	if n == 0 {
		return "off"
	}
	return fmt.Sprint(n)
}

func list(s []string) string { return "{" + strings.Join(s, ", ") + "}" }

func addrList(a []netip.AddrPort) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return list(s)
}

func settingList(cs []config.ConnSetting) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return list(s)
}

func onOff(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// renewal is when an ACME certificate is due for renewal; the other kinds
// are renewed by hand (static) or at start-up (self-signed).
func renewal(ci certs.Info) string {
	if ci.NextRenewal.IsZero() {
		return "-"
	}
	return ci.NextRenewal.UTC().Format(time.RFC3339)
}

// certState says whether a certificate is what clients get: an ACME name
// without an issued certificate is served a self-signed stand-in.
func certState(ci certs.Info) string {
	switch {
	case ci.Pending != "":
		return "pending: " + ci.Pending
	case ci.LastError != "":
		return "ok (last error: " + ci.LastError + ")"
	}
	return "ok"
}
