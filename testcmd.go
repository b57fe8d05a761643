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
  mailpost test roundtrip -user ADDR [-config FILE] [-password-file F] [-strict] [-host H] [-ca-file F] [-wait D]

Logs in to the submission and POP3 listeners of the configuration, sends a
message to ADDR itself, reads it back, deletes it, and prints each step with
its timing. The password is read from -password-file (first line), from a
prompt on a terminal, or from the first line of stdin; never from a flag.
Exit status: 0 all steps passed, 1 a step failed (or warned, with -strict),
2 usage error.
`

// cmdTest runs `mailpost test SUBCOMMAND`; only "roundtrip" exists so far.
func cmdTest(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "roundtrip" {
		fmt.Fprint(stderr, "mailpost test: want \"roundtrip\"\n\n"+testUsage)
		return 2
	}
	fs := flag.NewFlagSet("mailpost test roundtrip", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, testUsage) }
	var (
		cfgPath = fs.String("config", "mailpost.hcl", "configuration file")
		user    = fs.String("user", "", "the mailbox to log in as; the message goes to itself")
		pwFile  = fs.String("password-file", "", "read the password from the first line of this file")
		strict  = fs.Bool("strict", false, "treat warnings (an untrusted certificate) as failures")
		host    = fs.String("host", "", "dial this host instead of the configured bindings (ports are kept)")
		caFile  = fs.String("ca-file", "", "trust the CA certificates in this PEM file instead of the system roots")
		wait    = fs.Duration("wait", probe.DefaultWait, "how long to wait for the message to arrive over POP3")
	)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailpost test roundtrip: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *user == "" {
		fmt.Fprint(stderr, "mailpost test roundtrip: -user ADDR is required\n\n"+testUsage)
		return 2
	}
	var roots *x509.CertPool
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
			return 2
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "mailpost test roundtrip: no PEM certificates in %s\n", *caFile)
			return 2
		}
	}

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
	sub, pop, err := roundtripEndpoints(cfg, running, *host)
	if err != nil {
		fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
		return 1
	}
	password, err := readSecret(*pwFile, "Password for "+*user+": ", stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mailpost test roundtrip: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(stdout, "round trip for %s: submission %s (%s), POP3 %s (%s)\n", *user, sub.Addr, sub.Method, pop.Addr, pop.Method)
	rep := probe.Roundtrip(ctx, probe.Options{
		Submission: sub, POP3: pop,
		User: *user, Password: password,
		RootCAs: roots,
		Wait:    *wait,
	})
	rep.Write(stdout)
	switch {
	case !rep.OK:
		return 1
	case *strict && rep.Warnings():
		fmt.Fprintln(stdout, "-strict: warnings count as failures")
		return 1
	}
	return 0
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
