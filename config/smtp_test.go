package config

import (
	"reflect"
	"testing"
	"time"
)

// TestSMTPDefaults checks the effective values of empty submission and
// inbound blocks, and that leaving them out turns the services off.
func TestSMTPDefaults(t *testing.T) {
	cfg, lines, _ := parseIn(t, t.TempDir(), head+"submission {\n}\ninbound {\n}\n")
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	wantSub := &Submission{
		X509CertificateName:      "mail.example.com",
		SSLBindings:              aps(t, "[::]:465", "0.0.0.0:465"),
		UnencryptedOrTLSBindings: aps(t, "[::]:587", "0.0.0.0:587"),
		ExternalConnectionSettings: []ConnSetting{
			{"mail.example.com", 465, MethodSSL}, {"mail.example.com", 587, MethodTLS}},
		MaxMessageSize:      35 << 20,
		MaxRecipients:       100,
		Timeout:             5 * time.Minute,
		MaxConnections:      500,
		MaxConnectionsPerIP: 20,
	}
	if !reflect.DeepEqual(cfg.Submission, wantSub) {
		t.Errorf("Submission =\n%+v\nwant\n%+v", cfg.Submission, wantSub)
	}
	wantIn := &Inbound{
		Bindings:            aps(t, "[::]:25", "0.0.0.0:25"),
		X509CertificateName: "mail.example.com",
		MaxMessageSize:      35 << 20,
		MaxRecipients:       100,
		Timeout:             5 * time.Minute,
		MaxConnections:      500,
		MaxConnectionsPerIP: 10,
		RateLimitPerIP:      60,
	}
	if !reflect.DeepEqual(cfg.Inbound, wantIn) {
		t.Errorf("Inbound =\n%+v\nwant\n%+v", cfg.Inbound, wantIn)
	}
	if cfg.POP3 != nil {
		t.Errorf("POP3 = %+v, want nil (no block)", cfg.POP3)
	}

	off, lines, _ := parseIn(t, t.TempDir(), head)
	if off == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	if off.Submission != nil || off.Inbound != nil {
		t.Errorf("services without blocks: Submission %+v, Inbound %+v; want nil", off.Submission, off.Inbound)
	}
}

// TestSMTPFull sets every submission and inbound attribute and checks every
// resulting field.
func TestSMTPFull(t *testing.T) {
	cd := newCertDir(t)
	src := `hostname = "mail.example.com"
domains  = ["example.com"]
certificate "files" {
  cert_file = "valid.crt"
  key_file  = "valid.key"
}
certificate "star" {
  cert_file = "wildcard.crt"
  key_file  = "wildcard.key"
}
submission {
  x509_certificate_name        = "SMTP.example.com"
  ssl_bindings                 = ["127.0.0.1:0", "[::1]:10465"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:587"]
  external_connection_settings = ["smtp.example.com:465:SSL", "smtp.example.com:587:tls"]
  internal_connection_settings = ["mail.example.com:587:tls"]
  max_message_size             = "10MB"
  max_recipients               = 10000
  timeout                      = "10m"
  max_connections              = 50
  max_connections_per_ip       = 50
}
inbound {
  bindings               = ["127.0.0.1:0", "[::1]:25"]
  x509_certificate_name  = "mx.example.com"
  max_message_size       = 1024
  max_recipients         = 1
  timeout                = "1h"
  max_connections        = 7
  max_connections_per_ip = 3
  rate_limit_per_ip      = 0
}
`
	cfg, lines, _ := parseIn(t, cd.dir, src)
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	wantSub := &Submission{
		X509CertificateName:        "smtp.example.com",
		SSLBindings:                aps(t, "127.0.0.1:0", "[::1]:10465"),
		UnencryptedOrTLSBindings:   aps(t, "127.0.0.1:587"),
		ExternalConnectionSettings: []ConnSetting{{"smtp.example.com", 465, MethodSSL}, {"smtp.example.com", 587, MethodTLS}},
		InternalConnectionSettings: []ConnSetting{{"mail.example.com", 587, MethodTLS}},
		MaxMessageSize:             10_000_000,
		MaxRecipients:              10000,
		Timeout:                    10 * time.Minute,
		MaxConnections:             50,
		MaxConnectionsPerIP:        50,
	}
	if !reflect.DeepEqual(cfg.Submission, wantSub) {
		t.Errorf("Submission =\n%+v\nwant\n%+v", cfg.Submission, wantSub)
	}
	wantIn := &Inbound{
		Bindings:            aps(t, "127.0.0.1:0", "[::1]:25"),
		X509CertificateName: "mx.example.com",
		MaxMessageSize:      1024,
		MaxRecipients:       1,
		Timeout:             time.Hour,
		MaxConnections:      7,
		MaxConnectionsPerIP: 3,
		RateLimitPerIP:      0,
	}
	if !reflect.DeepEqual(cfg.Inbound, wantIn) {
		t.Errorf("Inbound =\n%+v\nwant\n%+v", cfg.Inbound, wantIn)
	}
	// The names clients use resolve to the certificates that cover them.
	if c := cfg.CertificateFor(cfg.Submission.X509CertificateName); c == nil || c.Name != "star" {
		t.Errorf("submission certificate = %v, want star", c)
	}
	if c := cfg.CertificateFor(cfg.Inbound.X509CertificateName); c == nil || c.Name != "star" {
		t.Errorf("inbound certificate = %v, want star", c)
	}
}

