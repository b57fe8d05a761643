package config

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

func aps(t *testing.T, ss ...string) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

// TestDefaults checks the effective values when the pop3 block is empty.
func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	cfg, lines, _ := parseIn(t, dir, "hostname = \"Mail.Example.com.\"\ncertificate \"dev\" {\n  self_signed = true\n}\npop3 {\n}\n")
	if cfg == nil {
		t.Fatalf("unexpected diagnostics: %q", lines)
	}
	if len(lines) != 0 {
		t.Errorf("diagnostics = %q, want none", lines)
	}
	if cfg.Hostname != "mail.example.com" {
		t.Errorf("Hostname = %q", cfg.Hostname)
	}
	if cfg.DataDir != "/var/lib/mailpost" {
		t.Errorf("DataDir = %q", cfg.DataDir)
	}
	want := &POP3{
		X509CertificateName:      "mail.example.com",
		SSLBindings:              aps(t, "[::]:995", "0.0.0.0:995"),
		UnencryptedOrTLSBindings: aps(t, "[::]:110", "0.0.0.0:110"),
		ExternalConnectionSettings: []ConnSetting{
			{"mail.example.com", 995, MethodSSL}, {"mail.example.com", 110, MethodTLS}},
		LoginType:               SecureLogin,
		PreAuthenticatedTimeout: 60 * time.Second,
		AuthenticatedTimeout:    30 * time.Minute,
		MaxConnections:          2000,
		MaxConnectionsPerIP:     20,
		MaxCommandSize:          512,
		Banner:                  "mailpost POP3 ready",
	}
	if !reflect.DeepEqual(cfg.POP3, want) {
		t.Errorf("POP3 =\n%+v\nwant\n%+v", cfg.POP3, want)
	}
	c := cfg.Certificates[0]
	if c.Name != "dev" || !c.SelfSigned || c.Static != nil || !reflect.DeepEqual(c.Names, []string{"mail.example.com"}) {
		t.Errorf("certificate = %+v", c)
	}
	if c.DefRange.Start.Line != 2 {
		t.Errorf("DefRange = %v", c.DefRange)
	}
}

// TestNoPOP3 checks that leaving the block out turns POP3 off and needs no
// certificate.
func TestNoPOP3(t *testing.T) {
	cfg, lines, _ := parseIn(t, t.TempDir(), "hostname = \"mail.example.com\"\n")
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	if cfg.POP3 != nil {
		t.Errorf("POP3 = %+v, want nil", cfg.POP3)
	}
}

