package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestACMERules checks each acme/http rule with its rendered, positioned
// diagnostic.
func TestACMERules(t *testing.T) {
	cd := newCertDir(t)
	const top = "hostname = \"mail.example.com\"\n" // line 1
	cases := []struct {
		name string
		src  string // starts on line 2
		want []string
	}{
		{"http-01 without http block", "certificate \"p\" {\n  acme {\n    domains = [\"mail.example.com\"]\n  }\n}", []string{
			`t.hcl:3:3: error: The http-01 challenge needs an http block with bindings (the CA connects to port 80), as in http { bindings = ["[::]:80"] }.`}},
		{"tls-alpn-01 with only plain bindings", "certificate \"p\" {\n  acme {\n    domains = [\"mail.example.com\"]\n    challenge = \"tls-alpn-01\"\n  }\n}\nhttp {\n  bindings = [\"0.0.0.0:80\"]\n}", []string{
			`t.hcl:5:5: error: The tls-alpn-01 challenge needs an http block with tls_bindings (the CA connects to port 443), as in http { tls_bindings = ["[::]:443"] }.`}},
		{"port-mapped http-01 warns", "certificate \"p\" {\n  acme {\n    domains = [\"mail.example.com\"]\n  }\n}\nhttp {\n  bindings = [\"0.0.0.0:8080\", \"[::]:80\"]\n}", []string{
			`t.hcl:8:15: warning: The CA connects to port 80 for http-01, not 8080; this works only if a NAT or container port map forwards port 80 here (for example docker -p 80:8080).`}},
		{"tls port unused by challenge: no warning", "certificate \"p\" {\n  acme {\n    domains = [\"mail.example.com\"]\n  }\n}\nhttp {\n  bindings = [\"0.0.0.0:80\"]\n  tls_bindings = [\"0.0.0.0:8443\"]\n}", nil},
		{"bad domains", "certificate \"p\" {\n  acme {\n    domains = [\"localhost\", \"*.example.com\", \"a.example.com\"]\n  }\n}\ncertificate \"q\" {\n  acme {\n    domains = [\"A.example.com\"]\n  }\n}\nhttp {\n  bindings = [\"0.0.0.0:80\"]\n}", []string{
			`t.hcl:4:16: error: "localhost" is not a fully qualified domain name such as mail.example.com.`,
			`t.hcl:4:29: error: "*.example.com" is a wildcard; ACME issues wildcards only through DNS challenges, which mailpost does not answer; list each name.`,
			`t.hcl:9:16: error: "a.example.com" is already obtained by certificate "p".`}},
		{"no domains, bad url, challenge, ca_file, renew_before", "certificate \"p\" {\n  acme {\n    directory_url = \"http://ca.example.com/dir\"\n    challenge = \"dns-01\"\n    ca_file = \"nope.pem\"\n    renew_before = \"0s\"\n  }\n}", []string{
			`t.hcl:3:3: error: The acme block of certificate "p" needs domains, the names to get a certificate for.`,
			`t.hcl:4:5: error: The directory_url "http://ca.example.com/dir" uses http; ACME requires https (plain http is accepted only for a loopback test CA).`,
			`t.hcl:5:5: error: The challenge "dns-01" is not one mailpost answers; use "http-01" or "tls-alpn-01".`,
			`t.hcl:6:5: error: Cannot read ca_file "nope.pem": it does not exist.`,
			`t.hcl:7:5: error: The renew_before must be longer than zero.`}},
		{"ca_file without certificates", "certificate \"p\" {\n  acme {\n    domains = [\"mail.example.com\"]\n    ca_file = \"garbage.crt\"\n  }\n}\nhttp {\n  bindings = [\"0.0.0.0:80\"]\n}", []string{
			`t.hcl:5:5: error: The ca_file "garbage.crt" contains no PEM certificate.`}},
		{"two sources", "certificate \"p\" {\n  self_signed = true\n  acme {\n    domains = [\"mail.example.com\"]\n  }\n}\nhttp {\n  bindings = [\"0.0.0.0:80\"]\n}", []string{
			`t.hcl:3:3: error: Certificate "p" has an acme block and also cert_file/key_file or self_signed; choose one source.`}},
		{"http binding collides with pop3", "certificate \"p\" {\n  self_signed = true\n}\npop3 {\n  ssl_bindings = [\"127.0.0.1:995\"]\n  unencrypted_or_tls_bindings = []\n}\nhttp {\n  bindings = [\"127.0.0.1:995\"]\n}", []string{
			`t.hcl:10:15: error: The address 127.0.0.1:995 is already bound on line 6.`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, got, _ := parseIn(t, cd.dir, top+tc.src)
			if !slices.Equal(got, tc.want) {
				t.Errorf("diagnostics:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestACMEValues checks the decoded values, defaults, and that coverage
// counts ACME domains.
func TestACMEValues(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeCert(t, dir, "ca", certSpec{dns: []string{"ca.example.net"}})
	if err := os.Rename(filepath.Join(dir, "ca.crt"), ca); err != nil {
		t.Fatal(err)
	}
	src := `hostname = "mail.example.com"
certificate "public" {
  acme {
    domains       = ["Mail.Example.com", "pop.example.com"]
    email         = "postmaster@example.com"
    directory_url = "https://127.0.0.1:14000/dir"
    ca_file       = "ca.pem"
    challenge     = "tls-alpn-01"
    renew_before  = "48h"
  }
}
certificate "default" {
  acme {
    domains = ["other.example.com"]
  }
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:995"]
  unencrypted_or_tls_bindings  = []
  external_connection_settings = ["pop.example.com:995:ssl"]
}
http {
  bindings     = ["[::]:80"]
  tls_bindings = ["[::]:443"]
}
`
	cfg, lines, diags := parseIn(t, dir, src)
	if diags.HasErrors() || len(lines) != 0 {
		t.Fatalf("unexpected diagnostics: %q", lines)
	}
	a := cfg.Certificates[0].ACME
	want := ACME{Domains: []string{"mail.example.com", "pop.example.com"}, Email: "postmaster@example.com",
		DirectoryURL: "https://127.0.0.1:14000/dir", CAFile: ca, Challenge: ChallengeTLSALPN01, RenewBefore: 48 * time.Hour}
	if a == nil || !slices.Equal(a.Domains, want.Domains) || a.Email != want.Email || a.DirectoryURL != want.DirectoryURL ||
		a.CAFile != want.CAFile || len(a.CAPEM) == 0 || a.Challenge != want.Challenge || a.RenewBefore != want.RenewBefore {
		t.Errorf("acme = %+v, want %+v", a, want)
	}
	if !slices.Equal(cfg.Certificates[0].Names, want.Domains) {
		t.Errorf("names = %q", cfg.Certificates[0].Names)
	}
	d := cfg.Certificates[1].ACME
	if d.DirectoryURL != DefaultACMEDirectory || d.Challenge != ChallengeHTTP01 || d.RenewBefore != DefaultACMERenewBefore || d.CAFile != "" {
		t.Errorf("defaults = %+v", d)
	}
	if cfg.HTTP == nil || len(cfg.HTTP.Bindings) != 1 || cfg.HTTP.Bindings[0].Port() != 80 || cfg.HTTP.TLSBindings[0].Port() != 443 {
		t.Errorf("http = %+v", cfg.HTTP)
	}
	if cfg.CertificateFor("pop.example.com") != cfg.Certificates[0] {
		t.Error("pop.example.com is not covered by the ACME certificate")
	}
}
