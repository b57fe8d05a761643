package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/storage"
)

// result is what happened to one recipient in one attempt.
type result struct {
	ok        bool
	permanent bool   // 5xx for this recipient, or the domain cannot receive mail
	code      int    // SMTP reply code, 0 when there was none (network, DNS)
	status    string // enhanced status code (RFC 3463), "" if unknown
	msg       string // the reply text or the error
	remote    string // next hop that answered, "" if none did
}

func (res result) String() string {
	if res.code != 0 {
		s := strconv.Itoa(res.code)
		if res.status != "" {
			s += " " + res.status
		}
		return s + " " + res.msg
	}
	return res.msg
}

// attempt makes one delivery attempt of queue entry id and records the
// outcome.
func (r *Runner) attempt(ctx context.Context, id uint64) {
	st := r.st.Load()
	q, err := r.store.QueuedMessage(id)
	if errors.Is(err, storage.ErrNotFound) {
		return // dropped meanwhile
	} else if err != nil {
		r.log.Error("outbound: reading queue entry", "queue_id", id, "err", err)
		return
	}
	if q.NextAttempt.After(r.opt.Now()) {
		return // deferred since the scan that picked it (a scan can lag a worker)
	}
	log := r.log.With("queue_id", id, "from", q.From, "attempt", q.Attempts+1)
	sig, err := r.sign(st, q)
	if err != nil {
		// Unsigned mail may be refused or junked; still better than
		// holding it, and the log says why.
		log.Error("outbound: DKIM signing failed, sending unsigned", "err", err)
		sig = ""
	}
	results := map[string]result{}
	for _, g := range r.route(st, q.To) {
		if ctx.Err() != nil {
			break
		}
		release, err := r.destSlot(ctx, g.dest)
		if err != nil {
			break
		}
		for rcpt, res := range r.deliverGroup(ctx, st, g, q, sig) {
			results[rcpt] = res
		}
		release()
	}
	r.finish(ctx, st, q, results, log)
}

// group is the recipients one SMTP session serves.
type group struct {
	dest   string // the relay's address or the recipients' domain
	domain string // "" for the relay
	rcpts  []string
}

// route splits recipients into sessions: all to the relay, or one per
// domain.
func (r *Runner) route(st *Settings, to []string) []group {
	if st.Relay != nil {
		return []group{{dest: st.Relay.Address, rcpts: slices.Clone(to)}}
	}
	var out []group
	idx := map[string]int{}
	for _, rcpt := range to {
		d := domainOf(rcpt)
		i, ok := idx[d]
		if !ok {
			i = len(out)
			idx[d] = i
			out = append(out, group{dest: d, domain: d})
		}
		out[i].rcpts = append(out[i].rcpts, rcpt)
	}
	return out
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return strings.ToLower(strings.TrimSuffix(d, "."))
}

