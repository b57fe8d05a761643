package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mailpost/config"
	"mailpost/probe"
	"mailpost/server"
)

func roundtripConfig(certFile, keyFile string) string {
	return fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]

certificate "test" {
  cert_file = %q
  key_file  = %q
}

pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}

submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}

mailbox "alice@example.com" {
  password_hash = %q
}
`, certFile, keyFile, demoHash)
}

// The built binary against `mailpost serve`, as an operator runs it from
// another shell: password on stdin, ports learnt from the running server.
func TestTestRoundtripCommand(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, roundtripConfig(certFile, keyFile))
	in := startServe(t, dir)
	sub, pops := in.addrs["submission"], in.addrs["pop3s"]

	// Trusting the test CA, -strict passes: every step is ok.
	out, errOut, code := mailpost(t, "demo-password\n", "test", "roundtrip", "-config", in.cfgPath,
		"-user", "alice@example.com", "-ca-file", caFile, "-strict")
	if code != 0 {
		t.Fatalf("roundtrip: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("mailpost test roundtrip:\n%s", out)
	for _, want := range []string{
		"submission " + sub + " (tls), POP3 " + pops + " (ssl)",
		"  ok ", "connect submission " + sub, "STARTTLS", "valid for mail.example.com",
		"AUTH PLAIN", "MAIL/RCPT/DATA", "connect pop3s " + pops, "find message", "RETR", "DELE+QUIT",
		"\nOK in ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "WARN") || strings.Contains(out, "FAIL") || strings.Contains(out, "demo-password") {
		t.Errorf("output:\n%s", out)
	}

	// With the system roots the private CA is unknown: a warning, exit 0;
	// -strict makes it exit 1.
	out, errOut, code = mailpost(t, "demo-password\n", "test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com")
	if code != 0 || !strings.Contains(out, "  WARN ") || !strings.Contains(out, "signed by an unknown authority") {
		t.Errorf("untrusted CA without -strict: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = mailpost(t, "demo-password\n", "test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com", "-strict")
	if code != 1 || !strings.Contains(out, "-strict: warnings count as failures") {
		t.Errorf("untrusted CA with -strict: exit %d\n%s%s", code, out, errOut)
	}

	// A wrong password from -password-file: AUTH fails with the server's
	// reply, and POP3 is not tried.
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("wrong-password\nsecond line ignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = mailpost(t, "", "test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com", "-password-file", pwFile)
	if code != 1 || !strings.Contains(out, "  FAIL ") || !strings.Contains(out, "rejected: 535") || strings.Contains(out, "pop3") {
		t.Errorf("wrong password: exit %d\n%s%s", code, out, errOut)
	}

	// -host keeps the ports; nothing listens on [::1] here.
	out, errOut, code = mailpost(t, "demo-password\n", "test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com", "-host", "::1")
	_, port, _ := net.SplitHostPort(sub)
	if code != 1 || !strings.Contains(out, "connect submission [::1]:"+port) || !strings.Contains(out, "FAIL") {
		t.Errorf("-host ::1: exit %d\n%s%s", code, out, errOut)
	}

	// Usage errors exit 2; there is no flag that takes the password.
	for _, args := range [][]string{
		{"test"},
		{"test", "pop3"},
		{"test", "roundtrip", "-config", in.cfgPath},
		{"test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com", "-password", "demo-password"},
		{"test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com", "extra"},
	} {
		if _, errOut, code := mailpost(t, "demo-password\n", args...); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", args, code, errOut)
		}
	}
	if _, errOut, code := mailpost(t, "", "test", "roundtrip", "-config", in.cfgPath, "-user", "alice@example.com"); code != 2 || !strings.Contains(errOut, "empty password") {
		t.Errorf("no password: exit %d\n%s", code, errOut)
	}
	in.stop()
}

// Which addresses the command dials, from the file alone or with a running
// server's listeners.
func TestRoundtripEndpoints(t *testing.T) {
	base := `
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
  names = ["mail.example.com", "pop.example.com"]
}
mailbox "alice@example.com" {}
`
	parse := func(t *testing.T, blocks string) *config.Config {
		t.Helper()
		dir := t.TempDir()
		cfg, diags := config.Parse(filepath.Join(dir, "mailpost.hcl"), []byte(base+blocks))
		if diags.HasErrors() {
			t.Fatalf("config: %v", diags)
		}
		return cfg
	}
	t.Run("defaults", func(t *testing.T) {
		// Exchange-style defaults: [::] first, dialled on [::1].
		cfg := parse(t, "pop3 {}\nsubmission {}\n")
		sub, pop, err := roundtripEndpoints(cfg, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		want := probe.Endpoint{Addr: "[::1]:587", Method: "tls", ServerName: "mail.example.com"}
		if sub != want {
			t.Errorf("submission = %+v, want %+v", sub, want)
		}
		want = probe.Endpoint{Addr: "[::1]:995", Method: "ssl", ServerName: "mail.example.com"}
		if pop != want {
			t.Errorf("pop3 = %+v, want %+v", pop, want)
		}
	})
	t.Run("fallbacks and certificate name", func(t *testing.T) {
		cfg := parse(t, `
