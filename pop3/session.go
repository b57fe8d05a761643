package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"mailpost/connset"
)

// state is the RFC 1939 §3 session state.
type state uint8

const (
	stateAuth   state = iota // AUTHORIZATION: before login
	stateTrans               // TRANSACTION: maildrop open and locked
	stateUpdate              // UPDATE: after QUIT in TRANSACTION, deletions applied
)

func (st state) String() string {
	switch st {
	case stateAuth:
		return "AUTHORIZATION"
	case stateTrans:
		return "TRANSACTION"
	}
	return "UPDATE"
}

// Session limits.
const (
	maxErrors     = 5  // protocol errors before the session is closed
	maxAuthFails  = 3  // failed logins before the session is closed
	maxArgLen     = 40 // RFC 2449 §4: arguments are at most 40 octets
	smallWriteBuf = 512
)

// session is one POP3 connection.
type session struct {
	srv    *Server
	cfg    *Settings // snapshot taken at accept; never re-read mid-session
	log    *slog.Logger
	ctx    context.Context // ends with the session or when the server is closed
	cancel context.CancelFunc

	mu   sync.Mutex // orders read-deadline changes against Server.Shutdown's prod
	raw  net.Conn   // the accepted connection: deadlines are set here
	cork *corkConn  // raw, gathering writes while a big reply is sent
	conn net.Conn   // raw, or the *tls.Conn over it
	br   *bufio.Reader
	bw   *bufio.Writer  // small, for status lines; big replies borrow a pooled writer
	out  deadlineWriter // conn, with a write deadline per chunk
	info ConnInfo

	implicitTLS bool
	state       state
	user        string // name from USER, waiting for PASS; cleared by any other command
	drop        Maildrop
	msgs        []MessageInfo // the maildrop's snapshot at login
	deleted     []bool        // marked by DELE, cleared by RSET; same indexes as msgs
	got         []bool        // sent in full by RETR; same indexes as msgs; nil until the first
	errs        int           // protocol errors so far
	authFails   int           // failed logins so far
	lines       int           // command lines read

	counted   *countingConn // raw, counting octets
	connLog   *slog.Logger  // log before a login added the user; for the session-end line
	loginUser string        // the mailbox logged in, "" before
	retrieved int           // RETR replies sent in full
	nDeleted  int           // messages removed at QUIT
}

func newSession(srv *Server, c net.Conn, cfg *Settings, implicitTLS bool, name string) *session {
	id := srv.nextID.Add(1)
	cc := &countingConn{Conn: c, srv: &srv.counters}
	c = cc
	s := &session{
		counted:     cc,
		srv:         srv,
		cfg:         cfg,
		raw:         c,
		conn:        c,
		implicitTLS: implicitTLS,
		info: ConnInfo{
			Remote:   connset.AddrPort(c.RemoteAddr()),
			Local:    connset.AddrPort(c.LocalAddr()),
			Listener: name,
		},
	}
	s.log = srv.log.With("cid", strconv.FormatUint(id, 36), "remote", c.RemoteAddr().String(), "listener", name)
	s.connLog = s.log
	s.ctx, s.cancel = context.WithCancel(srv.baseCtx)
	s.cork = &corkConn{Conn: c}
	s.out = deadlineWriter{w: s.cork, c: c, d: cfg.AuthTimeout}
	s.br = bufio.NewReaderSize(c, cfg.MaxCommandSize)
	s.bw = bufio.NewWriterSize(&s.out, smallWriteBuf)
	return s
}

// deadlineWriter sets a fresh write deadline before each write, so a large
// RETR to a slow but live client is not cut off while a stalled one is.
type deadlineWriter struct {
	w io.Writer
	c net.Conn // where deadlines are set
	d time.Duration
}

func (dw *deadlineWriter) Write(p []byte) (int, error) {
	if err := dw.c.SetWriteDeadline(time.Now().Add(dw.d)); err != nil {
		return 0, err
	}
	return dw.w.Write(p)
}

// prod makes a blocked read return at once; called by Shutdown.
func (s *session) prod() {
	s.mu.Lock()
	s.raw.SetReadDeadline(time.Now())
	s.mu.Unlock()
}

// armRead sets the read deadline for the next line and reports whether the
// server is draining. Both happen under s.mu, so a Shutdown either sees the
// new deadline and prods it, or this sees the draining flag.
func (s *session) armRead(d time.Duration) (draining bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw.SetReadDeadline(time.Now().Add(d))
	return s.srv.sessions.Draining()
}

func (s *session) timeout() time.Duration {
	if s.state == stateAuth {
		return s.cfg.PreAuthTimeout
	}
	return s.cfg.AuthTimeout
}

