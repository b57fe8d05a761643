package importer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"mailpost/storage"
)

// fakePOP3 is an in-process POP3 server on 127.0.0.1 with knobs for the
// ways an old server can be broken or hostile. It records every command.
type fakePOP3 struct {
	t        *testing.T
	ln       net.Listener
	tlsCfg   *tls.Config
	implicit bool

	user, pass string
	msgs       []string // as the server stores them; RETR dot-stuffs them
	uidls      []string // nil: UIDL answers -ERR
	sasl       bool     // offer SASL PLAIN
	noCAPA     bool
	noSTLS     bool // plain port without STLS
	authErr    string
	listSizes  map[int]int64 // LIST overrides
	// hostile behaviour
	dropInRetr  int    // message whose RETR is cut off halfway (connection closed)
	hugeLine    int    // bytes of garbage sent instead of the greeting
	stallAfter  string // command after which the server goes silent
	extraUIDL   string // a raw line slipped into the UIDL listing
	preTLSBytes string // sent right after "+OK" to STLS, before the handshake

	// Pointers, so the table in TestPOP3Refusals can hold plain values;
	// start makes them.
	mu   *sync.Mutex
	cmds []string
	wg   *sync.WaitGroup
}

func testTLS(t *testing.T) (server *tls.Config, roots *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "importer test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, roots
}

// start listens and serves until the test ends; it returns a POP3 source
// aimed at it that trusts its CA.
func (f *fakePOP3) start(roots *x509.CertPool) *POP3 {
	t := f.t
	f.mu, f.wg = new(sync.Mutex), new(sync.WaitGroup)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				// Nothing here may outlive the test.
				c.SetDeadline(time.Now().Add(20 * time.Second))
				f.serve(c)
			}()
		}
	}()
	return &POP3{Addr: ln.Addr().String(), Host: "localhost", Implicit: f.implicit, User: f.user, Password: f.pass,
		TLS: &tls.Config{RootCAs: roots}, Timeout: 5 * time.Second}
}

func (f *fakePOP3) record(cmd string) {
	f.mu.Lock()
	f.cmds = append(f.cmds, cmd)
	f.mu.Unlock()
}

func (f *fakePOP3) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func (f *fakePOP3) serve(c net.Conn) {
	conn := c
	if f.implicit {
		tc := tls.Server(c, f.tlsCfg)
		if tc.Handshake() != nil {
			return
		}
		conn = tc
	}
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	out := func(s string) { w.WriteString(s); w.Flush() }
	if f.hugeLine > 0 {
		// One line far longer than any limit, in pieces, with no end.
		chunk := strings.Repeat("x", 64<<10)
		for n := 0; n < f.hugeLine; n += len(chunk) {
			if _, err := w.WriteString(chunk); err != nil {
				return
			}
		}
		w.Flush()
		return
	}
	out("+OK fake POP3 ready\r\n")
	authed, secure := false, f.implicit
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		cmd, arg, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "PASS" || cmd == "AUTH" {
			f.record(cmd + " <secret>")
		} else {
			f.record(line)
		}
		if f.stallAfter != "" && line == f.stallAfter {
			// Silence until the client gives up and closes.
			io := make([]byte, 1)
			c.Read(io)
			return
		}
		switch cmd {
		case "CAPA":
			if f.noCAPA {
				out("-ERR unknown command\r\n")
				continue
			}
			caps := "+OK\r\nTOP\r\nUSER\r\n"
			if f.uidls != nil {
				caps += "UIDL\r\n"
			}
			if !secure && !f.noSTLS {
				caps += "STLS\r\n"
			}
			if f.sasl {
				caps += "SASL PLAIN\r\n"
			}
			out(caps + ".\r\n")
		case "STLS":
			if f.noSTLS || secure {
				out("-ERR no\r\n")
				continue
			}
			out("+OK begin TLS\r\n" + f.preTLSBytes)
			tc := tls.Server(c, f.tlsCfg)
			if tc.Handshake() != nil {
				return
			}
			conn, secure = tc, true
			r, w = bufio.NewReader(conn), bufio.NewWriter(conn)
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			dec, _ := base64.StdEncoding.DecodeString(resp)
			if strings.ToUpper(mech) != "PLAIN" || f.authErr != "" || string(dec) != "\x00"+f.user+"\x00"+f.pass {
				out("-ERR [AUTH] " + f.authErr + "\r\n")
				continue
			}
			authed = true
			out("+OK logged in\r\n")
		case "USER":
			out("+OK\r\n")
		case "PASS":
			if f.authErr != "" || arg != f.pass {
				out("-ERR [AUTH] " + f.authErr + "\r\n")
				continue
			}
			authed = true
			out("+OK logged in\r\n")
		case "STAT", "LIST", "UIDL", "RETR":
			if !authed {
				out("-ERR log in first\r\n")
				continue
			}
			f.transaction(cmd, arg, out, c)
			if cmd == "RETR" && arg == fmt.Sprint(f.dropInRetr) {
				return
			}
		case "QUIT":
			out("+OK bye\r\n")
			return
		default:
			out("-ERR unknown command\r\n")
		}
	}
}