pop3 {
  ssl_bindings = []
  unencrypted_or_tls_bindings = ["0.0.0.0:1110"]
  external_connection_settings = ["mail.example.com:1110:tls"]
  x509_certificate_name = "pop.example.com"
}
submission {
  ssl_bindings = ["10.1.2.3:1465"]
  unencrypted_or_tls_bindings = []
  external_connection_settings = ["mail.example.com:1465:ssl"]
}`)
		sub, pop, err := roundtripEndpoints(cfg, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if want := (probe.Endpoint{Addr: "10.1.2.3:1465", Method: "ssl", ServerName: "mail.example.com"}); sub != want {
			t.Errorf("submission = %+v, want %+v", sub, want)
		}
		if want := (probe.Endpoint{Addr: "127.0.0.1:1110", Method: "tls", ServerName: "pop.example.com"}); pop != want {
			t.Errorf("pop3 = %+v, want %+v", pop, want)
		}
		// -host replaces the host, keeps the port; names are not resolved here.
		sub, pop, _ = roundtripEndpoints(cfg, nil, "mail.example.com")
		if sub.Addr != "mail.example.com:1465" || pop.Addr != "mail.example.com:1110" {
			t.Errorf("-host: %s, %s", sub.Addr, pop.Addr)
		}
		sub, _, _ = roundtripEndpoints(cfg, nil, "[2001:db8::1]")
		if sub.Addr != "[2001:db8::1]:1465" {
			t.Errorf("-host with an IPv6 literal: %s", sub.Addr)
		}
	})
	t.Run("ephemeral ports", func(t *testing.T) {
		cfg := parse(t, `
