package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Bounds on what the POP3 client reads, so a hostile or broken server
// cannot make the probe buffer without limit.
const (
	maxHeaderRead  = 256 << 10 // TOP n 0 of one message
	maxMessageRead = 1 << 20   // RETR of the test message (a few hundred octets)
	maxScan        = 50        // newest messages examined per poll
)

// popConn is a minimal POP3 client (RFC 1939), with STLS (RFC 2595) and
// AUTH PLAIN (RFC 5034) — just what the round trip needs.
type popConn struct {
	raw     net.Conn // the TCP connection; closing it unblocks everything
	conn    net.Conn // raw, or TLS over it
	tp      *textproto.Conn
	timeout time.Duration
	caps    map[string]string // CAPA after TLS: name → arguments; nil until asked
	stop    func() bool       // unregisters the close-on-cancel hook
}

// popError is a -ERR reply to a command.
type popError struct {
	cmd, reply string
}

func (e *popError) Error() string { return e.cmd + ": " + e.reply }

// newPopConn takes over raw; cancelling ctx closes it, which unblocks any
// read or write in progress.
func newPopConn(ctx context.Context, raw net.Conn, timeout time.Duration) *popConn {
	return &popConn{raw: raw, conn: raw, tp: textproto.NewConn(raw), timeout: timeout,
		stop: context.AfterFunc(ctx, func() { raw.Close() })}
}

func (p *popConn) close() {
	p.stop()
	p.raw.Close()
}

// startTLS runs the client handshake and continues the session over it.
func (p *popConn) startTLS(r *run, ep Endpoint) (tls.ConnectionState, error) {
	tc, err := r.handshake(p.raw, ep)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	p.conn, p.tp = tc, textproto.NewConn(tc)
	return tc.ConnectionState(), nil
}

// arm gives the next exchange the step timeout.
func (p *popConn) arm() { p.conn.SetDeadline(time.Now().Add(p.timeout)) }

// status reads a status line: the text after "+OK", or a *popError.
func (p *popConn) status(cmd string) (string, error) {
	line, err := p.tp.ReadLine()
	if err != nil {
		if isTimeout(err) {
			return "", fmt.Errorf("%s: no answer within %s", cmd, p.timeout)
		}
		return "", fmt.Errorf("%s: %w", cmd, err)
	}
	if rest, ok := strings.CutPrefix(line, "+OK"); ok {
		return strings.TrimSpace(rest), nil
	}
	if strings.HasPrefix(line, "-ERR") {
		return "", &popError{cmd: cmd, reply: line}
	}
	return "", fmt.Errorf("%s: not a POP3 reply: %q", cmd, truncate(line, 80))
}

// cmd sends one command line and reads its status. show is how the
// command appears in errors (never a password).
func (p *popConn) cmd(show, line string) (string, error) {
	p.arm()
	if err := p.tp.PrintfLine("%s", line); err != nil {
		return "", fmt.Errorf("%s: %w", show, err)
	}
	return p.status(show)
}

// multi sends a command whose +OK is followed by dot-terminated lines
// (RFC 1939 §3) and returns them un-stuffed, keeping at most limit octets
// but always reading to the end so the session stays in step.
func (p *popConn) multi(line string, limit int) (string, []byte, bool, error) {
	first, err := p.cmd(line, line)
	if err != nil {
		return "", nil, false, err
	}
	var buf bytes.Buffer
	dr := p.tp.DotReader()
	n, err := io.Copy(&buf, io.LimitReader(dr, int64(limit)+1))
	if err == nil && n > int64(limit) {
		// Over the limit: drain the rest (bounded by the deadline) so
		// the session stays usable.
		_, err = io.Copy(io.Discard, dr)
		return first, buf.Bytes()[:limit], true, wrapRead(line, err, p.timeout)
	}
	return first, buf.Bytes(), false, wrapRead(line, err, p.timeout)
}

