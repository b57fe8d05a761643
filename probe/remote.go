package probe

// The remote checks: what Microsoft's Remote Connectivity Analyzer does for
// a POP3 or SMTP account, step by step from the name a user types into a
// mail client: DNS, every address the name resolves to, TLS, the
// certificate, the capabilities and the login.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Resolver is the part of *net.Resolver the remote checks use. Tests
// inject a table; nothing in this package looks a name up any other way.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

var _ Resolver = (*net.Resolver)(nil)

// srvService is one RFC 6186 (or RFC 8314 §5.1, for submissions) service
// record and the method it announces.
type srvService struct {
	service, method string
}

var (
	pop3SRV       = []srvService{{"pop3s", MethodSSL}, {"pop3", MethodTLS}}
	submissionSRV = []srvService{{"submissions", MethodSSL}, {"submission", MethodTLS}}
)

// CheckPOP3 checks the POP3 service at o.POP3, whose Addr is "host:port"
// with host a name (resolved through o.Resolver) or an IP literal. Every
// address the name has is checked in turn: connect, TLS or STLS (and
// whether STLS is offered at all), the certificate against ServerName
// (default: the host), the capabilities, and, when o.User is set, the
// login and STAT. With o.Domain, the domain's MX and _pop3s/_pop3 SRV
// records are reported and compared with the host. A failure at one
// address does not stop the checks of the next.
func CheckPOP3(ctx context.Context, o Options) Report {
	return checkRemote(ctx, o, o.POP3, pop3SRV, (*run).checkPOP3At)
}

// CheckSubmission is CheckPOP3 for SMTP submission at o.Submission: TLS or
// STARTTLS, the certificate, the EHLO extensions and, with o.User, AUTH
// PLAIN. It sends no mail: that is RemoteRoundtrip's job, which also
// deletes what it sent.
func CheckSubmission(ctx context.Context, o Options) Report {
	return checkRemote(ctx, o, o.Submission, submissionSRV, (*run).checkSubmissionAt)
}

func checkRemote(ctx context.Context, o Options, ep Endpoint, srv []srvService, at func(*run, Endpoint)) Report {
	o.setDefaults()
	start := time.Now()
	r := &run{ctx: ctx, o: o}
	host, port, ok := r.splitEndpoint(&ep)
	if !ok {
		return r.report(start)
	}
	addrs, resolved := r.resolve(host)
	if o.Domain != "" {
		r.checkDomain(o.Domain, host, []endpointSRV{{ep, port, srv}})
	}
	if resolved {
		for _, a := range addrs {
			if r.ctx.Err() != nil {
				break
			}
			e := ep
			e.Addr = net.JoinHostPort(a, port)
			at(r, e)
		}
	}
	return r.report(start)
}

// RemoteRoundtrip is Roundtrip for endpoints given by host name: it
// resolves them through o.Resolver (and checks o.Domain's records, as
// CheckPOP3 does), tries every address with a TCP connection when there
// are several, and runs the round trip against the first that answers.
// An unreachable address is a failed step even when another one works:
// some clients will be sent to it.
func RemoteRoundtrip(ctx context.Context, o Options) Report {
	o.setDefaults()
	start := time.Now()
	r := &run{ctx: ctx, o: o}
	sub, pop := o.Submission, o.POP3
	subHost, subPort, ok1 := r.splitEndpoint(&sub)
	popHost, popPort, ok2 := r.splitEndpoint(&pop)
	if !ok1 || !ok2 {
		return r.report(start)
	}
	subAddrs, subOK := r.resolve(subHost)
	popAddrs, popOK := subAddrs, subOK
	if !strings.EqualFold(popHost, subHost) {
		popAddrs, popOK = r.resolve(popHost)
	}
	if o.Domain != "" {
		r.checkDomain(o.Domain, subHost, []endpointSRV{{sub, subPort, submissionSRV}})
		r.checkDomain(o.Domain, popHost, []endpointSRV{{pop, popPort, pop3SRV}})
	}
	if !subOK || !popOK {
		return r.report(start)
	}
	subAddr, ok1 := r.reachable("submission", subAddrs, subPort)
	popAddr, ok2 := r.reachable("pop3", popAddrs, popPort)
	if !ok1 || !ok2 {
		return r.report(start)
	}
	sub.Addr, pop.Addr = subAddr, popAddr
	r.o.Submission, r.o.POP3 = sub, pop
	msg := newMessage(o.User, o.Now())
	if r.submit(msg) {
		r.fetch(msg)
	}
	return r.report(start)
}