// TestFullConfig sets every attribute and checks every resulting field.
func TestFullConfig(t *testing.T) {
	cd := newCertDir(t)
	src := `hostname = "mail.example.com"
data_dir = "state/db"
domains  = ["Example.com", "example.net"]
certificate "files" {
  cert_file = "valid.crt"
  key_file  = "valid.key"
}
certificate "star" {
  cert_file = "wildcard.crt"
  key_file  = "wildcard.key"
}
certificate "lab" {
  self_signed = true
  names = ["Mail.Lan.Example", "192.0.2.9"]
}
pop3 {
  x509_certificate_name        = "pop.example.com"
  ssl_bindings                 = ["127.0.0.1:0", "[::1]:10995"]
  unencrypted_or_tls_bindings  = []
  internal_connection_settings = ["mail.lan.example:10995:SSL"]
  login_type                   = "plain_text_login"
  pre_authenticated_timeout    = "1m30s"
  authenticated_timeout        = "1d"
  max_connections              = 10
  max_connections_per_ip       = 2
  max_command_size             = 255
  banner                       = "hello there"
}
mailbox "Alice@Example.com" {
  password_hash = "` + goodHash + `"
  aliases       = ["A.Smith@example.com", "alice@example.net"]
  quota         = "2GiB"
}
mailbox "bob@example.net" {
  pop3       = false
  submission = false
  quota      = 0
}
`
	cfg, lines, _ := parseIn(t, cd.dir, src)
	wantLines := []string{"t.hcl:34:9: warning: Mailbox bob@example.net has no password_hash, so nobody can log in to it."}
	if !reflect.DeepEqual(lines, wantLines) {
		t.Fatalf("diagnostics = %q\nwant %q", lines, wantLines)
	}
	if cfg.Filename != filepath.Join(cd.dir, "t.hcl") || string(cfg.Source) != src {
		t.Errorf("Filename/Source not kept: %q", cfg.Filename)
	}
	if want := filepath.Join(cd.dir, "state", "db"); cfg.DataDir != want {
		t.Errorf("DataDir = %q, want %q", cfg.DataDir, want)
	}
	if !reflect.DeepEqual(cfg.Domains, []string{"example.com", "example.net"}) {
		t.Errorf("Domains = %q", cfg.Domains)
	}
	if len(cfg.Certificates) != 3 {
		t.Fatalf("Certificates = %d", len(cfg.Certificates))
	}
	files := cfg.Certificates[0]
	if files.CertFile != filepath.Join(cd.dir, "valid.crt") || files.KeyFile != filepath.Join(cd.dir, "valid.key") {
		t.Errorf("paths = %q %q", files.CertFile, files.KeyFile)
	}
	if files.Static == nil || files.Static.Leaf == nil || !files.Static.Leaf.Equal(cd.leaves["valid"]) {
		t.Errorf("Static not loaded with its Leaf")
	}
	if want := []string{"mail.example.com", "mail.example.net", "192.0.2.7"}; !reflect.DeepEqual(files.Names, want) {
		t.Errorf("Names = %q, want %q", files.Names, want)
	}
	if want := []string{"mail.lan.example", "192.0.2.9"}; !reflect.DeepEqual(cfg.Certificates[2].Names, want) {
		t.Errorf("self-signed Names = %q, want %q", cfg.Certificates[2].Names, want)
	}
	want := &POP3{
		X509CertificateName:        "pop.example.com",
		SSLBindings:                aps(t, "127.0.0.1:0", "[::1]:10995"),
		ExternalConnectionSettings: []ConnSetting{{"mail.example.com", 0, MethodSSL}},
		InternalConnectionSettings: []ConnSetting{{"mail.lan.example", 10995, MethodSSL}},
		LoginType:                  PlainTextLogin,
		PreAuthenticatedTimeout:    90 * time.Second,
		AuthenticatedTimeout:       24 * time.Hour,
		MaxConnections:             10,
		MaxConnectionsPerIP:        2,
		MaxCommandSize:             255,
		Banner:                     "hello there",
	}
	if !reflect.DeepEqual(cfg.POP3, want) {
		t.Errorf("POP3 =\n%+v\nwant\n%+v", cfg.POP3, want)
	}
	wantMB := []*Mailbox{
		{Address: "alice@example.com", PasswordHash: goodHash, POP3: true, Submission: true,
			Aliases: []string{"a.smith@example.com", "alice@example.net"}, Quota: 2 << 30,
			SendAs: []string{"alice@example.com", "a.smith@example.com", "alice@example.net"}, RetentionDays: -1},
		{Address: "bob@example.net", SendAs: []string{"bob@example.net"}, RetentionDays: -1},
	}
	if !reflect.DeepEqual(cfg.Mailboxes, wantMB) {
		t.Errorf("Mailboxes = %+v %+v", *cfg.Mailboxes[0], *cfg.Mailboxes[1])
	}

	// Lookups.
	for _, a := range []string{"alice@example.com", "ALICE@example.COM", "a.smith@EXAMPLE.com", "alice@example.net"} {
		if m := cfg.Mailbox(a); m != cfg.Mailboxes[0] {
			t.Errorf("Mailbox(%q) = %v", a, m)
		}
	}
	if m := cfg.Mailbox("carol@example.com"); m != nil {
		t.Errorf("Mailbox(carol) = %v", m)
	}
	if !cfg.IsLocalDomain("EXAMPLE.NET") || !cfg.IsLocalDomain("example.com.") || cfg.IsLocalDomain("example.org") {
		t.Error("IsLocalDomain wrong")
	}
	for name, wantCert := range map[string]string{
		"mail.example.com": "files", "pop.example.com": "star", "MAIL.LAN.EXAMPLE": "lab",
		"192.0.2.7": "files", "192.0.2.9": "lab",
	} {
		if c := cfg.CertificateFor(name); c == nil || c.Name != wantCert {
			t.Errorf("CertificateFor(%q) = %v, want %s", name, c, wantCert)
		}
	}
	if c := cfg.CertificateFor("a.b.example.com"); c != nil {
		t.Errorf("CertificateFor(a.b.example.com) = %s, want nil", c.Name)
	}
}

// TestMailboxLookupWithoutIndex covers a Config built by hand.
func TestMailboxLookupWithoutIndex(t *testing.T) {
	m := &Mailbox{Address: "a@example.com", Aliases: []string{"b@example.com"}}
	c := &Config{Mailboxes: []*Mailbox{m}}
	if c.Mailbox("B@example.com") != m || c.Mailbox("A@EXAMPLE.COM") != m || c.Mailbox("c@example.com") != nil {
		t.Error("linear lookup wrong")
	}
	var nilCfg *Config
	if nilCfg.Mailbox("a@example.com") != nil || nilCfg.CertificateFor("x.example.com") != nil || nilCfg.IsLocalDomain("example.com") {
		t.Error("nil Config must answer nil/false")
	}
}

func TestCovers(t *testing.T) {
	c := &Certificate{Names: []string{"mail.example.com", "*.example.org", "192.0.2.1"}}
	for name, want := range map[string]bool{
		"mail.example.com":  true,
		"MAIL.example.COM.": true,
		"example.com":       false,
		"a.example.org":     true,
		"A.EXAMPLE.ORG":     true,
		"example.org":       false,
		".example.org":      false,
		"a.b.example.org":   false,
		"192.0.2.1":         true,
		"":                  false,
	} {
		if got := c.Covers(name); got != want {
			t.Errorf("Covers(%q) = %v, want %v", name, got, want)
		}
	}
	if (*Certificate)(nil).Covers("x.example.com") {
		t.Error("nil certificate covers something")
	}
}

