// Package smtpauth is the SMTP side of mailpost: authenticated submission
// (RFC 6409 on port 587 with STARTTLS, RFC 8314 implicit TLS on 465) and
// inbound MX delivery on port 25. The protocol engine is emersion/go-smtp;
// this package supplies its Backend and Session and the protocol policy
// (TLS before AUTH, sender ownership, limits, caps, Received headers).
// Who may log in, which recipients exist and where mail goes come from a
// Backend; this package knows nothing of storage or configuration files.
package smtpauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"mailpost/connset"
)

// Mode selects the policy of a Server.
type Mode int

const (
	// Submission is for a user's own mail client: AUTH over TLS is required
	// before MAIL, and MAIL FROM must be an address the account may send as.
	Submission Mode = iota
	// Inbound is the MX side: no AUTH, any sender, local recipients only.
	Inbound
)

func (m Mode) String() string {
	if m == Inbound {
		return "inbound"
	}
	return "submission"
}

// Settings are the tunables of a Server. A connection takes a snapshot when
// it is accepted; SetSettings affects only later connections.
type Settings struct {
	Mode                      Mode
	Hostname                  string        // EHLO greeting name and Received "by"; default "localhost"
	TLSConfig                 *tls.Config   // implicit TLS and STARTTLS; nil = no TLS (then submission AUTH is impossible)
	MaxMessageBytes           int64         // advertised with SIZE; 0 = no limit
	MaxRecipients             int           // RCPTs per message; 0 = no limit
	ReadTimeout, WriteTimeout time.Duration // idle limit per read and per write; defaults 5m / 5m
	MaxConnections            int           // connections at once on this Server; 0 = unlimited
	MaxConnectionsPerIP       int           // connections at once per remote IP; 0 = unlimited
	RateLimitPerIP            int           // inbound: messages per minute per IP; 0 = unlimited
}

// Defaults for zero Settings fields. RFC 5321 §4.5.3.2 asks for at least
// 5 minutes for commands and for each DATA block.
const (
	DefaultReadTimeout  = 5 * time.Minute
	DefaultWriteTimeout = 5 * time.Minute
)

// maxLineLength is go-smtp's limit on a command or text line: twice the
// 1000 octets of RFC 5321 §4.5.3.1.6, as go-smtp itself defaults to.
const maxLineLength = 2000

// rejectTimeout bounds the handshake and the write done for a connection
// refused because of a connection cap.
const rejectTimeout = 5 * time.Second

func (s *Settings) withDefaults() *Settings {
	c := *s
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	return &c
}

// ConnInfo describes the connection a Backend call comes from.
type ConnInfo struct {
	Remote, Local netip.AddrPort
	TLS           bool   // implicit TLS or after STARTTLS
	Listener      string // name of the listener for logs, e.g. "submission [::]:587"
	Helo          string // the EHLO/HELO argument, as the client sent it
}

// Account is an authenticated submission user.
type Account struct {
	Name   string
	SendAs []string // addresses MAIL FROM may use; compared case-insensitively
	// Device names the scoped credential the login used, "" for the
	// account's main password; logs show it.
	Device string
	// Credential is the backend's own mark of what the login was checked
	// against (opaque here), for Revalidate.
	Credential any
}

// Revalidator is an optional Backend interface for access that a config
// reload can withdraw while a session is open. Revalidate runs before MAIL,
// RCPT and DATA of an authenticated session and returns the account as it
// stands now (send_as may have changed); an error ends the session with
// 421 4.7.0 and its text.
type Revalidator interface {
	Revalidate(ctx context.Context, acct *Account) (*Account, error)
}

// Envelope is one message's SMTP envelope as handed to Backend.Deliver.
type Envelope struct {
	From    string   // reverse-path without brackets; "" is the null sender (inbound only)
	To      []string // every accepted recipient, in RCPT order
	Account string   // the authenticated account; "" on inbound
	Size    int64    // the SIZE= hint from MAIL, or 0
	ID      string   // unique id of this message, also in the Received header and the 250 reply
}

