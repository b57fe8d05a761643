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
	"sync"
	"sync/atomic"
	"time"
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
}

// Server serves POP3 on any number of listeners.
type Server struct {
	backend  Backend
	log      *slog.Logger
	settings atomic.Pointer[Settings] // with defaults applied

	baseCtx context.Context // parent of every session's context; cancelled by Close
	cancel  context.CancelFunc

	draining atomic.Bool // Shutdown or Close called: no new sessions, no new commands
	nextID   atomic.Uint64
	accepted atomic.Uint64
	rejected atomic.Uint64
	wg       sync.WaitGroup // every connection goroutine

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	others    map[net.Conn]struct{} // connections being refused
	perIP     map[netip.Addr]int
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
		backend:   b,
		log:       log,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		others:    make(map[net.Conn]struct{}),
		perIP:     make(map[netip.Addr]int),
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
	srv.mu.Lock()
	n := len(srv.sessions)
	srv.mu.Unlock()
	return Stats{Sessions: n, Accepted: srv.accepted.Load(), Rejected: srv.rejected.Load()}
}

// Serve accepts connections on l until l is closed or the server shuts down.
// With implicitTLS every connection starts with a TLS handshake (RFC 8314).
// name labels the listener in logs. After Shutdown or Close it returns
// ErrServerClosed; if the caller closes l itself it returns nil, and sessions
// accepted on l carry on.
func (srv *Server) Serve(l net.Listener, implicitTLS bool, name string) error {
	if !srv.trackListener(l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer srv.trackListener(l, false)

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if srv.draining.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Retry on temporary errors such as EMFILE, with a growing
			// pause so a full fd table does not become a busy loop.
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				srv.log.Warn("pop3 accept failed, retrying", "listener", name, "delay", backoff, slog.Any("err", err))
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("pop3: accept on %s: %w", name, err)
		}
		backoff = 0
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			srv.handle(c, implicitTLS, name)
		}()
	}
}

// ServeConn serves one connection accepted elsewhere (a custom listener, or
// net.Pipe in tests) and returns when the session ends.
func (srv *Server) ServeConn(c net.Conn, implicitTLS bool, name string) {
	srv.wg.Add(1)
	defer srv.wg.Done()
	srv.handle(c, implicitTLS, name)
}

func (srv *Server) trackListener(l net.Listener, add bool) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if add {
		if srv.draining.Load() {
			return false
		}
		srv.listeners[l] = struct{}{}
	} else {
		delete(srv.listeners, l)
	}
	return true
}

// handle applies the connection caps and runs a session or refuses it.
func (srv *Server) handle(c net.Conn, implicitTLS bool, name string) {
	cfg := srv.settings.Load()
	remote := addrPort(c.RemoteAddr())
	ip := remote.Addr()

	srv.mu.Lock()
	if srv.draining.Load() {
		srv.mu.Unlock()
		c.Close()
		return
	}
	over := cfg.MaxConnections > 0 && len(srv.sessions) >= cfg.MaxConnections
	if ip.IsValid() && cfg.MaxConnectionsPerIP > 0 && srv.perIP[ip] >= cfg.MaxConnectionsPerIP {
		over = true
	}
	if over {
		srv.others[c] = struct{}{}
		srv.mu.Unlock()
		srv.rejected.Add(1)
		srv.refuse(c, cfg, implicitTLS, name)
		srv.mu.Lock()
		delete(srv.others, c)
		srv.mu.Unlock()
		return
	}
	s := newSession(srv, c, cfg, implicitTLS, name)
	srv.sessions[s] = struct{}{}
	if ip.IsValid() {
		srv.perIP[ip]++
	}
	srv.mu.Unlock()
	srv.accepted.Add(1)

	defer func() {
		srv.mu.Lock()
		delete(srv.sessions, s)
		if ip.IsValid() {
			if srv.perIP[ip]--; srv.perIP[ip] <= 0 {
				delete(srv.perIP, ip)
			}
		}
		srv.mu.Unlock()
	}()
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
	err := srv.stop(false)
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for n := 0; ; n++ {
		srv.mu.Lock()
		left := len(srv.sessions) + len(srv.others)
		srv.mu.Unlock()
		if left == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-ticker.C:
		}
		if n == 20 {
			ticker.Reset(50 * time.Millisecond)
		}
	}
}

// Close closes every listener and connection at once. A Commit in progress
// still completes, since it does not touch the connection.
func (srv *Server) Close() error {
	return srv.stop(true)
}

func (srv *Server) stop(hard bool) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.draining.Store(true)
	var errs []error
	for l := range srv.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		delete(srv.listeners, l)
	}
	for s := range srv.sessions {
		if hard {
			s.raw.Close()
		} else {
			s.prod()
		}
	}
	for c := range srv.others {
		if hard {
			c.Close()
		} else {
			c.SetReadDeadline(time.Now())
		}
	}
	if hard {
		srv.cancel()
	}
	return errors.Join(errs...)
}

// addrPort converts a net.Addr to a netip.AddrPort, zero if it has no IP
// (net.Pipe). IPv4-mapped IPv6 addresses are unmapped so that caps count
// one client once.
func addrPort(a net.Addr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