// splitEndpoint takes ep.Addr apart and defaults the certificate name to
// the host; a malformed address is a failed step.
func (r *run) splitEndpoint(ep *Endpoint) (host, port string, ok bool) {
	ok = r.step("endpoint "+ep.Addr, func(s *Step) error {
		var err error
		host, port, err = net.SplitHostPort(ep.Addr)
		if err != nil {
			return fmt.Errorf("want host:port: %w", err)
		}
		if host == "" {
			return errors.New("no host name")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
		return nil
	})
	if ok {
		// Only a failed endpoint is worth a line in the report.
		r.steps = r.steps[:len(r.steps)-1]
		if ep.ServerName == "" {
			ep.ServerName = host
		}
	}
	return host, port, ok
}

// resolve returns the addresses of host: an IP literal as it is (no step),
// a name through the resolver (one step, failed with "no address for …"
// when there is none). Only IP literals come back, so nothing the checks
// dial later can trigger a lookup of its own.
func (r *run) resolve(host string) ([]string, bool) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []string{ip.String()}, true
	}
	var addrs []string
	ok := r.step("DNS "+host, func(s *Step) error {
		ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
		defer cancel()
		got, err := r.o.Resolver.LookupHost(ctx, host)
		if err != nil {
			return r.lookupError("no address for "+host, err)
		}
		var v4, v6 []string
		for _, g := range got {
			ip, err := netip.ParseAddr(g)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			switch a := ip.String(); {
			case slices.Contains(v4, a) || slices.Contains(v6, a):
			case ip.Is4():
				v4 = append(v4, a)
			default:
				v6 = append(v6, a)
			}
		}
		if len(v4)+len(v6) == 0 {
			return fmt.Errorf("no address for %s: the name exists but has no A or AAAA record", host)
		}
		addrs = append(v4, v6...)
		var parts []string
		if len(v4) > 0 {
			parts = append(parts, "A "+strings.Join(v4, ", "))
		}
		if len(v6) > 0 {
			parts = append(parts, "AAAA "+strings.Join(v6, ", "))
		}
		s.Detail = strings.Join(parts, "; ")
		return nil
	})
	return addrs, ok
}