func wrapRead(cmd string, err error, timeout time.Duration) error {
	switch {
	case err == nil:
		return nil
	case isTimeout(err):
		return fmt.Errorf("%s: the listing did not end within %s", cmd, timeout)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// capa asks for the capabilities (RFC 2449 §5); a server without CAPA
// gets an empty set.
func (p *popConn) capa() error {
	p.caps = map[string]string{}
	_, body, _, err := p.multi("CAPA", 64<<10)
	var pe *popError
	if errors.As(err, &pe) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(body), "\n") {
		name, args, _ := strings.Cut(strings.TrimSpace(l), " ")
		if name != "" {
			p.caps[strings.ToUpper(name)] = args
		}
	}
	return nil
}

// login prefers AUTH PLAIN with an initial response (RFC 5034 §4) when
// CAPA lists it, else USER/PASS (RFC 1939 §7). It returns the method used.
func (p *popConn) login(user, pass string) (string, error) {
	if p.caps == nil {
		if err := p.capa(); err != nil {
			return "", err
		}
	}
	if hasWord(p.caps["SASL"], "PLAIN") {
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		if _, err := p.cmd("AUTH PLAIN", "AUTH PLAIN "+ir); err != nil {
			return "", loginError(err)
		}
		return "AUTH PLAIN", nil
	}
	// RFC 1939 §3: a command is one line; a line break inside the name
	// or password would smuggle in a second command.
	if strings.ContainsAny(user+pass, "\r\n") {
		return "", errors.New("the user name or password contains a line break, which USER/PASS cannot carry")
	}
	if _, err := p.cmd("USER", "USER "+user); err != nil {
		return "", loginError(err)
	}
	if _, err := p.cmd("PASS", "PASS "+pass); err != nil {
		return "", loginError(err)
	}
	return "USER/PASS", nil
}

func loginError(err error) error {
	var pe *popError
	if errors.As(err, &pe) {
		return fmt.Errorf("login rejected: %s", pe.reply)
	}
	return err
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, w) {
			return true
		}
	}
	return false
}

// popMsg is one entry of the maildrop listing.
type popMsg struct {
	n    int
	uidl string // "" when the server has no UIDL
}

