package outbound

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mailpost/config"
)

func loadHCL(t *testing.T, src string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mailpost.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	return cfg
}

func dnsRecords(t *testing.T, cfg *config.Config) string {
	t.Helper()
	var b strings.Builder
	if err := WriteDNSRecords(&b, cfg, ""); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestDNSRecordsClientSetup checks the exact zone `mailpost dns` prints
// for a domain with implicit TLS and STARTTLS endpoints and https: SRV
// priorities across each protocol's two labels, implicit TLS first, and
// the autoconfig/autodiscover names.
func TestDNSRecordsClientSetup(t *testing.T) {
	cfg := loadHCL(t, `
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "main" {
  self_signed = true
  names = ["mail.example.com", "pop.example.com", "autodiscover.example.com"]
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:110:tls", "mail.example.com:995:ssl", "pop.example.com:1995:ssl"]
}
submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:587:tls"]
}
http {
  bindings     = ["127.0.0.1:0"]
  tls_bindings = ["127.0.0.1:443"]
}
`)
	want := `; example.com
example.com.	3600	IN	MX	10 mail.example.com.
example.com.	3600	IN	TXT	"v=spf1 mx -all"
_dmarc.example.com.	3600	IN	TXT	"v=DMARC1; p=none; rua=mailto:postmaster@example.com"
; clients find the servers (RFC 6186, RFC 8314 §5.1): lowest priority first, target "." = not offered
_pop3s._tcp.example.com.	3600	IN	SRV	0 1 995 mail.example.com.
_pop3s._tcp.example.com.	3600	IN	SRV	10 1 1995 pop.example.com.
_pop3._tcp.example.com.	3600	IN	SRV	20 1 110 mail.example.com.
_submissions._tcp.example.com.	3600	IN	SRV	0 0 0 .
_submission._tcp.example.com.	3600	IN	SRV	0 1 587 mail.example.com.
; Thunderbird (autoconfig) and Outlook (autodiscover) find their settings on mail.example.com's http listeners
; (a CNAME needs the name to have no other record; A/AAAA records with mail.example.com's addresses do the same)
autoconfig.example.com.	3600	IN	CNAME	mail.example.com.
autodiscover.example.com.	3600	IN	CNAME	mail.example.com.
_autodiscover._tcp.example.com.	3600	IN	SRV	0 1 443 mail.example.com.
`
	if got := dnsRecords(t, cfg); got != want {
		t.Errorf("records:\n%s\nwant:\n%s", got, want)
	}
}

// TestDNSRecordsWithoutHTTP: no http block, so nothing serves autoconfig
// or autodiscover and no record may send clients there; POP3 is off, so
// both of its labels say "not offered". Only configured domains appear.
func TestDNSRecordsWithoutHTTP(t *testing.T) {
	cfg := loadHCL(t, `
hostname = "mx.example.net"
data_dir = "data"
domains  = ["example.net", "example.org"]
certificate "main" {
  self_signed = true
}
submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = []
  external_connection_settings = ["mx.example.net:465:ssl"]
}
`)
	got := dnsRecords(t, cfg)
	want := `; example.org
example.org.	3600	IN	MX	10 mx.example.net.
example.org.	3600	IN	TXT	"v=spf1 mx -all"
_dmarc.example.org.	3600	IN	TXT	"v=DMARC1; p=none; rua=mailto:postmaster@example.org"
; clients find the servers (RFC 6186, RFC 8314 §5.1): lowest priority first, target "." = not offered
_pop3s._tcp.example.org.	3600	IN	SRV	0 0 0 .
_pop3._tcp.example.org.	3600	IN	SRV	0 0 0 .
_submissions._tcp.example.org.	3600	IN	SRV	0 1 465 mx.example.net.
_submission._tcp.example.org.	3600	IN	SRV	0 0 0 .
; no http block: autoconfig and autodiscover are not served, so clients get no automatic setup beyond the SRV records above
`
	if _, second, ok := strings.Cut(got, "\n\n"); !ok || second != want {
		t.Errorf("second domain's records:\n%s\nwant:\n%s", second, want)
	}
	if strings.Contains(got, "\tCNAME\t") || strings.Contains(got, "_autodiscover") {
		t.Errorf("records without http send clients to autoconfig or autodiscover:\n%s", got)
	}
}

// TestDNSRecordsHTTPS: plain http serves autoconfig, but Outlook asks
// autodiscover only over https, so no autodiscover name is published; a
// certificate gap and a non-443 https port are pointed out.
func TestDNSRecordsHTTPS(t *testing.T) {
	base := `
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "main" {
  self_signed = true
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = []
  external_connection_settings = ["mail.example.com:995:ssl"]
}
`
	got := dnsRecords(t, loadHCL(t, base+`http {
  bindings = ["127.0.0.1:0"]
}
`))
	if !strings.Contains(got, "autoconfig.example.com.\t3600\tIN\tCNAME\tmail.example.com.\n") ||
		strings.Contains(got, "autodiscover.example.com.\t") || strings.Contains(got, "_autodiscover") ||
		!strings.Contains(got, "; Outlook asks autodiscover over https only") {
		t.Errorf("http-only records:\n%s", got)
	}
	got = dnsRecords(t, loadHCL(t, base+`http {
  tls_bindings = ["127.0.0.1:8443"]
}
`))
	for _, want := range []string{
		"; no certificate covers autodiscover.example.com:",
		"; https listens on port 8443: this assumes a port map from 443 to it",
		"_autodiscover._tcp.example.com.\t3600\tIN\tSRV\t0 1 443 mail.example.com.\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("records lack %q:\n%s", want, got)
		}
	}
}
