package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"mailpost/server"
	"mailpost/storage"
)

// mailbox list counts devices; mailbox stats shows a line per credential
// under a mailbox that has devices, and nothing more for one without.
func TestMailboxOutputWithDevices(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	expires := time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC)
	scan := storage.Login{Time: now.Add(-time.Minute), IP: "192.168.1.20", Proto: "submission", Device: "scanner"}
	main := storage.Login{Time: now.Add(-time.Hour), IP: "192.0.2.7", Proto: "pop3"}
	gone := storage.Login{Time: now.Add(-48 * time.Hour), IP: "192.0.2.9", Proto: "pop3", Device: "oldphone"}
	reps := []server.MailboxReport{
		{Address: "alice@example.com", Configured: true, POP3: true, Submission: true, LastLogin: &scan, MainLogin: &main,
			Devices: []server.DeviceReport{
				{Name: "scanner", Allow: []string{"submission"}, From: []string{"192.168.1.0/24"}, LastUse: &scan},
				{Name: "helpdesk", Allow: []string{"pop3"}, Expires: &expires},
				{Name: "oldphone", Removed: true, LastUse: &gone},
			}},
		{Address: "bob@example.com", Configured: true, POP3: true, Submission: true},
	}
	var b bytes.Buffer
	writeMailboxList(&b, reps)
	if !regexpLine(b.String(), `^alice@example\.com\s+on\s+on\s+unlimited\s+2$`) || !regexpLine(b.String(), `^bob@example\.com\s+on\s+on\s+unlimited\s+0$`) {
		t.Errorf("list:\n%s", b.String())
	}
	b.Reset()
	writeMailboxStats(&b, reps, now)
	out := b.String()
	for _, re := range []string{
		`^alice@example\.com\s+0\s+0 B\s+-\s+\S+ \S+ \(1m0s ago\) submission from 192\.168\.1\.20 \(device scanner\)$`,
		`^  main password\s+last use \S+ \S+ \(1h0m0s ago\) pop3 from 192\.0\.2\.7$`,
		`^  device scanner\s+allow submission; from 192\.168\.1\.0/24; expires never; last use \S+ \S+ \(1m0s ago\) submission from 192\.168\.1\.20$`,
		`^  device helpdesk\s+allow pop3; from any network; expires \S+ \S+; last use never$`,
		`^  device oldphone\s+removed from the config; last use \S+ \S+ \(48h0m0s ago\) pop3 from 192\.0\.2\.9$`,
		`^bob@example\.com\s+0\s+0 B\s+-\s+never$`,
	} {
		if !regexpLine(out, re) {
			t.Errorf("stats lack a line matching %s:\n%s", re, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 7 {
		t.Errorf("%d lines, want 7 (header, alice and 4 credentials, bob):\n%s", n, out)
	}
}
