package smtpauth

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// session is the go-smtp Session of one connection. go-smtp makes a new one
// at the first EHLO/HELO and again at the EHLO after STARTTLS, so nothing
// learnt before TLS (RFC 3207 §4.2) survives into it.
type session struct {
	c  *conn
	sc *smtp.Conn

	acct *Account // set by a successful AUTH

	// The mail transaction (RFC 5321 §3.3), cleared by Reset. mu is
	// needed because go-smtp runs Data on its own goroutine for BDAT
	// (RFC 3030), beside RSET or the connection's end.
	mu     sync.Mutex
	from   string
	size   int64 // SIZE= hint
	rcpts  []string
	nMsgs  int // messages handed to Deliver so far, for ids
	inMail bool
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

func reply(code int, class, subject, detail int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: text}
}

// Replies. Enhanced codes are from RFC 3463 and the registry of RFC 5248.
var (
	replyNeedTLS       = reply(530, 5, 7, 0, "Must issue a STARTTLS command first") // RFC 3207 §4
	replyNoAuthHere    = reply(503, 5, 5, 1, "authentication not enabled on this port")
	replyAuthFailed    = reply(535, 5, 7, 8, "authentication credentials invalid") // RFC 4954 §6
	replyAuthTemp      = reply(454, 4, 7, 0, "temporary authentication failure")   // RFC 4954 §6
	replyAuthMalformed = reply(501, 5, 5, 2, "malformed authentication response")
	replyAuthRequired  = reply(530, 5, 7, 0, "authentication required") // RFC 4954 §6
	replyNullSender    = reply(550, 5, 7, 1, "the null sender <> is not allowed on submission")
	replyRateLimited   = reply(450, 4, 7, 0, "rate limit exceeded, try again later")
	replyRelayDenied   = reply(554, 5, 7, 1, "relay access denied")
	replyRcptFull      = reply(452, 4, 2, 2, "mailbox full")
	replyTempFailure   = reply(451, 4, 3, 0, "temporary failure, try again later")
	replyDataFull      = reply(552, 5, 2, 2, "mailbox full")
	replyTooLarge      = reply(552, 5, 3, 4, "message too large")
	replyLineTooLong   = reply(500, 5, 5, 2, "message line too long")
	replyNestedMail    = reply(503, 5, 5, 1, "nested MAIL command")
	replyNoMail        = reply(503, 5, 5, 1, "MAIL first")
)

// ci is the ConnInfo of the connection as it is now.
func (s *session) ci() ConnInfo {
	ci := s.c.info
	_, ci.TLS = s.sc.TLSConnectionState()
	if ci.TLS {
		s.c.tlsSeen.Store(true)
	}
	ci.Helo = s.sc.Hostname()
	return ci
}

func (s *session) isTLS() bool {
	_, ok := s.sc.TLSConnectionState()
	if ok {
		s.c.tlsSeen.Store(true)
	}
	return ok
}

// AuthMechanisms lists what EHLO advertises. RFC 4954 §4 and RFC 8314
// §4.1: never before TLS, so a client cannot be tricked into sending a
// password in clear, and never on the inbound port.
func (s *session) AuthMechanisms() []string {
	if s.c.cfg.Mode != Submission || !s.isTLS() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	s.c.command()
	if s.c.cfg.Mode != Submission {
		return nil, replyNoAuthHere
	}
	if !s.isTLS() {
		return nil, replyNeedTLS
	}
	switch mech {
	case sasl.Plain:
		return checkedServer{sasl.NewPlainServer(func(identity, user, pass string) error {
			// RFC 4616 §2: acting as another identity is not supported.
			if identity != "" && identity != user {
				return s.authFailed(user, "authzid-mismatch")
			}
			return s.login(user, pass)
		})}, nil
	case sasl.Login:
		return newLoginServer(s.login), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// checkedServer turns the library's errors for a malformed response into
// a 501 reply; go-smtp would send them to the client as 454 with their text.
type checkedServer struct{ sasl.Server }

func (cs checkedServer) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := cs.Server.Next(resp)
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return nil, false, replyAuthMalformed
		}
	}
	return ch, done, err
}

