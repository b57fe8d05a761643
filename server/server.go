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

	"mailpost/acme"
	"mailpost/auth"
	"mailpost/certs"
	"mailpost/config"
	"mailpost/outbound"
	"mailpost/pop3"
	"mailpost/smtpauth"
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
	guard    *auth.Guard // login_limits: refuses guessing runs before any hashing
	pop3     *pop3.Server
	subm     *smtpauth.Server // submission: 465 and 587
	inbound  *smtpauth.Server // MX: 25
	outbound *outbound.Runner // delivers the queue
	acme     *acme.Service    // ACME certificates, kept across reloads
	web      *web             // http/https listeners' servers; set by Start
	prom     *promMetrics     // /metrics on the admin listeners
	started  time.Time
	now      func() time.Time // Options.Now
	sweep    *sweeper         // retention sweep between Start and Shutdown; guarded by mu

	cur atomic.Pointer[runtime]

	// logins the guard refused, by protocol (logins_total result="throttled")
	throttledPOP3, throttledSubmission, throttledWeb atomic.Uint64

	mu        sync.Mutex // guards listeners and control
	listeners map[string]*listener
	control   *controlServer
	wg        sync.WaitGroup // accept loops and the sessions they start

	cfgPath  string     // the file reloads read; "" when built from a parsed config only
	reloadMu sync.Mutex // one reload at a time

	statusMu   sync.Mutex // guards lastReload, reloads, degraded
	lastReload *ReloadResult
	reloads    ReloadCounts
	degraded   string
}

// SetDegraded records why the server is not running on its config file
// (it started from a stored revision); a successful reload clears it.
func (s *Server) SetDegraded(why string) {
	s.statusMu.Lock()
	s.degraded = why
	s.statusMu.Unlock()
}

// listener is one bound socket. Its protocol can change under it (a
// binding moved from ssl_bindings to unencrypted_or_tls_bindings keeps its
// socket), so the accept loop looks it up for every connection.
type listener struct {
	key   string // the address as configured (plus #n for repeated port 0)
	addr  netip.AddrPort
	ln    net.Listener
	proto atomic.Pointer[string] // "pop3s", "pop3", "submissions", "submission", "smtp", "http", "https" or "admin"
}

// Options tune parts of the server that tests and benchmarks need to reach.
type Options struct {
	// ConfigPath is the file ReloadFile reads (normally the one cfg came
	// from).
	ConfigPath string
	Verifier   auth.VerifierOptions
	Throttle   auth.ThrottleOptions
	// Guard bounds and clocks the login guard; its limits always come
	// from the running config's login_limits, its log is the server's.
	Guard auth.GuardOptions
	// ACME tunes retries; its Store and Log are the server's.
	ACME acme.Options
	// Outbound injects the queue runner's resolver, next-hop port and
	// timeouts.
	Outbound outbound.Options
	// Now is the clock retention reads (retrieval times, expiry); nil =
	// time.Now. Tests move it forward by days.
	Now func() time.Time
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
		cfgPath:   opt.ConfigPath,
		now:       opt.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	opt.Guard.Limits = s.loginLimits
	opt.Guard.Log = log.With("component", "login-guard")
	s.guard = auth.NewGuard(opt.Guard)
	opt.ACME.Store, opt.ACME.Log = store, log.With("component", "acme")
	s.acme = acme.New(opt.ACME)
	rt, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.cur.Store(rt)
	s.pop3 = pop3.NewServer(pop3Backend{s}, s.pop3Settings(rt), log.With("proto", "pop3"))
	s.subm = smtpauth.NewServer(smtpBackend{s}, s.smtpSettings(rt, smtpauth.Submission), log.With("proto", "submission"))
	s.inbound = smtpauth.NewServer(smtpBackend{s}, s.smtpSettings(rt, smtpauth.Inbound), log.With("proto", "smtp"))
	s.outbound = outbound.New(store, outboundSettings(cfg), log.With("proto", "outbound"), opt.Outbound)
	s.prom = newMetrics(s)
	return s, nil
}

// CertSources turns the config's certificate blocks into pool sources. p
// serves ACME certificates; nil (a command run without the server) shows
// them as not available here.
func CertSources(cfg *config.Config, p certs.ACMEProvider) []certs.Source {
	var sources []certs.Source
	for _, c := range cfg.Certificates {
		src := certs.Source{Name: c.Name, Static: c.Static, SelfSigned: c.SelfSigned, Names: c.Names, ACME: c.ACME != nil}
		if p != nil {
			src.Provider = p
		}
		sources = append(sources, src)
	}
	return sources
}