func (f *fakePOP3) transaction(cmd, arg string, out func(string), c net.Conn) {
	total := 0
	for _, m := range f.msgs {
		total += len(m)
	}
	switch cmd {
	case "STAT":
		out(fmt.Sprintf("+OK %d %d\r\n", len(f.msgs), total))
	case "LIST":
		var b strings.Builder
		b.WriteString("+OK\r\n")
		for i, m := range f.msgs {
			size := int64(len(m))
			if s, ok := f.listSizes[i+1]; ok {
				size = s
			}
			fmt.Fprintf(&b, "%d %d\r\n", i+1, size)
		}
		out(b.String() + ".\r\n")
	case "UIDL":
		if f.uidls == nil {
			out("-ERR UIDL not supported\r\n")
			return
		}
		var b strings.Builder
		b.WriteString("+OK\r\n")
		for i, u := range f.uidls {
			fmt.Fprintf(&b, "%d %s\r\n", i+1, u)
		}
		b.WriteString(f.extraUIDL)
		out(b.String() + ".\r\n")
	case "RETR":
		var n int
		fmt.Sscan(arg, &n)
		if n < 1 || n > len(f.msgs) {
			out("-ERR no such message\r\n")
			return
		}
		var b strings.Builder
		b.WriteString("+OK\r\n")
		for _, l := range strings.SplitAfter(f.msgs[n-1], "\n") {
			if l == "" {
				continue
			}
			if strings.HasPrefix(l, ".") {
				b.WriteString(".")
			}
			b.WriteString(l)
		}
		s := b.String()
		if n == f.dropInRetr {
			out(s[:len(s)/2])
			return
		}
		out(s + ".\r\n")
	}
}