// Errors a Backend returns; the session maps each to its SMTP reply. Any
// other error becomes a temporary 451 4.3.0 (454 4.7.0 for Login) and is
// logged.
var (
	ErrAuthFailed       = errors.New("authentication failed")
	ErrAccessDisabled   = errors.New("submission disabled for this mailbox")
	ErrUnknownRecipient = errors.New("no such mailbox")
	ErrRelayDenied      = errors.New("relay access denied")
	ErrQuotaExceeded    = errors.New("mailbox full")
	ErrTooLarge         = errors.New("message too large")

	// ErrAuthThrottled: the client's network or the account had too many
	// failed logins and is refused for a while, before the password was
	// checked: 454 4.7.0 (RFC 4954 §6), a temporary failure, so clients
	// retry later instead of asking for a new password. If the error chain
	// has a RetryIn() string method ("in about 3 minutes"), the reply says
	// roughly how long to wait.
	ErrAuthThrottled = errors.New("too many failed logins")
)

// Backend is the who/where policy behind the protocol.
type Backend interface {
	// Login verifies credentials for submission. It applies failure delays
	// itself. It returns ErrAuthFailed for wrong credentials and
	// ErrAccessDisabled (only once the password was right) for a mailbox
	// that may not submit.
	Login(ctx context.Context, ci ConnInfo, username, password string) (*Account, error)
	// Recipient vets one RCPT. acct is nil on inbound. sizeHint is the SIZE=
	// value or 0.
	Recipient(ctx context.Context, ci ConnInfo, acct *Account, rcpt string, sizeHint int64) error
	// Deliver stores or queues the message for every recipient atomically;
	// nil means durable. msg returns an error instead of io.EOF when the
	// body is truncated or too large; Deliver must then store nothing.
	Deliver(ctx context.Context, ci ConnInfo, env *Envelope, msg io.Reader) error
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("smtpauth: server closed")

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Sessions  int    // connections open now
	Accepted  uint64 // connections served since NewServer
	Rejected  uint64 // connections refused by a connection cap
	Delivered uint64 // messages Deliver accepted

	// Commands counts the commands that reach the session (AUTH, MAIL,
	// RCPT, DATA/BDAT); go-smtp answers the rest itself.
	Commands          uint64
	BytesIn, BytesOut uint64 // octets read and written on the wire, TLS included
	// Logins by result: success; failed (bad credentials, or a refused
	// authorization identity); refused (right password, but submission
	// is disabled for the mailbox); error (the backend failed).
	LoginSuccess, LoginFailed, LoginRefused, LoginError uint64
}

// Server serves SMTP in one Mode on any number of listeners.
type Server struct {
	backend  Backend
	log      *slog.Logger
	settings atomic.Pointer[Settings] // with defaults applied
	limiter  *rateLimiter

	baseCtx context.Context // parent of every connection's context; cancelled by Close
	cancel  context.CancelFunc

	// conns counts, caps and drains the connections; Shutdown closes an
	// idle session (one not in a mail transaction) through its read, Close
	// closes the connection under go-smtp. A Data call holds it too, since
	// BDAT runs one beside the connection's goroutine.
	conns     *connset.Set[*conn]
	accepted  atomic.Uint64
	rejected  atomic.Uint64
	delivered atomic.Uint64
	counters  counters
}

// NewServer returns a Server using b for policy. A nil log discards logs.
func NewServer(b Backend, s *Settings, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if s == nil {
		s = &Settings{}
	}
	srv := &Server{
		backend: b,
		log:     log,
		limiter: newRateLimiter(rateLimiterEntries),
		// Close the conn's net.Conn, not the conn: the connection stays
		// counted until go-smtp has let go of it (see conn.Close).
		conns: connset.New((*conn).prod, func(c *conn) { c.Conn.Close() }),
	}
	srv.baseCtx, srv.cancel = context.WithCancel(context.Background())
	srv.SetSettings(s)
	return srv
}

// SetSettings replaces the settings atomically; connections accepted
// afterwards use them, open connections keep theirs.
func (srv *Server) SetSettings(s *Settings) {
	srv.settings.Store(s.withDefaults())
}

