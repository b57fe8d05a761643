package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailpost/importer"
	"mailpost/server"
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
	return popFetch(addr, roots, user, false)
}

// popFetch is popFetchAll that, with dele, also deletes each message it
// retrieved (applied by the QUIT).
func popFetch(addr string, roots *x509.CertPool, user string, dele bool) ([]string, error) {
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
		if dele {
			if _, err := cmd(fmt.Sprintf("DELE %d", i)); err != nil {
				return nil, err
			}
		}
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

// popList logs in over verified TLS (implicit) and returns the UIDL and
// the dot-unstuffed bytes of every message; with dele > 0 it deletes that
// message and commits with QUIT. A client written here on purpose: the
// importer's own must not be what checks the importer.
func popList(addr, serverName string, roots *x509.CertPool, user, pass string, dele int) (uidls, msgs []string, err error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: roots, ServerName: serverName})
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReaderSize(c, 1<<16)
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
	multi := func() ([]string, error) {
		var lines []string
		for i := 0; i < 1<<20; i++ {
			l, err := r.ReadString('\n')
			if err != nil {
				return nil, err
			}
			if l == ".\r\n" {
				return lines, nil
			}
			lines = append(lines, strings.TrimPrefix(l, ".")) // RFC 1939 §3 byte-stuffing
		}
		return nil, errors.New("endless multi-line reply")
	}
	var n int
	for _, s := range []string{"", "USER " + user, "PASS " + pass, "STAT"} {
		l, err := cmd(s)
		if err != nil {
			return nil, nil, err
		}
		fmt.Sscanf(l, "+OK %d", &n)
	}
	if _, err := cmd("UIDL"); err != nil {
		return nil, nil, err
	}
	lines, err := multi()
	if err != nil {
		return nil, nil, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, nil, fmt.Errorf("UIDL line %q", l)
		}
		uidls = append(uidls, f[1])
	}
	for i := 1; i <= n; i++ {
		if _, err := cmd(fmt.Sprintf("RETR %d", i)); err != nil {
			return nil, nil, err
		}
		lines, err := multi()
		if err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, strings.Join(lines, ""))
	}
	if dele > 0 {
		if _, err := cmd(fmt.Sprintf("DELE %d", dele)); err != nil {
			return nil, nil, err
		}
	}
	_, err = cmd("QUIT")
	return uidls, msgs, err
}

