// Package pop3 implements the POP3 protocol engine of mailpost: RFC 1939
// with the RFC 2449 CAPA extensions, STLS (RFC 2595), AUTH PLAIN (RFC 5034)
// and implicit TLS (RFC 8314). Credentials and maildrops come from a Backend;
// this package knows nothing of storage or configuration files.
package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"mailpost/connset"
)

// Settings are the tunables of a Server. A session takes a snapshot when it
// is accepted; SetSettings affects only later sessions.
type Settings struct {
	Hostname            string        // shown in the greeting
	Banner              string        // shown in the greeting
	TLSConfig           *tls.Config   // for implicit TLS and STLS; nil = no TLS (STLS not offered)
	AllowInsecureAuth   bool          // allow USER/PASS/AUTH on a connection without TLS
	PreAuthTimeout      time.Duration // idle limit per command before login; default 1 min
	AuthTimeout         time.Duration // idle limit per command after login, and per write; default 10 min
	MaxCommandSize      int           // longest command line in octets incl. CRLF; default 512
	MaxConnections      int           // sessions at once on this Server; 0 = unlimited
	MaxConnectionsPerIP int           // sessions at once per remote IP; 0 = unlimited
	// Expire is the retention policy CAPA announces before login (RFC 2449
	// §6.7); after login a Maildrop that implements Expirer announces its
	// own. nil = no EXPIRE line before login.
	Expire *Expire
}

// ExpireNever is Expire.Days for "EXPIRE NEVER": the server does not delete
// mail on its own.
const ExpireNever = -1

// Expire is a retention policy as the EXPIRE capability states it (RFC 2449
// §6.7): the minimum number of days the server keeps a message after a
// client retrieved it.
type Expire struct {
	// Days a retrieved message stays at least; 0 = it goes at the end of
	// the session that retrieved it (an implicit DELE at QUIT);
	// ExpireNever = it stays until the client deletes it.
	Days int
	// PerUser says the policy differs between mailboxes. Before login
	// CAPA then shows Days, the lowest of them (a minimum every user
	// gets), with the USER tag; after login it shows the user's own value.
	PerUser bool
}

// capability renders the CAPA line.
func (e Expire) capability() string {
	v := "EXPIRE NEVER"
	if e.Days >= 0 {
		v = "EXPIRE " + strconv.Itoa(e.Days)
	}
	if e.PerUser {
		v += " USER"
	}
	return v
}

// Defaults for zero Settings fields. RFC 1939 §3 asks for an autologout
// timer of at least 10 minutes once logged in.
const (
	DefaultPreAuthTimeout = time.Minute
	DefaultAuthTimeout    = 10 * time.Minute
	DefaultMaxCommandSize = 512
)

// rejectTimeout bounds the handshake and the write done for a connection
// refused because of a connection cap.
const rejectTimeout = 5 * time.Second

