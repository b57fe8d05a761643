package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailpost/importer"
	"mailpost/storage"
)

const (
	mboxFixture = "From alice@example.org Thu Nov 24 18:22:48 2022\n" +
		"From: alice@example.org\nSubject: first\nMessage-ID: <1@example.org>\n\n" +
		"Hello\n>From the start, quoted\n>>From deeper\n\n" +
		"From bob@example.org Fri Nov 25 08:00:00 2022\n" +
		"From: bob@example.org\nSubject: second\nMessage-ID: <2@example.org>\n\nBody two\n"
	mboxFirst  = "From: alice@example.org\r\nSubject: first\r\nMessage-ID: <1@example.org>\r\n\r\nHello\r\nFrom the start, quoted\r\n>From deeper\r\n"
	mboxSecond = "From: bob@example.org\r\nSubject: second\r\nMessage-ID: <2@example.org>\r\n\r\nBody two\r\n"
	maildirNew = "From: carol@example.org\r\nSubject: third\r\nMessage-ID: <3@example.org>\r\n\r\n.dot first\r\n"
)

// writeMaildir makes a Maildir holding the mbox's second message (same
// content, LF endings) and a new one, plus files an import must ignore.
func writeMaildir(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"cur/1669363200.M1P1.oldhost:2,S": strings.ReplaceAll(mboxSecond, "\r\n", "\n"),
		"new/1669400000.M2P2.oldhost":     maildirNew,
		"tmp/1669400001.M3P3.oldhost":     "Subject: half delivered\n\n",
		"cur/.hidden":                     "not mail",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mt := time.Date(2022, 11, 26, 9, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(dir, "new/1669400000.M2P2.oldhost"), mt, mt)
}

// popFetchAll logs in over verified TLS and returns every message,
// dot-unstuffed, without deleting anything.
func popFetchAll(addr string, roots *x509.CertPool, user string) ([]string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: roots, ServerName: "mail.example.com"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	cmd := func(s string) (string, error) {
		if s != "" {
			fmt.Fprintf(c, "%s\r\n", s)
		}
		l, err := r.ReadString('\n')
		if err == nil && !strings.HasPrefix(l, "+OK") {
			err = fmt.Errorf("%s: server said %q", strings.Fields(s + " greeting")[0], strings.TrimSpace(l))
		}
		return l, err
	}
	var n int
	for _, s := range []string{"", "USER " + user, "PASS demo-password", "STAT"} {
		l, err := cmd(s)
		if err != nil {
			return nil, err
		}
		fmt.Sscanf(l, "+OK %d", &n)
	}
	var msgs []string
	for i := 1; i <= n; i++ {
		if _, err := cmd(fmt.Sprintf("RETR %d", i)); err != nil {
			return nil, err
		}
		var b strings.Builder
		for j := 0; ; j++ {
			l, err := r.ReadString('\n')
			if err != nil {
				return nil, err
			}
			if l == ".\r\n" {
				break
			}
			b.WriteString(strings.TrimPrefix(l, ".")) // RFC 1939 §3 byte-stuffing
		}
		msgs = append(msgs, b.String())
	}
	_, err = cmd("QUIT")
	return msgs, err
}

func caPool(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return roots
}