// deliverGroup delivers to one destination and returns a result for each
// of g.rcpts.
func (r *Runner) deliverGroup(ctx context.Context, st *Settings, g group, q storage.QueuedMessage, sig string) map[string]result {
	all := func(res result) map[string]result {
		out := make(map[string]result, len(g.rcpts))
		for _, rcpt := range g.rcpts {
			out[rcpt] = res
		}
		return out
	}
	if st.Relay != nil {
		res, err := r.session(ctx, st, hop{addr: st.Relay.Address, host: hostOf(st.Relay.Address), relay: st.Relay}, g.rcpts, q, sig)
		if err != nil {
			return all(result{msg: err.Error(), remote: st.Relay.Address})
		}
		return res
	}
	hops, perm, err := r.lookup(ctx, g.domain)
	if err != nil {
		return all(result{permanent: perm, msg: err.Error()})
	}
	// RFC 5321 §5.1: try the hosts in order of preference; a host that
	// cannot be reached or fails before the transaction hands over to
	// the next.
	var last error
	for _, h := range hops {
		res, err := r.session(ctx, st, h, g.rcpts, q, sig)
		if err == nil {
			return res
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return all(result{msg: fmt.Sprintf("no mail server of %s took the message: %v", g.domain, last)})
}

// hop is one next-hop address to try.
type hop struct {
	addr  string // ip:port or host:port
	host  string // the name to verify a certificate against
	relay *Relay // nil for direct delivery
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// lookup finds the next hops of a domain: its MX hosts in preference
// order, each at every address it has, or the domain itself when it has
// no MX (RFC 5321 §5.1). perm reports a domain that cannot receive mail.
func (r *Runner) lookup(ctx context.Context, domain string) (hops []hop, perm bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opt.Timeout)
	defer cancel()
	mxs, err := r.opt.Resolver.LookupMX(ctx, domain)
	var dnsErr *net.DNSError
	switch {
	case err != nil && errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		mxs = []*net.MX{{Host: domain, Pref: 0}}
	case err != nil:
		return nil, false, fmt.Errorf("MX lookup for %s: %w", domain, err)
	case len(mxs) == 0:
		mxs = []*net.MX{{Host: domain, Pref: 0}}
	}
	// RFC 7505: a single MX of "." says the domain takes no mail.
	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		return nil, true, fmt.Errorf("%s does not accept mail (null MX, RFC 7505)", domain)
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	var notFound, tempErr error
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		ips, err := r.opt.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				notFound = err
			} else {
				tempErr = err
			}
			continue
		}
		for _, ip := range ips {
			hops = append(hops, hop{addr: net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(r.opt.Port)), host: host})
		}
	}
	switch {
	case len(hops) > 0:
		return hops, false, nil
	case tempErr != nil:
		return nil, false, fmt.Errorf("address lookup for the mail servers of %s: %w", domain, tempErr)
	default:
		return nil, true, fmt.Errorf("%s has no mail server with an address: %w", domain, notFound)
	}
}

// session runs one SMTP transaction to h, on a pooled connection when one
// is idle. An error means the transaction never started (connection,
// greeting, TLS, AUTH), so another host may be tried and the recipients
// have no verdict; otherwise each recipient gets one.
func (r *Runner) session(ctx context.Context, st *Settings, h hop, rcpts []string, q storage.QueuedMessage, sig string) (map[string]result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opt.SessionTimeout)
	defer cancel()
	key := h.poolKey(st.Hostname)
	pc := r.pool.get(key)
	if pc == nil {
		var err error
		if pc, err = r.connect(ctx, st, h); err != nil {
			return nil, err
		}
	}
	pc.dc.setHard(ctx)
	// Cancelling (Stop) or the session deadline ends blocked I/O.
	stop := context.AfterFunc(ctx, func() { pc.raw.Close() })
	reusable := true
	defer func() {
		if stop() && reusable {
			r.pool.put(key, pc)
			return
		}
		pc.c.Close()
	}()
	// fail records a refusal; anything but a reply (a broken or timed-out
	// connection) or a 421 (closing, RFC 5321 §3.8) retires the connection.
	fail := func(err error) result {
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code == 421 {
			reusable = false
		}
		return verdict(err, h.addr)
	}

	// Replies are about this message from here: 5xx is final.
	out := make(map[string]result, len(rcpts))
	if err := pc.c.Mail(q.From, &smtp.MailOptions{Size: q.Size + int64(len(sig))}); err != nil {
		res := fail(err)
		for _, rcpt := range rcpts {
			out[rcpt] = res
		}
		return out, nil
	}
	var accepted []string
	for _, rcpt := range rcpts {
		if err := pc.c.Rcpt(rcpt, nil); err != nil {
			out[rcpt] = fail(err)
			continue
		}
		accepted = append(accepted, rcpt)
	}
	if len(accepted) == 0 {
		// The pool's RSET ends this transaction before any reuse.
		return out, nil
	}
	res := result{ok: true, code: 250, msg: "accepted", remote: h.addr}
	if err := r.sendData(pc.c, q.ID, sig); err != nil {
		res = fail(err)
	}
	for _, rcpt := range accepted {
		out[rcpt] = res
	}
	return out, nil
}