func (s *Settings) withDefaults() *Settings {
	c := *s
	if c.PreAuthTimeout <= 0 {
		c.PreAuthTimeout = DefaultPreAuthTimeout
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.MaxCommandSize <= 0 {
		c.MaxCommandSize = DefaultMaxCommandSize
	}
	return &c
}

// ConnInfo describes the connection a login comes from.
type ConnInfo struct {
	Remote   netip.AddrPort
	Local    netip.AddrPort
	TLS      bool   // the login happens over TLS (implicit or after STLS)
	Listener string // name of the listener for logs, e.g. "pop3s [::]:995"
}

// Backend checks credentials and opens maildrops.
type Backend interface {
	// Login verifies the credentials and opens the maildrop (taking its
	// lock). It applies failure delays itself. It returns ErrAuthFailed,
	// ErrInUse or ErrAccessDisabled for those cases.
	Login(ctx context.Context, ci ConnInfo, username, password string) (Maildrop, error)
}

// MessageInfo is what LIST, STAT and UIDL need to know about a message.
type MessageInfo struct {
	Size int64
	UIDL string
}

// Maildrop is one locked maildrop, open for one session.
type Maildrop interface {
	Messages() []MessageInfo           // snapshot taken at login; message n is index n-1
	Open(i int) (io.ReadCloser, error) // i is the 0-based index
	Commit(deleted []int) error        // UPDATE state: remove these 0-based indexes atomically
	Close() error                      // release the lock; always called exactly once
}

// Expirer is an optional Maildrop interface: the retention policy of the
// logged-in mailbox, which CAPA shows in TRANSACTION state (RFC 2449 §6.7).
// ok is false when the mailbox keeps mail until the client deletes it
// (EXPIRE NEVER); otherwise days is the retention after retrieval, and 0
// makes QUIT delete every message the session retrieved.
type Expirer interface {
	Expire() (days int, ok bool)
}

// RetrievalRecorder is an optional Maildrop interface that learns which
// messages RETR sent in full (TOP is a preview and does not count), so that
// retention can count from the first retrieval. Retrieved runs on the RETR
// path and must only take note in memory; the maildrop writes its notes at
// Commit or Close.
type RetrievalRecorder interface {
	Retrieved(i int) // i is the 0-based index
}

// Revalidator is an optional Maildrop interface for access that can be
// withdrawn while a session is open (a config reload that disables POP3 for
// the mailbox, removes it or changes its password). Revalidate runs before
// each command in TRANSACTION state; an error ends the session with
// -ERR [SYS/PERM] and its text, committing no deletions.
type Revalidator interface {
	Revalidate() error
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pop3: server closed")

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Sessions int    // sessions running now
	Accepted uint64 // sessions started since NewServer
	Rejected uint64 // connections refused by a connection cap

	Commands          uint64 // command lines handled
	BytesIn, BytesOut uint64 // octets read and written on the wire, TLS included
	// Logins by result: success; failed (bad credentials or a malformed
	// or refused authorization identity); refused (right password, but
	// the maildrop is in use or POP3 is disabled for it); error (the
	// backend failed).
	LoginSuccess, LoginFailed, LoginRefused, LoginError uint64
	Retrieved                                           uint64 // RETR replies sent in full
	Deleted                                             uint64 // messages removed at QUIT
}

// Server serves POP3 on any number of listeners.
type Server struct {
	backend  Backend
	log      *slog.Logger
	settings atomic.Pointer[Settings] // with defaults applied

	baseCtx context.Context // parent of every session's context; cancelled by Close
	cancel  context.CancelFunc

	// sessions counts, caps and drains the connections; Shutdown prods an
	// idle session by expiring its read, Close closes its connection.
	sessions *connset.Set[*session]
	nextID   atomic.Uint64
	accepted atomic.Uint64
	rejected atomic.Uint64
	counters counters
}

// NewServer returns a Server using b for logins. A nil log discards logs.
func NewServer(b Backend, s *Settings, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if s == nil {
		s = &Settings{}
	}
	srv := &Server{
		backend:  b,
		log:      log,
		sessions: connset.New((*session).prod, func(s *session) { s.raw.Close() }),
	}
	srv.baseCtx, srv.cancel = context.WithCancel(context.Background())
	srv.SetSettings(s)
	return srv
}

// SetSettings replaces the settings atomically; sessions accepted afterwards
// use them, running sessions keep theirs.
func (srv *Server) SetSettings(s *Settings) {
	srv.settings.Store(s.withDefaults())
}

// Stats returns the current counters.
func (srv *Server) Stats() Stats {
	c := &srv.counters
	return Stats{Sessions: srv.sessions.Len(), Accepted: srv.accepted.Load(), Rejected: srv.rejected.Load(),
		Commands: c.commands.Load(), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		LoginSuccess: c.loginOK.Load(), LoginFailed: c.loginFailed.Load(), LoginRefused: c.loginRefused.Load(),
		LoginError: c.loginError.Load(), Retrieved: c.retrieved.Load(), Deleted: c.deleted.Load()}
}

// Serve accepts connections on l until l is closed or the server shuts down.
// With implicitTLS every connection starts with a TLS handshake (RFC 8314).
// name labels the listener in logs. After Shutdown or Close it returns
// ErrServerClosed; if the caller closes l itself it returns nil, and sessions
// accepted on l carry on.
func (srv *Server) Serve(l net.Listener, implicitTLS bool, name string) error {
	err := srv.sessions.Serve(l, name, func(c net.Conn) {
		go srv.handle(c, implicitTLS, name)
	}, srv.log, "pop3")
	if errors.Is(err, connset.ErrStopped) {
		return ErrServerClosed
	}
	if err != nil {
		return fmt.Errorf("pop3: %w", err)
	}
	return nil
}

// ServeConn serves one connection accepted elsewhere (a custom listener, or
// net.Pipe in tests) and returns when the session ends.
func (srv *Server) ServeConn(c net.Conn, implicitTLS bool, name string) {
	srv.handle(c, implicitTLS, name)
}

// handle applies the connection caps and runs a session or refuses it.
func (srv *Server) handle(c net.Conn, implicitTLS bool, name string) {
	cfg := srv.settings.Load()
	s, v := srv.sessions.Admit(c, cfg.MaxConnections, cfg.MaxConnectionsPerIP, func() *session {
		return newSession(srv, c, cfg, implicitTLS, name)
	})
	switch v {
	case connset.Stopping:
		c.Close()
		return
	case connset.Refused:
		srv.rejected.Add(1)
		srv.refuse(c, cfg, implicitTLS, name)
		srv.sessions.EndRefusal(c)
		return
	}
	srv.accepted.Add(1)
	defer srv.sessions.Release(s)
	s.serve()
}

// refuse tells a client over a connection cap to come back later. On
// implicit TLS the reply must be encrypted, so the handshake is done first,
// under a short deadline.
func (srv *Server) refuse(c net.Conn, cfg *Settings, implicitTLS bool, name string) {
	defer c.Close()
	srv.log.Info("pop3 connection refused: too many connections", "listener", name, "remote", c.RemoteAddr().String())
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
		w = tc
	}
	io.WriteString(w, lineTooMany+"\r\n")
}

// Shutdown stops every listener, lets each session finish the command it is
// running (never interrupting a Commit), answers its next command with
// "-ERR [SYS/TEMP] server shutting down", prods idle sessions so they notice,
// and waits for all of them to end or for ctx to be done.
func (srv *Server) Shutdown(ctx context.Context) error {
	err := srv.sessions.Stop(false)
	if werr := srv.sessions.Wait(ctx); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// Close closes every listener and connection at once. A Commit in progress
// still completes, since it does not touch the connection.
func (srv *Server) Close() error {
	err := srv.sessions.Stop(true)
	srv.cancel()
	return err
}