func (f *fakePOP3) sawCommand(prefix string) bool {
	for _, c := range f.commands() {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

// collect runs the source and gathers what it yields.
func collect(t *testing.T, p *POP3, known map[string]bool) ([]Message, Stats, string, error) {
	t.Helper()
	var log bytes.Buffer
	p.Log = &log
	var got []Message
	var asked []string
	st, err := p.Each(t.Context(), func(uidls []string) (map[string]bool, error) {
		asked = append(asked, uidls...)
		out := map[string]bool{}
		for _, u := range uidls {
			if known[u] {
				out[u] = true
			}
		}
		return out, nil
	}, func(m Message) error {
		got = append(got, m)
		return nil
	})
	return got, st, log.String(), err
}

const (
	msgPlain = "Date: Thu, 24 Nov 2022 18:22:48 +0000\r\nSubject: one\r\n\r\nhello\r\n"
	// Dot lines, a lone dot and 8-bit text, stored with bare LFs.
	msgDots = "Subject: dots\n\n.leading dot\n.\n..two\nfa\xc3\xa7ade\n"
	msgRcvd = "Received: from x by y; Fri, 25 Nov 2022 08:00:00 +0100\r\nSubject: three\r\n\r\nno date\r\n"
)

func TestPOP3CopiesWithOldUIDLs(t *testing.T) {
	srvTLS, roots := testTLS(t)
	f := &fakePOP3{t: t, tlsCfg: srvTLS, implicit: true, user: "alice@old.example", pass: "s3cret pass",
		sasl: true, msgs: []string{msgPlain, msgDots, msgRcvd, "Subject: four\r\n\r\nx\r\n", "Subject: five\r\n\r\ny\r\n"},
		uidls:     []string{"00000001abc", "00000002abc", "has space?", "00000001abc", "done-before"},
		extraUIDL: "99 out-of-range\r\nnot-a-number zzz\r\n"}
	p := f.start(roots)
	got, st, log, err := collect(t, p, map[string]bool{"done-before": true})
	if err != nil {
		t.Fatalf("Each: %v\nlog: %s", err, log)
	}
	if st.Seen != 5 || st.Known != 1 || len(got) != 4 {
		t.Fatalf("stats %+v, %d messages", st, len(got))
	}
	want := []struct{ uidl, data string }{
		{"00000001abc", msgPlain},
		{"00000002abc", "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..two\r\nfa\xc3\xa7ade\r\n"},
		{ContentUIDL([]byte(msgRcvd)), msgRcvd},                                           // "has space?" is not a valid UIDL
		{ContentUIDL([]byte("Subject: four\r\n\r\nx\r\n")), "Subject: four\r\n\r\nx\r\n"}, // a repeated UIDL
	}
	for i, w := range want {
		if got[i].UIDL != w.uidl || string(got[i].Data) != w.data {
			t.Errorf("message %d = %q %q, want %q %q", i+1, got[i].UIDL, got[i].Data, w.uidl, w.data)
		}
	}
	if !got[0].Arrived.Equal(time.Date(2022, 11, 24, 18, 22, 48, 0, time.UTC)) ||
		!got[2].Arrived.Equal(time.Date(2022, 11, 25, 7, 0, 0, 0, time.UTC)) || !got[1].Arrived.IsZero() {
		t.Errorf("arrival times %v %v %v", got[0].Arrived, got[1].Arrived, got[2].Arrived)
	}
	if !strings.Contains(log, `invalid UIDL "has space?"`) || !strings.Contains(log, "share the UIDL") {
		t.Errorf("log does not warn about the bad UIDLs:\n%s", log)
	}
	cmds := f.commands()
	for _, c := range cmds {
		if strings.HasPrefix(c, "DELE") || strings.HasPrefix(c, "USER") || c == "RETR 5" {
			t.Errorf("sent %q (all: %q)", c, cmds)
		}
	}
	if cmds[len(cmds)-1] != "QUIT" || !f.sawCommand("AUTH <secret>") {
		t.Errorf("commands %q: want AUTH PLAIN and a final QUIT", cmds)
	}
	if strings.Contains(log, f.pass) {
		t.Error("the password is in the log")
	}
}

func TestPOP3WithoutUIDLOrSASL(t *testing.T) {
	srvTLS, roots := testTLS(t)
	f := &fakePOP3{t: t, tlsCfg: srvTLS, implicit: true, user: "bob", pass: "pw", noCAPA: true,
		msgs: []string{msgPlain, "Subject: two\r\n\r\n.\r\n"}}
	p := f.start(roots)
	// The content hash of the first is known: it is downloaded (nothing
	// else names it) but not handed on.
	got, st, log, err := collect(t, p, map[string]bool{ContentUIDL([]byte(msgPlain)): true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || st.Known != 1 || got[0].UIDL != ContentUIDL([]byte("Subject: two\r\n\r\n.\r\n")) || string(got[0].Data) != "Subject: two\r\n\r\n.\r\n" {
		t.Errorf("got %+v, stats %+v", got, st)
	}
	if !strings.Contains(log, "no UIDL") {
		t.Errorf("no warning about the missing UIDL: %q", log)
	}
	if !f.sawCommand("USER bob") || !f.sawCommand("PASS <secret>") {
		t.Errorf("commands %q: want USER/PASS", f.commands())
	}
}

func TestPOP3STLS(t *testing.T) {
	srvTLS, roots := testTLS(t)
	f := &fakePOP3{t: t, tlsCfg: srvTLS, user: "u", pass: "p", sasl: true, msgs: []string{msgPlain}, uidls: []string{"x1"}}
	p := f.start(roots)
	got, _, _, err := collect(t, p, nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("over STLS: %v, %d messages", err, len(got))
	}
	cmds := f.commands()
	if cmds[0] != "CAPA" || cmds[1] != "STLS" || cmds[2] != "CAPA" {
		t.Errorf("commands %q: want CAPA, STLS, CAPA again", cmds)
	}

	// No STLS on offer: the password is never sent.
	f2 := &fakePOP3{t: t, tlsCfg: srvTLS, user: "u", pass: "p", noSTLS: true, msgs: []string{msgPlain}}
	p2 := f2.start(roots)
	if _, _, _, err := collect(t, p2, nil); err == nil || !strings.Contains(err.Error(), "does not offer STLS") {
		t.Errorf("no STLS: %v", err)
	}
	if f2.sawCommand("PASS") || f2.sawCommand("AUTH") || f2.sawCommand("USER") {
		t.Errorf("credentials sent without TLS: %q", f2.commands())
	}

	// Bytes pushed after "+OK" and before the handshake are refused
	// (STARTTLS command injection).
	f3 := &fakePOP3{t: t, tlsCfg: srvTLS, user: "u", pass: "p", preTLSBytes: "+OK injected\r\n", msgs: []string{msgPlain}}
	if _, _, _, err := collect(t, f3.start(roots), nil); err == nil {
		t.Error("data before the TLS handshake accepted")
	}
}

func TestPOP3Refusals(t *testing.T) {
	srvTLS, roots := testTLS(t)
	msgs := []string{msgPlain, strings.Repeat("Subject: big\r\n", 200), msgDots}
	for _, tc := range []struct {
		name    string
		f       fakePOP3
		setup   func(p *POP3)
		wantErr string
		check   func(t *testing.T, f *fakePOP3, got []Message, st Stats)
	}{
		{name: "AUTH refused", f: fakePOP3{sasl: true, authErr: "Authentication failed."},
			wantErr: "login as alice refused: AUTH PLAIN: the server said -ERR [AUTH] Authentication failed."},
		{name: "PASS refused", f: fakePOP3{authErr: "bad"}, wantErr: "login as alice refused: PASS"},
		{name: "wrong CA", f: fakePOP3{}, setup: func(p *POP3) { p.TLS = &tls.Config{} },
			wantErr: "certificate signed by unknown authority"},
		{name: "wrong name", f: fakePOP3{}, setup: func(p *POP3) { p.Host = "old.example" },
			wantErr: "old.example"},
		{name: "dropped mid-RETR", f: fakePOP3{dropInRetr: 2}, wantErr: "RETR 2: cut off after",
			check: func(t *testing.T, f *fakePOP3, got []Message, st Stats) {
				if len(got) != 1 {
					t.Errorf("%d messages before the drop, want 1", len(got))
				}
			}},
		{name: "huge greeting line", f: fakePOP3{hugeLine: 8 << 20}, wantErr: "line too long"},
		{name: "silent server", f: fakePOP3{stallAfter: "STAT"}, setup: func(p *POP3) { p.Timeout = 300 * time.Millisecond },
			wantErr: "i/o timeout"},
		{name: "too large by LIST", f: fakePOP3{listSizes: map[int]int64{2: 1 << 40}},
			wantErr: "", check: func(t *testing.T, f *fakePOP3, got []Message, st Stats) {
				if st.TooLarge != 1 || len(got) != 2 || f.sawCommand("RETR 2") {
					t.Errorf("stats %+v, %d messages, commands %q", st, len(got), f.commands())
				}
			}},
		{name: "larger than LIST said", f: fakePOP3{listSizes: map[int]int64{2: 10}},
			setup: func(p *POP3) { p.MaxSize = 1000 }, wantErr: "RETR 2: more than 1000 octets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.t, f.tlsCfg, f.implicit, f.user, f.pass, f.msgs = t, srvTLS, true, "alice", "pw-XYZ", msgs
			f.uidls = []string{"a", "b", "c"}
			p := f.start(roots)
			if tc.setup != nil {
				tc.setup(p)
			}
			got, st, log, err := collect(t, p, nil)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "pw-XYZ") || strings.Contains(log, "pw-XYZ") {
				t.Error("the password leaked into the error or log")
			}
			if f.sawCommand("DELE") {
				t.Error("DELE sent")
			}
			if tc.check != nil {
				tc.check(t, &f, got, st)
			}
		})
	}
}

// Cancelling the context (Ctrl-C) ends a session that waits on the server.
func TestPOP3Cancel(t *testing.T) {
	srvTLS, roots := testTLS(t)
	f := &fakePOP3{t: t, tlsCfg: srvTLS, implicit: true, user: "u", pass: "p", msgs: []string{msgPlain}, uidls: []string{"a"}, stallAfter: "RETR 1"}
	p := f.start(roots)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Cancel once RETR is on the wire (the timeout is 5 s: long after).
	done := make(chan error, 1)
	go func() {
		_, err := p.Each(ctx, nil, func(Message) error { return nil })
		done <- err
	}()
	for i := 0; i < 500 && !f.sawCommand("RETR 1"); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, addr, host, user string
		implicit             bool
		wantErr              string
	}{
		{in: "pop3s://alice@old.example", addr: "old.example:995", host: "old.example", user: "alice", implicit: true},
		{in: "pop3s://user%40example.com@old.example:1995/", addr: "old.example:1995", host: "old.example", user: "user@example.com", implicit: true},
		{in: "pop3://bob@127.0.0.1", addr: "127.0.0.1:110", host: "127.0.0.1", user: "bob"},
		{in: "pop3s://bob@[::1]:10995", addr: "[::1]:10995", host: "::1", user: "bob", implicit: true},
		{in: "pop3s://bob:secret@old.example", wantErr: "leave the password out"},
		{in: "imap://bob@old.example", wantErr: "want pop3s://"},
		{in: "pop3s://old.example", wantErr: "no user name"},
		{in: "pop3s://bob@old.example:99999", wantErr: "bad port"},
		{in: "pop3s://bob@old.example/INBOX", wantErr: "nothing may follow"},
	} {
		p, err := ParseURL(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error shows the password", tc.in)
			}
			continue
		}
		if err != nil || p.Addr != tc.addr || p.Host != tc.host || p.User != tc.user || p.Implicit != tc.implicit {
			t.Errorf("%s = %+v, %v", tc.in, p, err)
		}
	}
}

func TestValidUIDLAndArrival(t *testing.T) {
	for u, want := range map[string]bool{"a": true, strings.Repeat("x", 70): true, strings.Repeat("x", 71): false, "": false, "a b": false, "é": false, "~!": true} {
		if storage.ValidUIDL(u) != want {
			t.Errorf("ValidUIDL(%q) = %v", u, !want)
		}
	}
	// A message with no header end: the scan stops at its bound.
	if !ArrivalTime([]byte(strings.Repeat("X-Long: y\r\n", 100000))).IsZero() {
		t.Error("arrival from a header-only message")
	}
}