// build derives a runtime from cfg: certificates are loaded or generated and
// the config revision is recorded, so that what runs is always on record.
func (s *Server) build(cfg *config.Config) (*runtime, error) {
	pool, err := certs.Build(CertSources(cfg, s.acme), s.store, time.Now())
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
		TLSConfig:           s.tlsConfig("pop3"),
		AllowInsecureAuth:   p.LoginType == config.PlainTextLogin,
		PreAuthTimeout:      p.PreAuthenticatedTimeout,
		AuthTimeout:         p.AuthenticatedTimeout,
		MaxCommandSize:      p.MaxCommandSize,
		MaxConnections:      p.MaxConnections,
		MaxConnectionsPerIP: p.MaxConnectionsPerIP,
		Expire:              expirePolicy(rt.cfg),
	}
}

// smtpSettings is the per-connection view of the submission or inbound
// block.
func (s *Server) smtpSettings(rt *runtime, mode smtpauth.Mode) *smtpauth.Settings {
	st := &smtpauth.Settings{Mode: mode, Hostname: rt.cfg.Hostname}
	switch sub, in := rt.cfg.Submission, rt.cfg.Inbound; {
	case mode == smtpauth.Submission && sub != nil:
		st.TLSConfig = s.tlsConfig("submission")
		st.MaxMessageBytes, st.MaxRecipients = sub.MaxMessageSize, sub.MaxRecipients
		st.ReadTimeout, st.WriteTimeout = sub.Timeout, sub.Timeout
		st.MaxConnections, st.MaxConnectionsPerIP = sub.MaxConnections, sub.MaxConnectionsPerIP
	case mode == smtpauth.Inbound && in != nil:
		// STARTTLS on port 25 is opportunistic: offered when a pool
		// certificate covers the name, never required.
		if rt.pool.ForName(in.X509CertificateName) != nil {
			st.TLSConfig = s.tlsConfig("inbound")
		}
		st.MaxMessageBytes, st.MaxRecipients = in.MaxMessageSize, in.MaxRecipients
		st.ReadTimeout, st.WriteTimeout = in.Timeout, in.Timeout
		st.MaxConnections, st.MaxConnectionsPerIP = in.MaxConnections, in.MaxConnectionsPerIP
		st.RateLimitPerIP = in.RateLimitPerIP
	}
	return st
}

// tlsConfig picks certificates from whatever pool is current at handshake
// time, by SNI, falling back to the service's x509_certificate_name (as
// read from the current config) for clients that send none.
func (s *Server) tlsConfig(service string) *tls.Config {
	return certs.ServerTLSConfig(func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		rt := s.cur.Load()
		return rt.pool.Get(hello, certName(rt.cfg, service))
	})
}

// certName is a service's x509_certificate_name, or the hostname when the
// block is gone (a reload removed it while one of its sessions still
// negotiates STARTTLS).
func certName(cfg *config.Config, service string) string {
	name := ""
	switch service {
	case "pop3":
		if cfg.POP3 != nil {
			name = cfg.POP3.X509CertificateName
		}
	case "submission":
		if cfg.Submission != nil {
			name = cfg.Submission.X509CertificateName
		}
	case "inbound":
		if cfg.Inbound != nil {
			name = cfg.Inbound.X509CertificateName
		}
	}
	if name == "" {
		return cfg.Hostname
	}
	return name
}

// Start opens every listener of the current config and the control socket.
// If any listener cannot be opened, none stays open and the error says which.
func (s *Server) Start() error {
	rt := s.cur.Load()
	s.mu.Lock()
	s.web = s.startWeb() // before any http/https socket accepts
	s.mu.Unlock()
	if err := s.reconcile(rt); err != nil {
		s.stopWeb()
		return err
	}
	// The challenge responders listen now, so issuance may start.
	s.configureACME(rt.cfg)
	ctl, err := startControl(s, ControlSocketPath(rt.cfg.DataDir))
	if err != nil {
		s.closeListeners()
		s.acme.Close()
		s.stopWeb()
		return err
	}
	s.mu.Lock()
	s.control = ctl
	s.mu.Unlock()
	s.outbound.Start()
	s.startSweep()
	s.log.Info("mailpost started", "hostname", rt.cfg.Hostname, "config_revision", rt.rev.Seq,
		"listeners", len(s.Listeners()), "control", ctl.path)
	return nil
}

