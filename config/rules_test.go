package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// head is prepended to most table cases: five lines, so a case's own text
// starts on line 6.
const head = `hostname = "mail.example.com"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
}
`

const goodHash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"

// TestRules runs one HCL snippet per rule and compares the exact rendered
// diagnostics. cases with noHead supply the whole file.
func TestRules(t *testing.T) {
	cd := newCertDir(t)
	day := func(name string, after bool) string {
		l := cd.leaves[name]
		if after {
			return l.NotAfter.UTC().Format(timeFormat)
		}
		return l.NotBefore.UTC().Format(timeFormat)
	}
	cases := []struct {
		name   string
		noHead bool
		src    string
		want   []string
	}{
		// Top level.
		{"hostname missing", true, `domains = ["example.com"]`, []string{
			`t.hcl:1:1: error: The argument "hostname" is required, but no definition was found.`}},
		{"hostname missing, other checks still run", true, `domains = ["bad domain"]`, []string{
			`t.hcl:1:1: error: The argument "hostname" is required, but no definition was found.`,
			`t.hcl:1:12: error: Domain "bad domain" is not a valid DNS name.`}},
		{"hostname single label", true, `hostname = "mail"`, []string{
			`t.hcl:1:1: error: Hostname "mail" is not a fully qualified domain name such as mail.example.com.`}},
		{"hostname bad chars", true, `hostname = "mail_1.example.com"`, []string{
			`t.hcl:1:1: error: Hostname "mail_1.example.com" is not a fully qualified domain name such as mail.example.com.`}},
		{"hostname IP", true, `hostname = "192.0.2.1"`, []string{
			`t.hcl:1:1: error: Hostname "192.0.2.1" is not a fully qualified domain name such as mail.example.com.`}},
		{"hostname wrong type", true, `hostname = ["a"]`, []string{
			`t.hcl:1:12: error: The value of hostname has the wrong type: string required, but have tuple.`}},
		{"hostname variable", true, `hostname = var.name`, []string{
			`t.hcl:1:12: error: Variables may not be used here.`}},
		{"hostname function", true, `hostname = lower("X.EXAMPLE.COM")`, []string{
			`t.hcl:1:12: error: Functions may not be called here.`}},
		{"domains invalid and duplicate", true, "hostname = \"mail.example.com\"\ndomains = [\"ex ample.com\", \"example.com\", \"EXAMPLE.com\"]", []string{
			`t.hcl:2:12: error: Domain "ex ample.com" is not a valid DNS name.`,
			`t.hcl:2:43: error: Domain "example.com" is listed twice; the first is on line 2.`}},
		{"data_dir empty", false, `data_dir = ""`, []string{
			`t.hcl:6:1: error: The data_dir is empty; leave it out for the default /var/lib/mailpost.`}},
		{"unknown argument and block", false, "bogus = 1\nsmtp {\n}\nsubmission {\n  login_type = \"plain_text_login\"\n}\nmailbox \"a@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  sendas = []\n}", []string{
			`t.hcl:6:1: error: An argument named "bogus" is not expected here.`,
			`t.hcl:7:1: error: Blocks of type "smtp" are not expected here. Did you mean "http"?`,
			`t.hcl:10:3: error: An argument named "login_type" is not expected here.`,
			`t.hcl:14:3: error: An argument named "sendas" is not expected here. Did you mean "send_as"?`}},
		{"duplicate pop3 block", false, "pop3 {\n}\npop3 {\n}", []string{
			`t.hcl:8:1: error: Only one pop3 block is allowed; the first is on line 6.`}},
		{"syntax error", true, "hostname = \n", []string{
			`t.hcl:1:12: error: Expected the start of an expression, but found an invalid expression token.`}},

		// Certificates.
		{"certificate without source", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n}", []string{
			`t.hcl:2:1: error: Certificate "x" has no source; set cert_file and key_file, or self_signed = true.`}},
		{"certificate with two sources", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"valid.crt\"\n  key_file = \"valid.key\"\n  self_signed = true\n}", []string{
			`t.hcl:5:3: error: Certificate "x" sets both cert_file/key_file and self_signed = true; choose one source.`}},
		{"cert_file without key_file", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"valid.crt\"\n}\ncertificate \"y\" {\n  key_file = \"valid.key\"\n}", []string{
			`t.hcl:3:3: error: Certificate "x" sets cert_file but no key_file.`,
			`t.hcl:6:3: error: Certificate "y" sets key_file but no cert_file.`}},
		{"names on static certificate", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"valid.crt\"\n  key_file = \"valid.key\"\n  names = [\"a.example.com\"]\n}", []string{
			`t.hcl:5:3: error: The names attribute applies only to self_signed certificates; certificate "x" covers the names in its cert_file.`}},
		{"duplicate certificate name", false, "certificate \"dev\" {\n  self_signed = true\n}", []string{
			`t.hcl:6:13: error: A certificate named "dev" is already declared on line 3.`}},
		{"missing cert and key files", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"nope.crt\"\n  key_file = \"nope.key\"\n}", []string{
			`t.hcl:3:3: error: Cannot read cert_file "nope.crt": it does not exist.`,
			`t.hcl:4:3: error: Cannot read key_file "nope.key": it does not exist.`}},
		{"no certificate in PEM", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"garbage.crt\"\n  key_file = \"valid.key\"\n}", []string{
			`t.hcl:3:3: error: The cert_file "garbage.crt" contains no PEM certificate.`}},
		{"no key in PEM", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"valid.crt\"\n  key_file = \"nokey.key\"\n}", []string{
			`t.hcl:4:3: error: The key_file "nokey.key" contains no PEM private key.`}},
		{"unparsable key", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"valid.crt\"\n  key_file = \"garbage.key\"\n}", []string{
			`t.hcl:4:3: error: The private key in key_file "garbage.key" cannot be used: failed to parse private key.`}},
		{"expired certificate", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"expired.crt\"\n  key_file = \"expired.key\"\n}", []string{
			`t.hcl:3:3: error: The certificate in cert_file "expired.crt" expired on ` + day("expired", true) + `.`}},
		{"not yet valid certificate", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"future.crt\"\n  key_file = \"future.key\"\n}", []string{
			`t.hcl:3:3: error: The certificate in cert_file "future.crt" is not valid until ` + day("future", false) + `.`}},
		{"wrong key", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"wrongkey.crt\"\n  key_file = \"wrongkey.key\"\n}", []string{
			`t.hcl:4:3: error: The private key in key_file "wrongkey.key" does not match the certificate in cert_file "wrongkey.crt".`}},
		{"certificate expiring soon", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"soon.crt\"\n  key_file = \"soon.key\"\n}", []string{
			`t.hcl:3:3: warning: The certificate in cert_file "soon.crt" expires on ` + day("soon", true) + `, within 14 days; renew it.`}},
		{"self-signed bad names", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  self_signed = true\n  names = [\"ok.example.com\", \"bad name\"]\n}\ncertificate \"y\" {\n  self_signed = true\n  names = []\n}", []string{
			`t.hcl:4:30: error: "bad name" is neither a DNS name nor an IP address.`,
			`t.hcl:8:3: error: The names list is empty; list the names the certificate covers, or leave it out for the hostname.`}},

		// Coverage.
		{"pop3 without any certificate", true, "hostname = \"mail.example.com\"\npop3 {\n}", []string{
			`t.hcl:2:1: error: POP3 needs TLS (ssl_bindings always, STLS on the others) but no certificate block is declared; add one, self_signed = true is enough to start.`}},
		{"null means absent", true, "hostname = \"mail.example.com\"\ndata_dir = null\ncertificate \"dev\" {\n  self_signed = true\n  names = null\n}\npop3 {\n  ssl_bindings = null\n  unencrypted_or_tls_bindings = null\n  max_connections = null\n}", nil},
		{"pop3 without bindings needs no certificate", true, "hostname = \"mail.example.com\"\npop3 {\n  ssl_bindings = []\n}", nil},
		{"x509 name not covered", false, "pop3 {\n  x509_certificate_name = \"other.example.com\"\n}", []string{
			`t.hcl:7:3: error: No certificate covers x509_certificate_name "other.example.com".`}},
		{"default x509 name not covered", true, "hostname = \"mail.example.com\"\ncertificate \"o\" {\n  cert_file = \"other.crt\"\n  key_file = \"other.key\"\n}\npop3 {\n  external_connection_settings = [\"other.example.org:995:ssl\"]\n}", []string{
			`t.hcl:6:1: error: No certificate covers the hostname "mail.example.com", which x509_certificate_name defaults to.`}},
		{"derived external name not covered", true, "hostname = \"mail.example.com\"\ncertificate \"o\" {\n  cert_file = \"other.crt\"\n  key_file = \"other.key\"\n}\npop3 {\n  x509_certificate_name = \"other.example.org\"\n}", []string{
			`t.hcl:6:1: error: No certificate covers "mail.example.com", which external clients are told to use.`}},
		{"external and internal names not covered", false, "pop3 {\n  external_connection_settings = [\"mail.example.com:995:ssl\", \"pop.example.com:995:ssl\"]\n  internal_connection_settings = [\"mail.lan.example:995:ssl\"]\n}", []string{
			`t.hcl:7:63: error: No certificate covers "pop.example.com", which external clients are told to use.`,
			`t.hcl:8:35: warning: No certificate covers "mail.lan.example", so internal clients will see a name mismatch.`}},
		{"wildcard covers one label only", true, "hostname = \"mail.example.com\"\ncertificate \"w\" {\n  cert_file = \"wildcard.crt\"\n  key_file = \"wildcard.key\"\n}\npop3 {\n  external_connection_settings = [\"POP.example.com:995:ssl\", \"a.b.example.com:995:ssl\", \"example.com:995:ssl\"]\n}", []string{
			`t.hcl:7:62: error: No certificate covers "a.b.example.com", which external clients are told to use.`,
			`t.hcl:7:89: error: No certificate covers "example.com", which external clients are told to use.`}},
		{"broken certificate suppresses coverage errors", true, "hostname = \"mail.example.com\"\ncertificate \"x\" {\n  cert_file = \"nope.crt\"\n  key_file = \"valid.key\"\n}\npop3 {\n}", []string{
			`t.hcl:3:3: error: Cannot read cert_file "nope.crt": it does not exist.`}},

		// Bindings.
		{"bad bindings", false, "pop3 {\n  ssl_bindings = [\"mail.example.com:995\", \"127.0.0.1\", \"::1:995\", \"127.0.0.1:70000\", \"[::1]:x\"]\n}", []string{
			`t.hcl:7:19: error: The binding "mail.example.com:995" does not start with an IP address; host names are not allowed because mailpost never resolves names (use 0.0.0.0 or [::] for all addresses).`,
			`t.hcl:7:43: error: The binding "127.0.0.1" has no port; write IP:port such as 0.0.0.0:995 or [::]:995.`,
			`t.hcl:7:56: error: The binding "::1:995" needs brackets around its IPv6 address, such as [::]:995.`,
			`t.hcl:7:67: error: The binding "127.0.0.1:70000" has an invalid port "70000"; use 0 to 65535.`,
			`t.hcl:7:86: error: The binding "[::1]:x" has an invalid port "x"; use 0 to 65535.`}},
		{"duplicate binding across kinds", false, "pop3 {\n  ssl_bindings = [\"127.0.0.1:995\", \"[::]:995\", \"0.0.0.0:995\"]\n  unencrypted_or_tls_bindings = [\"127.0.0.001:110\", \"127.0.0.1:995\"]\n  external_connection_settings = [\"mail.example.com:995:ssl\"]\n}", []string{
			`t.hcl:8:34: error: The binding "127.0.0.001:110" does not start with an IP address; host names are not allowed because mailpost never resolves names (use 0.0.0.0 or [::] for all addresses).`,
			`t.hcl:8:53: error: The address 127.0.0.1:995 is already bound on line 7.`}},

		{"port 0 bindings never collide", false, "pop3 {\n  ssl_bindings = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n  unencrypted_or_tls_bindings = [\"127.0.0.1:0\"]\n}", nil},

		// Connection settings.
		{"bad connection settings", false, "pop3 {\n  external_connection_settings = [\"192.0.2.1:995:ssl\", \"mail.example.com:0:ssl\", \"mail.example.com:995:starttls\", \"a:b:c:d\", \"mail.example.com\"]\n}", []string{
			`t.hcl:7:35: error: The connection setting "192.0.2.1:995:ssl" does not start with a fully qualified domain name such as mail.example.com.`,
			`t.hcl:7:56: error: The connection setting "mail.example.com:0:ssl" has an invalid port "0"; use 1 to 65535.`,
			`t.hcl:7:82: error: The connection setting "mail.example.com:995:starttls" has an unknown method "starttls"; use ssl, tls or leave it empty for unencrypted.`,
			`t.hcl:7:115: error: The connection setting "a:b:c:d" is not in the form FQDN:port:method (method ssl, tls or empty).`,
			`t.hcl:7:126: error: The connection setting "mail.example.com" is not in the form FQDN:port:method (method ssl, tls or empty).`}},
		{"setting without binding of its kind", false, "pop3 {\n  ssl_bindings = [\"127.0.0.1:995\"]\n  external_connection_settings = [\"mail.example.com:995:ssl\", \"mail.example.com:110:TLS\"]\n  internal_connection_settings = [\"mail.example.com:995:\"]\n  login_type = \"plain_text_login\"\n}", []string{
			`t.hcl:8:63: error: The connection setting "mail.example.com:110:TLS" in external_connection_settings needs unencrypted_or_tls_bindings, but there are none.`,
			`t.hcl:9:35: error: The connection setting "mail.example.com:995:" in internal_connection_settings needs unencrypted_or_tls_bindings, but there are none.`}},
		{"port differs from bindings", false, "pop3 {\n  ssl_bindings = [\"127.0.0.1:10995\"]\n  unencrypted_or_tls_bindings = [\"127.0.0.1:0\"]\n  external_connection_settings = [\"mail.example.com:995:ssl\", \"mail.example.com:110:tls\"]\n}", []string{
			`t.hcl:9:35: warning: Port 995 in "mail.example.com:995:ssl" matches none of ssl_bindings; that is right only if a NAT or container port map forwards it.`}},
		{"unencrypted setting with secure_login", false, "pop3 {\n  external_connection_settings = [\"mail.example.com:110\", \"mail.example.com:110:tls\"]\n}", []string{
			`t.hcl:7:35: error: The connection setting "mail.example.com:110" in external_connection_settings is unencrypted but login_type is secure_login, so clients told to use it could never log in.`}},

		// Other POP3 settings.
		{"login_type invalid", false, "pop3 {\n  login_type = \"secure\"\n}", []string{
			`t.hcl:7:3: error: The login_type "secure" is not one of "secure_login" or "plain_text_login".`}},
		{"timeouts invalid", false, "pop3 {\n  pre_authenticated_timeout = \"0s\"\n  authenticated_timeout = \"-5m\"\n}\n", []string{
			`t.hcl:7:3: error: The pre_authenticated_timeout must be longer than zero.`,
			`t.hcl:8:3: error: The authenticated_timeout is invalid: the duration "-5m" is negative.`}},
		{"timeout unit unknown", false, "pop3 {\n  pre_authenticated_timeout = \"10 minutes\"\n  authenticated_timeout = 600\n}\n", []string{
			`t.hcl:7:3: error: The pre_authenticated_timeout is invalid: the duration "10 minutes" has an unknown unit "minutes"; use ns, us, ms, s, m, h or d.`,
			`t.hcl:8:3: error: The authenticated_timeout is invalid: the duration "600" lacks a unit; use ns, us, ms, s, m, h or d.`}},
		{"authenticated timeout below RFC 1939", false, "pop3 {\n  authenticated_timeout = \"5m\"\n}", []string{
			`t.hcl:7:3: warning: The authenticated_timeout "5m" is shorter than the 10 minutes RFC 1939 section 3 asks for.`}},
		{"limits out of range", false, "pop3 {\n  max_connections = 0\n  max_connections_per_ip = -1\n  max_command_size = 254\n}", []string{
			`t.hcl:7:3: error: The max_connections must be between 1 and 9223372036854775807, not 0.`,
			`t.hcl:8:3: error: The max_connections_per_ip must be between 1 and 9223372036854775807, not -1.`,
			`t.hcl:9:3: error: The max_command_size must be between 255 and 65536, not 254.`}},
		{"limits wrong type and too big", false, "pop3 {\n  max_connections = 1.5\n  max_command_size = 65537\n  max_connections_per_ip = 3000\n}", []string{
			`t.hcl:7:21: error: The value of max_connections has the wrong type: value must be a whole number, between -9223372036854775808 and 9223372036854775807.`,
			`t.hcl:8:3: error: The max_command_size must be between 255 and 65536, not 65537.`,
			`t.hcl:9:3: warning: The max_connections_per_ip (3000) is larger than the max_connections (2000), so only max_connections applies.`}},
		{"banner with newline", false, "pop3 {\n  banner = \"hello\\r\\n+OK forged\"\n}", []string{
			`t.hcl:7:3: error: The banner must be one line of text without control characters, because it is sent in the greeting.`}},
		{"x509 name invalid", false, "pop3 {\n  x509_certificate_name = \"*.example.com\"\n}", []string{
			`t.hcl:7:3: error: The x509_certificate_name "*.example.com" is not a fully qualified domain name.`}},

		// Mailboxes.
		{"mailbox names invalid", false, "mailbox \"alice\" {\n}\nmailbox \"@example.com\" {\n}\nmailbox \"a b@example.com\" {\n}\nmailbox \"" + strings.Repeat("x", 65) + "@example.com\" {\n}\nmailbox \"bob@example.org\" {\n}\nmailbox \"carol@bad_domain\" {\n}", []string{
			`t.hcl:6:9: error: Invalid mailbox name: "alice" is not an email address of the form local@domain.`,
			`t.hcl:8:9: error: Invalid mailbox name: the address "@example.com" has an empty local part.`,
			`t.hcl:10:9: error: Invalid mailbox name: the local part of "a b@example.com" contains a space or control character.`,
			`t.hcl:12:9: error: Invalid mailbox name: the local part of "` + strings.Repeat("x", 65) + `@example.com" is longer than 64 octets.`,
			`t.hcl:14:9: error: The domain of mailbox "bob@example.org" is not listed in domains.`,
			`t.hcl:16:9: error: Invalid mailbox name: the domain of "carol@bad_domain" is not a valid DNS name.`}},
		{"mailboxes without domains", true, "hostname = \"mail.example.com\"\nmailbox \"a@example.com\" {\n  password_hash = \"" + goodHash + "\"\n}", []string{
			`t.hcl:2:9: error: Mailboxes are declared but the domains list, which names the local domains, is empty.`}},
		{"duplicate addresses", false, "mailbox \"alice@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  aliases = [\"al@example.com\", \"AL@example.com\"]\n}\nmailbox \"ALICE@example.com\" {\n}\nmailbox \"bob@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  aliases = [\"Alice@Example.com\", \"al@example.com\", \"b@example.org\"]\n}", []string{
			`t.hcl:8:32: error: The address al@example.com is already used as an alias of alice@example.com on line 8.`,
			`t.hcl:10:9: error: The address alice@example.com is already used as a mailbox on line 6.`,
			`t.hcl:14:14: error: The address alice@example.com is already used as a mailbox on line 6.`,
			`t.hcl:14:35: error: The address al@example.com is already used as an alias of alice@example.com on line 8.`,
			`t.hcl:14:53: error: The domain of alias "b@example.org" is not listed in domains.`}},
		{"password hash", false, "mailbox \"a@example.com\" {\n  password_hash = \"secret\"\n}\nmailbox \"b@example.com\" {\n}\nmailbox \"c@example.com\" {\n  password_hash = \"\"\n}", []string{
			`t.hcl:7:3: error: The password_hash of a@example.com is not usable: malformed password hash: unknown scheme (want $argon2id$ or bcrypt $2a$/$2b$/$2y$).`,
			`t.hcl:9:9: warning: Mailbox b@example.com has no password_hash, so nobody can log in to it.`,
			`t.hcl:11:9: warning: Mailbox c@example.com has no password_hash, so nobody can log in to it.`}},
		{"quota invalid", false, "mailbox \"a@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  quota = \"2 gigs\"\n}\nmailbox \"b@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  quota = \"-1\"\n}", []string{
			`t.hcl:8:3: error: The quota is invalid: the size "2 gigs" has an unknown unit "gigs"; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB.`,
			`t.hcl:12:3: error: The quota is invalid: the size "-1" is negative.`}},
		// Submission: the listener rules are POP3's (shared code), with
		// unencrypted settings always refused.
		{"submission without any certificate", true, "hostname = \"mail.example.com\"\nsubmission {\n}", []string{
			`t.hcl:2:1: error: Submission needs TLS (ssl_bindings always, STARTTLS before AUTH on the others) but no certificate block is declared; add one, self_signed = true is enough to start.`}},
		{"submission defaults are clean", false, "submission {\n}\npop3 {\n}\ninbound {\n}", nil},
		{"submission unencrypted settings always refused", false, "submission {\n  external_connection_settings = [\"mail.example.com:587\", \"mail.example.com:465:ssl\"]\n  internal_connection_settings = [\"mail.example.com:587:\"]\n}", []string{
			`t.hcl:7:35: error: The connection setting "mail.example.com:587" in external_connection_settings is unencrypted but submission accepts AUTH only over TLS, so clients told to use it could never log in.`,
			`t.hcl:8:35: error: The connection setting "mail.example.com:587:" in internal_connection_settings is unencrypted but submission accepts AUTH only over TLS, so clients told to use it could never log in.`}},
		{"submission settings against bindings", false, "submission {\n  ssl_bindings = [\"127.0.0.1:465\"]\n  external_connection_settings = [\"mail.example.com:465:ssl\", \"mail.example.com:587:tls\", \"mail.example.com:4650:ssl\"]\n  internal_connection_settings = [\"mail.lan.example:465:ssl\"]\n}", []string{
			`t.hcl:8:63: error: The connection setting "mail.example.com:587:tls" in external_connection_settings needs unencrypted_or_tls_bindings, but there are none.`,
			`t.hcl:8:91: warning: Port 4650 in "mail.example.com:4650:ssl" matches none of ssl_bindings; that is right only if a NAT or container port map forwards it.`,
			`t.hcl:9:35: warning: No certificate covers "mail.lan.example", so internal clients will see a name mismatch.`}},
		{"submission names not covered", false, "submission {\n  x509_certificate_name = \"smtp.example.org\"\n  external_connection_settings = [\"smtp.example.org:465:ssl\"]\n}", []string{
			`t.hcl:7:3: error: No certificate covers x509_certificate_name "smtp.example.org".`,
			`t.hcl:8:35: error: No certificate covers "smtp.example.org", which external clients are told to use.`}},
		{"submission default name not covered", true, "hostname = \"mail.example.com\"\ncertificate \"o\" {\n  cert_file = \"other.crt\"\n  key_file = \"other.key\"\n}\nsubmission {\n  external_connection_settings = [\"other.example.org:465:ssl\"]\n}", []string{
			`t.hcl:6:1: error: No certificate covers the hostname "mail.example.com", which x509_certificate_name defaults to.`}},
		{"submission covered by wildcard", true, "hostname = \"mail.example.com\"\ncertificate \"w\" {\n  cert_file = \"wildcard.crt\"\n  key_file = \"wildcard.key\"\n}\nsubmission {\n}", nil},
		{"broken certificate suppresses submission and inbound coverage", true, "hostname = \"mail.example.com\"\ndomains = [\"example.com\"]\ncertificate \"x\" {\n  cert_file = \"nope.crt\"\n  key_file = \"valid.key\"\n}\nsubmission {\n}\ninbound {\n}", []string{
			`t.hcl:4:3: error: Cannot read cert_file "nope.crt": it does not exist.`}},
		{"submission limits", false, "submission {\n  max_message_size = \"512\"\n  max_recipients = 0\n  timeout = \"1m\"\n  max_connections = 10\n}", []string{
			`t.hcl:7:3: error: The max_message_size must be between 1KiB and 1GiB, not "512".`,
			`t.hcl:8:3: error: The max_recipients must be between 1 and 10000, not 0.`,
			`t.hcl:9:3: warning: The timeout "1m" is shorter than the 5 minutes RFC 5321 section 4.5.3.2.7 asks a server to wait for the next command.`,
			`t.hcl:10:3: warning: The max_connections (10) is smaller than the default max_connections_per_ip (20), so only max_connections applies.`}},
		{"pop3 per-IP default above a written max_connections", false, "pop3 {\n  max_connections = 5\n}", []string{
			`t.hcl:7:3: warning: The max_connections (5) is smaller than the default max_connections_per_ip (20), so only max_connections applies.`}},
		{"duplicate submission and inbound blocks", false, "submission {\n}\nsubmission {\n}\ninbound {\n}\ninbound {\n}", []string{
			`t.hcl:8:1: error: Only one submission block is allowed; the first is on line 6.`,
			`t.hcl:12:1: error: Only one inbound block is allowed; the first is on line 10.`}},
		{"bindings unique across services", false, "pop3 {\n  ssl_bindings = [\"127.0.0.1:465\"]\n}\nsubmission {\n  unencrypted_or_tls_bindings = [\"127.0.0.1:465\"]\n}\ninbound {\n  bindings = [\"127.0.0.1:465\", \"[::]:25\"]\n}", []string{
			`t.hcl:10:34: error: The address 127.0.0.1:465 is already bound on line 7.`,
			`t.hcl:13:15: error: The address 127.0.0.1:465 is already bound on line 7.`}},
		{"duplicate binding reported at the later block", false, "inbound {\n  bindings = [\"[::]:465\"]\n}\nsubmission {\n}", []string{
			`t.hcl:7:3: warning: No binding is on port 25, the only port other servers deliver to; that is right only if a NAT or container port map forwards it.`,
			`t.hcl:9:1: error: The address [::]:465 is already bound on line 7.`}},
		{"services without bindings", false, "submission {\n  ssl_bindings = []\n  unencrypted_or_tls_bindings = [\"[::1]:0\"]\n}\ninbound {\n  bindings = []\n}", nil},
		{"null means absent in submission, inbound and send_as", false, "submission {\n  ssl_bindings = null\n  unencrypted_or_tls_bindings = null\n  external_connection_settings = null\n  max_message_size = null\n}\ninbound {\n  bindings = null\n}\nmailbox \"a@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  send_as = null\n}", nil},

		// Inbound.
		{"inbound limits", false, "inbound {\n  max_message_size = \"2GiB\"\n  max_recipients = 10001\n  timeout = \"0s\"\n  max_connections = 0\n  max_connections_per_ip = 0\n  rate_limit_per_ip = -1\n}", []string{
			`t.hcl:7:3: error: The max_message_size must be between 1KiB and 1GiB, not "2GiB".`,
			`t.hcl:8:3: error: The max_recipients must be between 1 and 10000, not 10001.`,
			`t.hcl:9:3: error: The timeout must be longer than zero.`,
			`t.hcl:10:3: error: The max_connections must be between 1 and 9223372036854775807, not 0.`,
			`t.hcl:11:3: error: The max_connections_per_ip must be between 1 and 9223372036854775807, not 0.`,
			`t.hcl:12:3: error: The rate_limit_per_ip must be between 0 and 9223372036854775807, not -1.`}},
		{"inbound unparsable values", false, "inbound {\n  max_message_size = \"lots\"\n  timeout = \"forever\"\n  rate_limit_per_ip = 0\n  max_connections = 5\n}", []string{
			`t.hcl:7:3: error: The max_message_size is invalid: the size "lots" does not start with a number.`,
			`t.hcl:8:3: error: The timeout is invalid: the duration "forever" is not a number followed by a unit (such as 30s, 10m, 1d12h).`,
			`t.hcl:10:3: warning: The max_connections (5) is smaller than the default max_connections_per_ip (10), so only max_connections applies.`}},
		{"inbound wrong types", false, "inbound {\n  bindings = [\"127.0.0.1:0\"]\n  x509_certificate_name = \"mx_1.example.com\"\n  max_recipients = \"many\"\n}", []string{
			`t.hcl:8:3: error: The x509_certificate_name "mx_1.example.com" is not a fully qualified domain name.`,
			`t.hcl:9:21: error: The value of max_recipients has the wrong type: a number is required.`}},
		{"inbound without domains", true, "hostname = \"mail.example.com\"\ninbound {\n}", []string{
			`t.hcl:2:1: error: Inbound mail is enabled but the domains list is empty, so there is nothing to receive mail for; list the local domains in domains.`,
			`t.hcl:2:1: warning: No certificate block is declared, so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted; add a certificate covering "mail.example.com".`}},
		{"inbound without certificate is only a warning", true, "hostname = \"mail.example.com\"\ndomains = [\"example.com\"]\ninbound {\n}", []string{
			`t.hcl:3:1: warning: No certificate block is declared, so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted; add a certificate covering "mail.example.com".`}},
		{"inbound name not covered, port not 25", false, "inbound {\n  x509_certificate_name = \"mx.example.org\"\n  bindings = [\"127.0.0.1:2525\"]\n}", []string{
			`t.hcl:7:3: warning: No certificate covers x509_certificate_name "mx.example.org", so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted.`,
			`t.hcl:8:3: warning: No binding is on port 25, the only port other servers deliver to; that is right only if a NAT or container port map forwards it.`}},
		{"inbound default name not covered", true, "hostname = \"mail.example.com\"\ndomains = [\"example.com\"]\ncertificate \"o\" {\n  cert_file = \"other.crt\"\n  key_file = \"other.key\"\n}\ninbound {\n}", []string{
			`t.hcl:7:1: warning: No certificate covers the hostname "mail.example.com", which x509_certificate_name defaults to, so inbound SMTP cannot offer STARTTLS and mail from other servers arrives unencrypted.`}},

		// send_as.
		{"send_as rules", false, "mailbox \"alice@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  aliases = [\"a.smith@example.com\"]\n  send_as = [\"Alice@Example.com\", \"alice@gmail.com\", \"bob@example.com\", \"b@example.com\", \"not an address\", \"ALICE@example.com\"]\n}\nmailbox \"bob@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  aliases = [\"b@example.com\"]\n  send_as = []\n}\nmailbox \"carol@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  submission = false\n  send_as = []\n}", []string{
			`t.hcl:9:35: warning: The domain of send_as address "alice@gmail.com" is not listed in domains; keep it only if the owner of alice@example.com owns that address.`,
			`t.hcl:9:54: warning: Mailbox alice@example.com may send as bob@example.com, the address of mailbox bob@example.com.`,
			`t.hcl:9:73: warning: Mailbox alice@example.com may send as b@example.com, an alias of mailbox bob@example.com.`,
			`t.hcl:9:90: error: Invalid send_as address: "not an address" is not an email address of the form local@domain.`,
			`t.hcl:9:108: warning: The address alice@example.com is listed twice in the send_as of alice@example.com.`,
			`t.hcl:14:3: warning: Mailbox bob@example.com may submit mail but its send_as list is empty, so every message it sends is refused; list its addresses, or set submission = false.`}},
		{"send_as bad entries", false, "mailbox \"a@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  send_as = [\"x@\", 5]\n}\nmailbox \"b@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  send_as = \"b@example.com\"\n}", []string{
			`t.hcl:8:14: error: Invalid send_as address: the domain of "x@" is not a valid DNS name.`,
			`t.hcl:8:20: error: Invalid send_as address: "5" is not an email address of the form local@domain.`,
			`t.hcl:12:14: error: The value of send_as has the wrong type: list of string required, but have string.`}},
		{"send_as of a rejected mailbox names nobody", false, "mailbox \"bad name\" {\n  send_as = [\"bob@example.com\"]\n}\nmailbox \"bob@example.com\" {\n  password_hash = \"" + goodHash + "\"\n}", []string{
			`t.hcl:6:9: error: Invalid mailbox name: "bad name" is not an email address of the form local@domain.`}},
		{"mailbox flags wrong type", false, "mailbox \"a@example.com\" {\n  password_hash = \"" + goodHash + "\"\n  pop3 = \"maybe\"\n}", []string{
			`t.hcl:8:11: error: The value of pop3 has the wrong type: a bool is required.`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if !tc.noHead {
				src = head + src
			}
			_, got, _ := parseIn(t, cd.dir, src)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("diagnostics differ\n got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	_ = fmt.Sprint
	_ = time.Now
}
