package pop3

import (
	"strings"
	"testing"
)

// TestStatsCounters drives sessions over TLS on loopback and checks every
// counter Stats adds for metrics, and the one Info line per session end.
func TestStatsCounters(t *testing.T) {
	ts := newTestServer(t, tlsSettings())
	addr, _ := ts.listen(t, true)

	cl := dial(t, addr, true)
	cl.line()
	cl.expect("USER alice", "+OK")
	cl.expect("PASS wrong", "-ERR") // failed
	cl.login("alice", "secret")     // success
	cl.expect("RETR 1", "+OK")
	cl.dotLines()
	cl.expect("DELE 2", "+OK")
	cl.expect("QUIT", "+OK")
	cl.expectEOF()

	for _, user := range []string{"locked", "disabled", "broken"} {
		c := dial(t, addr, true)
		c.line()
		c.expect("USER "+user, "+OK")
		c.expect("PASS x", "-ERR")
		c.expect("QUIT", "+OK")
		c.expectEOF()
	}
	ts.waitSessions(t, 0)

	st := ts.srv.Stats()
	// Session 1: USER, PASS, USER, PASS, RETR, DELE, QUIT; then 3 × USER, PASS, QUIT.
	if st.Commands != 7+3*3 {
		t.Errorf("Commands = %d, want 16", st.Commands)
	}
	if st.LoginSuccess != 1 || st.LoginFailed != 1 || st.LoginRefused != 2 || st.LoginError != 1 {
		t.Errorf("logins success/failed/refused/error = %d/%d/%d/%d, want 1/1/2/1",
			st.LoginSuccess, st.LoginFailed, st.LoginRefused, st.LoginError)
	}
	if st.Retrieved != 1 || st.Deleted != 1 {
		t.Errorf("Retrieved, Deleted = %d, %d, want 1, 1", st.Retrieved, st.Deleted)
	}
	// TLS handshakes alone are well over a kilobyte each way per session;
	// the message itself went out once.
	if st.BytesIn < 4*200 || st.BytesOut < 4*500+uint64(len(aliceMessages[0])) {
		t.Errorf("BytesIn, BytesOut = %d, %d: too few for 4 TLS sessions", st.BytesIn, st.BytesOut)
	}

	var ends []string
	for _, l := range strings.Split(ts.logs.String(), "\n") {
		if strings.Contains(l, `msg="pop3 session end"`) {
			ends = append(ends, l)
		}
	}
	if len(ends) != 4 {
		t.Fatalf("%d session end lines, want 4:\n%s", len(ends), strings.Join(ends, "\n"))
	}
	// Sessions end before the client sees EOF, but their lines may be
	// written a moment later; find them by content.
	var alice, locked string
	for _, l := range ends {
		switch {
		case strings.Contains(l, "user=alice"):
			alice = l
		case strings.Contains(l, "commands=3"):
			locked = l
		}
	}
	for _, want := range []string{"level=INFO", "user=alice", "remote_ip=127.0.0.1", "tls=true", "commands=7", "retrieved=1", "deleted=1", "bytes_in=", "bytes_out="} {
		if !strings.Contains(alice, want) {
			t.Errorf("session end line lacks %q: %s", want, alice)
		}
	}
	if strings.Count(alice, "user=") != 1 {
		t.Errorf("user attribute repeated: %s", alice)
	}
	if !strings.Contains(locked, `user=""`) {
		t.Errorf("a session without login should log an empty user: %q", locked)
	}
}