pop3 {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:995:ssl"]
}
submission {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:587:tls"]
}`)
		if _, _, err := roundtripEndpoints(cfg, nil, ""); err == nil || !strings.Contains(err.Error(), "ephemeral port") {
			t.Errorf("port 0 with no running server: %v", err)
		}
		// Keys are the configured addresses; repeated port 0 gets #n.
		running := []server.ListenerInfo{
			{Key: "127.0.0.1:0", Proto: "pop3s", Addr: "127.0.0.1:40001"},
			{Key: "127.0.0.1:0#2", Proto: "pop3", Addr: "127.0.0.1:40002"},
			{Key: "127.0.0.1:0#3", Proto: "submissions", Addr: "127.0.0.1:40003"},
			{Key: "127.0.0.1:0#4", Proto: "submission", Addr: "127.0.0.1:40004"},
		}
		sub, pop, err := roundtripEndpoints(cfg, running, "")
		if err != nil {
			t.Fatal(err)
		}
		if pop.Addr != "127.0.0.1:40001" || sub.Addr != "127.0.0.1:40004" {
			t.Errorf("pop3 = %s, submission = %s; want the running pop3s and submission listeners", pop.Addr, sub.Addr)
		}
	})
	t.Run("missing blocks", func(t *testing.T) {
		if _, _, err := roundtripEndpoints(parse(t, "pop3 {}\n"), nil, ""); err == nil || !strings.Contains(err.Error(), "no submission block") {
			t.Errorf("no submission: %v", err)
		}
		if _, _, err := roundtripEndpoints(parse(t, "submission {}\n"), nil, ""); err == nil || !strings.Contains(err.Error(), "no pop3 block") {
			t.Errorf("no pop3: %v", err)
		}
	})
}

// tableResolver answers A/AAAA from a table; every other name, MX and SRV
// does not exist. The remote checks in these tests never reach the
// machine's resolver.
type tableResolver map[string][]string

func (r tableResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (r tableResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r tableResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	return "", nil, &net.DNSError{Err: "no such host", Name: "_" + service + "._" + proto + "." + name, IsNotFound: true}
}

// runTestIn runs `mailpost test ARGS` in-process with res as the resolver.
func runTestIn(res probe.Resolver, stdin string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := runTest(args, strings.NewReader(stdin), &out, &errb, res)
	return out.String(), errb.String(), code
}

// `mailpost test pop3|smtp|roundtrip -host NAME` against `mailpost serve`,
// the name resolved by a table to 127.0.0.1 (and, for one name, also to
// 127.0.0.2 where nothing listens).
func TestTestRemoteCommands(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, roundtripConfig(certFile, keyFile))
	in := startServe(t, dir)
	port := func(proto string) string {
		_, p, err := net.SplitHostPort(in.addrs[proto])
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		return p
	}
	res := tableResolver{
		"mail.example.com": {"127.0.0.1"},
		"two.example.com":  {"127.0.0.1", "127.0.0.2"},
		"pop.example.org":  {"127.0.0.1"},
	}

	// POP3 over STLS, logged in, trusted: exit 0 even with -strict.
	out, errOut, code := runTestIn(res, "demo-password\n", "pop3", "-host", "mail.example.com", "-port", port("pop3"),
		"-method", "tls", "-user", "alice@example.com", "-ca-file", caFile, "-strict")
	t.Logf("test pop3:\n%s", out)
	if code != 0 {
		t.Fatalf("pop3: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"POP3 at mail.example.com:" + port("pop3") + " (tls) as alice@example.com\n",
		"DNS mail.example.com", "A 127.0.0.1", "connect pop3 127.0.0.1:" + port("pop3"), "STLS", "valid for mail.example.com",
		"capabilities", "SASL PLAIN", "AUTH PLAIN as alice@example.com; maildrop: 0 messages", "\nOK in ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("pop3 output lacks %q", want)
		}
	}

	// smtp with -domain and no user: no MX is a warning (exit 0), which
	// -strict turns into exit 1; no password is asked for.
	args := []string{"smtp", "-host", "mail.example.com", "-port", port("submissions"), "-domain", "example.com", "-ca-file", caFile}
	out, errOut, code = runTestIn(res, "", args...)
	t.Logf("test smtp:\n%s", out)
	if code != 0 || !strings.Contains(out, "(ssl) without logging in (no -user); no mail is sent") ||
		!strings.Contains(out, "WARN") || !strings.Contains(out, "no MX record") ||
		!strings.Contains(out, "_submissions._tcp.example.com") || !strings.Contains(out, "AUTH PLAIN LOGIN") || strings.Contains(out, "AUTH PLAIN  ") {
		t.Errorf("smtp: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code = runTestIn(res, "", append(args, "-strict")...); code != 1 || !strings.Contains(out, "-strict: warnings count as failures") {
		t.Errorf("smtp -strict: exit %d\n%s", code, out)
	}

	// A name that does not resolve, a name with a dead address, a
	// certificate for another name, a wrong password.
	out, _, code = runTestIn(res, "", "pop3", "-host", "nowhere.example.com")
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "no address for nowhere.example.com") {
		t.Errorf("unresolvable name: exit %d\n%s", code, out)
	}
	out, _, code = runTestIn(res, "", "smtp", "-host", "two.example.com", "-port", port("submission"), "-method", "tls", "-ca-file", caFile)
	if code != 1 || !strings.Contains(out, "connection refused: nothing listens on 127.0.0.2:"+port("submission")) ||
		strings.Count(out, "  ok ") != 4 || !strings.Contains(out, "capabilities") || !strings.Contains(out, `FAILED at "connect submission 127.0.0.2:`+port("submission")+`" after`) {
		t.Errorf("one address down: exit %d\n%s", code, out)
	}
	out, _, code = runTestIn(res, "", "pop3", "-host", "pop.example.org", "-port", port("pop3s"), "-ca-file", caFile)
	if code != 0 || !strings.Contains(out, "certificate is valid for mail.example.com, not pop.example.org") {
		t.Errorf("name mismatch: exit %d\n%s", code, out)
	}
	out, _, code = runTestIn(res, "wrong-password\n", "smtp", "-host", "mail.example.com", "-port", port("submission"), "-method", "tls",
		"-user", "alice@example.com", "-ca-file", caFile)
	if code != 1 || !strings.Contains(out, "rejected: 535") || strings.Contains(out, "wrong-password") {
		t.Errorf("wrong password: exit %d\n%s", code, out)
	}

	// The round trip by name on the configured ports: resolved, then sent,
	// read back and deleted, the certificate judged for the name.
	out, errOut, code = runTestIn(res, "demo-password\n", "roundtrip", "-config", in.cfgPath, "-host", "mail.example.com",
		"-user", "alice@example.com", "-ca-file", caFile, "-strict")
	t.Logf("test roundtrip -host:\n%s", out)
	if code != 0 || !strings.Contains(out, "DNS mail.example.com") || !strings.Contains(out, "DELE+QUIT") {
		t.Errorf("roundtrip -host name: exit %d\n%s%s", code, out, errOut)
	}

	// Usage errors exit 2.
	for _, args := range [][]string{
		{"pop3"},
		{"smtp", "-host", "mail.example.com", "-method", "plain"},
		{"smtp", "-host", "mail.example.com", "-password", "x"},
		{"pop3", "-host", "mail.example.com", "-port", "70000"},
		{"pop3", "-host", "mail.example.com", "extra"},
		{"imap", "-host", "mail.example.com"},
		{"roundtrip", "-config", in.cfgPath, "-user", "alice@example.com", "-domain", "example.com"},
	} {
		if _, errOut, code := runTestIn(res, "demo-password\n", args...); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", args, code, errOut)
		}
	}
	in.stop()
}

// The default port and method of each service.
func TestTestServiceDefaults(t *testing.T) {
	// Nothing resolves, so each run stops at DNS; the header line shows
	// what would have been dialled.
	res := tableResolver{}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pop3"}, "POP3 at x.example.com:995 (ssl)"},
		{[]string{"pop3", "-method", "tls"}, "POP3 at x.example.com:110 (tls)"},
		{[]string{"pop3", "-port", "110"}, "POP3 at x.example.com:110 (tls)"},
		{[]string{"pop3", "-port", "1995"}, "POP3 at x.example.com:1995 (ssl)"},
		{[]string{"smtp"}, "SMTP submission at x.example.com:465 (ssl)"},
		{[]string{"smtp", "-port", "587"}, "SMTP submission at x.example.com:587 (tls)"},
		{[]string{"smtp", "-method", "tls"}, "SMTP submission at x.example.com:587 (tls)"},
	} {
		out, errOut, code := runTestIn(res, "", append(c.args, "-host", "x.example.com")...)
		if code != 1 || !strings.HasPrefix(out, c.want+" ") || !strings.Contains(out, "no address for x.example.com") {
			t.Errorf("%q: exit %d\n%s%s", c.args, code, out, errOut)
		}
	}
}

// Without a configuration file, a remote round trip uses the usual ports
// (587 STARTTLS, 995 implicit TLS) and judges certificates by -host.
func TestTestRoundtripWithoutConfig(t *testing.T) {
	t.Chdir(t.TempDir())
	// The name resolves to an address where nothing listens: what
	// matters here is what is dialled.
	res := tableResolver{"mail.example.net": {"127.0.0.2"}}
	out, errOut, code := runTestIn(res, "pw\n", "roundtrip", "-host", "mail.example.net", "-user", "bob@example.net")
	if code != 1 || !strings.HasPrefix(out, "round trip for bob@example.net: submission mail.example.net:587 (tls), POP3 mail.example.net:995 (ssl)\n") ||
		!strings.Contains(out, "DNS mail.example.net") || !strings.Contains(out, "connect submission 127.0.0.2:587") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
	// An explicit -config that does not exist is an error, not a silent
	// fallback.
	if _, errOut, code := runTestIn(res, "pw\n", "roundtrip", "-config", "missing.hcl", "-host", "mail.example.net", "-user", "bob@example.net"); code != 1 || !strings.Contains(errOut, "missing.hcl") {
		t.Errorf("missing -config: exit %d\n%s", code, errOut)
	}
}
