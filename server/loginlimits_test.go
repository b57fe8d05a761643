package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"mailpost/auth"
)

// An address over its limit shows in the snapshot and in status, and a
// clear through the control socket lets the right password in at once.
func TestLoginLimitsSeeAndClear(t *testing.T) {
	s := startDeviceServer(t, guardConfig(t, `
  ipv4_32 = 3
  ipv4_26 = 0
  ipv4_21 = 0
  account = 20
  window  = "10m"
`))
	pops := addrOf(t, s.testServer, "pop3s")
	c := NewClient(s.cfg.DataDir)
	if snap, err := c.LoginLimits(10); err != nil || snap.Networks != 0 || snap.Accounts != 0 || len(snap.Entries) != 0 {
		t.Fatalf("before any failure: %+v, %v", snap, err)
	}

	const phone = "127.0.0.2"
	// Distinct wrong passwords, so each counts (a repeat would not).
	for i := range 3 {
		if r := popLoginFrom(t, phone, pops, "alice@example.com", fmt.Sprint("guess-", i)); !strings.HasPrefix(r, "-ERR [AUTH]") {
			t.Fatalf("wrong password %d: %q", i, r)
		}
	}
	if r := popLoginFrom(t, phone, pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "-ERR [SYS/TEMP]") {
		t.Fatalf("right password from the blocked address: %q", r)
	}

	snap, err := c.LoginLimits(10)
	if err != nil || snap.Networks != 1 || snap.Accounts != 0 || len(snap.Entries) != 1 {
		t.Fatalf("snapshot: %+v, %v", snap, err)
	}
	e := snap.Entries[0]
	if e.Tier != auth.TierIPv4_32 || e.Key != phone+"/32" || e.Limit != 3 || e.Level < 2.9 || e.Refused < 1 || e.Since.IsZero() ||
		e.RetryAfter <= 0 || e.RetryAfter > 10*time.Minute {
		t.Fatalf("entry: %+v", e)
	}
	st, err := c.Status()
	if err != nil || st.LoginLimits == nil || st.LoginLimits.Networks != 1 || len(st.LoginLimits.Entries) != 1 || st.LoginLimits.Entries[0].Key != phone+"/32" {
		t.Fatalf("status login limits: %+v, %v", st.LoginLimits, err)
	}

	res, err := c.ClearLoginLimit(phone)
	if err != nil || res.As != "address" || len(res.Cleared) != 1 || res.Cleared[0].Key != phone+"/32" || !res.Cleared[0].Refusing {
		t.Fatalf("clear: %+v, %v", res, err)
	}
	if r := popLoginFrom(t, phone, pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("right password right after the clear: %q", r)
	}
	if got := s.logs.lines("login limit cleared", "tier=ipv4_32", "key="+phone+"/32", "via=control"); len(got) != 1 {
		t.Errorf("clear log lines: %q", got)
	}
	if snap, err := c.LoginLimits(10); err != nil || snap.Networks != 0 {
		t.Fatalf("after the clear: %+v, %v", snap, err)
	}

	// Nothing to clear is not an error; a bad key is, and says why.
	if res, err := c.ClearLoginLimit("Bob@Example.com"); err != nil || res.As != "account" || res.Key != "bob@example.com" || len(res.Cleared) != 0 {
		t.Fatalf("clearing an account with nothing: %+v, %v", res, err)
	}
	if _, err := c.ClearLoginLimit("127.0.0.0/24"); err == nil || !strings.Contains(err.Error(), "no login_limits tier counts networks of that size") {
		t.Fatalf("a /24: %v", err)
	}
	// Hostile bodies get a 400 and the server carries on.
	for _, body := range []string{"", "{", `{"key": 7}`, `{"key": "x", "extra": 1}`, strings.Repeat("[", 5000)} {
		req, _ := http.NewRequest("POST", "http://mailpost/v1/login-limits/clear", strings.NewReader(body))
		status, msg, err := c.exchange(req, 1<<10)
		if err != nil || status != http.StatusBadRequest {
			t.Errorf("body %.20q: %d %s, %v", body, status, msg, err)
		}
	}
	req, _ := http.NewRequest("GET", "http://mailpost/v1/login-limits?n=-1", nil)
	if status, _, err := c.exchange(req, 1<<10); err != nil || status != http.StatusBadRequest {
		t.Errorf("n=-1: %d, %v", status, err)
	}
	if _, err := c.Status(); err != nil {
		t.Fatalf("status after hostile requests: %v", err)
	}
}

func TestLoginLimitsWithoutServer(t *testing.T) {
	c := NewClient(t.TempDir())
	if _, err := c.LoginLimits(5); !errors.Is(err, ErrNotRunning) {
		t.Errorf("list with no server: %v", err)
	}
	if _, err := c.ClearLoginLimit("127.0.0.1"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("clear with no server: %v", err)
	}
}