// wantedListeners maps each socket cfg asks for (by address) to its
// protocol.
func wantedListeners(cfg *config.Config) map[string]binding {
	want := map[string]binding{}
	add := func(proto string, a netip.AddrPort) {
		key := a.String()
		// Only port 0 (ephemeral) may repeat; each is its own socket.
		for n := 2; want[key].proto != ""; n++ {
			key = fmt.Sprintf("%s#%d", a, n)
		}
		want[key] = binding{proto: proto, addr: a}
	}
	if p := cfg.POP3; p != nil {
		for _, a := range p.SSLBindings {
			add("pop3s", a)
		}
		for _, a := range p.UnencryptedOrTLSBindings {
			add("pop3", a)
		}
	}
	if p := cfg.Submission; p != nil {
		for _, a := range p.SSLBindings {
			add("submissions", a)
		}
		for _, a := range p.UnencryptedOrTLSBindings {
			add("submission", a)
		}
	}
	if p := cfg.Inbound; p != nil {
		for _, a := range p.Bindings {
			add("smtp", a)
		}
	}
	if a := cfg.Admin; a != nil {
		for _, b := range a.Bindings {
			add("admin", b)
		}
	}
	if h := cfg.HTTP; h != nil {
		for _, a := range h.Bindings {
			add("http", a)
		}
		for _, a := range h.TLSBindings {
			add("https", a)
		}
	}
	return want
}

type binding struct {
	proto string
	addr  netip.AddrPort
}

// reconcile makes the open sockets match rt. New ones are opened first, and
// only when all of them opened are the ones no longer wanted closed; if any
// cannot be opened, the running set is left exactly as it was. Sockets that
// stay wanted are never touched, so their clients notice nothing; a socket
// whose protocol changed keeps running and serves the new one from the next
// connection on.
func (s *Server) reconcile(rt *runtime) error {
	want := wantedListeners(rt.cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	var opened []*listener
	for key, b := range want {
		if _, ok := s.listeners[key]; ok {
			continue
		}
		ln, err := listen(b.addr)
		if err != nil {
			for _, o := range opened {
				o.ln.Close()
			}
			return fmt.Errorf("%s listener on %s: %w", b.proto, b.addr, err)
		}
		l := &listener{key: key, addr: b.addr, ln: ln}
		l.proto.Store(&b.proto)
		opened = append(opened, l)
	}
	for key, l := range s.listeners {
		b, ok := want[key]
		if !ok {
			// Closing the socket ends its accept loop; sessions accepted
			// on it carry on until they finish or time out.
			l.ln.Close()
			delete(s.listeners, key)
			s.log.Info("listener closed", "addr", key, "proto", *l.proto.Load())
			continue
		}
		if old := *l.proto.Load(); old != b.proto {
			l.proto.Store(&b.proto)
			s.log.Info("listener changed protocol", "addr", key, "from", old, "to", b.proto)
		}
	}
	for _, l := range opened {
		s.listeners[l.key] = l
		s.wg.Add(1)
		go s.accept(l)
		s.log.Info("listening", "addr", l.ln.Addr().String(), "proto", *l.proto.Load())
	}
	return nil
}

// accept runs one socket's accept loop and hands each connection to the
// protocol the socket serves at that moment.
func (s *Server) accept(l *listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: pause, growing, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed, retrying", "addr", l.key, "delay", backoff, "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		proto := *l.proto.Load()
		name := proto + " " + l.ln.Addr().String()
		// Sessions are counted in s.wg too, so Shutdown cannot return
		// (and the store close) under a session that was just accepted.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			switch proto {
			case "pop3s":
				s.pop3.ServeConn(c, true, name)
			case "pop3":
				s.pop3.ServeConn(c, false, name)
			case "submissions":
				s.subm.ServeConn(c, true, name)
			case "submission":
				s.subm.ServeConn(c, false, name)
			case "smtp":
				s.inbound.ServeConn(c, false, name)
			case "http":
				s.web.httpQ.push(c)
			case "https":
				s.web.httpsQ.push(c)
			case "admin":
				s.prom.serveConn(c, s)
			default:
				s.log.Error("no server for protocol", "proto", proto)
				c.Close()
			}
		}()
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
		out = append(out, ListenerInfo{Key: l.key, Proto: *l.proto.Load(), Addr: l.ln.Addr().String()})
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
	ctl, w := s.control, s.web
	s.control = nil
	s.mu.Unlock()
	var errs []error
	if ctl != nil {
		errs = append(errs, ctl.shutdown(ctx))
	}
	s.closeListeners()
	s.acme.Close()
	if w != nil {
		errs = append(errs, w.shutdown(ctx))
	}
	// Drain all protocols at once, each within ctx; out of time, cut what
	// is left. Deletions are only applied by a completed QUIT and a message
	// is only acknowledged once stored, so nothing is half-done.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range []interface {
		Shutdown(context.Context) error
		Close() error
	}{s.pop3, s.subm, s.inbound} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Shutdown(ctx); err != nil {
				p.Close()
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.wg.Wait()
	s.stopSweep() // after the sessions: nothing holds a mailbox it would skip
	errs = append(errs, s.prom.shutdown(ctx))
	errs = append(errs, s.outbound.Stop(ctx)) // queued mail stays queued
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