func TestConnSettingString(t *testing.T) {
	for cs, want := range map[ConnSetting]string{
		{"mail.example.com", 995, MethodSSL}:  "mail.example.com:995:ssl",
		{"mail.example.com", 110, MethodTLS}:  "mail.example.com:110:tls",
		{"mail.example.com", 110, MethodNone}: "mail.example.com:110:",
	} {
		if got := cs.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		back, err := parseConnSetting(want)
		if err != nil || back != cs {
			t.Errorf("parseConnSetting(%q) = %v, %v", want, back, err)
		}
	}
}

// TestOnlyOneBindingKind: writing one list leaves the other kind empty.
func TestOnlyOneBindingKind(t *testing.T) {
	cfg, lines, _ := parseIn(t, t.TempDir(), head+"pop3 {\n  unencrypted_or_tls_bindings = [\"[::1]:10110\"]\n}\n")
	if cfg == nil {
		t.Fatalf("diagnostics: %q", lines)
	}
	if len(cfg.POP3.SSLBindings) != 0 || !reflect.DeepEqual(cfg.POP3.UnencryptedOrTLSBindings, aps(t, "[::1]:10110")) {
		t.Errorf("bindings = %v / %v", cfg.POP3.SSLBindings, cfg.POP3.UnencryptedOrTLSBindings)
	}
	if want := []ConnSetting{{"mail.example.com", 10110, MethodTLS}}; !reflect.DeepEqual(cfg.POP3.ExternalConnectionSettings, want) {
		t.Errorf("derived external = %v", cfg.POP3.ExternalConnectionSettings)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mailpost.hcl")
	writeFile(t, path, "hostname = \"mail.example.com\"\ndata_dir = \"data\"\n")
	cfg, diags := Load(path)
	if diags.HasErrors() || cfg == nil {
		t.Fatalf("Load: %v", diags)
	}
	if cfg.Filename != path || cfg.DataDir != filepath.Join(dir, "data") {
		t.Errorf("Filename %q DataDir %q", cfg.Filename, cfg.DataDir)
	}

	missing := filepath.Join(dir, "nope.hcl")
	cfg, diags = Load(missing)
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, diags, nil); err != nil {
		t.Fatal(err)
	}
	want := missing + ": error: Cannot read the configuration file " + missing + ": it does not exist.\n"
	if cfg != nil || buf.String() != want {
		t.Errorf("Load(missing) rendered %q, want %q", buf.String(), want)
	}
}

// TestWriteDiagnosticsSnippet checks the source line and caret, with a tab
// and a multi-byte character before the subject.
func TestWriteDiagnosticsSnippet(t *testing.T) {
	src := []byte("hostname = \"mail.example.com\"\ndomains = [\"é\", \t\"bad name\"]\n")
	_, diags := Parse("x.hcl", src)
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, diags, src); err != nil {
		t.Fatal(err)
	}
	want := "x.hcl:2:12: error: Domain \"é\" is not a valid DNS name.\n" +
		"    domains = [\"é\", \t\"bad name\"]\n" +
		"               ^^^\n" +
		"x.hcl:2:18: error: Domain \"bad name\" is not a valid DNS name.\n" +
		"    domains = [\"é\", \t\"bad name\"]\n" +
		"                    \t^^^^^^^^^^\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}

	// Diagnostics without a subject, or whose range lies outside src,
	// render without a snippet and without panicking.
	odd := hcl.Diagnostics{
		{Severity: hcl.DiagWarning, Summary: "Just a summary"},
		{Severity: hcl.DiagError, Summary: "S", Detail: "wrapped\ndetail  text", Subject: &hcl.Range{Filename: "f", Start: hcl.Pos{Line: 9, Column: 2, Byte: 999}, End: hcl.Pos{Byte: 5}}},
		nil,
	}
	buf.Reset()
	if err := WriteDiagnostics(&buf, odd, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if want := "warning: Just a summary.\nf:9:2: error: Wrapped detail text.\n"; buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

// TestDiagnosticsCarryRanges: every diagnostic from a bad file has a
// Subject, so a caller can always point at the line.
func TestDiagnosticsCarryRanges(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.hcl")
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, diags := Parse(f, src)
		for _, d := range diags {
			if d.Subject == nil || d.Subject.Start.Line < 1 || !strings.HasSuffix(d.Subject.Filename, ".hcl") {
				t.Errorf("%s: diagnostic without position: %v", f, d)
			}
		}
	}
}

// TestNullIsAbsent: null lists and scalars take their defaults.
func TestNullIsAbsent(t *testing.T) {
	cfg, lines, _ := parseIn(t, t.TempDir(), head+"pop3 {\n  ssl_bindings = null\n  unencrypted_or_tls_bindings = null\n  banner = null\n}\n")
	if cfg == nil {
		t.Fatalf("diagnostics: %q", lines)
	}
	if !reflect.DeepEqual(cfg.POP3.SSLBindings, aps(t, "[::]:995", "0.0.0.0:995")) || len(cfg.POP3.UnencryptedOrTLSBindings) != 2 || cfg.POP3.Banner != DefaultBanner {
		t.Errorf("null did not mean absent: %+v", cfg.POP3)
	}
}
