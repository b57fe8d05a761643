package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// stubResolver answers from tables; a name not in them does not exist.
// It is the only resolver these tests use: the machine's must never be
// asked.
type stubResolver struct {
	hosts map[string][]string
	mx    map[string][]*net.MX
	srv   map[string][]*net.SRV // "_pop3s._tcp.example.com" → records

	mu    sync.Mutex
	asked []string
}

func (s *stubResolver) ask(q string) {
	s.mu.Lock()
	s.asked = append(s.asked, q)
	s.mu.Unlock()
}

func nxdomain(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (s *stubResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	s.ask("A " + host)
	if a, ok := s.hosts[host]; ok {
		return a, nil
	}
	return nil, nxdomain(host)
}

func (s *stubResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	s.ask("MX " + name)
	if mx, ok := s.mx[name]; ok {
		return mx, nil
	}
	return nil, nxdomain(name)
}

func (s *stubResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	q := "_" + service + "._" + proto + "." + name
	s.ask("SRV " + q)
	if recs, ok := s.srv[q]; ok {
		return q, recs, nil
	}
	return "", nil, nxdomain(q)
}

// literalDialer dials only IP literals and records them: a name reaching
// it would mean the probe resolved something behind the resolver's back.
type literalDialer struct {
	t      *testing.T
	mu     sync.Mutex
	dialed []string
}

func (d *literalDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if _, perr := netip.ParseAddr(host); err != nil || perr != nil {
		d.t.Errorf("dialled %q, which is not an IP literal", addr)
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError("name")}
	}
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *literalDialer) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dialed)
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func portNum(t *testing.T, addr string) uint16 {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// remoteOptions aims the remote checks at host:port with res and a
// literal-only dialer.
func remoteOptions(t *testing.T, pki *testPKI, res Resolver, d *literalDialer) Options {
	return Options{
		User: "alice@example.com", Password: "demo-password",
		RootCAs: pki.roots, Resolver: res, Dial: d.dial,
		Timeout: 5 * time.Second, Wait: 5 * time.Second,
	}
}

// The analyzer's full POP3 pass: the name has two addresses, one of them
// down; the domain's MX covers the host, _pop3s matches and _pop3 points
// elsewhere. Both addresses are reported, the live one checked to the
// end.
func TestCheckPOP3TwoAddressesOneDown(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	port := portOf(t, ms.addr["pop3s"])
	res := &stubResolver{
		// 127.0.0.2 is loopback too, but nothing listens there.
		hosts: map[string][]string{"mail.example.com": {"127.0.0.2", "127.0.0.1"}},
		mx:    map[string][]*net.MX{"example.com": {{Host: "mail.example.com.", Pref: 10}}},
		srv: map[string][]*net.SRV{
			"_pop3s._tcp.example.com": {{Target: "mail.example.com.", Port: portNum(t, ms.addr["pop3s"])}},
			"_pop3._tcp.example.com":  {{Target: "pop.elsewhere.example.net.", Port: 110}},
		},
	}
	d := &literalDialer{t: t}
	o := remoteOptions(t, pki, res, d)
	o.Domain = "example.com"
	o.POP3 = Endpoint{Addr: "mail.example.com:" + port, Method: MethodSSL}
	rep := CheckPOP3(t.Context(), o)
	t.Logf("report:\n%s", dump(rep))

	down, up := "127.0.0.2:"+port, "127.0.0.1:"+port
	want := []string{
		"DNS mail.example.com", "DNS MX example.com", "DNS SRV _pop3s._tcp.example.com", "DNS SRV _pop3._tcp.example.com",
		"connect pop3s " + down,
		"connect pop3s " + up, "TLS", "certificate", "capabilities", "login",
	}
	if got := names(rep); !slices.Equal(got, want) {
		t.Fatalf("steps = %q\nwant    %q", got, want)
	}
	if rep.OK {
		t.Error("report OK although one address refuses")
	}
	if f := rep.Failed(); f == nil || f.Name != "connect pop3s "+down || !strings.HasPrefix(f.Detail, "connection refused: nothing listens on "+down) {
		t.Errorf("failed step = %+v", f)
	}
	for _, c := range []struct{ name, detail string }{
		{"DNS mail.example.com", "A 127.0.0.2, 127.0.0.1"},
		{"DNS MX example.com", "10 mail.example.com (includes mail.example.com)"},
		{"DNS SRV _pop3s._tcp.example.com", "mail.example.com:" + port + " (matches)"},
		{"DNS SRV _pop3._tcp.example.com", "points to pop.elsewhere.example.net:110, not mail.example.com: clients that configure themselves by RFC 6186 will go there"},
	} {
		if s := stepNamed(t, rep, c.name); s.Detail != c.detail || !s.OK {
			t.Errorf("%s: %+v, want detail %q", c.name, s, c.detail)
		}
	}
	if s := stepNamed(t, rep, "DNS SRV _pop3._tcp.example.com"); !s.Warning {
		t.Errorf("an SRV record pointing elsewhere is not a warning: %+v", s)
	}
	if s := stepNamed(t, rep, "DNS SRV _pop3s._tcp.example.com"); s.Warning {
		t.Errorf("a matching SRV record is a warning: %+v", s)
	}
	if s := stepNamed(t, rep, "certificate"); s.Warning || !strings.Contains(s.Detail, "valid for mail.example.com") {
		t.Errorf("certificate = %+v", s)
	}
	caps := stepNamed(t, rep, "capabilities").Detail
	if !strings.Contains(caps, "SASL PLAIN") || !strings.Contains(caps, "USER") || strings.Contains(caps, "STLS") {
		t.Errorf("capabilities over TLS = %q, want USER and SASL PLAIN, no STLS", caps)
	}
	if s := stepNamed(t, rep, "login"); s.Detail != "AUTH PLAIN as alice@example.com; maildrop: 0 messages, 0 octets" {
		t.Errorf("login = %+v", s)
	}
	// Each address was dialled once, by its literal.
	if got := d.list(); !slices.Equal(got, []string{down, up}) {
		t.Errorf("dialled %q", got)
	}
	out := dump(rep)
	if !strings.Contains(out, "  FAIL ") || !strings.Contains(out, "  WARN ") || strings.Contains(out, "demo-password") {
		t.Errorf("report:\n%s", out)
	}
}

// A name that does not resolve stops at DNS, in plain words, and nothing
// is dialled; so does a name without addresses.
func TestCheckNoAddress(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	res := &stubResolver{hosts: map[string][]string{"empty.example.com": {}}}
	d := &literalDialer{t: t}
	o := remoteOptions(t, pki, res, d)
	for _, c := range []struct{ host, want string }{
		{"nowhere.example.com", "no address for nowhere.example.com: the name does not exist in DNS (NXDOMAIN or no such record)"},
		{"empty.example.com", "no address for empty.example.com: the name exists but has no A or AAAA record"},
	} {
		o.POP3 = Endpoint{Addr: c.host + ":995", Method: MethodSSL}
		o.Submission = Endpoint{Addr: c.host + ":465", Method: MethodSSL}
		for what, rep := range map[string]Report{
			"pop3": CheckPOP3(t.Context(), o), "submission": CheckSubmission(t.Context(), o),
			"roundtrip": RemoteRoundtrip(t.Context(), o),
		} {
			if rep.OK || len(rep.Steps) != 1 || rep.Steps[0].Name != "DNS "+c.host || rep.Steps[0].Detail != c.want {
				t.Errorf("%s %s:\n%s", what, c.host, dump(rep))
			}
		}
	}
	if got := d.list(); len(got) != 0 {
		t.Errorf("dialled %q after failed lookups", got)
	}
	// A malformed endpoint is a failed step too, not a panic or a lookup.
	o.POP3 = Endpoint{Addr: "mail.example.com", Method: MethodSSL}
	rep := CheckPOP3(t.Context(), o)
	if f := rep.Failed(); f == nil || f.Name != "endpoint mail.example.com" || !strings.HasPrefix(f.Detail, "want host:port") {
		t.Errorf("no port:\n%s", dump(rep))
	}
	if slices.ContainsFunc(res.asked, func(q string) bool { return strings.Contains(q, "mail.example.com") }) {
		t.Errorf("looked up %q", res.asked)
	}
}

// The certificate is judged by the name the user typed, not by what the
// server calls itself: another name is a warning naming both.
func TestCheckCertificateNameMismatch(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	res := &stubResolver{hosts: map[string][]string{"pop.example.org": {"127.0.0.1"}}}
	o := remoteOptions(t, pki, res, &literalDialer{t: t})
	o.POP3 = Endpoint{Addr: "pop.example.org:" + portOf(t, ms.addr["pop3"]), Method: MethodTLS}
	rep := CheckPOP3(t.Context(), o)
	if !rep.OK || !rep.Warnings() {
		t.Fatalf("want OK with warnings:\n%s", dump(rep))
	}
	if s := stepNamed(t, rep, "certificate"); !s.Warning || s.Detail != "certificate is valid for mail.example.com, not pop.example.org" {
		t.Errorf("certificate = %+v", s)
	}
	// mailpost hides USER and SASL before TLS (secure_login): STLS clean.
	if s := stepNamed(t, rep, "STLS"); s.Warning || !strings.HasPrefix(s.Detail, "TLS 1.3") {
		t.Errorf("STLS = %+v", s)
	}
}

// A POP3 server that does not offer STLS fails the STLS step with what it
// does offer, and the password is never sent.
func TestCheckSTLSMissing(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	f := startFakePOP3(t, nil, "+OK ready\r\n", func(line string) string {
		switch line {
		case "CAPA":
			return "+OK\r\nUSER\r\nUIDL\r\n.\r\n"
		case "QUIT":
			return "+OK bye\r\n"
		}
		return "-ERR no\r\n"
	})
	res := &stubResolver{hosts: map[string][]string{"mail.example.com": {"127.0.0.1"}}}
	o := remoteOptions(t, pki, res, &literalDialer{t: t})
	o.POP3 = Endpoint{Addr: "mail.example.com:" + portOf(t, f.ln.Addr().String()), Method: MethodTLS}
	rep := CheckPOP3(t.Context(), o)
	fail := rep.Failed()
	if fail == nil || fail.Name != "STLS" || fail.Detail != "the server does not offer STLS (CAPA before TLS: UIDL, USER): a client would have to send the password in clear" {
		t.Fatalf("want STLS to fail:\n%s", dump(rep))
	}
	if got := f.seen(); !slices.Equal(got, []string{"CAPA"}) {
		t.Errorf("commands sent: %q, want only CAPA", got)
	}

	// A server that announces STLS but refuses it: the refusal in the
	// server's own words, and again no login attempted.
	both := startFakePOP3(t, nil, "+OK ready\r\n", func(line string) string {
		if line == "CAPA" {
			return "+OK\r\nUSER\r\nSTLS\r\n.\r\n"
		}
		return "-ERR no\r\n"
	})
	o.POP3 = Endpoint{Addr: "mail.example.com:" + portOf(t, both.ln.Addr().String()), Method: MethodTLS}
	o.User = "" // no login: the checks stop after the capabilities
	rep = CheckPOP3(t.Context(), o)
	if s := stepNamed(t, rep, "STLS"); s.OK || s.Detail != "the server refused STLS: -ERR no" || len(rep.Steps) != 3 {
		t.Errorf("STLS refused:\n%s", dump(rep))
	}
	if got := both.seen(); !slices.Equal(got, []string{"CAPA", "STLS"}) {
		t.Errorf("commands sent: %q, want CAPA and STLS", got)
	}
}

// A wrong password fails the login with the server's reply, for POP3 and
// for submission, and the next address is still checked.
func TestCheckWrongPassword(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	res := &stubResolver{hosts: map[string][]string{"mail.example.com": {"127.0.0.1"}}}
	o := remoteOptions(t, pki, res, &literalDialer{t: t})
	o.Password = "not-the-password"
	o.POP3 = Endpoint{Addr: "mail.example.com:" + portOf(t, ms.addr["pop3s"]), Method: MethodSSL}
	o.Submission = Endpoint{Addr: "mail.example.com:" + portOf(t, ms.addr["submission"]), Method: MethodTLS}

	rep := CheckPOP3(t.Context(), o)
	if f := rep.Failed(); f == nil || f.Name != "login" || !strings.HasPrefix(f.Detail, "login rejected: -ERR [AUTH]") {
		t.Errorf("pop3:\n%s", dump(rep))
	}
	rep = CheckSubmission(t.Context(), o)
	if f := rep.Failed(); f == nil || f.Name != "AUTH PLAIN" || !strings.HasPrefix(f.Detail, "rejected: 535 5.7.8 ") {
		t.Errorf("submission:\n%s", dump(rep))
	}
	for _, s := range rep.Steps {
		if strings.Contains(s.Detail, "not-the-password") {
			t.Errorf("password shown in %+v", s)
		}
	}
}

// Submission over both methods: capabilities read after TLS, AUTH passes,
// and nothing is sent (the maildrop stays empty).
func TestCheckSubmission(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	res := &stubResolver{
		hosts: map[string][]string{"mail.example.com": {"127.0.0.1"}},
		// No MX: a warning. _submissions says "not offered" although it
		// is the method under test: a warning. _submission matches.
		srv: map[string][]*net.SRV{
			"_submissions._tcp.example.com": {{Target: "."}},
			"_submission._tcp.example.com":  {{Target: "mail.example.com.", Port: 587}},
		},
	}
	d := &literalDialer{t: t}
	for _, c := range []struct{ proto, method, first string }{
		{"submissions", MethodSSL, "TLS"}, {"submission", MethodTLS, "STARTTLS"},
	} {
		o := remoteOptions(t, pki, res, d)
		o.Domain = "example.com"
		o.Submission = Endpoint{Addr: "mail.example.com:" + portOf(t, ms.addr[c.proto]), Method: c.method}
		rep := CheckSubmission(t.Context(), o)
		t.Logf("%s:\n%s", c.proto, dump(rep))
		want := []string{"DNS mail.example.com", "DNS MX example.com", "DNS SRV _submissions._tcp.example.com",
			"DNS SRV _submission._tcp.example.com", "connect " + c.proto + " 127.0.0.1:" + portOf(t, ms.addr[c.proto]),
			c.first, "certificate", "capabilities", "AUTH PLAIN"}
		if got := names(rep); !slices.Equal(got, want) {
			t.Fatalf("steps = %q\nwant    %q", got, want)
		}
		if !rep.OK {
			t.Errorf("not OK:\n%s", dump(rep))
		}
		if s := stepNamed(t, rep, "DNS MX example.com"); !s.Warning || !strings.HasPrefix(s.Detail, "no MX record: mail for example.com goes to") {
			t.Errorf("MX = %+v", s)
		}
		ssl := stepNamed(t, rep, "DNS SRV _submissions._tcp.example.com")
		if c.method == MethodSSL && (!ssl.Warning || !strings.Contains(ssl.Detail, "not offered")) {
			t.Errorf("_submissions with target . while checking implicit TLS: %+v", ssl)
		}
		if c.method == MethodTLS && ssl.Warning {
			t.Errorf("_submissions with target . while checking STARTTLS: %+v", ssl)
		}
		// The SRV port (587) is not the test server's: a warning only
		// when STARTTLS is the method under test.
		plain := stepNamed(t, rep, "DNS SRV _submission._tcp.example.com")
		if c.method == MethodTLS && (!plain.Warning || !strings.Contains(plain.Detail, "points to mail.example.com:587, not mail.example.com:")) {
			t.Errorf("_submission on another port: %+v", plain)
		}
		if c.method == MethodSSL && (plain.Warning || plain.Detail != "mail.example.com:587 (matches)") {
			t.Errorf("_submission for the other method: %+v", plain)
		}
		if caps := stepNamed(t, rep, "capabilities").Detail; !strings.HasPrefix(caps, "AUTH PLAIN") || !strings.Contains(caps, "SIZE ") {
			t.Errorf("capabilities = %q", caps)
		}
	}
	if n := len(ms.messages(t)); n != 0 {
		t.Errorf("the submission check left %d message(s)", n)
	}

	// Without a user, no AUTH step at all.
	o := remoteOptions(t, pki, res, d)
	o.User, o.Password = "", ""
	o.Submission = Endpoint{Addr: "mail.example.com:" + portOf(t, ms.addr["submissions"]), Method: MethodSSL}
	rep := CheckSubmission(t.Context(), o)
	if got := names(rep); !rep.OK || got[len(got)-1] != "capabilities" {
		t.Errorf("without a user:\n%s", dump(rep))
	}
}

// The round trip by name: two addresses for the host, one down; the down
// one is a failed step, the message still goes through the other and is
// read back and deleted.
func TestRemoteRoundtripOneAddressDown(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	ms := startMailServer(t, pki)
	res := &stubResolver{hosts: map[string][]string{"mail.example.com": {"127.0.0.1", "127.0.0.2"}}}
	d := &literalDialer{t: t}
	o := remoteOptions(t, pki, res, d)
	subPort, popPort := portOf(t, ms.addr["submission"]), portOf(t, ms.addr["pop3s"])
	o.Submission = Endpoint{Addr: "mail.example.com:" + subPort, Method: MethodTLS}
	o.POP3 = Endpoint{Addr: "mail.example.com:" + popPort, Method: MethodSSL}
	rep := RemoteRoundtrip(t.Context(), o)
	t.Logf("report:\n%s", dump(rep))
	want := []string{
		"DNS mail.example.com",
		"reach submission 127.0.0.1:" + subPort, "reach submission 127.0.0.2:" + subPort,
		"reach pop3 127.0.0.1:" + popPort, "reach pop3 127.0.0.2:" + popPort,
		"connect submission 127.0.0.1:" + subPort, "STARTTLS", "certificate", "AUTH PLAIN", "MAIL/RCPT/DATA",
		"connect pop3s 127.0.0.1:" + popPort, "TLS", "certificate", "login", "find message", "RETR", "DELE+QUIT",
	}
	if got := names(rep); !slices.Equal(got, want) {
		t.Fatalf("steps = %q\nwant    %q", got, want)
	}
	var failed []string
	for _, s := range rep.Steps {
		if !s.OK {
			failed = append(failed, s.Name)
		}
	}
	if !slices.Equal(failed, []string{"reach submission 127.0.0.2:" + subPort, "reach pop3 127.0.0.2:" + popPort}) || rep.OK {
		t.Errorf("failed steps %q", failed)
	}
	if out := dump(rep); !strings.Contains(out, `FAILED at "reach submission 127.0.0.2:`+subPort+`" and 1 more step(s) after `) {
		t.Errorf("verdict line:\n%s", out)
	}
	if s := stepNamed(t, rep, "certificate"); s.Warning {
		t.Errorf("certificate judged against the wrong name: %+v", s)
	}
	if n := len(ms.messages(t)); n != 0 {
		t.Errorf("%d message(s) left after the round trip", n)
	}
}

// scripted serves one line-based dialog per connection on loopback: the
// greeting, then reply(line) for each line; a reply of "\x00TLS" after
// "+OK ..." means: send the rest, then start TLS as the server.
func scripted(t *testing.T, conf *tls.Config, greeting string, reply func(line string, tlsOn bool) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var conn net.Conn = c
			conn.Write([]byte(greeting))
			r := bufio.NewReader(conn)
			for j, tlsOn := 0, false; j < 50; j++ {
				line, err := r.ReadString('\n')
				if err != nil {
					break
				}
				out := reply(strings.TrimRight(line, "\r\n"), tlsOn)
				before, upgrade := strings.CutSuffix(out, "\x00TLS")
				conn.Write([]byte(before))
				if upgrade {
					tc := tls.Server(c, conf)
					if tc.Handshake() != nil {
						break
					}
					conn, r, tlsOn = tc, bufio.NewReader(tc), true
				}
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// A POP3 server that offers USER before TLS as well as STLS: STLS works,
// with a warning that a client could log in in the clear.
func TestCheckPOP3PlainLoginBeforeTLS(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	addr := scripted(t, serverTLS(t, pki), "+OK ready\r\n", func(line string, tlsOn bool) string {
		switch {
		case line == "CAPA" && !tlsOn:
			return "+OK\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n"
		case line == "CAPA":
			return "+OK\r\nUSER\r\nUIDL\r\n.\r\n"
		case line == "STLS" && !tlsOn:
			return "+OK go ahead\r\n\x00TLS"
		}
		return "-ERR no\r\n"
	})
	res := &stubResolver{hosts: map[string][]string{"mail.example.com": {"127.0.0.1"}}}
	o := remoteOptions(t, pki, res, &literalDialer{t: t})
	o.User = ""
	o.POP3 = Endpoint{Addr: "mail.example.com:" + portOf(t, addr), Method: MethodTLS}
	rep := CheckPOP3(t.Context(), o)
	if !rep.OK {
		t.Fatalf("not OK:\n%s", dump(rep))
	}
	s := stepNamed(t, rep, "STLS")
	if !s.Warning || !strings.HasSuffix(s.Detail, "; but before TLS the server already offers USER and SASL PLAIN, so a client could send the password in clear") {
		t.Errorf("STLS = %+v", s)
	}
	// The capabilities are the ones after TLS (RFC 2595 §4).
	if c := stepNamed(t, rep, "capabilities"); c.Detail != "UIDL, USER" || c.Warning {
		t.Errorf("capabilities = %+v", c)
	}
}

// A submission server without STARTTLS: the step says so, and no AUTH
// is attempted in the clear.
func TestCheckSubmissionNoSTARTTLS(t *testing.T) {
	pki := newPKI(t, "probe test CA")
	var mu sync.Mutex
	var seen []string
	addr := scripted(t, nil, "220 mail.example.com ESMTP\r\n", func(line string, _ bool) string {
		mu.Lock()
		seen = append(seen, line)
		mu.Unlock()
		if strings.HasPrefix(line, "EHLO ") {
			return "250-mail.example.com\r\n250 AUTH PLAIN LOGIN\r\n"
		}
		return "502 no\r\n"
	})
	res := &stubResolver{hosts: map[string][]string{"mail.example.com": {"127.0.0.1"}}}
	o := remoteOptions(t, pki, res, &literalDialer{t: t})
	o.Submission = Endpoint{Addr: "mail.example.com:" + portOf(t, addr), Method: MethodTLS}
	rep := CheckSubmission(t.Context(), o)
	if f := rep.Failed(); f == nil || f.Name != "STARTTLS" || f.Detail != "the server does not offer STARTTLS in its EHLO reply: a client would have to send the password in clear" {
		t.Errorf("report:\n%s", dump(rep))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range seen {
		if strings.HasPrefix(l, "AUTH") {
			t.Errorf("sent %q without TLS", l)
		}
	}
}