// Import, mailbox stats, backup and the documented restore, against a
// running `mailpost serve`.
func TestImportStatsBackupRestore(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, e2eConfig(certFile, keyFile))
	in := startServe(t, dir)
	roots := caPool(t, caFile)
	mboxPath := filepath.Join(dir, "old.mbox")
	if err := os.WriteFile(mboxPath, []byte(mboxFixture), 0o600); err != nil {
		t.Fatal(err)
	}
	maildir := filepath.Join(dir, "Maildir")
	writeMaildir(t, maildir)

	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := cmdImport(in.cfgPath, args, strings.NewReader(""), &out, &errb); err != nil {
			t.Fatalf("import %q: %v\n%s", args, err, errb.String())
		}
		return out.String()
	}
	// Through an alias; the report names the mailbox.
	if out := run("-to", "a.smith@example.com", "mbox:"+mboxPath); !strings.Contains(out, "import into alice@example.com through the running server: 2 message(s) imported") || !strings.Contains(out, "0 already there") {
		t.Errorf("mbox import: %q", out)
	}
	// The Maildir's copy of the second mbox message is recognised.
	if out := run("-to", "alice@example.com", "maildir:"+maildir); !strings.Contains(out, "1 message(s) imported") || !strings.Contains(out, "1 already there") {
		t.Errorf("maildir import: %q", out)
	}
	if out := run("-to", "alice@example.com", "mbox:"+mboxPath); !strings.Contains(out, "0 message(s) imported") || !strings.Contains(out, "2 already there") {
		t.Errorf("mbox re-import: %q", out)
	}
	var out, errb bytes.Buffer
	if err := cmdImport(in.cfgPath, []string{"-to", "nobody@example.com", "mbox:" + mboxPath}, nil, &out, &errb); err == nil || !strings.Contains(err.Error(), "no such mailbox") {
		t.Errorf("import to nobody: %v", err)
	}
	if err := cmdImport(in.cfgPath, []string{"-to", "alice@example.com", "tar:x"}, nil, &out, &errb); err == nil {
		t.Error("import from tar: accepted")
	}

	msgs, err := popFetchAll(in.addrs["pop3s"], roots, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{mboxFirst, mboxSecond, maildirNew}
	if len(msgs) != 3 {
		t.Fatalf("alice has %d messages after the imports, want 3: %q", len(msgs), msgs)
	}
	for i := range want {
		if msgs[i] != want[i] {
			t.Errorf("message %d over POP3 = %q, want %q", i+1, msgs[i], want[i])
		}
	}

	out.Reset()
	if err := cmdMailbox(in.cfgPath, []string{"stats"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	stats := out.String()
	var aliceLine, adminLine string
	for _, l := range strings.Split(stats, "\n") {
		switch {
		case strings.HasPrefix(l, "alice@example.com "):
			aliceLine = l
		case strings.HasPrefix(l, "admin@example.com "):
			adminLine = l
		}
	}
	size := len(mboxFirst) + len(mboxSecond) + len(maildirNew)
	if !regexpLine(aliceLine, fmt.Sprintf(`^alice@example\.com\s+3\s+%s\s+-\s+\S+ \S+ \(\d+s ago\) pop3 from 127\.0\.0\.1$`, regexp.QuoteMeta(humanBytes(int64(size))))) {
		t.Errorf("stats for alice = %q (want 3 messages, %d B, last login over pop3 from 127.0.0.1)\n%s", aliceLine, size, stats)
	}
	if !strings.HasSuffix(adminLine, "never") {
		t.Errorf("stats for admin = %q", adminLine)
	}
	out.Reset()
	if err := cmdMailbox(in.cfgPath, []string{"list"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if l := out.String(); !strings.Contains(l, "alice@example.com") || !regexpLine(l, `admin@example\.com\s+off\s+on\s+unlimited`) || !regexpLine(l, `alice@example\.com\s+on\s+on\s+unlimited\s+a\.smith@example\.com`) {
		t.Errorf("mailbox list:\n%s", l)
	}

	// Backup through the running server.
	backup := filepath.Join(dir, "backups", "mailpost-backup.db")
	os.MkdirAll(filepath.Dir(backup), 0o700)
	out.Reset()
	if err := cmdBackup(in.cfgPath, backup, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "consistent copy, checked") {
		t.Errorf("backup said %q", out.String())
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", err, fi)
	}
	if err := cmdBackup(in.cfgPath, filepath.Join(dir, "data", "mailpost.db"), &out, &errb); err == nil {
		t.Error("backup over the live database was accepted")
	}
	func() {
		st, err := storage.Open(backup)
		if err != nil {
			t.Fatalf("the backup does not open: %v", err)
		}
		defer st.Close()
		list, _ := st.List("alice@example.com")
		if len(list) != 3 || list[0].UIDL != importer.ContentUIDL([]byte(mboxFirst)) ||
			!list[0].Arrived.Equal(time.Date(2022, 11, 24, 18, 22, 48, 0, time.Local)) ||
			!list[2].Arrived.Equal(time.Date(2022, 11, 26, 9, 0, 0, 0, time.UTC)) {
			t.Errorf("alice in the backup: %+v", list)
		}
	}()

	// Restore as the README says: stop, put the copy in place, start.
	// Mail that arrived after the backup is gone; the backup's is back.
	if o, e, code := mailpost(t, "Subject: after\n\nlater\n", "deliver", "-config", in.cfgPath, "-to", "alice@example.com"); code != 0 {
		t.Fatalf("deliver: %s %s", o, e)
	}
	in.stop()
	live := filepath.Join(dir, "data", "mailpost.db")
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(live, data, 0o600); err != nil {
		t.Fatal(err)
	}
	in = startServe(t, dir)
	msgs, err = popFetchAll(in.addrs["pop3s"], roots, "alice@example.com")
	if err != nil || len(msgs) != 3 || msgs[2] != maildirNew {
		t.Fatalf("after restore: %d messages, %v", len(msgs), err)
	}
	in.stop()

	// With no server running, both commands work on the file directly.
	out.Reset()
	if err := cmdBackup(in.cfgPath, "-", &out, &errb); err != nil || out.Len() < 4096 || out.Len()%4096 != 0 {
		t.Errorf("offline backup to stdout: %v, %d bytes", err, out.Len())
	}
	out.Reset()
	if err := cmdMailbox(in.cfgPath, []string{"stats"}, &out, &errb); err != nil || !strings.Contains(out.String(), "pop3 from 127.0.0.1") {
		t.Errorf("offline stats: %v\n%s", err, out.String())
	}
}

// regexpLine reports whether any line of text matches expr.
func regexpLine(text, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range strings.Split(text, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