// serve runs the session until it ends, then releases everything.
func (s *session) serve() {
	start := time.Now()
	s.log.Debug("pop3 session start")
	defer func() {
		s.cancel()
		s.raw.Close()
		s.closeDrop()
		// One line per session at Info, with the same attributes as
		// smtpauth's, so a log search finds every session of a user or IP.
		s.connLog.Info("pop3 session end", "user", s.loginUser, "remote_ip", s.info.Remote.Addr().String(),
			"tls", s.info.TLS, "duration", time.Since(start).Round(time.Millisecond), "commands", s.lines,
			"bytes_in", s.counted.in.Load(), "bytes_out", s.counted.out.Load(),
			"retrieved", s.retrieved, "deleted", s.nDeleted)
	}()

	if s.implicitTLS {
		if s.cfg.TLSConfig == nil {
			s.log.Error("pop3 implicit TLS listener has no TLS config")
			return
		}
		if s.armRead(s.cfg.PreAuthTimeout) {
			return
		}
		if err := s.startTLS(); err != nil {
			s.log.Debug("pop3 TLS handshake failed", slog.Any("err", err))
			return
		}
	}
	s.reply("+OK " + s.greeting())

	for {
		// Pipelining (RFC 2449 §6.6): reply in batches, flushing only when
		// the client has nothing more queued.
		if s.br.Buffered() == 0 {
			if err := s.bw.Flush(); err != nil {
				s.log.Debug("pop3 write failed", slog.Any("err", err))
				return
			}
		}
		if s.armRead(s.timeout()) {
			s.final(lineShutdown)
			return
		}
		line, err := s.readLine()
		if err != nil {
			s.readFailed(err)
			return
		}
		if rv, ok := s.drop.(Revalidator); ok && s.state == stateTrans {
			if err := rv.Revalidate(); err != nil {
				s.log.Info("pop3 access withdrawn", "reason", err.Error())
				s.final("-ERR [" + CodeSysPerm + "] " + sanitize(err.Error()))
				return
			}
		}
		if !s.handle(line) {
			s.bw.Flush()
			return
		}
	}
}

// closeDrop releases the maildrop (and its lock) once.
func (s *session) closeDrop() {
	if s.drop == nil {
		return
	}
	if err := s.drop.Close(); err != nil {
		s.log.Error("pop3 closing maildrop", slog.Any("err", err))
	}
	s.drop = nil
}

func (s *session) greeting() string {
	banner := sanitize(s.cfg.Banner)
	if banner == "" {
		banner = "POP3 server ready"
	}
	if h := sanitize(s.cfg.Hostname); h != "" {
		return h + " " + banner
	}
	return banner
}

// sanitize drops control characters so configured text cannot break a reply
// line.
func sanitize(t string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, t)
}

var errLineTooLong = errors.New("pop3: command line too long")

// readLine reads one line without its line end. The reader's buffer is
// MaxCommandSize octets, so an endless line fails as soon as it fills the
// buffer instead of growing memory (textproto's ReadLine has no limit).
func (s *session) readLine() (string, error) {
	b, err := s.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > s.cfg.MaxCommandSize {
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	b = b[:len(b)-1] // a bare LF ends a line too
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return string(b), nil
}

// readFailed reports a failed read to the client when that can still help.
func (s *session) readFailed(err error) {
	switch {
	case errors.Is(err, errLineTooLong):
		s.log.Info("pop3 command line too long, closing")
		s.final(lineTooLong)
		s.linger()
	case errors.Is(err, os.ErrDeadlineExceeded):
		if s.srv.sessions.Draining() {
			s.final(lineShutdown)
		} else {
			s.log.Info("pop3 idle timeout", "state", s.state)
			s.final(lineIdle)
		}
	case errors.Is(err, io.EOF):
		s.log.Debug("pop3 client closed the connection", "state", s.state)
	default:
		s.log.Debug("pop3 read failed", slog.Any("err", err))
	}
}

// final sends a last line, best effort and briefly, before the session closes.
func (s *session) final(line string) {
	s.out.d = 2 * time.Second
	s.reply(line)
	s.bw.Flush()
}

// lingerTime bounds how long linger drains a client still sending.
const lingerTime = time.Second

// linger half-closes the connection and drains what the client is still
// sending, for a short while, before the session closes it. Closing a TCP
// socket with unread input sends a RST, which can destroy the final -ERR
// before the client reads it.
func (s *session) linger() {
	if tc, ok := s.conn.(*tls.Conn); ok {
		tc.CloseWrite() // close_notify
	}
	cw, ok := s.raw.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	s.raw.SetReadDeadline(time.Now().Add(lingerTime))
	var buf [512]byte
	for {
		if _, err := s.raw.Read(buf[:]); err != nil {
			return
		}
	}
}

// reply queues one response line.
func (s *session) reply(line string) {
	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("S: " + line)
	}
	s.bw.WriteString(line)
	s.bw.WriteString("\r\n")
}

