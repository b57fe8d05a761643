package smtpauth

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mailpost/connset"
)

// conn wraps one accepted connection. go-smtp reads and writes through it
// (under TLS when there is TLS), which lets this package apply an idle
// timeout to every read, including the DATA body (go-smtp sets its read
// deadline once per command line, so a long body could outlive it or a
// stalled one hang), and lets Shutdown close idle sessions but not ones in
// the middle of a mail transaction.
type conn struct {
	net.Conn // the accepted connection; deadlines are set here

	srv  *Server
	cfg  *Settings // snapshot taken at accept; never re-read mid-session
	id   string    // also the prefix of message ids
	log  *slog.Logger
	info ConnInfo // Remote, Local and Listener; TLS and Helo are filled per call

	ctx    context.Context // ends with the connection or when the server is closed
	cancel context.CancelFunc
	done   chan struct{} // closed once the session is over
	once   sync.Once
	start  time.Time

	mu            sync.Mutex // orders busy and deadlines against Server.stop
	busy          bool       // in a mail transaction: Shutdown lets it finish
	writeDeadline time.Time  // set explicitly by crypto/tls while closing
	closing       bool       // close the connection once the next reply is written

	counts  connCounters
	tlsSeen atomic.Bool  // implicit TLS, or STARTTLS seen by a later command (EHLO asks AuthMechanisms)
	connLog *slog.Logger // log before a login added the user; for the session-end line
}

// closeAfterReply ends the session right after the reply being prepared
// (a 421) reaches the client; go-smtp itself would carry on.
func (c *conn) closeAfterReply() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

func newConn(srv *Server, raw net.Conn, cfg *Settings, listener string) *conn {
	c := &conn{
		Conn:  raw,
		srv:   srv,
		cfg:   cfg,
		id:    newID(),
		done:  make(chan struct{}),
		start: time.Now(),
		info: ConnInfo{
			Remote:   connset.AddrPort(raw.RemoteAddr()),
			Local:    connset.AddrPort(raw.LocalAddr()),
			Listener: listener,
		},
	}
	c.log = srv.log.With("cid", c.id, "remote", raw.RemoteAddr().String(), "listener", listener)
	c.connLog = c.log
	c.ctx, c.cancel = context.WithCancel(srv.baseCtx)
	return c
}

// idEncoding gives ids that are safe in a Received header and in file names.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newID returns a random connection id: 60 bits, so ids stay unique across
// restarts and the Received headers of different messages never collide.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])[:12]
}

// serve starts the go-smtp engine on the connection and returns at once.
// Each connection gets its own engine, configured from its Settings
// snapshot: go-smtp's limits are fields of its Server, fixed while it runs.
func (c *conn) serve(implicitTLS bool) {
	c.log.Debug("smtp session start", "mode", c.cfg.Mode)
	var nc net.Conn = c
	if implicitTLS {
		if c.cfg.TLSConfig == nil {
			c.log.Error("smtp implicit TLS listener has no TLS config")
			c.Close()
			return
		}
		nc = tls.Server(c, c.cfg.TLSConfig)
		c.tlsSeen.Store(true)
	}
	e := smtp.NewServer(smtp.BackendFunc(c.newSession))
	e.Domain = c.cfg.Hostname
	e.TLSConfig = c.cfg.TLSConfig // STARTTLS; not offered once on TLS
	e.MaxMessageBytes = c.cfg.MaxMessageBytes
	e.MaxRecipients = c.cfg.MaxRecipients
	e.MaxLineLength = maxLineLength
	// TLS before AUTH is enforced by the session, which can give the
	// RFC 3207 §4 reply (530 5.7.0); go-smtp's own check answers 523.
	e.AllowInsecureAuth = true
	// Deadlines are set by conn on every read and write instead.
	e.ReadTimeout, e.WriteTimeout = 0, 0
	e.ErrorLog = engineLog{c.log}
	// Serve accepts the one connection, runs it on its own goroutine and
	// returns when the listener reports it has no more.
	e.Serve(&oneConnListener{c: nc})
}

func (c *conn) newSession(sc *smtp.Conn) (smtp.Session, error) {
	return &session{c: c, sc: sc}, nil
}

