package main

import (
	"strings"
	"testing"
)

// The real binary against a running `mailpost serve`: two wrong passwords
// block the address, `login-limits` and `status` show it, `login-limits
// clear` lets the right password in at once; with the server stopped the
// commands say why they cannot answer.
func TestLoginLimitsCommands(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, e2eConfig(certFile, keyFile)+`
login_limits {
  ipv4_32 = 2
  ipv4_26 = 0
  ipv4_21 = 0
  account = 10
  window  = "1h"
}
`)
	in := startServe(t, dir)
	pops := in.addrs["pop3s"]
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, errOut, code := mailpost(t, "", append(args, "-config", in.cfgPath)...)
		if code != wantCode {
			t.Fatalf("mailpost %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out + errOut
	}
	login := func(pass string) string {
		t.Helper()
		r, err := popLogin(pops, "alice@example.com", pass)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	if out := run(0, "login-limits"); out != "nobody is refused by login_limits now\n" {
		t.Fatalf("before any failure: %q", out)
	}
	for _, pw := range []string{"wrong-1", "wrong-2"} {
		if r := login(pw); !strings.HasPrefix(r, "-ERR [AUTH]") {
			t.Fatalf("wrong password: %q", r)
		}
	}
	if r := login("demo-password"); !strings.HasPrefix(r, "-ERR [SYS/TEMP]") {
		t.Fatalf("right password from the blocked address: %q", r)
	}

	out := run(0, "login-limits")
	t.Logf("mailpost login-limits:\n%s", out)
	if !regexpLine(out, `^ipv4_32\s+127\.0\.0\.1/32\s+2\.0 of 2 failures\s+1\s+\S+\s+\d+m\d+s$`) ||
		!regexpLine(out, `^1 network\(s\) and 0 account\(s\) refused now$`) {
		t.Fatalf("login-limits:\n%s", out)
	}
	out = run(0, "status")
	t.Logf("mailpost status:\n%s", out)
	if !regexpLine(out, `^login limits\s+1 network\(s\), 0 account\(s\) refused now$`) ||
		!regexpLine(out, `^  ipv4_32  127\.0\.0\.1/32  2\.0 of 2 failures  retry in \d+m\d+s$`) {
		t.Fatalf("status:\n%s", out)
	}

	out = run(0, "login-limits", "clear", "127.0.0.1")
	t.Logf("mailpost login-limits clear 127.0.0.1:\n%s", out)
	if !regexpLine(out, `^cleared ipv4_32  127\.0\.0\.1/32  \(2\.0 of 2 failures, was refusing for another \d+m\d+s, 1 refused\)$`) {
		t.Fatalf("clear:\n%s", out)
	}
	if r := login("demo-password"); r != "+OK" {
		t.Fatalf("right password after the clear: %q", r)
	}
	if out := run(0, "status"); !regexpLine(out, `^login limits\s+nobody refused now$`) {
		t.Fatalf("status after the clear:\n%s", out)
	}
	if out := run(0, "login-limits", "clear", "Nobody@example.com"); out != "nothing matched account nobody@example.com: no failed logins are counted against it\n" {
		t.Fatalf("clearing what is not there: %q", out)
	}
	if out := run(1, "login-limits", "clear", "127.0.0.0/24"); !strings.Contains(out, "no login_limits tier counts networks of that size (/32, /26 or /21)") {
		t.Fatalf("a /24: %q", out)
	}
	run(2, "login-limits", "clear")
	run(2, "login-limits", "list")

	in.stop()
	if out := run(1, "login-limits"); !strings.Contains(out, "no running server answers") || !strings.Contains(out, "nobody is refused") {
		t.Fatalf("with no server: %q", out)
	}
	if out := run(1, "login-limits", "clear", "127.0.0.1"); !strings.Contains(out, "no running server answers") {
		t.Fatalf("clear with no server: %q", out)
	}
}
