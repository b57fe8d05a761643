package pop3

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
)

// stateSet is a bit set of states in which a command is allowed.
type stateSet uint8

const (
	inAuth  stateSet = 1 << stateAuth
	inTrans stateSet = 1 << stateTrans
	inBoth           = inAuth | inTrans
)

// command is one entry of the dispatch table. fn gets everything after the
// first space of the line; "wrong state" is checked once, in dispatch.
type command struct {
	states stateSet
	fn     func(s *session, arg string) error
}

var commands map[string]command

func init() {
	// Assigned in init because handlers reach the table through dispatch.
	commands = map[string]command{
		// RFC 1939 §4, AUTHORIZATION; STLS from RFC 2595 §4, AUTH from RFC 5034.
		"USER": {inAuth, (*session).cmdUser},
		"PASS": {inAuth, (*session).cmdPass},
		"AUTH": {inAuth, (*session).cmdAuth},
		"STLS": {inAuth, (*session).cmdStls},
		"APOP": {inAuth, (*session).cmdApop},
		// RFC 1939 §5, TRANSACTION.
		"STAT": {inTrans, (*session).cmdStat},
		"LIST": {inTrans, (*session).cmdList},
		"RETR": {inTrans, (*session).cmdRetr},
		"DELE": {inTrans, (*session).cmdDele},
		"RSET": {inTrans, (*session).cmdRset},
		"TOP":  {inTrans, (*session).cmdTop},
		"UIDL": {inTrans, (*session).cmdUidl},
		"NOOP": {inTrans, (*session).cmdNoop},
		"LAST": {inTrans, (*session).cmdLast},
		// Any state.
		"CAPA": {inBoth, (*session).cmdCapa},
		"QUIT": {inBoth, (*session).cmdQuit},
	}
}

// args splits arg into between min and max arguments separated by single
// spaces (RFC 1939 §3), each at most 40 octets (RFC 2449 §4).
func args(arg string, min, max int) ([]string, error) {
	var f []string
	if arg != "" {
		f = strings.Split(arg, " ")
	}
	if len(f) < min || len(f) > max {
		return nil, errSyntax
	}
	for _, a := range f {
		if a == "" {
			return nil, errSyntax
		}
		if len(a) > maxArgLen {
			return nil, errArgTooLong
		}
	}
	return f, nil
}

// msgIndex parses a 1-based message number into a 0-based index of a
// message that exists and is not deleted.
func (s *session) msgIndex(a string) (int, error) {
	n, err := parseNumber(a)
	if err != nil {
		return 0, errBadNumber
	}
	if n < 1 || n > len(s.msgs) {
		return 0, errNoSuchMessage
	}
	if s.deleted[n-1] {
		return 0, errorf("message %d already deleted", n)
	}
	return n - 1, nil
}

// parseNumber accepts only decimal digits: no sign, no spaces, no overflow.
func parseNumber(a string) (int, error) {
	if a == "" || len(a) > 10 {
		return 0, errSyntax
	}
	for i := 0; i < len(a); i++ {
		if a[i] < '0' || a[i] > '9' {
			return 0, errSyntax
		}
	}
	n, err := strconv.Atoi(a)
	if err != nil || n > 1<<31-1 {
		return 0, errSyntax
	}
	return n, nil
}

// authAllowed reports whether a login may happen on this connection. With
// secure login (the default) it needs TLS, even from loopback.
func (s *session) authAllowed() bool {
	return s.cfg.AllowInsecureAuth || s.info.TLS
}

func (s *session) insecureErr() error {
	if s.cfg.TLSConfig != nil {
		return &Error{Code: CodeAuth, Text: "login needs TLS: use STLS first", quiet: true}
	}
	return &Error{Code: CodeAuth, Text: "login needs TLS: connect to the POP3S port", quiet: true}
}

func (s *session) cmdUser(arg string) error {
	s.user = "" // a failed USER does not leave an older name for PASS
	if !s.authAllowed() {
		return s.insecureErr()
	}
	a, err := args(arg, 1, 1)
	if err != nil {
		return err
	}
	// Say nothing about whether the user exists; PASS decides.
	s.user = a[0]
	s.reply("+OK send PASS")
	return nil
}

// cmdPass takes the rest of the line as the password: RFC 1939 §7 lets it
// contain spaces. It is not held to the 40-octet argument limit, which would
// reject the long passwords password managers make.
func (s *session) cmdPass(arg string) error {
	if !s.authAllowed() {
		return s.insecureErr()
	}
	if s.user == "" {
		return errNoUser
	}
	if arg == "" {
		return errSyntax
	}
	user := s.user
	s.user = ""
	return s.login(user, arg)
}

