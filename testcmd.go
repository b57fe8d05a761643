package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"golang.org/x/term"

	"mailpost/config"
	"mailpost/probe"
	"mailpost/server"
)

const testUsage = `Usage:
  mailpost test pop3 -host H [-port N] [-method ssl|tls] [-domain D] [-user ADDR] [-password-file F] [-ca-file F] [-strict] [-timeout D]
  mailpost test smtp -host H [-port N] [-method ssl|tls] [-domain D] [-user ADDR] [-password-file F] [-ca-file F] [-strict] [-timeout D]
  mailpost test roundtrip -user ADDR [-config FILE] [-host H] [-domain D] [-password-file F] [-ca-file F] [-strict] [-wait D]

pop3 and smtp check one service the way the Remote Connectivity Analyzer
does, from the name a mail client is given: the host's A/AAAA records (and,
with -domain, the domain's MX and RFC 6186 SRV records, compared with the
host), then at every address: connection, TLS (implicit, or STLS/STARTTLS
and whether it is offered), the certificate's chain, name and expiry, the
capabilities and, with -user, the login. smtp sends no mail. -port defaults
to 995 (pop3) or 465 (smtp); -method defaults to what the port usually
means (110 and 587: tls), else ssl.

roundtrip logs in to the submission and POP3 listeners of the configuration,
sends a message to ADDR itself, reads it back, deletes it. -host dials that
host instead (a name is resolved and checked as above, and is the name the
certificate must carry), on the configured ports, or on 587 (tls) and 995
(ssl) when there is no configuration file.

The password is read from -password-file (first line), from a prompt on a
terminal, or from the first line of stdin; never from a flag. Each step is
printed with its timing. Exit status: 0 all steps passed, 1 a step failed
(or warned, with -strict), 2 usage error.
`

// cmdTest runs `mailpost test pop3|smtp|roundtrip` with the system's
// resolver.
func cmdTest(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runTest(args, stdin, stdout, stderr, nil)
}

// runTest is cmdTest with the resolver for host names injected (nil: the
// system's), so that tests never ask the machine's DNS.
func runTest(args []string, stdin io.Reader, stdout, stderr io.Writer, res probe.Resolver) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "mailpost test: want pop3, smtp or roundtrip\n\n"+testUsage)
		return 2
	}
	switch args[0] {
	case "roundtrip":
		return testRoundtrip(args[1:], stdin, stdout, stderr, res)
	case "pop3", "smtp":
		return testService(args[0], args[1:], stdin, stdout, stderr, res)
	}
	fmt.Fprintf(stderr, "mailpost test: unknown check %q: want pop3, smtp or roundtrip\n\n%s", args[0], testUsage)
	return 2
}

// testFlags are the flags every check shares.
type testFlags struct {
	user, pwFile, caFile, domain string
	strict                       bool
}

func (f *testFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.user, "user", "", "the mailbox to log in as")
	fs.StringVar(&f.pwFile, "password-file", "", "read the password from the first line of this file")
	fs.StringVar(&f.caFile, "ca-file", "", "trust the CA certificates in this PEM file instead of the system roots")
	fs.StringVar(&f.domain, "domain", "", "mail domain whose MX and SRV records (RFC 6186) are checked against the host")
	fs.BoolVar(&f.strict, "strict", false, "treat warnings (an untrusted certificate, a stray SRV record) as failures")
}

func (f *testFlags) roots() (*x509.CertPool, error) {
	if f.caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", f.caFile)
	}
	return roots, nil
}

// newTestFlagSet parses into a flag set that prints the whole usage.
func newTestFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mailpost test "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, testUsage) }
	return fs
}

// finish prints the report and turns it into the exit status.
func finish(rep probe.Report, strict bool, stdout io.Writer) int {
	rep.Write(stdout)
	switch {
	case !rep.OK:
		return 1
	case strict && rep.Warnings():
		fmt.Fprintln(stdout, "-strict: warnings count as failures")
		return 1
	}
	return 0
}

// defaultPorts are the usual port of each method (RFC 8314 §7.3, RFC 6409,
// RFC 1939, RFC 2595).
var defaultPorts = map[string]map[string]int{
	"pop3": {probe.MethodSSL: 995, probe.MethodTLS: 110},
	"smtp": {probe.MethodSSL: 465, probe.MethodTLS: 587},
}

