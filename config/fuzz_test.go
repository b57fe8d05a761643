package config

import (
	"bytes"
	"os"
	"path/filepath"
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
			_ = cfg.CertificateFor(cfg.Hostname)
			_ = cfg.IsLocalDomain("example.com")
			if cfg.POP3 != nil {
				for _, cs := range cfg.POP3.ExternalConnectionSettings {
					_ = cs.String()
				}
			}
		}
		_ = hcl.Diagnostics(nil)
	})
}
