package probe

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePOP3 is a scripted POP3 server on loopback for the client cases the
// real server never shows (no CAPA, no UIDL, no TOP, a STARTTLS
// injection). reply maps a command line to the raw reply octets; it runs
// for each connection in turn.
type fakePOP3 struct {
	ln       net.Listener
	mu       sync.Mutex
	commands []string // every command received, across connections
	wg       sync.WaitGroup
}

func startFakePOP3(t *testing.T, tlsConf *tls.Config, greeting string, reply func(line string) string) *fakePOP3 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	f := &fakePOP3{ln: ln}
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		f.wg.Wait()
	})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for i := 0; i < 100; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprint(c, greeting)
				r := bufio.NewReader(c)
				for j := 0; j < 1000; j++ {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					f.mu.Lock()
					f.commands = append(f.commands, line)
					f.mu.Unlock()
					out := reply(line)
					fmt.Fprint(c, out)
					if line == "QUIT" {
						return
					}
				}
			}()
		}
	}()
	return f
}

func (f *fakePOP3) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

// serverTLS is a TLS config serving a leaf for mail.example.com from pki.
func serverTLS(t *testing.T, pki *testPKI) *tls.Config {
	t.Helper()
	c, key := pki.leaf(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), "mail.example.com")
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}}}
}

// fetchOnly runs the POP3 half alone, for a message with a known token.
func fetchOnly(t *testing.T, ep Endpoint, pki *testPKI, token string) Report {
	t.Helper()
	o := Options{POP3: ep, User: "alice@example.com", Password: "pw", RootCAs: pki.roots, Timeout: 2 * time.Second, Wait: time.Second}
	o.setDefaults()
	r := &run{ctx: t.Context(), o: o}
	r.fetch(&message{token: token, from: o.User})
	rep := Report{Steps: r.steps, OK: r.steps != nil}
	for _, s := range r.steps {
		rep.OK = rep.OK && s.OK
	}
	return rep
}

// An RFC 1939 minimum server: no CAPA, no UIDL, no TOP. The probe falls
// back to USER/PASS, LIST and a bounded RETR, and still finds, reads and
// deletes the right message.
func TestPOP3MinimalServer(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	const token = "mailpost-roundtrip-0123456789abcdef01234567"
	mine := "Subject: test " + token + "\r\n\r\n..a stuffed dot line\r\nToken: " + token + "\r\n.\r\n"
	other := "Subject: something else\r\n\r\nhello\r\n.\r\n"
	f := startFakePOP3(t, serverTLS(t, pki), "+OK old server ready\r\n", func(line string) string {
		switch line {
		case "USER alice@example.com", "PASS pw":
			return "+OK\r\n"
		case "LIST":
			return "+OK 2 messages\r\n1 50\r\n2 90\r\n.\r\n"
		case "RETR 1":
			return "+OK 50 octets\r\n" + other
		case "RETR 2":
			return "+OK 90 octets\r\n" + mine
		case "DELE 2":
			return "+OK marked\r\n"
		case "QUIT":
			return "+OK bye\r\n"
		}
		return "-ERR unknown command\r\n"
	})
	rep := fetchOnly(t, Endpoint{Addr: f.ln.Addr().String(), Method: MethodSSL, ServerName: "mail.example.com"}, pki, token)
	if !rep.OK {
		t.Fatalf("fetch failed:\n%s", dump(rep))
	}
	if d := stepNamed(t, rep, "login").Detail; d != "USER/PASS as alice@example.com" {
		t.Errorf("login = %q", d)
	}
	if d := stepNamed(t, rep, "find message").Detail; d != "message 2, poll 1" {
		t.Errorf("find message = %q", d)
	}
	got := strings.Join(f.seen(), "|")
	// The newest message is looked at first: TOP 2 0 refused, then RETR 2.
	want := "CAPA|USER alice@example.com|PASS pw|UIDL|LIST|TOP 2 0|RETR 2|RETR 2|DELE 2|QUIT"
	if got != want {
		t.Errorf("commands = %s\nwant       %s", got, want)
	}
}

// A message that never shows up: the probe polls, each poll a fresh
// session ended with QUIT, until Wait has passed.
func TestPOP3PollsUntilWait(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	f := startFakePOP3(t, serverTLS(t, pki), "+OK ready\r\n", func(line string) string {
		switch {
		case line == "CAPA":
			return "+OK\r\nUIDL\r\nTOP\r\nSASL PLAIN\r\n.\r\n"
		case strings.HasPrefix(line, "AUTH PLAIN "):
			return "+OK welcome\r\n"
		case line == "UIDL":
			return "+OK\r\n1 old-one\r\n.\r\n"
		case line == "TOP 1 0":
			return "+OK\r\nSubject: not it\r\n.\r\n"
		case line == "QUIT":
			return "+OK bye\r\n"
		}
		return "-ERR what?\r\n"
	})
	rep := fetchOnly(t, Endpoint{Addr: f.ln.Addr().String(), Method: MethodSSL, ServerName: "mail.example.com"}, pki, "mailpost-roundtrip-nothere")
	fail := rep.Failed()
	if fail == nil || fail.Name != "find message" || !strings.Contains(fail.Detail, "did not arrive within 1s") {
		t.Fatalf("want find message to fail:\n%s", dump(rep))
	}
	cmds := f.seen()
	logins, tops := 0, 0
	for _, c := range cmds {
		if strings.HasPrefix(c, "AUTH PLAIN ") {
			logins++
		}
		if strings.HasPrefix(c, "TOP ") {
			tops++
		}
	}
	// About 1s / 250ms polls; the old message's headers are read once only
	// (its UIDL is remembered).
	if logins < 3 || logins > 6 || tops != 1 {
		t.Errorf("%d logins and %d TOPs in %q", logins, tops, cmds)
	}
	if cmds[len(cmds)-1] != "QUIT" {
		t.Errorf("last command %q, want QUIT", cmds[len(cmds)-1])
	}
}

