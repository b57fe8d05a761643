package smtpauth

import (
	"strings"
	"testing"
)

// TestStatsCounters submits over STARTTLS on loopback and checks every
// counter Stats adds for metrics, and the one Info line per session end.
func TestStatsCounters(t *testing.T) {
	ts := start(t, submissionSettings(), false, "127.0.0.1")

	r := dialRaw(t, ts.addr, false)
	r.expect("220 ")
	r.cmd("EHLO client.example", "250")
	r.starttls()
	r.cmd("EHLO client.example", "250")
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wrong"), "535")      // failed
	r.cmd("AUTH PLAIN "+b64("\x00mallory\x00secret"), "535")   // refused
	r.cmd("AUTH PLAIN "+b64("\x00alice\x00wonderland"), "235") // success
	r.cmd("MAIL FROM:<alice@example.org>", "250")
	r.cmd("RCPT TO:<bob@example.org>", "250")
	r.cmd("DATA", "354")
	r.cmd("Subject: hi\r\n\r\nhello\r\n.", "250")
	r.cmd("QUIT", "221")
	waitFor(t, "session end", func() bool { return ts.Stats().Sessions == 0 })

	st := ts.Stats()
	if st.Commands != 6 { // 3 × AUTH, MAIL, RCPT, DATA
		t.Errorf("Commands = %d, want 6", st.Commands)
	}
	if st.LoginSuccess != 1 || st.LoginFailed != 1 || st.LoginRefused != 1 || st.LoginError != 0 {
		t.Errorf("logins success/failed/refused/error = %d/%d/%d/%d, want 1/1/1/0",
			st.LoginSuccess, st.LoginFailed, st.LoginRefused, st.LoginError)
	}
	if st.Delivered != 1 {
		t.Errorf("Delivered = %d, want 1", st.Delivered)
	}
	if st.BytesIn < 300 || st.BytesOut < 1000 { // a TLS handshake each way, at least
		t.Errorf("BytesIn, BytesOut = %d, %d: too few for a STARTTLS session", st.BytesIn, st.BytesOut)
	}

	var end string
	waitFor(t, "session end line", func() bool {
		for _, l := range strings.Split(ts.logs.String(), "\n") {
			if strings.Contains(l, `msg="smtp session end"`) {
				end = l
				return true
			}
		}
		return false
	})
	for _, want := range []string{"level=INFO", "user=alice", "remote_ip=127.0.0.1", "tls=true", "commands=6", "messages=1", "bytes_in=", "bytes_out="} {
		if !strings.Contains(end, want) {
			t.Errorf("session end line lacks %q: %s", want, end)
		}
	}
	if strings.Count(end, "user=") != 1 {
		t.Errorf("user attribute repeated: %s", end)
	}
}