// Stats returns the current counters.
func (srv *Server) Stats() Stats {
	return Stats{
		Sessions:  srv.conns.Len(),
		Accepted:  srv.accepted.Load(),
		Rejected:  srv.rejected.Load(),
		Delivered: srv.delivered.Load(),
		Commands:  srv.counters.commands.Load(),
		BytesIn:   srv.counters.bytesIn.Load(),
		BytesOut:  srv.counters.bytesOut.Load(),

		LoginSuccess: srv.counters.loginOK.Load(),
		LoginFailed:  srv.counters.loginFailed.Load(),
		LoginRefused: srv.counters.loginRefused.Load(),
		LoginError:   srv.counters.loginError.Load(),
	}
}

// Serve accepts connections on l until l is closed or the server shuts down.
// With implicitTLS every connection starts with a TLS handshake (RFC 8314).
// name labels the listener in logs. After Shutdown or Close it returns
// ErrServerClosed; if the caller closes l itself it returns nil, and
// connections accepted on l carry on.
func (srv *Server) Serve(l net.Listener, implicitTLS bool, name string) error {
	err := srv.conns.Serve(l, name, func(c net.Conn) {
		srv.start(c, implicitTLS, name)
	}, srv.log, "smtp")
	if errors.Is(err, connset.ErrStopped) {
		return ErrServerClosed
	}
	if err != nil {
		return fmt.Errorf("smtpauth: %w", err)
	}
	return nil
}

// ServeConn serves one connection accepted elsewhere (a custom listener, or
// net.Pipe in tests) and returns when the session has ended.
func (srv *Server) ServeConn(c net.Conn, implicitTLS bool, name string) {
	if done := srv.start(c, implicitTLS, name); done != nil {
		<-done
	}
}

// start applies the connection caps and hands the connection to a go-smtp
// engine, or refuses it. It does not block on the session; the returned
// channel is closed when the session is over (nil if there was none).
func (srv *Server) start(raw net.Conn, implicitTLS bool, name string) <-chan struct{} {
	cfg := srv.settings.Load()
	c, v := srv.conns.Admit(raw, cfg.MaxConnections, cfg.MaxConnectionsPerIP, func() *conn {
		return newConn(srv, raw, cfg, name)
	})
	switch v {
	case connset.Stopping:
		raw.Close()
		return nil
	case connset.Refused:
		srv.rejected.Add(1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.refuse(raw, cfg, implicitTLS, name)
			srv.conns.EndRefusal(raw)
		}()
		return done
	}
	srv.accepted.Add(1)
	c.serve(implicitTLS)
	return c.done
}

// dataStarted and dataEnded count Data calls, so that Shutdown also waits
// for a BDAT delivery that outlives its connection's goroutine.
func (srv *Server) dataStarted() { srv.conns.Hold() }

func (srv *Server) dataEnded() { srv.conns.Unhold() }

// refuse tells a client over a connection cap to come back later (RFC 5321
// §3.8: 421 and close). On implicit TLS the reply must be encrypted, so the
// handshake is done first, under a short deadline.
func (srv *Server) refuse(c net.Conn, cfg *Settings, implicitTLS bool, name string) {
	defer c.Close()
	srv.log.Info("smtp connection refused: too many connections", "listener", name, "remote", c.RemoteAddr().String())
	c.SetDeadline(time.Now().Add(rejectTimeout))
	w := c
	if implicitTLS {
		if cfg.TLSConfig == nil {
			return
		}
		tc := tls.Server(c, cfg.TLSConfig)
		if err := tc.Handshake(); err != nil {
			return
		}
		defer tc.Close()
		w = tc
	}
	io.WriteString(w, "421 4.7.0 too many connections\r\n")
}

// Shutdown stops every listener, lets each session finish the mail
// transaction it is in (MAIL through the reply to DATA), closes idle
// sessions with a 421 reply, and waits for all of them to end. When ctx ends
// first, whatever is left is closed as by Close and ctx's error returned.
func (srv *Server) Shutdown(ctx context.Context) error {
	err := srv.stop(false)
	if werr := srv.conns.Wait(ctx); werr != nil {
		return errors.Join(err, srv.stop(true), werr)
	}
	return err
}

// Close closes every listener and connection at once and cancels the
// context of running Backend calls.
func (srv *Server) Close() error {
	return srv.stop(true)
}

func (srv *Server) stop(hard bool) error {
	err := srv.conns.Stop(hard)
	if hard {
		srv.cancel()
	}
	return err
}