// listing returns the messages, newest (highest number) first. It uses
// UIDL (RFC 1939 §7) so that polls can skip what they already examined,
// and falls back to LIST for servers without it.
func (p *popConn) listing() ([]popMsg, error) {
	_, body, _, err := p.multi("UIDL", 4<<20)
	var pe *popError
	withUIDL := true
	if errors.As(err, &pe) {
		withUIDL = false
		_, body, _, err = p.multi("LIST", 4<<20)
	}
	if err != nil {
		return nil, err
	}
	var out []popMsg
	for _, l := range strings.Split(string(body), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 1 {
			continue
		}
		m := popMsg{n: n}
		if withUIDL {
			m.uidl = f[1]
		}
		out = append(out, m)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// find looks for the token in the headers of the newest messages not in
// seen. TOP n 0 (RFC 1939 §7) reads headers only; a server without TOP
// gets RETR, bounded.
func (p *popConn) find(token string, seen map[string]bool) (popMsg, bool, error) {
	msgs, err := p.listing()
	if err != nil {
		return popMsg{}, false, err
	}
	examined := 0
	for _, m := range msgs {
		if m.uidl != "" && seen[m.uidl] {
			continue
		}
		if examined++; examined > maxScan {
			break
		}
		_, head, _, err := p.multi(fmt.Sprintf("TOP %d 0", m.n), maxHeaderRead)
		var pe *popError
		if errors.As(err, &pe) {
			_, head, _, err = p.multi(fmt.Sprintf("RETR %d", m.n), maxHeaderRead)
		}
		if err != nil {
			return popMsg{}, false, err
		}
		if bytes.Contains(head, []byte(token)) {
			return m, true, nil
		}
		if m.uidl != "" {
			seen[m.uidl] = true
		}
	}
	return popMsg{}, false, nil
}

// fetch runs the POP3 half: the first session gets its own steps
// (connect, TLS, certificate, login); while the message has not arrived,
// each poll is a fresh session, since POP3 fixes the maildrop's contents
// at login (RFC 1939 §8).
func (r *run) fetch(msg *message) {
	ep := r.o.POP3
	proto := "pop3"
	if ep.Method == MethodSSL {
		proto = "pop3s"
	}
	p, ok := r.popSession(ep, "connect "+proto+" "+ep.Addr)
	if !ok {
		return
	}
	defer func() { p.close() }()

	var found popMsg
	ok = r.step("find message", func(s *Step) error {
		seen := map[string]bool{}
		start := time.Now()
		for poll := 1; ; poll++ {
			m, hit, err := p.find(msg.token, seen)
			if err != nil {
				return fmt.Errorf("poll %d: %w", poll, err)
			}
			if hit {
				found = m
				s.Detail = fmt.Sprintf("message %d", m.n)
				if m.uidl != "" {
					s.Detail += " (UIDL " + m.uidl + ")"
				}
				s.Detail += fmt.Sprintf(", poll %d", poll)
				return nil
			}
			// End this session properly so the maildrop lock is released
			// before the next login.
			p.cmd("QUIT", "QUIT")
			p.close()
			if time.Since(start)+pollInterval > r.o.Wait {
				return fmt.Errorf("the message (Subject token %s) did not arrive within %s (%d polls); is delivery to %s working?",
					msg.token, r.o.Wait, poll, r.o.User)
			}
			select {
			case <-r.ctx.Done():
				return context.Cause(r.ctx)
			case <-time.After(pollInterval):
			}
			np, err := r.popConnect(ep)
			if err != nil {
				return fmt.Errorf("poll %d: %w", poll+1, err)
			}
			p = np
			if _, err := p.login(r.o.User, r.o.Password); err != nil {
				return fmt.Errorf("poll %d: %w", poll+1, err)
			}
		}
	})
	if !ok {
		return
	}

	ok = r.step("RETR", func(s *Step) error {
		first, body, over, err := p.multi(fmt.Sprintf("RETR %d", found.n), maxMessageRead)
		if err != nil {
			return err
		}
		if over {
			return fmt.Errorf("message %d is over %d octets, not the test message", found.n, maxMessageRead)
		}
		// The dot reader has turned CRLF into LF.
		hdr, text, _ := bytes.Cut(body, []byte("\n\n"))
		if !bytes.Contains(hdr, []byte(msg.token)) || !bytes.Contains(text, []byte("Token: "+msg.token)) {
			return fmt.Errorf("message %d does not carry the token in both headers and body (%d octets read)", found.n, len(body))
		}
		s.Detail = "token in headers and body"
		if first != "" {
			s.Detail = "+OK " + first + ", " + s.Detail
		}
		return nil
	})
	if !ok {
		return
	}

	r.step("DELE+QUIT", func(s *Step) error {
		if _, err := p.cmd("DELE", fmt.Sprintf("DELE %d", found.n)); err != nil {
			return err
		}
		// RFC 1939 §6: the deletion happens in the UPDATE state, entered
		// by QUIT; a +OK here means it was done.
		reply, err := p.cmd("QUIT", "QUIT")
		if err != nil {
			return fmt.Errorf("the deletion was not committed: %w", err)
		}
		s.Detail = "+OK " + reply
		return nil
	})
}

// popSession opens the first POP3 session as separate steps, so that a
// failure says whether it was the connection, TLS or the login.
func (r *run) popSession(ep Endpoint, connectName string) (*popConn, bool) {
	var p *popConn
	ok := r.step(connectName, func(s *Step) error {
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
	})
	if !ok {
		return nil, false
	}
	var cs tls.ConnectionState
	name := "TLS"
	if ep.Method == MethodTLS {
		name = "STLS"
	}
	ok = r.step(name, func(s *Step) error {
		var err error
		if cs, err = r.popTLS(p, ep); err != nil {
			return err
		}
		s.Detail = tlsSummary(cs)
		return nil
	})
	if ok {
		r.certStep(cs, ep)
		ok = r.step("login", func(s *Step) error {
			how, err := p.login(r.o.User, r.o.Password)
			if err != nil {
				return err
			}
			s.Detail = how + " as " + r.o.User
			return nil
		})
	}
	if !ok {
		p.close()
		return nil, false
	}
	return p, true
}

// popConnect opens a later polling session up to (not including) login.
func (r *run) popConnect(ep Endpoint) (*popConn, error) {
	raw, err := r.dial(ep.Addr)
	if err != nil {
		return nil, err
	}
	p := newPopConn(r.ctx, raw, r.o.Timeout)
	if _, err := r.popTLS(p, ep); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// popTLS brings a fresh connection to an encrypted, greeted session:
// implicit TLS then the greeting, or the greeting then STLS (RFC 2595 §4).
func (r *run) popTLS(p *popConn, ep Endpoint) (tls.ConnectionState, error) {
	if ep.Method == MethodSSL {
		cs, err := p.startTLS(r, ep)
		if err != nil {
			return cs, err
		}
		p.arm()
		_, err = p.status("greeting")
		return cs, err
	}
	p.arm()
	if _, err := p.status("greeting"); err != nil {
		return tls.ConnectionState{}, err
	}
	return p.stls(r, ep)
}

// stls upgrades a greeted plain session (RFC 2595 §4) and forgets any
// capabilities learnt before, as §4 requires.
func (p *popConn) stls(r *run, ep Endpoint) (tls.ConnectionState, error) {
	p.caps = nil
	if _, err := p.cmd("STLS", "STLS"); err != nil {
		var pe *popError
		if errors.As(err, &pe) {
			return tls.ConnectionState{}, fmt.Errorf("the server refused STLS: %s", pe.reply)
		}
		return tls.ConnectionState{}, err
	}
	// Anything the server sent after its +OK would be read as if it had
	// come over TLS: refuse it (the STARTTLS injection of CVE-2011-0411).
	if p.tp.R.Buffered() > 0 {
		return tls.ConnectionState{}, errors.New("the server sent data after its STLS reply, before the TLS handshake")
	}
	return p.startTLS(r, ep)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
