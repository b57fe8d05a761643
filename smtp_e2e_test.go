package main

// Submission end to end with real clients: python's smtplib (STARTTLS on
// 587) and swaks (implicit TLS on 465) send, python's poplib reads back, and
// the bytes are compared with what was sent.

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func submissionConfig(certFile, keyFile string) string {
	return e2eConfig(certFile, keyFile) + `
submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}
`
}

// smtplibScript sends argv[5] (a file) from alice to alice over STARTTLS,
// verifying the certificate, then reads it back with poplib and prints the
// retrieved lines exactly (repr, one per line) so Go can compare bytes.
const smtplibScript = `
import poplib, smtplib, ssl, sys, time
host, sport, pport, cafile, msgfile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
s = smtplib.SMTP(host, sport, local_hostname="client.test")
s._host = "mail.example.com"   # the name starttls() checks the certificate against
s.starttls(context=ctx)
s.login("alice@example.com", "demo-password")
msg = open(msgfile, "rb").read()
refused = s.sendmail("alice@example.com", ["alice@example.com"], msg)
print("refused:", refused)
s.quit()
p = poplib.POP3_SSL(host, pport, context=ssl._create_unverified_context())
p.user("alice@example.com"); p.pass_("demo-password")
count, _ = p.stat()
resp, lines, octets = p.retr(count)
print("octets:", octets)
for l in lines:
    print("line:", repr(l))
p.dele(count)
p.quit()
`

func TestSubmissionRoundTripRealClients(t *testing.T) {
	py := requireTool(t, "python3")
	swaks := requireTool(t, "swaks")
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, submissionConfig(certFile, keyFile))
	in := startServe(t, dir)

	// A message with a dot line, 8-bit text and LF line ends.
	body := "From: alice@example.com\nTo: alice@example.com\nSubject: round trip\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n.a dot line\nGrüße\nlast line\n"
	msgFile := filepath.Join(dir, "msg.eml")
	os.WriteFile(msgFile, []byte(body), 0o600)
	_, sport, _ := net.SplitHostPort(in.addrs["submission"])
	_, pport, _ := net.SplitHostPort(in.addrs["pop3s"])
	out, err := exec.Command(py, "-c", smtplibScript, "127.0.0.1", sport, pport, caFile, msgFile).CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib/poplib: %v\n%s", err, out)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "line: "); ok {
			got = append(got, v)
		}
	}
	// Python's repr of each line as bytes: b'...'. Rebuild the expected
	// lines the same way: the Received header mailpost adds comes first.
	if !strings.Contains(string(out), "refused: {}") || len(got) < 2 || !strings.HasPrefix(got[0], "b'Received: from client.test") {
		t.Fatalf("round trip output:\n%s", out)
	}
	// smtplib sends a bytes message as is: bare LF line ends, its own
	// dot-stuffing after each LF, and a CRLF of its own before the final
	// dot (so one empty line more). mailpost must treat those LFs as line
	// ends, as Postfix does, and undo the stuffing.
	var tail []string
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		tail = append(tail, pyBytesRepr(l))
	}
	tail = append(tail, "b''")
	if gotTail := got[len(got)-len(tail):]; strings.Join(gotTail, "\n") != strings.Join(tail, "\n") {
		t.Errorf("retrieved body differs:\ngot  %q\nwant %q", gotTail, tail)
	}

	// swaks over implicit TLS (465), AUTH LOGIN, to alice's alias.
	_, ssport, _ := net.SplitHostPort(in.addrs["submissions"])
	sw := exec.Command(swaks, "--server", "127.0.0.1:"+ssport, "--tls-on-connect", "--helo", "client.test",
		"--auth", "LOGIN", "--auth-user", "alice@example.com", "--auth-password", "demo-password",
		"--from", "alice@example.com", "--to", "a.smith@example.com", "--header", "Subject: via swaks",
		"--body", "sent by swaks", "--timeout", "20")
	if out, err := sw.CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	// swaks as someone alice may not send as: refused with a clear 550.
	sw = exec.Command(swaks, "--server", "127.0.0.1:"+ssport, "--tls-on-connect", "--helo", "client.test",
		"--auth", "PLAIN", "--auth-user", "alice@example.com", "--auth-password", "demo-password",
		"--from", "ceo@example.com", "--to", "alice@example.com", "--timeout", "20")
	if out, _ := sw.CombinedOutput(); !strings.Contains(string(out), "550 5.7.1") {
		t.Errorf("swaks with a foreign sender:\n%s", out)
	}
	f := runPoplib(t, "ssl", in.addrs["pop3s"], caFile)
	if !strings.Contains(f["retr1"], "Subject: via swaks") || !strings.Contains(f["retr1"], "sent by swaks") {
		t.Errorf("the swaks message over POP3: %q", f["retr1"])
	}
	in.stop()
}

// pyBytesRepr renders s the way Python's repr(bytes) does, for the
// characters the test message uses.
func pyBytesRepr(s string) string {
	var b strings.Builder
	b.WriteString("b'")
	for _, c := range []byte(s) {
		switch {
		case c == '\'' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	b.WriteString("'")
	return b.String()
}

// Mail for another domain waits in the queue (no outbound block here, so
// nothing tries to deliver it); `mailpost queue` lists it and `queue drop`
// removes it; `mailpost dns` prints the records clients and peers need.
func TestQueueAndDNSCommands(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	cfgPath := writeConfig(t, dir, submissionConfig(certFile, keyFile))
	in := startServe(t, dir)
	c, err := smtp.DialTLS(in.addrs["submissions"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "demo-password")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.com", []string{"friend@elsewhere.org"}, strings.NewReader("Subject: out\r\n\r\nbye\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	out, errOut, code := mailpost(t, "", "queue", "-config", cfgPath)
	if code != 0 || !strings.Contains(out, "friend@elsewhere.org") || !strings.Contains(out, "1 message(s)") {
		t.Fatalf("queue: code %d\n%s%s", code, out, errOut)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	if out, errOut, code := mailpost(t, "", "queue", "drop", id, "-config", cfgPath); code != 0 {
		t.Fatalf("queue drop %s: code %d\n%s%s", id, code, out, errOut)
	}
	if out, _, _ := mailpost(t, "", "queue", "-config", cfgPath); !strings.Contains(out, "empty") {
		t.Errorf("queue after drop:\n%s", out)
	}
	out, errOut, code = mailpost(t, "", "dns", "-config", cfgPath)
	for _, want := range []string{"MX", "_pop3s._tcp.example.com", "_submissions._tcp.example.com", "v=spf1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("dns output lacks %q (code %d):\n%s%s", want, code, out, errOut)
		}
	}
	in.stop()
}