// TestSubmissionOneBindingKind: writing only the STARTTLS list leaves
// implicit TLS off and derives one external setting from the hostname.
func TestSubmissionOneBindingKind(t *testing.T) {
	cfg, lines, _ := parseIn(t, t.TempDir(), head+"submission {\n  unencrypted_or_tls_bindings = [\"[::1]:10587\"]\n}\n")
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	if len(cfg.Submission.SSLBindings) != 0 || !reflect.DeepEqual(cfg.Submission.UnencryptedOrTLSBindings, aps(t, "[::1]:10587")) {
		t.Errorf("bindings = %v / %v", cfg.Submission.SSLBindings, cfg.Submission.UnencryptedOrTLSBindings)
	}
	if want := []ConnSetting{{"mail.example.com", 10587, MethodTLS}}; !reflect.DeepEqual(cfg.Submission.ExternalConnectionSettings, want) {
		t.Errorf("derived external = %v", cfg.Submission.ExternalConnectionSettings)
	}
}

// TestSendAs checks the decoded lists (default and written) and CanSendAs.
func TestSendAs(t *testing.T) {
	src := head + `mailbox "Alice@Example.com" {
  password_hash = "` + goodHash + `"
  aliases       = ["A.Smith@example.com"]
}
mailbox "bob@example.com" {
  password_hash = "` + goodHash + `"
  aliases       = ["b@example.com"]
  send_as       = ["BOB@example.com", "Bob.Private@Elsewhere.example"]
}
mailbox "carol@example.com" {
  password_hash = "` + goodHash + `"
  submission    = false
  send_as       = []
}
`
	cfg, lines, _ := parseIn(t, t.TempDir(), src)
	want := []string{`t.hcl:13:39: warning: The domain of send_as address "Bob.Private@Elsewhere.example" is not listed in domains; keep it only if the owner of bob@example.com owns that address.`}
	if cfg == nil || !reflect.DeepEqual(lines, want) {
		t.Fatalf("diagnostics = %q\nwant %q", lines, want)
	}
	for addr, wantList := range map[string][]string{
		"alice@example.com": {"alice@example.com", "a.smith@example.com"},
		"bob@example.com":   {"bob@example.com", "bob.private@elsewhere.example"},
		"carol@example.com": nil,
	} {
		if got := cfg.Mailbox(addr).SendAs; !reflect.DeepEqual(got, wantList) {
			t.Errorf("%s SendAs = %q, want %q", addr, got, wantList)
		}
	}

	for _, tc := range []struct {
		mailbox, addr string
		want          bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"ALICE@example.COM", "A.Smith@Example.com", true}, // case-insensitive on both sides
		{"alice@example.com", " alice@example.com ", true},
		{"alice@example.com", "bob@example.com", false},
		{"alice@example.com", "", false}, // the null reverse-path
		{"bob@example.com", "bob.private@elsewhere.example", true},
		{"bob@example.com", "b@example.com", false}, // an alias left out of a written send_as
		{"b@example.com", "bob@example.com", false}, // an alias is not a login name
		{"carol@example.com", "carol@example.com", false},
		{"dave@example.com", "dave@example.com", false},
	} {
		if got := cfg.CanSendAs(tc.mailbox, tc.addr); got != tc.want {
			t.Errorf("CanSendAs(%q, %q) = %v, want %v", tc.mailbox, tc.addr, got, tc.want)
		}
	}

	// Aliases still resolve to their mailbox.
	if m := cfg.Mailbox("B@EXAMPLE.com"); m == nil || m.Address != "bob@example.com" {
		t.Errorf("Mailbox(alias) = %v", m)
	}

	// A hand-built Config (no index) answers the same way.
	hand := &Config{Mailboxes: []*Mailbox{{Address: "x@example.com", Aliases: []string{"y@example.com"}, SendAs: []string{"y@example.com"}}}}
	if !hand.CanSendAs("X@example.com", "Y@example.com") || hand.CanSendAs("x@example.com", "x@example.com") || hand.CanSendAs("y@example.com", "y@example.com") {
		t.Error("CanSendAs on a hand-built Config is wrong")
	}
	var nilCfg *Config
	if nilCfg.CanSendAs("x@example.com", "x@example.com") {
		t.Error("nil Config allowed a sender")
	}
}
