// Package connset is the connection accounting that mailpost's protocol
// servers (pop3 and smtpauth) share: the listeners they serve, the sessions
// they run with the total and per-IP caps, the connections being refused,
// and draining on shutdown. It exists so that both servers count, cap and
// drain the same way; what a session is, how it is prodded and how a refusal
// is worded stay with each protocol.
package connset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStopped is returned by Serve once Stop has been called.
var ErrStopped = errors.New("connset: stopped")

// Verdict is what Admit decided about a new connection.
type Verdict int

const (
	// Accepted: the session is counted until Release.
	Accepted Verdict = iota
	// Refused: over a cap. The connection is counted as being refused until
	// EndRefusal, so that Stop can reach it and Wait waits for it.
	Refused
	// Stopping: the set is draining; the caller closes the connection.
	Stopping
)

func (v Verdict) String() string {
	switch v {
	case Accepted:
		return "accepted"
	case Refused:
		return "refused"
	case Stopping:
		return "stopping"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Set tracks the listeners and connections of one server. M is the
// server's session type, used as a map key.
type Set[M comparable] struct {
	prod  func(M) // Stop(false): make an idle session notice the drain
	abort func(M) // Stop(true): drop the session's connection now

	// draining is set under mu but read without it, so that a session can
	// check it cheaply before each command.
	draining atomic.Bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	members   map[M]netip.Addr      // running sessions and their client IP (zero if none)
	refusing  map[net.Conn]struct{} // connections being told to come back later
	perIP     map[netip.Addr]int
	held      int // work outliving its session that Wait must see finish
}

// New returns an empty Set. prod is called by Stop(false) for each running
// session and must make a blocked read return, so that an idle session sees
// Draining; abort is called by Stop(true) and must close the session's
// connection. Both run with the set's lock held and must not call back into
// the set.
func New[M comparable](prod, abort func(M)) *Set[M] {
	return &Set[M]{
		prod:      prod,
		abort:     abort,
		listeners: make(map[net.Listener]struct{}),
		members:   make(map[M]netip.Addr),
		refusing:  make(map[net.Conn]struct{}),
		perIP:     make(map[netip.Addr]int),
	}
}

// Draining reports whether Stop has been called: no new sessions, and no
// new commands in running ones.
func (s *Set[M]) Draining() bool { return s.draining.Load() }

// Len returns the number of running sessions.
func (s *Set[M]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.members)
}

// Serve tracks l and hands each connection it accepts to handle, which runs
// on the accepting goroutine and so must not block on the session. It returns
// ErrStopped after Stop, nil if the caller closed l itself (sessions accepted
// on l carry on), or the accept error wrapped with name. Temporary errors
// such as EMFILE are logged under the message proto+" accept failed,
// retrying" and retried after a pause that grows from 5 ms to 1 s, so that a
// full fd table does not become a busy loop.
func (s *Set[M]) Serve(l net.Listener, name string, handle func(net.Conn), log *slog.Logger, proto string) error {
	if !s.trackListener(l, true) {
		l.Close()
		return ErrStopped
	}
	defer s.trackListener(l, false)

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.draining.Load() {
				return ErrStopped
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn(proto+" accept failed, retrying", "listener", name, "delay", backoff, slog.Any("err", err))
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept on %s: %w", name, err)
		}
		backoff = 0
		handle(c)
	}
}

// trackListener adds or removes l; adding fails once the set is draining.
func (s *Set[M]) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.draining.Load() {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

// Admit decides about connection c under the caps maxTotal (sessions at
// once) and maxPerIP (sessions at once from c's remote IP); 0 means no cap.
// A connection without an IP (net.Pipe) counts toward the total only. On
// Accepted it calls open to build the session, while holding the lock, so
// that the decision and the count are one step; the session counts until
// Release. open is not called otherwise, so a refused connection costs no
// session state.
func (s *Set[M]) Admit(c net.Conn, maxTotal, maxPerIP int, open func() M) (M, Verdict) {
	ip := AddrPort(c.RemoteAddr()).Addr()
	var m M
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return m, Stopping
	}
	over := maxTotal > 0 && len(s.members) >= maxTotal
	if ip.IsValid() && maxPerIP > 0 && s.perIP[ip] >= maxPerIP {
		over = true
	}
	if over {
		s.refusing[c] = struct{}{}
		return m, Refused
	}
	m = open()
	s.members[m] = ip
	if ip.IsValid() {
		s.perIP[ip]++
	}
	return m, Accepted
}

// Release forgets a session whose connection is done; releasing one that is
// not counted does nothing.
func (s *Set[M]) Release(m M) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, ok := s.members[m]
	if !ok {
		return
	}
	delete(s.members, m)
	if ip.IsValid() {
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
	}
}

// EndRefusal forgets a connection Admit refused, once the refusal is over.
func (s *Set[M]) EndRefusal(c net.Conn) {
	s.mu.Lock()
	delete(s.refusing, c)
	s.mu.Unlock()
}

// Hold and Unhold count work that Wait must see finish but that may outlive
// its session's Release (go-smtp runs a BDAT delivery on its own goroutine).
func (s *Set[M]) Hold() {
	s.mu.Lock()
	s.held++
	s.mu.Unlock()
}

// Unhold ends what Hold began.
func (s *Set[M]) Unhold() {
	s.mu.Lock()
	s.held--
	s.mu.Unlock()
}

// Stop marks the set draining and closes every listener. With hard it also
// closes every connection (abort for sessions); without, it prods sessions
// and makes the reads of connections being refused return. It returns the
// listeners' close errors, ignoring ones already closed. It may be called
// more than once.
func (s *Set[M]) Stop(hard bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Set under mu: Admit and trackListener check it under mu, so none can
	// slip in after the sweep below.
	s.draining.Store(true)
	var errs []error
	for l := range s.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		delete(s.listeners, l)
	}
	for m := range s.members {
		if hard {
			s.abort(m)
		} else {
			s.prod(m)
		}
	}
	for c := range s.refusing {
		if hard {
			c.Close()
		} else {
			c.SetReadDeadline(time.Now())
		}
	}
	return errors.Join(errs...)
}

// Wait returns nil once no session, refusal or held work is left, or
// ctx's error if ctx ends first. It polls every 5 ms for about 100 ms, so
// that a drain of idle sessions returns quickly, then every 50 ms, which
// costs less than waking on every Release of a busy server.
func (s *Set[M]) Wait(ctx context.Context) error {
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for n := 0; ; n++ {
		if s.left() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		if n == 20 {
			ticker.Reset(50 * time.Millisecond)
		}
	}
}

func (s *Set[M]) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.members) + len(s.refusing) + s.held
}

// AddrPort converts a net.Addr to a netip.AddrPort, zero if it has no IP
// (net.Pipe). IPv4-mapped IPv6 addresses (a dual-stack listener's view of
// an IPv4 client) are unmapped so that the per-IP cap counts one client once.
func AddrPort(a net.Addr) netip.AddrPort {
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