// login checks the credentials with the Backend and returns the reply for
// a failure.
func (s *session) login(user, pass string) error {
	acct, err := s.c.srv.backend.Login(s.c.ctx, s.ci(), user, pass)
	switch {
	case err == nil && acct != nil:
		s.acct = acct
		s.c.srv.counters.loginOK.Add(1)
		s.c.counts.user.Store(&acct.Name)
		s.c.log = s.c.log.With("user", acct.Name)
		if acct.Device != "" {
			s.c.log = s.c.log.With("device", acct.Device)
		}
		s.c.log.Info("smtp login")
		return nil
	case err == nil:
		s.c.srv.counters.loginError.Add(1)
		s.c.log.Error("smtp backend returned no account and no error", "user", user)
		return replyAuthTemp
	case errors.Is(err, ErrAuthFailed):
		return s.authFailed(user, "bad-credentials")
	case errors.Is(err, ErrAccessDisabled):
		// The password was right: not a fail2ban matter.
		s.c.srv.counters.loginRefused.Add(1)
		s.c.log.Info("smtp submission disabled", "user", user)
		return replyAuthFailed
	case errors.Is(err, ErrAuthThrottled):
		// Logged by the backend once per block, not here per attempt.
		return throttledReply(err)
	}
	s.c.srv.counters.loginError.Add(1)
	s.c.log.Error("smtp login failed", "user", user, slog.Any("err", err))
	return replyAuthTemp
}

// throttledReply is 454 4.7.0 for a login refused by ErrAuthThrottled,
// with roughly how long to wait when the error says.
func throttledReply(err error) *smtp.SMTPError {
	wait := "later"
	var ri interface{ RetryIn() string }
	if errors.As(err, &ri) {
		wait = ri.RetryIn()
	}
	return reply(454, 4, 7, 0, "temporary authentication failure: too many failed logins, try again "+wait)
}

// authFailed logs a failed login and returns its reply. The log line is
// meant for fail2ban, e.g.
//
//	failregex = msg="smtp auth failed" .*?remote_ip=<HOST> user=
//
// with slog's text handler; user and reason follow remote_ip. The growing
// delay between attempts is the Backend's.
func (s *session) authFailed(user, reason string) error {
	s.c.log.Warn("smtp auth failed", "remote_ip", s.c.info.Remote.Addr().String(), "user", user, "reason", reason)
	s.c.srv.counters.loginFailed.Add(1)
	return replyAuthFailed
}

