package config

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// FuzzParse feeds arbitrary files to Parse: it must never panic, cfg must
// be nil exactly when there are errors, and every diagnostic must render as
// one line (plus its snippet) without panicking.
func FuzzParse(f *testing.F) {
	seeds := []string{
		head,
		head + "pop3 {\n}\n",
		`hostname = "mail.example.com"` + "\n" + `data_dir = "rel/dir"`,
		`hostname = var.x`,
		`hostname = upper("a")`,
		`hostname = "${"a"}.example.com"`,
		`hostname = null`,
		`hostname = ["a", 1]`,
		`hostname = {a = 1}`,
		"hostname = <<EOT\nmail.example.com\nEOT\n",
		`domains = ["example.com", "EXAMPLE.com", "bad domain"]`,
		"certificate \"a\" {\n cert_file = \"x.crt\"\n key_file = \"x.key\"\n}",
		"certificate \"a\" {\n self_signed = true\n names = [\"*.example.com\", \"192.0.2.1\", \"::1\"]\n}",
		"certificate {\n}\ncertificate \"a\" \"b\" {\n}",
		head + "pop3 {\n ssl_bindings = [\"[::]:995\", \"0.0.0.0:995\", \"localhost:1\", \"::1:2\", \"1.2.3.4:99999\"]\n unencrypted_or_tls_bindings = []\n}",
		head + "pop3 {\n external_connection_settings = [\"mail.example.com:995:ssl\", \"mail.example.com:110:tls\", \"mail.example.com:110:\", \"a:b:c:d\"]\n internal_connection_settings = [\"mail.lan:995:SSL\"]\n}",
		head + "pop3 {\n login_type = \"plain_text_login\"\n pre_authenticated_timeout = \"1d12h\"\n authenticated_timeout = \"0.5h\"\n max_connections = 1e30\n max_connections_per_ip = -1\n max_command_size = 255\n banner = \"hi\\u0000\"\n x509_certificate_name = \"mail.example.com\"\n}",
		head + "pop3 {\n}\npop3 {\n banner = 1\n}",
		head + "mailbox \"a@example.com\" {\n password_hash = \"" + goodHash + "\"\n pop3 = true\n submission = false\n aliases = [\"b@example.com\", \"a@example.com\"]\n quota = \"2GiB\"\n}",
		head + "mailbox \"\" {\n}\nmailbox \"x@\" {\n quota = \"1.5TB\"\n password_hash = \"$2b$10$x\"\n}",
		head + "submission {\n}\ninbound {\n}\n",
		head + "submission {\n x509_certificate_name = \"smtp.example.com\"\n ssl_bindings = [\"127.0.0.1:0\", \"[::1]:465\"]\n unencrypted_or_tls_bindings = [\"127.0.0.1:587\"]\n external_connection_settings = [\"mail.example.com:465:ssl\", \"mail.example.com:587:tls\", \"mail.example.com:587\"]\n internal_connection_settings = []\n max_message_size = \"35MiB\"\n max_recipients = 100\n timeout = \"5m\"\n max_connections = 500\n max_connections_per_ip = 20\n}",
		head + "submission {\n max_message_size = 512\n max_recipients = 1e9\n timeout = \"-1s\"\n}\nsubmission {\n}",
		head + "inbound {\n bindings = [\"[::]:25\", \"0.0.0.0:25\", \"[::]:25\"]\n x509_certificate_name = \"mx.example.com\"\n max_message_size = \"1GiB\"\n max_recipients = 10000\n timeout = \"1h\"\n max_connections = 1\n max_connections_per_ip = 2\n rate_limit_per_ip = 0\n}",
		"hostname = \"mail.example.com\"\ninbound {\n bindings = null\n rate_limit_per_ip = -1\n}\npop3 {\n ssl_bindings = [\"0.0.0.0:25\"]\n}",
		head + "mailbox \"a@example.com\" {\n send_as = [\"a@example.com\", \"A@EXAMPLE.COM\", \"x@elsewhere.example\", \"b@example.com\", \"\", 1]\n}\nmailbox \"b@example.com\" {\n send_as = []\n}\nmailbox \"c@example.com\" {\n send_as = \"c@example.com\"\n}",
		"hostname = \"mail.example.com\"\nbogus { }\nbogus = [for x in [1]: x]\n",
		"hostname = \"mail.example.com\" # \u00e9\t\r\n\x00\xff",
		"{",
		"hostname = \"",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	if files, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.hcl")); len(files) > 0 {
		for _, fn := range files {
			if b, err := os.ReadFile(fn); err == nil {
				f.Add(b)
			}
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, diags := Parse(filepath.Join(dir, "fuzz.hcl"), src)
		if (cfg == nil) != diags.HasErrors() {
			t.Fatalf("cfg nil = %v, HasErrors = %v", cfg == nil, diags.HasErrors())
		}
		var buf bytes.Buffer
		if err := WriteDiagnostics(&buf, diags, src); err != nil {
			t.Fatal(err)
		}
		if err := WriteDiagnostics(&buf, diags, nil); err != nil {
			t.Fatal(err)
		}
		for _, d := range diags {
			if s := Sentence(d); s == "" || strings.ContainsAny(s, "\r\n") {
				t.Fatalf("diagnostic does not render as one line: %q", s)
			}
			if d.Subject == nil {
				t.Fatalf("diagnostic without a position: %v", d)
			}
		}
		if cfg != nil {
			_ = cfg.Mailbox("a@example.com")
			_ = cfg.CanSendAs("a@example.com", "b@example.com")
			for _, m := range cfg.Mailboxes {
				if !cfg.CanSendAs(m.Address, m.Address) && slices.Contains(m.SendAs, m.Address) {
					t.Fatalf("CanSendAs(%q, itself) = false though SendAs lists it", m.Address)
				}
			}
			_ = cfg.CertificateFor(cfg.Hostname)
			_ = cfg.IsLocalDomain("example.com")
			if cfg.POP3 != nil {
				for _, cs := range cfg.POP3.ExternalConnectionSettings {
					_ = cs.String()
				}
			}
			if s := cfg.Submission; s != nil {
				for _, cs := range append(slices.Clone(s.ExternalConnectionSettings), s.InternalConnectionSettings...) {
					if cs.Method == MethodNone {
						t.Fatalf("submission accepted an unencrypted connection setting %s", cs)
					}
				}
				if s.MaxMessageSize < MinMaxMessageSize || s.MaxMessageSize > MaxMaxMessageSize {
					t.Fatalf("submission MaxMessageSize %d out of range", s.MaxMessageSize)
				}
			}
			if in := cfg.Inbound; in != nil && len(cfg.Domains) == 0 {
				t.Fatalf("inbound accepted without domains")
			}
		}
		_ = hcl.Diagnostics(nil)
	})
}