// errShuttingDown is what a read returns on a draining server. go-smtp
// answers a timeout with "421 4.4.2" and closes, which is what RFC 5321
// §3.8 asks of a server going down.
var errShuttingDown = shutdownError{}

type shutdownError struct{}

func (shutdownError) Error() string   { return "smtpauth: server shutting down" }
func (shutdownError) Timeout() bool   { return true }
func (shutdownError) Temporary() bool { return true }

func (c *conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.srv.conns.Draining() && !c.busy {
		c.mu.Unlock()
		return 0, errShuttingDown
	}
	c.Conn.SetReadDeadline(time.Now().Add(c.cfg.ReadTimeout))
	c.mu.Unlock()
	n, err := c.Conn.Read(b)
	c.countIn(n)
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	d := time.Now().Add(c.cfg.WriteTimeout)
	if !c.writeDeadline.IsZero() && c.writeDeadline.Before(d) {
		d = c.writeDeadline
	}
	closing := c.closing
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(d)
	n, err := c.Conn.Write(b)
	c.countOut(n)
	if closing {
		c.Conn.Close()
	}
	return n, err
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// setBusy marks the start (MAIL accepted) and end (DATA replied, RSET,
// EHLO, QUIT) of a mail transaction.
func (c *conn) setBusy(b bool) {
	c.mu.Lock()
	c.busy = b
	c.mu.Unlock()
}

// prod makes a blocked read of an idle session return at once; called by
// Shutdown. A busy session sees the draining flag at its first read after
// the transaction.
func (c *conn) prod() {
	c.mu.Lock()
	if !c.busy {
		c.Conn.SetReadDeadline(time.Now())
	}
	c.mu.Unlock()
}

// Close is called by go-smtp when the session ends (through tls.Conn when
// there is TLS). Server.Close closes c.Conn directly instead, so that the
// connection stays counted until go-smtp has let go of it.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.cancel()
		c.srv.conns.Release(c)
		// One line per session at Info, with the same attributes as
		// pop3's, so a log search finds every session of a user or IP.
		user := ""
		if u := c.counts.user.Load(); u != nil {
			user = *u
		}
		c.connLog.Info("smtp session end", "user", user, "remote_ip", c.info.Remote.Addr().String(),
			"tls", c.tlsSeen.Load(), "duration", time.Since(c.start).Round(time.Millisecond),
			"commands", c.counts.commands.Load(), "bytes_in", c.counts.bytesIn.Load(),
			"bytes_out", c.counts.bytesOut.Load(), "messages", c.counts.messages.Load())
		close(c.done)
	})
	return err
}

// oneConnListener hands one connection to go-smtp's Serve, then reports
// itself closed so that Serve returns.
type oneConnListener struct {
	mu sync.Mutex
	c  net.Conn
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return nil, net.ErrClosed
	}
	c := l.c
	l.c = nil
	return c, nil
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{} }

// engineLog sends go-smtp's internal reports to slog: panics (which go-smtp
// has already answered with 421 and recovered from) as errors, the rest,
// such as failed TLS handshakes, at debug level.
type engineLog struct{ log *slog.Logger }

func (l engineLog) Printf(format string, v ...any) { l.report(fmt.Sprintf(format, v...)) }
func (l engineLog) Println(v ...any)               { l.report(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (l engineLog) report(msg string) {
	// go-smtp v0.25.1 starts a BDAT (RFC 3030) chunk's Data call on a new
	// goroutine that fetches the session without a check; when the client
	// has already gone and the connection is closed, that is nil and the
	// goroutine panics (and recovers). Nothing was delivered and nothing is
	// wrong on our side, so it is not reported as an error.
	if strings.HasPrefix(msg, "panic") && strings.Contains(msg, "handleBdat.func1()") && strings.Contains(msg, "nil pointer dereference") {
		l.log.Debug("smtp BDAT aborted by a client that left (recovered go-smtp panic)")
		return
	}
	if strings.HasPrefix(msg, "panic") {
		l.log.Error("smtp panic in session", "detail", msg)
		return
	}
	l.log.Debug("smtp engine", "detail", msg)
}
