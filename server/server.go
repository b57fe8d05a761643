// Package server turns a validated config into a running mail appliance: it
// owns the store handle, the certificate pool, the listeners and the protocol
// servers, and swaps in new configurations as one unit.
//
// It is its own package because it is the only place that knows about every
// other one: config decides what is wanted, this package makes it happen, and
// the protocol packages only ever see a snapshot (the runtime).
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"mailpost/auth"
	"mailpost/certs"
	"mailpost/config"
	"mailpost/pop3"
	"mailpost/storage"
)

// runtime is one immutable snapshot of everything derived from a config.
// Sessions take it at accept time and never re-read it mid-command.
type runtime struct {
	cfg       *config.Config
	pool      *certs.Pool
	mailboxes map[string]*config.Mailbox // by primary address only (logins)
	rev       storage.Revision
}

// Server is the running appliance.
type Server struct {
	log      *slog.Logger
	store    *storage.Store
	verifier *auth.Verifier
	throttle *auth.Throttle
	pop3     *pop3.Server
	started  time.Time

	cur atomic.Pointer[runtime]

	mu        sync.Mutex // guards listeners and control
	listeners map[string]*listener
	control   *controlServer
	wg        sync.WaitGroup // accept loops
}

// listener is one bound socket and the protocol serving it.
type listener struct {
	key      string // proto + " " + address; stable across reloads
	proto    string // "pop3s" or "pop3"
	addr     netip.AddrPort
	ln       net.Listener
	implicit bool
}

// Options tune parts of the server that tests and benchmarks need to reach.
type Options struct {
	Verifier auth.VerifierOptions
	Throttle auth.ThrottleOptions
}

// New builds a server for cfg on an opened store. Nothing listens until Start.
func New(cfg *config.Config, store *storage.Store, log *slog.Logger, opt Options) (*Server, error) {
	s := &Server{
		log:       log,
		store:     store,
		verifier:  auth.NewVerifier(opt.Verifier),
		throttle:  auth.NewThrottle(opt.Throttle),
		started:   time.Now(),
		listeners: map[string]*listener{},
	}
	rt, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.cur.Store(rt)
	s.pop3 = pop3.NewServer(pop3Backend{s}, s.pop3Settings(rt), log.With("proto", "pop3"))
	return s, nil
}

// build derives a runtime from cfg: certificates are loaded or generated and
// the config revision is recorded, so that what runs is always on record.
func (s *Server) build(cfg *config.Config) (*runtime, error) {
	var sources []certs.Source
	for _, c := range cfg.Certificates {
		sources = append(sources, certs.Source{Name: c.Name, Static: c.Static, SelfSigned: c.SelfSigned, Names: c.Names})
	}
	pool, err := certs.Build(sources, s.store, time.Now())
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	rev, _, err := s.store.AddRevision(cfg.Source, time.Now())
	if err != nil {
		return nil, fmt.Errorf("recording config revision: %w", err)
	}
	rt := &runtime{cfg: cfg, pool: pool, rev: rev, mailboxes: map[string]*config.Mailbox{}}
	for _, mb := range cfg.Mailboxes {
		rt.mailboxes[mb.Address] = mb
	}
	return rt, nil
}

// pop3Settings is the per-session view of the pop3 block. The TLS config
// reads the current pool at each handshake, so a certificate change needs no
// listener restart.
func (s *Server) pop3Settings(rt *runtime) *pop3.Settings {
	p := rt.cfg.POP3
	if p == nil {
		return &pop3.Settings{Hostname: rt.cfg.Hostname}
	}
	return &pop3.Settings{
		Hostname:            rt.cfg.Hostname,
		Banner:              p.Banner,
		TLSConfig:           certs.ServerTLSConfig(s.getCertificate),
		AllowInsecureAuth:   p.LoginType == config.PlainTextLogin,
		PreAuthTimeout:      p.PreAuthenticatedTimeout,
		AuthTimeout:         p.AuthenticatedTimeout,
		MaxCommandSize:      p.MaxCommandSize,
		MaxConnections:      p.MaxConnections,
		MaxConnectionsPerIP: p.MaxConnectionsPerIP,
	}
}

func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	rt := s.cur.Load()
	fallback := rt.cfg.Hostname
	if rt.cfg.POP3 != nil && rt.cfg.POP3.X509CertificateName != "" {
		fallback = rt.cfg.POP3.X509CertificateName
	}
	return rt.pool.Get(hello, fallback)
}