// connect opens a connection to h ready for MAIL: TCP, TLS as the mode
// says, EHLO, and AUTH to a relay that wants it.
func (r *Runner) connect(ctx context.Context, st *Settings, h hop) (*pooledConn, error) {
	dialCtx, dialCancel := context.WithTimeout(ctx, r.opt.Timeout)
	raw, err := r.opt.Dial(dialCtx, "tcp", h.addr)
	dialCancel()
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", h.addr, err)
	}
	dc := &deadlineConn{Conn: raw, idle: r.opt.Timeout}
	dc.setHard(ctx)
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	mode := "opportunistic"
	if h.relay != nil {
		mode = h.relay.TLS
	}
	c, tlsState, err := r.open(dc, st.Hostname, h, mode)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("%s: %w", h.addr, err)
	}
	c.CommandTimeout, c.SubmissionTimeout = r.opt.Timeout, r.opt.Timeout
	if err := c.Hello(st.Hostname); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: EHLO: %w", h.addr, err)
	}
	if h.relay != nil && h.relay.Username != "" {
		// RFC 4954 + RFC 4616; only ever over TLS or to loopback, which
		// the config enforces.
		if err := c.Auth(sasl.NewPlainClient("", h.relay.Username, h.relay.Password)); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: AUTH: %w", h.addr, err)
		}
	}
	r.log.Debug("outbound: connected", "remote", h.addr, "tls", tlsState)
	return &pooledConn{c: c, raw: raw, dc: dc}, nil
}

// sendData streams the stored message, signature first, and waits for the
// reply to the final dot (RFC 5321 §4.1.1.4). The body is opened before
// DATA, and a read failing midway returns without the final dot, so a
// truncated message is never handed over (the caller drops the connection).
func (r *Runner) sendData(c *smtp.Client, id uint64, sig string) error {
	body, err := r.store.OpenQueued(id)
	if err != nil {
		return err
	}
	defer body.Close()
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, sig); err != nil {
		return err
	}
	if _, err := io.Copy(w, body); err != nil {
		return fmt.Errorf("sending queued message %d: %w", id, err)
	}
	_, err = w.CloseWithResponse()
	return err
}

// verdict classifies a failed command: a 5xx reply is final, anything else
// (4xx, a dropped connection, a timeout) is worth retrying.
func verdict(err error, remote string) result {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		res := result{code: se.Code, msg: se.Message, remote: remote, permanent: se.Code >= 500 && se.Code < 600}
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			res.status = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return res
	}
	return result{msg: err.Error(), remote: remote}
}