// testService runs `mailpost test pop3|smtp`.
func testService(service string, args []string, stdin io.Reader, stdout, stderr io.Writer, res probe.Resolver) int {
	fs := newTestFlagSet(service, stderr)
	var f testFlags
	f.register(fs)
	host := fs.String("host", "", "the server's name, as mail clients are given it (or an IP address)")
	port := fs.Int("port", 0, "the port (default 995 for pop3, 465 for smtp, or the usual one for -method)")
	method := fs.String("method", "", "ssl (implicit TLS) or tls (STLS/STARTTLS)")
	timeout := fs.Duration("timeout", probe.DefaultTimeout, "time allowed for each step")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mailpost test %s: %s\n\n%s", service, fmt.Sprintf(format, a...), testUsage)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usage("unexpected arguments %q", fs.Args())
	case *host == "":
		return usage("-host is required")
	case *method != "" && *method != probe.MethodSSL && *method != probe.MethodTLS:
		// The check sends a password; never in the clear.
		return usage("-method %q: want ssl or tls", *method)
	case *port < 0 || *port > 65535:
		return usage("-port %d out of range", *port)
	}
	ports := defaultPorts[service]
	switch {
	case *method == "" && *port == 0:
		*method, *port = probe.MethodSSL, ports[probe.MethodSSL]
	case *method == "":
		*method = probe.MethodSSL
		if *port == ports[probe.MethodTLS] {
			*method = probe.MethodTLS
		}
	case *port == 0:
		*port = ports[*method]
	}
	roots, err := f.roots()
	if err != nil {
		fmt.Fprintf(stderr, "mailpost test %s: %v\n", service, err)
		return 2
	}
	var password string
	if f.user != "" {
		if password, err = readSecret(f.pwFile, "Password for "+f.user+": ", stdin, stderr); err != nil {
			fmt.Fprintf(stderr, "mailpost test %s: %v\n", service, err)
			return 2
		}
	}

	ep := probe.Endpoint{Addr: net.JoinHostPort(strings.Trim(*host, "[]"), strconv.Itoa(*port)), Method: *method}
	o := probe.Options{User: f.user, Password: password, RootCAs: roots, Resolver: res, Domain: f.domain, Timeout: *timeout}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	as := "without logging in (no -user)"
	if f.user != "" {
		as = "as " + f.user
	}
	var rep probe.Report
	if service == "pop3" {
		fmt.Fprintf(stdout, "POP3 at %s (%s) %s\n", ep.Addr, ep.Method, as)
		o.POP3 = ep
		rep = probe.CheckPOP3(ctx, o)
	} else {
		fmt.Fprintf(stdout, "SMTP submission at %s (%s) %s; no mail is sent\n", ep.Addr, ep.Method, as)
		o.Submission = ep
		rep = probe.CheckSubmission(ctx, o)
	}
	return finish(rep, f.strict, stdout)
}