func (s *session) cmdApop(string) error {
	return errorf("APOP not supported")
}

// cmdAuth implements RFC 5034 with the PLAIN mechanism (RFC 4616). AUTH
// without arguments lists the mechanisms, as many clients expect.
func (s *session) cmdAuth(arg string) error {
	if !s.authAllowed() {
		return s.insecureErr()
	}
	if arg == "" {
		return s.multiline("+OK SASL mechanisms follow", false, func(d *dotWriter) error {
			_, err := d.Write([]byte(sasl.Plain + "\r\n"))
			return err
		})
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	if len(mech) > maxArgLen {
		return errArgTooLong
	}
	if !strings.EqualFold(mech, sasl.Plain) {
		return errBadMechanism
	}
	if hasIR && ir == "" {
		return errSyntax
	}

	var resp []byte
	if hasIR {
		if ir == "=" {
			resp = []byte{} // RFC 5034 §4: "=" is an empty initial response
		} else {
			var err error
			if resp, err = base64.StdEncoding.DecodeString(ir); err != nil {
				return errBadBase64
			}
		}
	} else {
		// RFC 5034 §4: an empty challenge is "+ "; the client's answer is
		// one base64 line, or "*" to cancel.
		s.reply("+ ")
		if err := s.bw.Flush(); err != nil {
			return &abortError{err}
		}
		if s.armRead(s.timeout()) {
			s.reply(lineShutdown)
			return errQuit
		}
		line, err := s.readLine()
		if err != nil {
			s.readFailed(err)
			return errQuit
		}
		s.log.Debug("C: <redacted>")
		if line == "*" {
			return errAuthCancelled
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return errBadBase64
		}
	}

	var loginErr error
	called := false
	srv := sasl.NewPlainServer(func(authzid, user, pass string) error {
		called = true
		if authzid != "" && authzid != user {
			// Acting as another user would need admin rights we do not model.
			loginErr = s.authFailed(user, "authzid-mismatch")
			return loginErr
		}
		loginErr = s.login(user, pass)
		return loginErr
	})
	_, done, err := srv.Next(resp)
	switch {
	case !called:
		return s.authFailed("", "malformed-sasl")
	case loginErr != nil:
		return loginErr
	case err != nil || !done:
		return s.authFailed("", "malformed-sasl")
	}
	return nil
}

// login opens the maildrop and enters TRANSACTION, or returns the reply
// for the failure.
func (s *session) login(user, pass string) error {
	drop, err := s.srv.backend.Login(s.ctx, s.info, user, pass)
	if err != nil && drop != nil {
		drop.Close() // a backend that returned both must not keep the lock
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrAuthFailed):
		return s.authFailed(user, "bad-credentials")
	case errors.Is(err, ErrInUse):
		s.srv.counters.loginRefused.Add(1)
		s.log.Info("pop3 maildrop in use", "user", user)
		return replyInUse
	case errors.Is(err, ErrAccessDisabled):
		s.srv.counters.loginRefused.Add(1)
		s.log.Info("pop3 access disabled", "user", user)
		return replyDisabled
	case errors.Is(err, ErrLoginDelay), errors.Is(err, ErrNetworkThrottled):
		// Not a failed password (the backend logs once per block, not
		// here per attempt), but a client hammering on gets closed.
		r := throttledReply(err)
		s.authFails++
		if s.authFails >= maxAuthFails {
			s.reply(r.line())
			return errQuit
		}
		return r
	default:
		s.srv.counters.loginError.Add(1)
		s.log.Error("pop3 login failed", "user", user, slog.Any("err", err))
		return replyLoginTmp
	}
	if drop == nil {
		return fmt.Errorf("pop3: backend returned no maildrop for %q", user)
	}
	s.srv.counters.loginOK.Add(1)
	s.loginUser = user
	s.drop = drop
	s.msgs = drop.Messages()
	s.deleted = make([]bool, len(s.msgs))
	s.state = stateTrans
	n, size := s.count()
	s.log = s.log.With("user", user)
	// A backend may log in scoped credentials (device passwords): name
	// the device on this and every later line of the session.
	if d, ok := drop.(interface{ Device() string }); ok && d.Device() != "" {
		s.log = s.log.With("device", d.Device())
	}
	s.log.Info("pop3 login", "tls", s.info.TLS, "messages", n)
	s.replyf("+OK maildrop has %d messages (%d octets)", n, size)
	return nil
}