// open brings a connection to the point where go-smtp can EHLO on it:
// TLS first for implicit, STARTTLS negotiated here for starttls (required)
// and opportunistic (when offered), nothing for none.
func (r *Runner) open(conn net.Conn, hostname string, h hop, mode string) (*smtp.Client, string, error) {
	switch mode {
	case "implicit":
		tc := tls.Client(conn, r.tlsConfig(h))
		if err := tc.Handshake(); err != nil {
			return nil, "", fmt.Errorf("TLS: %w", err)
		}
		return smtp.NewClient(tc), "implicit " + tlsVersion(tc), nil
	case "none":
		return smtp.NewClient(conn), "none", nil
	}
	// go-smtp's own STARTTLS path greets as "localhost" and cannot be
	// opportunistic, so the greeting, EHLO and STARTTLS happen here and
	// go-smtp takes over with a fresh EHLO (RFC 3207 §4.2 requires one
	// after TLS anyway).
	tp := textproto.NewConn(conn)
	conn.SetDeadline(time.Time{})
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, "", fmt.Errorf("greeting: %w", err)
	}
	conn.SetDeadline(time.Time{})
	id, err := tp.Cmd("EHLO %s", hostname)
	if err != nil {
		return nil, "", err
	}
	tp.StartResponse(id)
	_, msg, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	offered := false
	if err == nil {
		for _, line := range strings.Split(msg, "\n")[1:] {
			if strings.EqualFold(strings.TrimSpace(line), "STARTTLS") {
				offered = true
			}
		}
	}
	if !offered {
		if mode == "starttls" {
			return nil, "", errors.New("the relay does not offer STARTTLS")
		}
		// Plain: hand over what we have read ahead, behind a greeting.
		return smtp.NewClient(&greetedConn{Conn: conn, r: io.MultiReader(strings.NewReader("220 resumed\r\n"), tp.R)}), "none", nil
	}
	conn.SetDeadline(time.Time{})
	id, err = tp.Cmd("STARTTLS")
	if err != nil {
		return nil, "", err
	}
	tp.StartResponse(id)
	_, _, err = tp.ReadResponse(220)
	tp.EndResponse(id)
	if err != nil {
		return nil, "", fmt.Errorf("STARTTLS: %w", err)
	}
	// Anything the server sent after its 220 and before the handshake is
	// dropped with tp's buffer: RFC 3207 §4.2 says to discard it.
	var verified *bool
	cfg := r.tlsConfig(h)
	if mode == "opportunistic" {
		// Verify where possible, deliver anyway: MX hosts very often
		// present self-signed or mismatched certificates, and without
		// MTA-STS or DANE refusing them only pushes mail to cleartext.
		ok := false
		verified = &ok
		roots, name := cfg.RootCAs, h.host
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			opts := x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			ok = err == nil
			return nil
		}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, "", fmt.Errorf("STARTTLS handshake: %w", err)
	}
	state := "starttls " + tlsVersion(tc)
	if verified != nil && !*verified {
		state += " unverified"
	}
	return smtp.NewClient(&greetedConn{Conn: tc, r: io.MultiReader(strings.NewReader("220 resumed\r\n"), tc)}), state, nil
}

func (r *Runner) tlsConfig(h hop) *tls.Config {
	return &tls.Config{ServerName: h.host, RootCAs: r.opt.RootCAs, MinVersion: tls.VersionTLS12}
}

func tlsVersion(tc *tls.Conn) string {
	return tls.VersionName(tc.ConnectionState().Version)
}

// greetedConn replays a synthetic greeting before the real stream, so a
// go-smtp client can start on a connection whose greeting we consumed.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }

// setHard bounds the connection by ctx's deadline (one session's).
func (d *deadlineConn) setHard(ctx context.Context) {
	d.hard, _ = ctx.Deadline()
	d.SetDeadline(time.Time{})
}

// deadlineConn keeps every read and write bounded. go-smtp clears the
// deadline after each command and sets none while the message is written,
// so a cleared deadline here means "idle from now", each write pushes it
// on, and nothing ever reaches past hard (the session's end).
type deadlineConn struct {
	net.Conn
	idle time.Duration
	hard time.Time
	open bool // the caller cleared the deadline: writes refresh it
}

func (d *deadlineConn) cap(t time.Time) time.Time {
	if t.IsZero() {
		t = time.Now().Add(d.idle)
	}
	if !d.hard.IsZero() && t.After(d.hard) {
		return d.hard
	}
	return t
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.open = t.IsZero()
	return d.Conn.SetDeadline(d.cap(t))
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error  { return d.Conn.SetReadDeadline(d.cap(t)) }
func (d *deadlineConn) SetWriteDeadline(t time.Time) error { return d.Conn.SetWriteDeadline(d.cap(t)) }

func (d *deadlineConn) Write(p []byte) (int, error) {
	if d.open {
		d.Conn.SetWriteDeadline(d.cap(time.Time{}))
	}
	return d.Conn.Write(p)
}