// testRoundtrip runs `mailpost test roundtrip`.
func testRoundtrip(args []string, stdin io.Reader, stdout, stderr io.Writer, res probe.Resolver) int {
	fs := newTestFlagSet("roundtrip", stderr)
	var f testFlags
	f.register(fs)
	var (
		cfgPath = fs.String("config", "mailpost.hcl", "configuration file")
		host    = fs.String("host", "", "dial this host instead of the configured bindings (ports are kept)")
		wait    = fs.Duration("wait", probe.DefaultWait, "how long to wait for the message to arrive over POP3")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailpost test roundtrip: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if f.user == "" {
		fmt.Fprint(stderr, "mailpost test roundtrip: -user ADDR is required\n\n"+testUsage)
		return 2
	}
	if f.domain != "" && *host == "" {
		fmt.Fprint(stderr, "mailpost test roundtrip: -domain needs -host (the name whose records to compare)\n\n"+testUsage)
		return 2
	}
	roots, err := f.roots()
	if err != nil {
		fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
		return 2
	}
	configGiven := false
	fs.Visit(func(fl *flag.Flag) { configGiven = configGiven || fl.Name == "config" })

	var sub, pop probe.Endpoint
	if _, statErr := os.Stat(*cfgPath); *host != "" && !configGiven && errors.Is(statErr, os.ErrNotExist) {
		// A remote server and no configuration here: the usual ports.
		h := strings.Trim(*host, "[]")
		sub = probe.Endpoint{Addr: net.JoinHostPort(h, "587"), Method: probe.MethodTLS}
		pop = probe.Endpoint{Addr: net.JoinHostPort(h, "995"), Method: probe.MethodSSL}
	} else {
		cfg, err := loadConfig(*cfgPath, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
			return 1
		}
		// A running server knows the ports it really bound (the file may say
		// port 0, or have been edited since); ask it first.
		var running []server.ListenerInfo
		if st, err := server.NewClient(cfg.DataDir).Status(); err == nil {
			running = st.Listeners
		}
		if sub, pop, err = roundtripEndpoints(cfg, running, *host); err != nil {
			fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
			return 1
		}
	}
	if h := strings.Trim(*host, "[]"); h != "" {
		if _, err := netip.ParseAddr(h); err != nil {
			// The name the user gives a mail client is the one its
			// certificate must carry.
			sub.ServerName, pop.ServerName = h, h
		}
	}
	password, err := readSecret(f.pwFile, "Password for "+f.user+": ", stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(stdout, "round trip for %s: submission %s (%s), POP3 %s (%s)\n", f.user, sub.Addr, sub.Method, pop.Addr, pop.Method)
	o := probe.Options{
		Submission: sub, POP3: pop,
		User: f.user, Password: password,
		RootCAs: roots, Resolver: res, Domain: f.domain,
		Wait: *wait,
	}
	var rep probe.Report
	if *host != "" {
		rep = probe.RemoteRoundtrip(ctx, o)
	} else {
		rep = probe.Roundtrip(ctx, o)
	}
	return finish(rep, f.strict, stdout)
}

// roundtripEndpoints picks what to dial from the configuration: for
// submission a STARTTLS binding (587) before an implicit-TLS one (465), for
// POP3 implicit TLS (995) before STLS (110), the way mail clients are
// usually set up. running, when a server answers on the control socket,
// supplies the ports it actually bound. host, when set, replaces the
// host part of both addresses.
func roundtripEndpoints(cfg *config.Config, running []server.ListenerInfo, host string) (sub, pop probe.Endpoint, err error) {
	if cfg.Submission == nil {
		return sub, pop, errors.New("the configuration has no submission block: there is nothing to send the test message through")
	}
	if cfg.POP3 == nil {
		return sub, pop, errors.New("the configuration has no pop3 block: there is nothing to read the test message back from")
	}
	name := func(n string) string {
		if n == "" {
			return cfg.Hostname
		}
		return n
	}
	s, p := cfg.Submission, cfg.POP3
	sub, err = pickEndpoint("submission", []choice{
		{s.UnencryptedOrTLSBindings, probe.MethodTLS, "submission"},
		{s.SSLBindings, probe.MethodSSL, "submissions"},
	}, running, host)
	if err != nil {
		return sub, pop, err
	}
	sub.ServerName = name(s.X509CertificateName)
	pop, err = pickEndpoint("pop3", []choice{
		{p.SSLBindings, probe.MethodSSL, "pop3s"},
		{p.UnencryptedOrTLSBindings, probe.MethodTLS, "pop3"},
	}, running, host)
	if err != nil {
		return sub, pop, err
	}
	pop.ServerName = name(p.X509CertificateName)
	return sub, pop, nil
}

// choice is one kind of binding, in order of preference.
type choice struct {
	bindings []netip.AddrPort
	method   string
	proto    string // the server's listener protocol name
}

func pickEndpoint(service string, choices []choice, running []server.ListenerInfo, host string) (probe.Endpoint, error) {
	for _, c := range choices {
		if len(c.bindings) == 0 {
			continue
		}
		b := c.bindings[0]
		addr := b
		for _, l := range running {
			// The key is the configured address, "#n" added when port 0
			// repeats; the protocol tells those apart.
			if (l.Key == b.String() || strings.HasPrefix(l.Key, b.String()+"#")) && l.Proto == c.proto {
				if a, err := netip.ParseAddrPort(l.Addr); err == nil {
					addr = a
				}
				break
			}
		}
		if addr.Port() == 0 {
			return probe.Endpoint{}, fmt.Errorf("%s binding %s has an ephemeral port and no running server reports the port it got; start `mailpost serve` first", service, b)
		}
		ip := addr.Addr()
		// A wildcard binding is reachable on the loopback of its family.
		if ip.IsUnspecified() {
			if ip.Is4() {
				ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
			} else {
				ip = netip.IPv6Loopback()
			}
		}
		dial := netip.AddrPortFrom(ip, addr.Port()).String()
		if host != "" {
			dial = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(int(addr.Port())))
		}
		return probe.Endpoint{Addr: dial, Method: c.method}, nil
	}
	return probe.Endpoint{}, fmt.Errorf("the %s block has no bindings", service)
}

// readSecret reads a password from file (first line), else from the
// terminal without echo, else from the first line of stdin. Only the line
// end is trimmed: spaces can be part of a password.
func readSecret(file, prompt string, stdin io.Reader, stderr io.Writer) (string, error) {
	var pw string
	switch f, isFile := stdin.(*os.File); {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		line, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimRight(line, "\r")
	case isFile && term.IsTerminal(int(f.Fd())):
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		pw = string(b)
	default:
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return "", errors.New("empty password (give it on stdin, at the prompt, or with -password-file)")
	}
	return pw, nil
}