// revalidate asks the backend whether the logged-in account may still
// submit. When not, the reply is 421 and the connection closes after it.
func (s *session) revalidate() error {
	rv, ok := s.c.srv.backend.(Revalidator)
	if !ok || s.acct == nil {
		return nil
	}
	acct, err := rv.Revalidate(s.c.ctx, s.acct)
	if err != nil {
		s.c.log.Info("smtp access withdrawn", "user", s.acct.Name, "reason", err.Error())
		s.c.closeAfterReply()
		return reply(421, 4, 7, 0, printable(err.Error()))
	}
	s.acct = acct
	return nil
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.c.command()
	if err := s.revalidate(); err != nil {
		return err
	}
	// RFC 5321 §4.1.4: MAIL starts a transaction, so one may not be open.
	// go-smtp would let a second MAIL replace the first; refusing it keeps
	// a refused MAIL from leaving the engine and this session disagreeing.
	if s.inTransaction() {
		return replyNestedMail
	}
	if s.c.cfg.Mode == Submission {
		if s.acct == nil {
			return replyAuthRequired
		}
		// RFC 6409 §6.1: the submission server may check that the
		// sender is one the user is entitled to use.
		if from == "" {
			return replyNullSender
		}
		if !maySendAs(s.acct, from) {
			return reply(550, 5, 7, 1, "<"+printable(from)+"> is not an address you may send as")
		}
	}
	var size int64
	if opts != nil {
		size = opts.Size
	}
	if max := s.c.cfg.MaxMessageBytes; max > 0 && size > max {
		// go-smtp checks SIZE= too, but see widenLimit.
		return replyTooLarge
	}
	if n := s.c.cfg.RateLimitPerIP; n > 0 && s.c.cfg.Mode == Inbound {
		if ip := s.c.info.Remote.Addr(); ip.IsValid() && !s.c.srv.limiter.allow(ip, n, time.Now()) {
			s.c.log.Info("smtp rate limit exceeded", "from", from)
			return replyRateLimited
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.size = size
	s.from = from
	s.inMail = true
	s.c.setBusy(true)
	s.widenLimit(true)
	return nil
}

// widenLimit works around go-smtp's DATA reader, which fails once it has
// returned MaxMessageBytes octets even when only the end-of-data mark
// follows, so a message of exactly the advertised SIZE would be refused
// (RFC 1870 §4 allows it). During a transaction the engine's limit is one
// octet higher and bodyReader applies the exact one. The engine belongs to
// this connection alone, so changing it affects nothing else; EHLO and
// MAIL, which show or check the limit, only run after Reset restored it.
func (s *session) widenLimit(on bool) {
	max := s.c.cfg.MaxMessageBytes
	if max <= 0 {
		return
	}
	if on {
		max++
	}
	s.sc.Server().MaxMessageBytes = max
}

// maySendAs reports whether acct may use from as its reverse-path. The
// whole address is compared without regard to case: local parts are case
// sensitive in theory (RFC 5321 §2.4) but not in practice.
func maySendAs(acct *Account, from string) bool {
	for _, a := range acct.SendAs {
		if strings.EqualFold(a, from) {
			return true
		}
	}
	return false
}

func (s *session) inTransaction() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inMail
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.c.command()
	if !s.inTransaction() {
		return replyNoMail // go-smtp checks this first; kept as a guard
	}
	if err := s.revalidate(); err != nil {
		return err
	}
	s.mu.Lock()
	size := s.size
	s.mu.Unlock()
	err := s.c.srv.backend.Recipient(s.c.ctx, s.ci(), s.acct, to, size)
	switch {
	case err == nil:
		s.mu.Lock()
		s.rcpts = append(s.rcpts, to)
		s.mu.Unlock()
		return nil
	case errors.Is(err, ErrUnknownRecipient):
		return reply(550, 5, 1, 1, "<"+printable(to)+">: no such mailbox here")
	case errors.Is(err, ErrRelayDenied):
		s.c.log.Info("smtp relay denied", "rcpt", to)
		return replyRelayDenied
	case errors.Is(err, ErrQuotaExceeded):
		return replyRcptFull
	}
	s.c.log.Error("smtp recipient check failed", "rcpt", to, slog.Any("err", err))
	return replyTempFailure
}

// bodyReader counts the octets of the DATA body and remembers how reading
// it ended, so the reply does not depend on how Deliver wraps the error.
type bodyReader struct {
	r   io.Reader
	max int64 // 0 = no limit
	n   int64
	err error // first error other than io.EOF
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.max > 0 && b.n > b.max {
		n, err = 0, smtp.ErrDataTooLarge
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (s *session) Data(r io.Reader) error {
	s.c.command()
	if err := s.revalidate(); err != nil {
		// go-smtp already said 354: drain nothing, the connection closes.
		return err
	}
	srv := s.c.srv
	srv.dataStarted()
	defer srv.dataEnded()

	s.mu.Lock()
	s.nMsgs++
	env := &Envelope{
		From: s.from,
		To:   append([]string(nil), s.rcpts...),
		Size: s.size,
		ID:   s.c.id + "." + strconv.Itoa(s.nMsgs),
	}
	s.mu.Unlock()
	if s.acct != nil {
		env.Account = s.acct.Name
	}
	ci := s.ci()
	hdr := receivedHeader(ci, s.c.cfg.Hostname, s.acct != nil, env, time.Now())
	body := &bodyReader{r: r, max: s.c.cfg.MaxMessageBytes}
	err := srv.backend.Deliver(s.c.ctx, ci, env, io.MultiReader(strings.NewReader(hdr), &bareLFUnstuffer{r: body}))

	log := s.c.log.With("id", env.ID, "from", env.From, "rcpts", len(env.To), "size", body.n)
	switch {
	case errors.Is(body.err, smtp.ErrDataTooLarge) || (err != nil && errors.Is(err, ErrTooLarge)):
		log.Info("smtp message refused: too large")
		return replyTooLarge
	case errors.Is(body.err, smtp.ErrTooLongLine):
		log.Info("smtp message refused: line too long")
		return replyLineTooLong
	case body.err != nil:
		// The client went away or stalled mid-body; Deliver was told
		// through the reader and must have stored nothing.
		if err == nil {
			log.Error("smtp backend accepted a truncated message", slog.Any("read_err", body.err))
		} else {
			log.Info("smtp message body incomplete", slog.Any("err", body.err))
		}
		return replyTempFailure
	case err == nil:
	case errors.Is(err, ErrQuotaExceeded):
		log.Info("smtp message refused: mailbox full")
		return replyDataFull
	default:
		log.Error("smtp delivery failed", slog.Any("err", err))
		return replyTempFailure
	}
	srv.delivered.Add(1)
	s.c.counts.messages.Add(1)
	log.Info("smtp message accepted", "account", env.Account)
	// go-smtp writes an *SMTPError as the reply, so a 250 carries the id.
	return reply(250, 2, 0, 0, "queued as "+env.ID)
}

func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.from, s.size, s.rcpts = "", 0, nil
	if s.inMail {
		s.inMail = false
		s.c.setBusy(false)
		s.widenLimit(false)
	}
}

func (s *session) Logout() error {
	s.Reset()
	return nil
}

// receivedHeader builds the trace header of RFC 5321 §4.4 with the
// with-types of RFC 3848. The client's address is written as a literal:
// no DNS lookup is ever made.
func receivedHeader(ci ConnInfo, hostname string, authed bool, env *Envelope, now time.Time) string {
	with := "ESMTP"
	if ci.TLS {
		with += "S"
	}
	if authed {
		with += "A"
	}
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(heloToken(ci.Helo))
	b.WriteString(" (")
	b.WriteString(addrLiteral(ci.Remote.Addr()))
	b.WriteString(") by ")
	b.WriteString(heloToken(hostname))
	b.WriteString(" (mailpost) with ")
	b.WriteString(with)
	b.WriteString(" id ")
	b.WriteString(env.ID)
	if len(env.To) == 1 {
		b.WriteString(" for <")
		b.WriteString(printable(env.To[0]))
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(now.Format(time.RFC1123Z)) // RFC 5322 §3.3 date-time
	b.WriteString("\r\n")
	return b.String()
}

// addrLiteral is the RFC 5321 §4.1.3 address literal of ip.
func addrLiteral(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "unknown"
	case ip.Is4():
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}

// heloToken makes a client-chosen name safe to put in a header: letters,
// digits and the punctuation of domains and address literals only, and not
// too long.
func heloToken(h string) string {
	const maxLen = 255 // RFC 1035 §2.3.4
	if len(h) > maxLen {
		h = h[:maxLen]
	}
	h = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		case strings.ContainsRune(".-_:[]", r):
			return r
		}
		return '_'
	}, h)
	if h == "" {
		return "unknown"
	}
	return h
}

// printable drops control characters and caps the length of text a client
// chose, before it goes into a reply or a header.
func printable(t string) string {
	const maxLen = 512
	if len(t) > maxLen {
		t = t[:maxLen]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, t)
}