// dovecot is a real Dovecot POP3 server (Debian's dovecot-pop3d) run by
// the test on loopback as the "old server" of an import.
type dovecot struct {
	maildir      string // alice's Maildir
	pop3s, pop3  string // 127.0.0.1:port
	log          *syncBuffer
	mailUID      int
	mailGID      int
	user, passwd string
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDovecot runs `dovecot -F -c FILE` with everything (config, sockets,
// state, mail) under dir, and stops its whole process group at test end.
func startDovecot(t *testing.T, dir, certFile, keyFile string) *dovecot {
	t.Helper()
	// Debian puts it in /usr/sbin, which a non-root PATH often lacks.
	bin := "/usr/sbin/dovecot"
	if _, err := os.Stat(bin); err != nil {
		bin = requireTool(t, "dovecot")
	}
	d := &dovecot{log: &syncBuffer{}, user: "alice@old.example", passwd: "old pass 1",
		mailUID: os.Getuid(), mailGID: os.Getgid()}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	internal := me.Username
	if os.Getuid() == 0 {
		// Dovecot never touches mail as root, and its unprivileged
		// processes must reach the mail: nobody owns it, and the
		// directories above it may be traversed.
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("dovecot as root needs the user nobody: %v", err)
		}
		d.mailUID, _ = strconv.Atoi(nobody.Uid)
		d.mailGID, _ = strconv.Atoi(nobody.Gid)
		internal = "nobody"
		for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			os.Chmod(p, 0o755)
		}
	}
	home := filepath.Join(dir, "dovecot", "home")
	d.maildir = filepath.Join(home, "alice", "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(d.maildir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(home, "alice"), d.maildir, filepath.Join(d.maildir, "cur"), filepath.Join(d.maildir, "new"), filepath.Join(d.maildir, "tmp")} {
		os.Chown(p, d.mailUID, d.mailGID) // Dovecot writes its index and uidlist here
	}
	passwd := filepath.Join(dir, "dovecot", "passwd")
	if err := os.WriteFile(passwd, []byte(d.user+":{PLAIN}"+d.passwd+"::::::\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p3s, p3 := freePort(t), freePort(t)
	d.pop3s, d.pop3 = fmt.Sprintf("127.0.0.1:%d", p3s), fmt.Sprintf("127.0.0.1:%d", p3)
	conf := fmt.Sprintf(`# written by mailpost's TestImportFromDovecot
instance_name = mailpost-test-%d
base_dir = %[2]s/run
state_dir = %[2]s/state
protocols = pop3
listen = 127.0.0.1
log_path = /dev/stderr
ssl = yes
ssl_cert = <%[3]s
ssl_key = <%[4]s
default_internal_user = %[5]s
default_login_user = %[5]s
auth_mechanisms = plain
mail_location = maildir:%[6]s/%%n/Maildir
pop3_uidl_format = %%08Xu%%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[7]s
}
userdb {
  driver = static
  args = uid=%[8]d gid=%[9]d home=%[6]s/%%n
}
service pop3-login {
  inet_listener pop3 {
    port = %[10]d
  }
  inet_listener pop3s {
    port = %[11]d
    ssl = yes
  }
}
`, p3s, filepath.Join(dir, "dovecot"), certFile, keyFile, internal, home, passwd, d.mailUID, d.mailGID, p3, p3s)
	confFile := filepath.Join(dir, "dovecot", "dovecot.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", confFile)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// The master, its login and auth processes: the whole group.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("dovecot log:\n%s", d.log.String())
		}
	})
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", d.pop3s, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("dovecot exited:\n%s", d.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if i > 200 {
			t.Fatalf("dovecot does not listen on %s:\n%s", d.pop3s, d.log.String())
		}
	}
	return d
}