// Start opens every listener of the current config and the control socket.
// If any listener cannot be opened, none stays open and the error says which.
func (s *Server) Start() error {
	rt := s.cur.Load()
	if err := s.reconcile(rt); err != nil {
		return err
	}
	ctl, err := startControl(s, ControlSocketPath(rt.cfg.DataDir))
	if err != nil {
		s.closeListeners()
		return err
	}
	s.mu.Lock()
	s.control = ctl
	s.mu.Unlock()
	s.log.Info("mailpost started", "hostname", rt.cfg.Hostname, "config_revision", rt.rev.Seq,
		"listeners", len(s.Listeners()), "control", ctl.path)
	return nil
}

// wantedListeners lists the sockets cfg asks for, by stable key.
func wantedListeners(cfg *config.Config) map[string]*listener {
	want := map[string]*listener{}
	add := func(proto string, a netip.AddrPort, implicit bool) {
		l := &listener{proto: proto, addr: a, implicit: implicit, key: proto + " " + a.String()}
		// Only port 0 (ephemeral) may repeat; each is its own socket.
		for n := 2; want[l.key] != nil; n++ {
			l.key = fmt.Sprintf("%s %s#%d", proto, a, n)
		}
		want[l.key] = l
	}
	if p := cfg.POP3; p != nil {
		for _, a := range p.SSLBindings {
			add("pop3s", a, true)
		}
		for _, a := range p.UnencryptedOrTLSBindings {
			add("pop3", a, false)
		}
	}
	return want
}

// reconcile makes the open listeners match rt: new ones are opened first, and
// only when all of them opened are the ones no longer wanted closed. Sockets
// that stay wanted are never touched, so their clients notice nothing.
func (s *Server) reconcile(rt *runtime) error {
	want := wantedListeners(rt.cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	var opened []*listener
	for key, l := range want {
		if _, ok := s.listeners[key]; ok {
			continue
		}
		ln, err := listen(l.addr)
		if err != nil {
			for _, o := range opened {
				o.ln.Close()
			}
			return fmt.Errorf("%s listener on %s: %w", l.proto, l.addr, err)
		}
		l.ln = ln
		opened = append(opened, l)
	}
	for key, l := range s.listeners {
		if _, ok := want[key]; !ok {
			// Closing the socket ends its accept loop; sessions accepted on
			// it carry on until they finish or time out.
			l.ln.Close()
			delete(s.listeners, key)
			s.log.Info("listener closed", "listener", key)
		}
	}
	for _, l := range opened {
		s.listeners[l.key] = l
		s.wg.Add(1)
		go s.serve(l)
		s.log.Info("listening", "listener", l.key, "addr", l.ln.Addr().String())
	}
	return nil
}

func (s *Server) serve(l *listener) {
	defer s.wg.Done()
	name := l.proto + " " + l.ln.Addr().String()
	err := s.pop3.Serve(l.ln, l.implicit, name)
	if err != nil && !errors.Is(err, pop3.ErrServerClosed) {
		s.log.Error("listener failed", "listener", name, "err", err)
	}
}

// listen binds addr. An IPv6 wildcard is bound v6-only ("tcp6"), so that the
// Exchange-style default pair "[::]:995" and "0.0.0.0:995" does not collide
// on Linux, where a [::] socket is otherwise dual-stack.
func listen(addr netip.AddrPort) (net.Listener, error) {
	network := "tcp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "tcp6"
	}
	return net.Listen(network, addr.String())
}

// ListenerInfo describes one open socket.
type ListenerInfo struct {
	Key   string `json:"key"`
	Proto string `json:"proto"`
	Addr  string `json:"addr"` // the bound address (the real port when the config said 0)
}

// Listeners lists the open sockets in a stable order.
func (s *Server) Listeners() []ListenerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ListenerInfo, 0, len(s.listeners))
	for _, l := range s.listeners {
		out = append(out, ListenerInfo{Key: l.key, Proto: l.proto, Addr: l.ln.Addr().String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, l := range s.listeners {
		l.ln.Close()
		delete(s.listeners, key)
	}
}

// Shutdown stops accepting, asks sessions to finish (idle ones are told at
// once; none is cut in the middle of committing deletions) and waits for them
// or for ctx. The store is the caller's to close afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ctl := s.control
	s.control = nil
	s.mu.Unlock()
	var errs []error
	if ctl != nil {
		errs = append(errs, ctl.shutdown(ctx))
	}
	errs = append(errs, s.pop3.Shutdown(ctx))
	s.closeListeners()
	s.wg.Wait()
	return errors.Join(errs...)
}

// ControlSocketPath is where the running server answers local commands.
func ControlSocketPath(dataDir string) string {
	return filepath.Join(dataDir, "mailpost.sock")
}

// DatabasePath is the one file that holds everything.
func DatabasePath(dataDir string) string {
	return filepath.Join(dataDir, "mailpost.db")
}

// EnsureDataDir creates data_dir private to the service user.
func EnsureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	return nil
}
