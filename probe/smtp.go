package probe

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// message is the test message: the token is what POP3 looks for.
type message struct {
	token string
	from  string
	body  []byte
}

// newMessage builds a small RFC 5322 message from user to user with a
// random token in the Subject, the Message-ID and the body.
func newMessage(user string, now time.Time) *message {
	var b [12]byte
	rand.Read(b[:])
	token := "mailpost-roundtrip-" + hex.EncodeToString(b[:])
	var sb strings.Builder
	fmt.Fprintf(&sb, "From: <%s>\r\n", user)
	fmt.Fprintf(&sb, "To: <%s>\r\n", user)
	fmt.Fprintf(&sb, "Subject: mailpost round-trip test %s\r\n", token)
	fmt.Fprintf(&sb, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&sb, "Message-ID: <%s@%s>\r\n", token, domainOf(user))
	sb.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	sb.WriteString("This message was sent by `mailpost test roundtrip` to itself, to check\r\n")
	sb.WriteString("that submitted mail reaches the POP3 maildrop. The test deletes it once\r\n")
	sb.WriteString("it has been read back; if you see it, the test stopped half-way.\r\n")
	fmt.Fprintf(&sb, "\r\nToken: %s\r\n", token)
	return &message{token: token, from: user, body: []byte(sb.String())}
}

// submit runs the submission half: connect, TLS, certificate, AUTH PLAIN,
// MAIL/RCPT/DATA. It reports whether the message was accepted.
func (r *run) submit(msg *message) bool {
	c, done, ok := r.smtpOpen(r.o.Submission)
	if !ok {
		return false
	}
	defer done()
	if !r.smtpAuth(c) {
		return false
	}
	return r.step("MAIL/RCPT/DATA", func(s *Step) error {
		if err := c.Mail(msg.from, nil); err != nil {
			return r.smtpError("MAIL FROM:<"+msg.from+"> refused", err)
		}
		if err := c.Rcpt(msg.from, nil); err != nil {
			return r.smtpError("RCPT TO:<"+msg.from+"> refused", err)
		}
		w, err := c.Data()
		if err != nil {
			return r.smtpError("DATA refused", err)
		}
		if _, err := w.Write(msg.body); err != nil {
			return r.ioError("sending the message", err)
		}
		resp, err := w.CloseWithResponse()
		if err != nil {
			return r.smtpError("message refused after DATA", err)
		}
		// The message is in; a failed QUIT changes nothing about that.
		c.Quit()
		s.Detail = fmt.Sprintf("%d octets accepted: %s", len(msg.body), oneLine(resp.StatusText))
		return nil
	})
}