// deliver puts a message into alice's Maildir the way an MDA would.
func (d *dovecot) deliver(t *testing.T, name, body string) {
	t.Helper()
	p := filepath.Join(d.maildir, "new", name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(p, d.mailUID, d.mailGID)
}

// The acceptance test: a real Dovecot is the old server; mailpost
// import copies every message with Dovecot's UIDLs, a re-run copies only
// the new one, a message deleted in mailpost does not come back, and a
// POP3 client of mailpost sees exactly Dovecot's UIDL list.
func TestImportFromDovecot(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com", "localhost")
	d := startDovecot(t, dir, certFile, keyFile)
	roots := caPool(t, caFile)

	var large strings.Builder
	for i := 0; large.Len() < 3<<20; i++ {
		fmt.Fprintf(&large, "line %07d of a large message, long enough to matter ......................\n", i)
	}
	seed := []struct{ name, body string }{
		{"1700000001.M1P1.old", "From: bob@example.net\nTo: alice@old.example\nDate: Tue, 14 Nov 2023 22:13:21 +0000\nSubject: plain\n\nhello\n"},
		{"1700000002.M2P2.old", "From: carol@example.net\nSubject: dots\n\n.\n..\n.leading\nend\n.\n"},
		{"1700000003.M3P3.old", "From: dan@example.net\nSubject: 8bit\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nFa\u00e7ade, na\u00efve, \u65e5\u672c\u8a9e, \xff\xfe raw bytes\n"},
		{"1700000004.M4P4.old", "From: erin@example.net\nSubject: large\n\n" + large.String()},
	}
	for _, m := range seed {
		d.deliver(t, m.name, m.body)
	}
	user := url.PathEscape(d.user) // alice%40old.example
	src := fmt.Sprintf("pop3s://%s@localhost:%s", strings.ReplaceAll(user, "@", "%40"), strings.Split(d.pop3s, ":")[1])
	pwFile := filepath.Join(dir, "old-password")
	os.WriteFile(pwFile, []byte(d.passwd+"\n"), 0o600)

	oldUIDLs, oldMsgs, err := popList(d.pop3s, "localhost", roots, d.user, d.passwd, 0)
	if err != nil {
		t.Fatalf("reading Dovecot: %v\n%s", err, d.log.String())
	}
	if len(oldUIDLs) != len(seed) {
		t.Fatalf("Dovecot lists %d messages, want %d", len(oldUIDLs), len(seed))
	}

	writeConfig(t, dir, e2eConfig(certFile, keyFile))
	cfgPath := filepath.Join(dir, "mailpost.hcl")
	run := func(stdin string, args ...string) (string, string) {
		t.Helper()
		out, errOut, code := mailpost(t, stdin, append([]string{"import", "-config", cfgPath}, args...)...)
		if code != 0 {
			t.Fatalf("import %q: exit %d\n%s%s", args, code, out, errOut)
		}
		if strings.Contains(out+errOut, d.passwd) {
			t.Fatalf("the password was printed:\n%s%s", out, errOut)
		}
		t.Logf("import %q:\n%s%s", args, out, errOut)
		return out, errOut
	}

	// 1. No server running: straight into the store. The password comes
	// on stdin; the source after the flags or before them both work.
	out, _ := run(d.passwd+"\n", "-to", "a.smith@example.com", "-password-stdin", "-ca", caFile, src)
	if !strings.Contains(out, "import into alice@example.com into ") || !strings.Contains(out, "4 message(s) imported") || !strings.Contains(out, "0 already there") {
		t.Errorf("first import: %q", out)
	}

	// 2. Through the running server; Dovecot gets one more message.
	in := startServe(t, dir)
	d.deliver(t, "1700000005.M5P5.old", "From: frank@example.net\nSubject: new since\n\nlate\n")
	out, _ = run("", src, "-to", "alice@example.com", "-password-file", pwFile, "-ca", caFile)
	if !strings.Contains(out, "through the running server: 1 message(s) imported") || !strings.Contains(out, "4 already there") {
		t.Errorf("second import: %q", out)
	}
	// Dovecot's own account of that session: one message retrieved.
	if l := d.log.String(); !regexpLine(l, `Disconnected: Logged out top=0/0, retr=1/\d+, del=0/5`) {
		t.Errorf("Dovecot did not log exactly one RETR and no DELE for the re-run:\n%s", l)
	}

	oldUIDLs, oldMsgs, err = popList(d.pop3s, "localhost", roots, d.user, d.passwd, 0)
	if err != nil || len(oldMsgs) != 5 {
		t.Fatalf("reading Dovecot again: %v, %d messages", err, len(oldMsgs))
	}
	newUIDLs, newMsgs, err := popList(in.addrs["pop3s"], "mail.example.com", roots, "alice@example.com", "demo-password", 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(newUIDLs, " ") != strings.Join(oldUIDLs, " ") {
		t.Errorf("UIDLs in mailpost %q, in Dovecot %q", newUIDLs, oldUIDLs)
	}
	for i := range oldMsgs {
		if i < len(newMsgs) && newMsgs[i] != oldMsgs[i] {
			t.Errorf("message %d differs: mailpost %d octets, Dovecot %d octets", i+1, len(newMsgs[i]), len(oldMsgs[i]))
		}
	}
	if len(newMsgs) == 5 && newMsgs[1] != "From: carol@example.net\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading\r\nend\r\n.\r\n" {
		t.Errorf("the dot message came through as %q", newMsgs[1])
	}
	st := importStoreList(t, in, "alice@example.com")
	if len(st) != 5 || !st[0].Arrived.Equal(time.Date(2023, 11, 14, 22, 13, 21, 0, time.UTC)) {
		t.Errorf("arrival of the first message: %+v", st)
	}

	// 3. A client downloads and deletes message 1 in mailpost: the next
	// run leaves it deleted (the ledger), -include-deleted brings it back.
	if _, _, err := popList(in.addrs["pop3s"], "mail.example.com", roots, "alice@example.com", "demo-password", 1); err != nil {
		t.Fatal(err)
	}
	out, _ = run(d.passwd+"\n", "-to", "alice@example.com", "-password-stdin", "-ca", caFile, src)
	if !strings.Contains(out, "0 message(s) imported") || !strings.Contains(out, "5 already there") {
		t.Errorf("re-run after a deletion: %q", out)
	}
	out, _ = run(d.passwd+"\n", "-to", "alice@example.com", "-password-stdin", "-ca", caFile, "-include-deleted", src)
	if !strings.Contains(out, "1 message(s) imported") || !strings.Contains(out, "4 already there") {
		t.Errorf("-include-deleted: %q", out)
	}

	// 4. STLS on Dovecot's plain port, by IP, into another mailbox.
	stlsSrc := fmt.Sprintf("pop3://%s@%s", strings.ReplaceAll(user, "@", "%40"), d.pop3)
	out, errOut := run(d.passwd+"\n", "-to", "admin@example.com", "-password-stdin", "-insecure-skip-verify", stlsSrc)
	if !strings.Contains(out, "import into admin@example.com through the running server: 5 message(s) imported") || !strings.Contains(errOut, "warning: -insecure-skip-verify") {
		t.Errorf("STLS import: %q %q", out, errOut)
	}

	// A UIDL in this store's own generated form is refused as such (the
	// import then falls back to the content hash).
	if o, e, code := mailpost(t, "Subject: local\n\nx\n", "deliver", "-config", cfgPath, "-to", "alice@example.com"); code != 0 {
		t.Fatalf("deliver: %s %s", o, e)
	}
	mine, _, err := popList(in.addrs["pop3s"], "mail.example.com", roots, "alice@example.com", "demo-password", 0)
	if err != nil || len(mine) == 0 {
		t.Fatal(err)
	}
	prefix, _, _ := strings.Cut(mine[len(mine)-1], ".")
	_, err = server.NewClient(filepath.Join(dir, "data")).Import("alice@example.com", prefix+".999999", time.Time{}, strings.NewReader("Subject: y\r\n\r\ny\r\n"))
	if !errors.Is(err, storage.ErrInvalidUIDL) {
		t.Errorf("import under the store's own UIDL form: %v", err)
	}

	// Refusals: a wrong password, a certificate nobody vouches for, and
	// no password source at all when stdin is no terminal.
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"wrong\n", []string{"-password-stdin", "-ca", caFile, src}, "login as alice@old.example refused"},
		{d.passwd + "\n", []string{"-password-stdin", src}, "certificate signed by unknown authority"},
		{"", []string{src}, "stdin is not a terminal"},
	} {
		o, e, code := mailpost(t, tc.stdin, append([]string{"import", "-config", cfgPath, "-to", "alice@example.com"}, tc.args...)...)
		if code == 0 || !strings.Contains(e, tc.want) || strings.Contains(o+e, d.passwd) {
			t.Errorf("import %q: exit %d, %q %q; want an error with %q", tc.args, code, o, e, tc.want)
		}
	}
	if l := d.log.String(); strings.Contains(l, "del=1") || strings.Contains(l, "expunged") {
		t.Errorf("Dovecot lost mail:\n%s", l)
	}
}

// importStoreList reads a mailbox's index from the running server's store
// through a backup copy (the server holds the file).
func importStoreList(t *testing.T, in *instance, mailbox string) []storage.MessageInfo {
	t.Helper()
	p := filepath.Join(t.TempDir(), "copy.db")
	var out, errb bytes.Buffer
	if err := cmdBackup(in.cfgPath, p, &out, &errb); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, err := st.List(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	return list
}
