package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestStatusLastLogins logs two mailboxes in over POP3 against a running
// `mailpost serve` and reads them back from `mailpost status`: newest
// first, with address and protocol; a refused login is not one.
func TestStatusLastLogins(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	cfgPath := writeConfig(t, dir, addMailbox(e2eConfig(certFile, keyFile), "bob@example.com"))
	in := startServe(t, dir)

	out, errOut, code := mailpost(t, "", "status", "-config", cfgPath)
	if code != 0 || !strings.Contains(out, "last logins      none recorded\n") {
		t.Fatalf("status before any login: code %d\n%s%s", code, out, errOut)
	}

	addr := in.addrs["pop3s"]
	for _, user := range []string{"alice@example.com", "bob@example.com"} {
		if r, err := popLogin(addr, user, "demo-password"); err != nil || r != "+OK" {
			t.Fatalf("login %s: %q %v", user, r, err)
		}
	}
	// pop3 = false: refused, so not a login.
	if r, err := popLogin(addr, "admin@example.com", "demo-password"); err != nil || r == "+OK" {
		t.Fatalf("admin login: %q %v", r, err)
	}
	// And a wrong password is not one either.
	if r, err := popLogin(addr, "alice@example.com", "wrong"); err != nil || r == "+OK" {
		t.Fatalf("wrong password: %q %v", r, err)
	}

	st := status(t, in)
	if len(st.LastLogins) != 2 || st.LastLoginsError != "" {
		t.Fatalf("status payload: %+v (%s)", st.LastLogins, st.LastLoginsError)
	}
	for i, want := range []string{"bob@example.com", "alice@example.com"} {
		l := st.LastLogins[i]
		if l.Mailbox != want || l.IP != "127.0.0.1" || l.Proto != "pop3" || l.Time.IsZero() {
			t.Errorf("login %d = %+v, want %s from 127.0.0.1 over pop3", i, l, want)
		}
	}

	out, errOut, code = mailpost(t, "", "status", "-config", cfgPath)
	if code != 0 {
		t.Fatalf("status: code %d\n%s", code, errOut)
	}
	_, section, _ := strings.Cut(out, "last logins      (newest first, one per mailbox)\n")
	lines := strings.Split(section, "\n")
	row := regexp.MustCompile(`^  (\S+@example\.com) +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* +127\.0\.0\.1  pop3$`)
	var got []string
	for _, l := range lines[:min(2, len(lines))] {
		if m := row.FindStringSubmatch(l); m != nil {
			got = append(got, m[1])
		}
	}
	if strings.Join(got, ",") != "bob@example.com,alice@example.com" {
		t.Errorf("status output:\n%s", out)
	}
}