// authFailed logs a failed login and returns its reply, or closes the
// session after too many. The log line is meant for fail2ban, e.g.
//
//	failregex = msg="pop3 auth failed" .*?remote_ip=<HOST> user=
//
// with slog's text handler; user and reason follow remote_ip.
func (s *session) authFailed(user, reason string) error {
	s.log.Warn("pop3 auth failed", "remote_ip", s.info.Remote.Addr().String(), "user", user, "reason", reason)
	s.srv.counters.loginFailed.Add(1)
	s.authFails++
	if s.authFails >= maxAuthFails {
		s.reply(lineTooManyFails)
		return errQuit
	}
	return replyAuthFailed
}

func (s *session) cmdStls(arg string) error {
	if arg != "" {
		return errSyntax
	}
	if s.info.TLS {
		return errAlreadyTLS
	}
	if s.cfg.TLSConfig == nil {
		return errNoTLS
	}
	s.reply("+OK begin TLS negotiation")
	if err := s.bw.Flush(); err != nil {
		return &abortError{err}
	}
	if s.armRead(s.cfg.PreAuthTimeout) {
		return errQuit
	}
	if err := s.startTLS(); err != nil {
		return &abortError{err}
	}
	s.user = "" // RFC 2595 §4: forget what was learnt before TLS
	return nil
}

func (s *session) cmdCapa(arg string) error {
	if arg != "" {
		return errSyntax
	}
	// RFC 2449 §5. Login capabilities only where a login could succeed.
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if s.state == stateAuth {
		if s.authAllowed() {
			caps = append(caps, "USER", "SASL PLAIN")
		}
		if s.cfg.TLSConfig != nil && !s.info.TLS {
			caps = append(caps, "STLS")
		}
	}
	if e := s.expireCapability(); e != "" {
		caps = append(caps, e)
	}
	caps = append(caps, "IMPLEMENTATION mailpost")
	return s.multiline("+OK capability list follows", false, func(d *dotWriter) error {
		for _, c := range caps {
			if _, err := d.w.WriteString(c + "\r\n"); err != nil {
				return err
			}
		}
		return nil
	})
}

// expireCapability is the EXPIRE line of CAPA (RFC 2449 §6.7), "" for none.
// In TRANSACTION state it is the mailbox's own policy, without the USER tag;
// before login (or for a maildrop that does not say) it is the server-wide
// one from the settings.
func (s *session) expireCapability() string {
	if s.state == stateTrans {
		if e, ok := s.drop.(Expirer); ok {
			days, expires := e.Expire()
			if !expires {
				days = ExpireNever
			}
			return Expire{Days: days}.capability()
		}
	}
	if s.cfg.Expire == nil {
		return ""
	}
	return s.cfg.Expire.capability()
}

// expireZero reports whether the logged-in mailbox announces EXPIRE 0.
func (s *session) expireZero() bool {
	e, ok := s.drop.(Expirer)
	if !ok {
		return false
	}
	days, expires := e.Expire()
	return expires && days == 0
}

func (s *session) cmdQuit(arg string) error {
	if arg != "" {
		return errSyntax
	}
	if s.state == stateAuth {
		s.reply("+OK bye")
		return errQuit
	}
	// RFC 1939 §6: only now do deletions take effect. Nothing here touches
	// the connection, so Shutdown cannot interrupt it.
	s.state = stateUpdate
	// RFC 2449 §6.7: with EXPIRE 0 the client may not leave mail on the
	// server, and on entering UPDATE the server may assume an implicit DELE
	// for every message the session downloaded. Downloaded means RETR; a
	// TOP preview does not count.
	implicit := 0
	if s.got != nil && s.expireZero() {
		for i, got := range s.got {
			if got && !s.deleted[i] {
				s.deleted[i] = true
				implicit++
			}
		}
	}
	var del []int
	for i, d := range s.deleted {
		if d {
			del = append(del, i)
		}
	}
	var commitErr error
	if len(del) > 0 {
		commitErr = s.drop.Commit(del)
	}
	// Release the maildrop before replying: a client that reconnects the
	// moment it reads the reply must not find its own lock still held.
	s.closeDrop()
	if commitErr != nil {
		s.log.Error("pop3 commit failed", "deleted", len(del), slog.Any("err", commitErr))
		s.reply("-ERR [" + CodeSysTemp + "] some deleted messages not removed")
		return errQuit
	}
	s.nDeleted = len(del)
	s.srv.counters.deleted.Add(uint64(len(del)))
	s.log.Info("pop3 logout", "deleted", len(del), "expire0", implicit)
	s.replyf("+OK bye, %d messages left", len(s.msgs)-len(del))
	return errQuit
}