// lookupError puts a failed lookup in words: a name that does not exist,
// a resolver that does not answer, or the resolver's own error.
func (r *run) lookupError(what string, err error) error {
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return fmt.Errorf("%s: the name does not exist in DNS (NXDOMAIN or no such record)", what)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("%s: the DNS resolver did not answer within %s", what, r.o.Timeout)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// endpointSRV is an endpoint under test and the SRV records that should
// point at it.
type endpointSRV struct {
	ep   Endpoint
	port string
	srv  []srvService
}

// checkDomain reports the domain's MX records and the RFC 6186 SRV records
// of the services under test, each compared with host. Nothing here fails
// the run: a record that sends clients elsewhere is a warning, one that is
// missing is reported, since neither stops a client that was set up by
// hand.
func (r *run) checkDomain(domain, host string, eps []endpointSRV) {
	domain = strings.TrimSuffix(domain, ".")
	if !r.domainChecked[domain] {
		if r.domainChecked == nil {
			r.domainChecked = map[string]bool{}
		}
		r.domainChecked[domain] = true
		r.step("DNS MX "+domain, func(s *Step) error {
			s.Detail, s.Warning = r.mxVerdict(domain, host)
			return nil
		})
	}
	for _, e := range eps {
		for _, sv := range e.srv {
			name := "_" + sv.service + "._tcp." + domain
			r.step("DNS SRV "+name, func(s *Step) error {
				s.Detail, s.Warning = r.srvVerdict(sv, domain, host, e)
				return nil
			})
		}
	}
}

func (r *run) mxVerdict(domain, host string) (string, bool) {
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	mxs, err := r.o.Resolver.LookupMX(ctx, domain)
	switch {
	case notFound(err) || (err == nil && len(mxs) == 0):
		// RFC 5321 §5.1: without MX the domain's own address is used.
		return "no MX record: mail for " + domain + " goes to the address of " + domain + " itself (RFC 5321 §5.1)", true
	case err != nil:
		return r.lookupError("MX "+domain, err).Error(), true
	}
	var list []string
	covers := false
	for _, mx := range mxs {
		t := strings.TrimSuffix(mx.Host, ".")
		if t == "" && len(mxs) == 1 {
			// RFC 7505: a null MX says the domain takes no mail.
			return "null MX (RFC 7505): " + domain + " accepts no mail at all", true
		}
		covers = covers || strings.EqualFold(t, host)
		list = append(list, fmt.Sprintf("%d %s", mx.Pref, t))
	}
	d := strings.Join(list, ", ")
	if covers {
		return d + " (includes " + host + ")", false
	}
	// Inbound mail may well be received by another machine than the
	// one users read from; say so, but it is no fault.
	return d + " (" + host + " is not among them: fine when another server receives the mail)", false
}

func (r *run) srvVerdict(sv srvService, domain, host string, e endpointSRV) (string, bool) {
	ctx, cancel := context.WithTimeout(r.ctx, r.o.Timeout)
	defer cancel()
	_, recs, err := r.o.Resolver.LookupSRV(ctx, sv.service, "tcp", domain)
	tested := sv.method == e.ep.Method
	switch {
	case notFound(err) || (err == nil && len(recs) == 0):
		return "no record: clients that configure themselves by RFC 6186 will not find this service", false
	case err != nil:
		return r.lookupError("SRV _"+sv.service+"._tcp."+domain, err).Error(), true
	}
	if len(recs) == 1 && strings.TrimSuffix(recs[0].Target, ".") == "" {
		// RFC 6186 §4 (RFC 2782): target "." means "not offered here".
		if tested {
			return "says the service is not offered (target \".\"), but this is the one being checked", true
		}
		return "the service is not offered (target \".\")", false
	}
	var list []string
	match := false
	for _, rec := range recs {
		t := strings.TrimSuffix(rec.Target, ".")
		list = append(list, net.JoinHostPort(t, strconv.Itoa(int(rec.Port))))
		hostOK := strings.EqualFold(t, host)
		portOK := !tested || strconv.Itoa(int(rec.Port)) == e.port
		match = match || (hostOK && portOK)
	}
	d := strings.Join(list, ", ")
	if match {
		return d + " (matches)", false
	}
	want := host
	if tested {
		want = net.JoinHostPort(host, e.port)
	}
	return "points to " + d + ", not " + want + ": clients that configure themselves by RFC 6186 will go there", true
}

// reachable tries a TCP connection to each address when there are several
// (one failed step per address that refuses) and returns the first that
// answered; with a single address the connect step that follows is the
// check.
func (r *run) reachable(service string, addrs []string, port string) (string, bool) {
	if len(addrs) == 1 {
		return net.JoinHostPort(addrs[0], port), true
	}
	first := ""
	for _, a := range addrs {
		addr := net.JoinHostPort(a, port)
		if r.step("reach "+service+" "+addr, func(s *Step) error {
			c, err := r.dial(addr)
			if err != nil {
				return err
			}
			s.Detail = "TCP connection accepted"
			return c.Close()
		}) && first == "" {
			first = addr
		}
	}
	return first, first != ""
}

// checkPOP3At runs the POP3 checks against one address.
func (r *run) checkPOP3At(ep Endpoint) {
	proto := "pop3"
	if ep.Method == MethodSSL {
		proto = "pop3s"
	}
	var p *popConn
	if !r.step("connect "+proto+" "+ep.Addr, func(s *Step) error {
		if err := checkMethod(ep); err != nil {
			return err
		}
		c, err := r.dial(ep.Addr)
		if err != nil {
			return err
		}
		p = newPopConn(r.ctx, c, r.o.Timeout)
		s.Detail = "from " + c.LocalAddr().String()
		return nil
	}) {
		return
	}
	defer p.close()

	var cs tls.ConnectionState
	ok := false
	if ep.Method == MethodSSL {
		ok = r.step("TLS", func(s *Step) error {
			var err error
			if cs, err = r.popTLS(p, ep); err != nil {
				return err
			}
			s.Detail = tlsSummary(cs)
			return nil
		})
	} else {
		ok = r.step("STLS", func(s *Step) error {
			p.arm()
			if _, err := p.status("greeting"); err != nil {
				return err
			}
			// RFC 2449 §6.4 / RFC 2595 §4: STLS is announced in CAPA.
			// A server without CAPA gets STLS tried blind.
			if err := p.capa(); err != nil {
				return err
			}
			pre := p.caps
			if len(pre) > 0 {
				if _, has := pre["STLS"]; !has {
					return fmt.Errorf("the server does not offer STLS (CAPA before TLS: %s): a client would have to send the password in clear", capList(pre))
				}
			}
			var err error
			if cs, err = p.stls(r, ep); err != nil {
				return err
			}
			s.Detail = tlsSummary(cs)
			if clear := plainLogins(pre); clear != "" {
				s.Warning = true
				s.Detail += "; but before TLS the server already offers " + clear + ", so a client could send the password in clear"
			}
			return nil
		})
	}
	if !ok {
		return
	}
	r.certStep(cs, ep)

	if !r.step("capabilities", func(s *Step) error {
		if err := p.capa(); err != nil {
			return err
		}
		if len(p.caps) == 0 {
			s.Warning = true
			s.Detail = "no CAPA (RFC 2449): clients have to guess; USER/PASS is all they can try"
			return nil
		}
		s.Detail = capList(p.caps)
		if _, user := p.caps["USER"]; !user && strings.TrimSpace(p.caps["SASL"]) == "" {
			return fmt.Errorf("no way to log in over TLS: CAPA lists neither USER nor SASL (%s)", s.Detail)
		}
		return nil
	}) || r.o.User == "" {
		return
	}

	r.step("login", func(s *Step) error {
		how, err := p.login(r.o.User, r.o.Password)
		if err != nil {
			return err
		}
		s.Detail = how + " as " + r.o.User
		// RFC 1939 §5: STAT is "+OK nn mm", messages and octets.
		if reply, err := p.cmd("STAT", "STAT"); err == nil {
			if f := strings.Fields(reply); len(f) >= 2 {
				s.Detail += fmt.Sprintf("; maildrop: %s messages, %s octets", f[0], f[1])
			}
		} else {
			return err
		}
		// RFC 1939 §6: nothing was marked deleted, so QUIT changes
		// nothing; it releases the maildrop lock at once.
		p.cmd("QUIT", "QUIT")
		return nil
	})
}

// checkSubmissionAt runs the submission checks against one address.
func (r *run) checkSubmissionAt(ep Endpoint) {
	c, done, ok := r.smtpOpen(ep)
	if !ok {
		return
	}
	defer done()
	if !r.step("capabilities", func(s *Step) error {
		var parts []string
		_, mechs := c.Extension("AUTH")
		if mechs == "" {
			return errors.New("EHLO after TLS offers no AUTH: clients cannot log in (is this a submission port?)")
		}
		parts = append(parts, "AUTH "+mechs)
		if size, ok := c.MaxMessageSize(); ok {
			if size > 0 {
				parts = append(parts, fmt.Sprintf("SIZE %d (%s)", size, byteSize(size)))
			} else {
				parts = append(parts, "SIZE (no limit given)")
			}
		}
		for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"} {
			if ok, _ := c.Extension(ext); ok {
				parts = append(parts, ext)
			}
		}
		s.Detail = strings.Join(parts, ", ")
		return nil
	}) || r.o.User == "" {
		return
	}
	if r.smtpAuth(c) {
		// Nothing was sent; QUIT only ends the session politely.
		c.Quit()
	}
}

// capList renders CAPA as "USER, SASL PLAIN, UIDL, TOP", sorted.
func capList(caps map[string]string) string {
	var out []string
	for k, v := range caps {
		if v != "" {
			k += " " + v
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// plainLogins names the login methods a pre-TLS CAPA offers.
func plainLogins(caps map[string]string) string {
	var out []string
	if _, ok := caps["USER"]; ok {
		out = append(out, "USER")
	}
	if sasl := strings.TrimSpace(caps["SASL"]); sasl != "" {
		out = append(out, "SASL "+sasl)
	}
	return strings.Join(out, " and ")
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