// A server that sends more after its STLS +OK (an injection, CVE-2011-0411)
// is refused before any TLS or password.
func TestPOP3STLSInjection(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	f := startFakePOP3(t, nil, "+OK ready\r\n", func(line string) string {
		if line == "STLS" {
			return "+OK begin TLS\r\n+OK injected\r\n"
		}
		return "-ERR no\r\n"
	})
	rep := fetchOnly(t, Endpoint{Addr: f.ln.Addr().String(), Method: MethodTLS, ServerName: "mail.example.com"}, pki, "x")
	if fail := rep.Failed(); fail == nil || fail.Name != "STLS" || !strings.Contains(fail.Detail, "sent data after its STLS reply") {
		t.Errorf("want STLS to fail:\n%s", dump(rep))
	}
	for _, c := range f.seen() {
		if c != "STLS" {
			t.Errorf("command %q sent after the injection", c)
		}
	}
}

// Refusals are reported with the server's own words.
func TestPOP3Refusals(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	noSTLS := startFakePOP3(t, nil, "+OK ready\r\n", func(line string) string { return "-ERR not here\r\n" })
	rep := fetchOnly(t, Endpoint{Addr: noSTLS.ln.Addr().String(), Method: MethodTLS, ServerName: "mail.example.com"}, pki, "x")
	if fail := rep.Failed(); fail == nil || fail.Detail != "the server refused STLS: -ERR not here" {
		t.Errorf("no STLS:\n%s", dump(rep))
	}

	badLogin := startFakePOP3(t, serverTLS(t, pki), "+OK ready\r\n", func(line string) string {
		if line == "CAPA" {
			return "+OK\r\nUSER\r\n.\r\n"
		}
		if strings.HasPrefix(line, "PASS ") {
			return "-ERR [AUTH] invalid login\r\n"
		}
		return "+OK\r\n"
	})
	rep = fetchOnly(t, Endpoint{Addr: badLogin.ln.Addr().String(), Method: MethodSSL, ServerName: "mail.example.com"}, pki, "x")
	if fail := rep.Failed(); fail == nil || fail.Name != "login" || fail.Detail != "login rejected: -ERR [AUTH] invalid login" {
		t.Errorf("bad login:\n%s", dump(rep))
	}

	notPOP := startFakePOP3(t, serverTLS(t, pki), "220 smtp.example.com ESMTP\r\n", func(string) string { return "" })
	rep = fetchOnly(t, Endpoint{Addr: notPOP.ln.Addr().String(), Method: MethodSSL, ServerName: "mail.example.com"}, pki, "x")
	if fail := rep.Failed(); fail == nil || fail.Name != "TLS" || !strings.Contains(fail.Detail, `greeting: not a POP3 reply: "220 smtp.example.com ESMTP"`) {
		t.Errorf("SMTP instead of POP3:\n%s", dump(rep))
	}
}

func TestReportWrite(t *testing.T) {
	rep := Report{Total: 1234 * time.Millisecond, Steps: []Step{
		{Name: "connect pop3s 127.0.0.1:995", OK: true, Detail: "from 127.0.0.1:50000", Duration: 1500 * time.Microsecond},
		{Name: "certificate", OK: true, Warning: true, Detail: "certificate is valid for a, not b", Duration: 120 * time.Microsecond},
		{Name: "login", OK: false, Detail: "login rejected: -ERR [AUTH] no", Duration: 123 * time.Millisecond},
	}}
	var b strings.Builder
	rep.Write(&b)
	want := "" +
		"  ok      1.5ms  connect pop3s 127.0.0.1:995  from 127.0.0.1:50000\n" +
		"  WARN    0.1ms  certificate                  certificate is valid for a, not b\n" +
		"  FAIL    123ms  login                        login rejected: -ERR [AUTH] no\n" +
		"FAILED at \"login\" after 1.2s\n"
	if b.String() != want {
		t.Errorf("Write:\n%s\nwant:\n%s", b.String(), want)
	}
	for d, want := range map[time.Duration]string{
		60 * time.Microsecond: "0.1ms", 9 * time.Millisecond: "9.0ms", 10 * time.Millisecond: "10ms",
		999 * time.Millisecond: "999ms", 12340 * time.Millisecond: "12.3s", 95 * time.Second: "1m35s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