// count returns the number and total size of messages not marked deleted.
func (s *session) count() (n int, size int64) {
	for i, m := range s.msgs {
		if !s.deleted[i] {
			n++
			size += m.Size
		}
	}
	return n, size
}

func (s *session) cmdStat(arg string) error {
	if arg != "" {
		return errSyntax
	}
	n, size := s.count()
	s.replyf("+OK %d %d", n, size)
	return nil
}

// listing answers LIST and UIDL: one message with an argument, otherwise
// every message not deleted (RFC 1939 §5, §7).
func (s *session) listing(arg string, field func(MessageInfo) string) error {
	a, err := args(arg, 0, 1)
	if err != nil {
		return err
	}
	if len(a) == 1 {
		i, err := s.msgIndex(a[0])
		if err != nil {
			return err
		}
		s.replyf("+OK %d %s", i+1, field(s.msgs[i]))
		return nil
	}
	n, size := s.count()
	status := fmt.Sprintf("+OK %d messages (%d octets)", n, size)
	return s.multiline(status, n > 32, func(d *dotWriter) error {
		var buf []byte
		for i, m := range s.msgs {
			if s.deleted[i] {
				continue
			}
			buf = strconv.AppendInt(buf[:0], int64(i+1), 10)
			buf = append(buf, ' ')
			buf = append(buf, field(m)...)
			buf = append(buf, '\r', '\n')
			if _, err := d.w.Write(buf); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *session) cmdList(arg string) error {
	return s.listing(arg, func(m MessageInfo) string { return strconv.FormatInt(m.Size, 10) })
}

func (s *session) cmdUidl(arg string) error {
	return s.listing(arg, func(m MessageInfo) string { return m.UIDL })
}

func (s *session) cmdRetr(arg string) error {
	a, err := args(arg, 1, 1)
	if err != nil {
		return err
	}
	i, err := s.msgIndex(a[0])
	if err != nil {
		return err
	}
	if err := s.sendMessage(i, fmt.Sprintf("+OK %d octets", s.msgs[i].Size), -1); err != nil {
		return err
	}
	// Sent in full: the retention clock (RFC 2449 §6.7) may start.
	if s.got == nil {
		s.got = make([]bool, len(s.msgs))
	}
	s.got[i] = true
	if r, ok := s.drop.(RetrievalRecorder); ok {
		r.Retrieved(i)
	}
	s.retrieved++
	s.srv.counters.retrieved.Add(1)
	return nil
}

func (s *session) cmdTop(arg string) error {
	a, err := args(arg, 2, 2)
	if err != nil {
		return err
	}
	i, err := s.msgIndex(a[0])
	if err != nil {
		return err
	}
	lines, err := parseNumber(a[1])
	if err != nil {
		return errorf("invalid line count")
	}
	return s.sendMessage(i, "+OK top of message follows", lines)
}

// sendMessage writes message i whole, or its header and lines body lines
// when lines >= 0.
func (s *session) sendMessage(i int, status string, lines int) error {
	body, err := s.drop.Open(i)
	if err != nil {
		s.log.Error("pop3 open message", "msg", i+1, slog.Any("err", err))
		return replyOpenTmp
	}
	defer body.Close()
	return s.multiline(status, true, func(d *dotWriter) error {
		if lines < 0 {
			return copyMessage(d, body)
		}
		return copyTop(d, body, lines)
	})
}

func (s *session) cmdDele(arg string) error {
	a, err := args(arg, 1, 1)
	if err != nil {
		return err
	}
	i, err := s.msgIndex(a[0])
	if err != nil {
		return err
	}
	s.deleted[i] = true
	s.replyf("+OK message %d deleted", i+1)
	return nil
}

func (s *session) cmdRset(arg string) error {
	if arg != "" {
		return errSyntax
	}
	clear(s.deleted)
	n, size := s.count()
	s.replyf("+OK maildrop has %d messages (%d octets)", n, size)
	return nil
}

func (s *session) cmdNoop(arg string) error {
	if arg != "" {
		return errSyntax
	}
	s.reply("+OK")
	return nil
}

// cmdLast answers the LAST command of RFC 1725, dropped by RFC 1939 but
// still sent by fetchmail.
func (s *session) cmdLast(string) error {
	return errLast
}