// smtpOpen runs connect, TLS or STARTTLS and the certificate verdict as
// steps, and returns an EHLO'd client over TLS; done closes everything.
func (r *run) smtpOpen(ep Endpoint) (c *smtp.Client, done func(), ok bool) {
	proto := "submission"
	if ep.Method == MethodSSL {
		proto = "submissions"
	}
	var raw net.Conn
	ok = r.step("connect "+proto+" "+ep.Addr, func(s *Step) error {
		if err := checkMethod(ep); err != nil {
			return err
		}
		conn, err := r.dial(ep.Addr)
		if err != nil {
			return err
		}
		// go-smtp sets its own deadlines, some before we can tune them
		// (the greeting inside NewClientStartTLS): hold them to ours.
		raw = clampConn{Conn: conn, max: r.o.Timeout}
		s.Detail = "from " + conn.LocalAddr().String()
		return nil
	})
	if !ok {
		return nil, nil, false
	}
	// Closing the socket is what unblocks go-smtp when the run is
	// cancelled; its own deadlines cover the per-step timeout.
	stop := context.AfterFunc(r.ctx, func() { raw.Close() })
	done = func() {
		if c != nil {
			c.Close()
		}
		raw.Close()
		stop()
	}

	var cs tls.ConnectionState
	if ep.Method == MethodSSL {
		ok = r.step("TLS", func(s *Step) error {
			tc, err := r.handshake(raw, ep)
			if err != nil {
				return err
			}
			c = r.smtpClient(tc)
			if err := c.Hello("localhost"); err != nil {
				return r.smtpError("greeting and EHLO", err)
			}
			cs = tc.ConnectionState()
			s.Detail = tlsSummary(cs)
			return nil
		})
	} else {
		ok = r.step("STARTTLS", func(s *Step) error {
			// go-smtp reads the greeting, says EHLO and sends STARTTLS
			// here (RFC 3207 §4); the handshake itself runs on the next
			// command, so EHLO again (as §4.2 requires anyway).
			var err error
			cfg := tlsConfig(ep)
			cfg.VerifyConnection = func(st tls.ConnectionState) error { cs = st; return nil }
			c, err = smtp.NewClientStartTLS(raw, cfg)
			if err != nil {
				if noSTARTTLS(err) {
					return errors.New("the server does not offer STARTTLS in its EHLO reply: a client would have to send the password in clear")
				}
				return r.smtpError("STARTTLS", err)
			}
			r.tuneClient(c)
			if err := c.Hello("localhost"); err != nil {
				var rh tls.RecordHeaderError
				if errors.As(err, &rh) || cs.Version == 0 {
					return handshakeError(err, r.o.Timeout)
				}
				return r.smtpError("EHLO after STARTTLS", err)
			}
			s.Detail = tlsSummary(cs)
			return nil
		})
	}
	if !ok {
		done()
		return nil, nil, false
	}
	r.certStep(cs, ep)
	return c, done, true
}

// smtpAuth logs in with AUTH PLAIN (RFC 4954) as its own step.
func (r *run) smtpAuth(c *smtp.Client) bool {
	return r.step("AUTH PLAIN", func(s *Step) error {
		if !c.SupportsAuth(sasl.Plain) {
			_, mechs := c.Extension("AUTH")
			if mechs == "" {
				return errors.New("the server offers no AUTH at all after TLS (is this a submission port?)")
			}
			return fmt.Errorf("the server does not offer AUTH PLAIN (it offers %s)", mechs)
		}
		if err := c.Auth(sasl.NewPlainClient("", r.o.User, r.o.Password)); err != nil {
			return r.smtpError("rejected", err)
		}
		s.Detail = "as " + r.o.User
		return nil
	})
}

// noSTARTTLS recognises go-smtp's error for a server whose EHLO reply
// lacks STARTTLS (there is no sentinel to test with errors.Is).
func noSTARTTLS(err error) bool {
	return strings.Contains(err.Error(), "doesn't support STARTTLS")
}

// clampConn keeps every deadline set on it within max from now. Clearing
// the deadline (the zero time) stays allowed: the probe is never idle.
type clampConn struct {
	net.Conn
	max time.Duration
}

func (c clampConn) clamp(t time.Time) time.Time {
	if limit := time.Now().Add(c.max); !t.IsZero() && t.After(limit) {
		return limit
	}
	return t
}

func (c clampConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c clampConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c clampConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

// smtpClient wraps an established (TLS) connection.
func (r *run) smtpClient(c net.Conn) *smtp.Client {
	cl := smtp.NewClient(c)
	r.tuneClient(cl)
	return cl
}

// tuneClient makes go-smtp's per-command deadlines the probe's step timeout.
func (r *run) tuneClient(c *smtp.Client) {
	c.CommandTimeout = r.o.Timeout
	c.SubmissionTimeout = r.o.Timeout
}

// smtpError renders a server reply as "535 5.7.8 text", and anything else
// (a dropped connection, a timeout) in words.
func (r *run) smtpError(what string, err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		code := fmt.Sprintf("%d", se.Code)
		if e := se.EnhancedCode; e[0] > 0 {
			code += fmt.Sprintf(" %d.%d.%d", e[0], e[1], e[2])
		}
		return fmt.Errorf("%s: %s %s", what, code, oneLine(se.Message))
	}
	return r.ioError(what, err)
}

// oneLine joins a multi-line reply so each step stays on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