func (s *session) replyf(format string, args ...any) {
	s.reply(fmt.Sprintf(format, args...))
}

// handle runs one command line and reports whether the session goes on.
func (s *session) handle(line string) (more bool) {
	s.lines++
	s.srv.counters.commands.Add(1)
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)

	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("C: " + redact(verb, line))
	}
	// Cross-protocol defence: a web browser or proxy pointed at us sends
	// HTTP; answer nothing that could be misread and hang up.
	if s.lines == 1 && isHTTPMethod(verb) {
		s.log.Info("pop3 HTTP request on POP3 port, closing", "method", verb)
		return false
	}
	if verb != "USER" && verb != "PASS" {
		s.user = "" // RFC 1939 §7: PASS only right after a successful USER
	}

	err := s.dispatch(verb, arg, line)
	if err == nil {
		return true
	}
	var perr *Error
	switch {
	case errors.As(err, &perr):
		if !perr.quiet {
			s.errs++
			if s.errs >= maxErrors {
				s.log.Info("pop3 too many errors, closing", "last", perr.Text)
				s.final(lineTooManyErrors)
				s.linger()
				return false
			}
		}
		s.reply(perr.line())
		return true
	case errors.Is(err, errQuit):
		return false
	}
	var aerr *abortError
	if errors.As(err, &aerr) {
		var rerr *readError
		if errors.As(err, &rerr) {
			s.log.Error("pop3 command failed", "command", verb, slog.Any("err", err))
		} else {
			s.log.Debug("pop3 connection lost", "command", verb, slog.Any("err", err))
		}
		return false
	}
	s.log.Error("pop3 command failed", "command", verb, slog.Any("err", err))
	s.reply(lineInternal)
	return false
}

// dispatch checks the line and the state, then runs the handler. A panic in
// a handler is logged and answered as an internal error; the server lives on.
func (s *session) dispatch(verb, arg, line string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("pop3 panic in command handler", "command", verb, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic in %s: %v", verb, r)
		}
	}()
	if line == "" {
		return errSyntax
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 0x20 || c == 0x7f {
			return errBadChars
		}
	}
	cmd, ok := commands[verb]
	if !ok {
		return errUnknownCommand
	}
	if cmd.states&(1<<s.state) == 0 {
		return errWrongState
	}
	return cmd.fn(s, arg)
}

func isHTTPMethod(verb string) bool {
	switch verb {
	case "GET", "POST", "CONNECT", "HEAD", "PUT":
		return true
	}
	return false
}

// redact hides secrets in the transcript.
func redact(verb, line string) string {
	switch verb {
	case "PASS":
		return "PASS <redacted>"
	case "AUTH":
		// Keep the mechanism, hide the initial response.
		f := strings.SplitN(line, " ", 3)
		if len(f) == 3 {
			return f[0] + " " + f[1] + " <redacted>"
		}
	}
	return line
}

// startTLS runs the server side of a TLS handshake on the connection and
// switches reader and writer to it. Anything the client sent before the
// handshake and the server has not read is discarded (RFC 2595 §4,
// CVE-2011-0411): it came in plaintext and may have been injected.
func (s *session) startTLS() error {
	if n := s.br.Buffered(); n > 0 {
		s.log.Warn("pop3 discarding plaintext pipelined after STLS", "octets", n)
		s.br.Discard(n)
	}
	tc := tls.Server(s.cork, s.cfg.TLSConfig)
	if err := tc.HandshakeContext(s.ctx); err != nil {
		return fmt.Errorf("pop3: TLS handshake: %w", err)
	}
	st := tc.ConnectionState()
	s.log.Debug("pop3 TLS established", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	s.conn = tc
	s.info.TLS = true
	s.br.Reset(tc)
	s.out.w = tc
	s.bw.Reset(&s.out)
	return nil
}

// multiline writes a multi-line response: the status line, whatever body
// writes through the dot-stuffer, and the terminator. big borrows a large
// pooled buffer for the duration, for RETR, TOP and long listings.
func (s *session) multiline(status string, big bool, body func(d *dotWriter) error) error {
	bw := s.bw
	if big {
		if err := s.bw.Flush(); err != nil {
			return &abortError{err}
		}
		bw = getBigWriter(&s.out)
		defer putBigWriter(bw)
		s.cork.cork()
		defer s.cork.uncork() // only reached on error paths with data pending
	}
	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("S: " + status + " [multi-line]")
	}
	bw.WriteString(status)
	bw.WriteString("\r\n")
	d := newDotWriter(bw)
	if err := body(d); err != nil {
		return &abortError{err}
	}
	if err := d.Close(); err != nil {
		return &abortError{err}
	}
	if big {
		if err := bw.Flush(); err != nil {
			return &abortError{err}
		}
		if err := s.cork.uncork(); err != nil {
			return &abortError{err}
		}
	}
	return nil
}
