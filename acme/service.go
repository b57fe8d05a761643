package acme

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	xacme "golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"mailpost/certs"
	"mailpost/config"
)

// Options configure a Service.
type Options struct {
	Store KV
	Log   *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between failed attempts
	// (defaults 10s and 1h). The wait doubles from MinBackoff.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one issuance attempt (default 5 minutes, as
	// autocert's own).
	AttemptTimeout time.Duration
}

// Service keeps one autocert.Manager per ACME account and challenge, and
// one issuance loop per name.
//
// autocert's renewal timers cannot be stopped (Manager has no Close) and
// renew every name the Manager ever loaded, whatever HostPolicy says. So a
// Manager is kept across reloads only while its names are unchanged or
// grow; when a reload takes a name away from it, the Manager is retired: its
// transport refuses every request and its cache refuses every write, and a
// fresh Manager on the same store takes the remaining names (their
// certificates load from the store, nothing is reissued). The retired
// timers then fail locally, without reaching the CA, and autocert spaces
// them 30 to 60 minutes apart.
type Service struct {
	opt Options
	log *slog.Logger
	// caHook, when set (tests), wraps the transport that reaches the CA,
	// below the retirement check: it sees only what is really sent.
	caHook func(http.RoundTripper) http.RoundTripper

	mu       sync.Mutex
	managers map[managerKey]*manager
	names    map[string]*name // every ACME name of the running config
	closed   bool
	wg       sync.WaitGroup
}

// managerKey is what makes two acme blocks share a manager: same CA, same
// account, same way of proving control, same renewal threshold (autocert
// reads RenewBefore from its timers, so it cannot change later).
type managerKey struct {
	directory, email, caSHA256, challenge string
	renewBefore                           time.Duration
}

type manager struct {
	key    managerKey
	m      *autocert.Manager
	client *xacme.Client
	http   http.Handler // autocert's http-01 responder; nil for tls-alpn-01
	ca     *caTransport
	cache  *cache
	names  atomic.Pointer[map[string]bool] // the host policy
}

// name is one name's state. Everything but the loop's fields is read by
// handshakes and status, so it is atomic or under mu.
type name struct {
	domain string
	mgr    *manager
	cert   atomic.Pointer[tls.Certificate]

	mu      sync.Mutex
	pending string // why there is no certificate yet
	lastErr string

	cancel context.CancelFunc
	done   chan struct{}
}

var _ certs.ACMEProvider = (*Service)(nil)

// New makes a Service. Nothing happens until Configure.
func New(opt Options) *Service {
	if opt.MinBackoff <= 0 {
		opt.MinBackoff = 10 * time.Second
	}
	if opt.MaxBackoff < opt.MinBackoff {
		opt.MaxBackoff = max(time.Hour, opt.MinBackoff)
	}
	if opt.AttemptTimeout <= 0 {
		opt.AttemptTimeout = 5 * time.Minute
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{opt: opt, log: opt.Log, managers: map[managerKey]*manager{}, names: map[string]*name{}}
}

// Configure makes the set of names the service obtains certificates for
// exactly the ACME names of certificates (other kinds are ignored). New
// names start their issuance loop at once; names whose settings are
// unchanged keep their certificate and loop; removed names stop, and the
// manager that held them is retired so that they are never renewed again
// (their certificates stay in the store). On error nothing has changed.
func (s *Service) Configure(certificates []*config.Certificate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("acme: service closed")
	}
	// Which settings each name wants (config rejects a name in two
	// certificates), and the names under each settings.
	wantKey := map[string]managerKey{}
	perKey := map[managerKey]map[string]bool{}
	for _, c := range certificates {
		if c.ACME == nil {
			continue
		}
		k := keyFor(c.ACME)
		if perKey[k] == nil {
			perKey[k] = map[string]bool{}
		}
		for _, d := range c.ACME.Domains {
			wantKey[d] = k
			perKey[k][d] = true
		}
	}
	// Keep a manager whose names all stay; build a new one otherwise.
	// Nothing is published until every manager is built, so a ca_file
	// that stopped parsing leaves the running state as it was.
	next := map[managerKey]*manager{}
	for _, c := range certificates {
		if c.ACME == nil {
			continue
		}
		k := keyFor(c.ACME)
		if next[k] != nil {
			continue
		}
		if m := s.managers[k]; m != nil && len(dropped(m, perKey[k])) == 0 {
			next[k] = m
			continue
		}
		m, err := s.newManager(k, c.ACME)
		if err != nil {
			return fmt.Errorf("acme: certificate %q: %w", c.Name, err)
		}
		next[k] = m
	}
	for k, m := range s.managers {
		if next[k] != m {
			s.retire(m, perKey[k], wantKey)
		}
	}
	s.managers = next
	// Publish the host policies first, so the loops started below are
	// allowed to ask for their names.
	for k, m := range next {
		set := perKey[k]
		m.names.Store(&set)
	}
	for d, n := range s.names {
		k, ok := wantKey[d]
		if !ok || next[k] != n.mgr {
			n.stop()
			delete(s.names, d)
			if !ok {
				s.log.Info("acme: name no longer managed here", "name", d)
			}
		}
	}
	for d, k := range wantKey {
		if _, ok := s.names[d]; ok {
			continue
		}
		m := next[k]
		n := &name{domain: d, mgr: m, pending: "waiting for the first attempt", done: make(chan struct{})}
		// A certificate already in the store is served at once, before
		// the loop confirms it with autocert (this is also what keeps a
		// name moved to a fresh manager served without a gap).
		if c := s.stored(m, d); c != nil {
			n.cert.Store(c)
			n.pending = ""
		}
		ctx, cancel := context.WithCancel(context.Background())
		n.cancel = cancel
		s.names[d] = n
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(ctx, n)
		}()
	}
	return nil
}

// dropped lists the names m holds that are not in keep, sorted.
func dropped(m *manager, keep map[string]bool) []string {
	var out []string
	for d := range *m.names.Load() {
		if !keep[d] {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// retire cuts m off from the CA and the store for good (see Service). keep
// is what the configuration now has under m's settings (a fresh manager
// takes it over); wantKey tells a name removed from the configuration from
// one moved to other ACME settings.
func (s *Service) retire(m *manager, keep map[string]bool, wantKey map[string]managerKey) {
	m.ca.retire()
	m.cache.retired.Store(true)
	var removed, moved, kept []string
	for _, d := range dropped(m, keep) {
		if _, ok := wantKey[d]; ok {
			moved = append(moved, d)
		} else {
			removed = append(removed, d)
		}
	}
	for d := range *m.names.Load() {
		if keep[d] {
			kept = append(kept, d)
		}
	}
	slices.Sort(kept)
	empty := map[string]bool{}
	m.names.Store(&empty)
	if len(removed)+len(moved)+len(kept) == 0 {
		return
	}
	s.log.Info("acme: ACME client retired; its renewal timers can no longer reach the CA",
		"why", "the configuration took names away from it", "directory", m.key.directory,
		"challenge", m.key.challenge, "removed", removed, "moved_to_other_settings", moved,
		"kept_by_a_new_client", kept)
}

// keyFor is the manager key of an acme block.
func keyFor(a *config.ACME) managerKey {
	key := managerKey{directory: a.DirectoryURL, email: a.Email, challenge: a.Challenge, renewBefore: a.RenewBefore}
	if len(a.CAPEM) > 0 {
		sum := sha256.Sum256(a.CAPEM)
		key.caSHA256 = hex.EncodeToString(sum[:])
	}
	return key
}

// newManager builds a manager for key. It does nothing until used: no
// request is made and no timer runs before a loop asks for a certificate.
func (s *Service) newManager(key managerKey, a *config.ACME) (*manager, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(a.CAPEM) > 0 && !roots.AppendCertsFromPEM(a.CAPEM) {
		return nil, fmt.Errorf("ca_file %s holds no usable certificate", a.CAFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	var base http.RoundTripper = tr
	if s.caHook != nil {
		base = s.caHook(tr)
	}
	rt := &caTransport{base: base}
	if a.Challenge == config.ChallengeHTTP01 {
		rt.drop = config.ChallengeTLSALPN01
	}
	m := &manager{key: key, ca: rt}
	empty := map[string]bool{}
	m.names.Store(&empty)
	m.client = &xacme.Client{DirectoryURL: a.DirectoryURL, UserAgent: "mailpost",
		HTTPClient: &http.Client{Transport: rt, Timeout: time.Minute}}
	m.cache = &cache{kv: s.opt.Store, prefix: a.DirectoryURL + " ", onPut: func(key string, data []byte) {
		s.stored1(m, key, data)
	}}
	m.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Email:       a.Email,
		RenewBefore: a.RenewBefore,
		Client:      m.client,
		HostPolicy:  m.policy,
		Cache:       m.cache,
	}
	if a.Challenge == config.ChallengeHTTP01 {
		m.http = m.m.HTTPHandler(http.NotFoundHandler())
	}
	return m, nil
}

// policy admits the names of the current configuration. autocert's
// HTTPHandler passes the Host header, which may carry a port.
func (m *manager) policy(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if (*m.names.Load())[host] {
		return nil
	}
	return fmt.Errorf("acme: %q is not a configured ACME domain", host)
}

// stored returns the certificate the cache holds for d, if it is valid.
func (s *Service) stored(m *manager, d string) *tls.Certificate {
	data, err := (&cache{kv: s.opt.Store, prefix: m.key.directory + " "}).Get(context.Background(), d)
	if err != nil {
		return nil
	}
	return parseCert(d, data, time.Now())
}

// stored1 is the cache hook: autocert just wrote key. A certificate for a
// managed name (ECDSA; the key is the bare name) is published, which is how
// a renewal reaches handshakes.
func (s *Service) stored1(m *manager, key string, data []byte) {
	s.mu.Lock()
	n := s.names[key]
	s.mu.Unlock()
	if n == nil || n.mgr != m {
		return
	}
	if c := parseCert(key, data, time.Now()); c != nil {
		n.publish(c, s.log)
	}
}

// parseCert decodes autocert's cache format (the private key, then the
// chain, all PEM) and checks that the leaf is current and names d.
func parseCert(d string, data []byte, now time.Time) *tls.Certificate {
	c, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil
		}
	}
	if now.After(c.Leaf.NotAfter) || c.Leaf.VerifyHostname(d) != nil {
		return nil
	}
	return &c
}

func (n *name) publish(c *tls.Certificate, log *slog.Logger) {
	if old := n.cert.Load(); old != nil && slices.Equal(old.Leaf.Raw, c.Leaf.Raw) {
		return
	}
	n.cert.Store(c)
	n.mu.Lock()
	n.pending, n.lastErr = "", ""
	n.mu.Unlock()
	log.Info("acme: certificate in service", "name", n.domain, "issuer", c.Leaf.Issuer.String(),
		"not_after", c.Leaf.NotAfter.UTC(), "serial", c.Leaf.SerialNumber.String())
}

func (n *name) stop() {
	n.cancel()
}

// errNotReady is what autocert answers for a minute after a failed
// attempt (it keeps the failed state that long); the CA's own error from
// that attempt is the one worth keeping.
const errNotReady = "acme/autocert: missing certificate"

// run obtains n's certificate, retrying with doubling waits until it has
// one. Renewals are autocert's timers from then on.
func (s *Service) run(ctx context.Context, n *name) {
	defer close(n.done)
	wait := s.opt.MinBackoff
	for attempt := 1; ; attempt++ {
		c, err := s.obtain(ctx, n)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			n.publish(c, s.log)
			return
		}
		n.mu.Lock()
		if err.Error() != errNotReady || n.lastErr == "" {
			n.lastErr = err.Error()
		}
		n.pending = fmt.Sprintf("attempt %d failed, next in %s: %s", attempt, wait.Round(time.Millisecond), n.lastErr)
		n.mu.Unlock()
		s.log.Warn("acme: certificate not obtained, will retry", "name", n.domain, "attempt", attempt,
			"retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, s.opt.MaxBackoff)
	}
}

// obtain asks autocert for n's certificate the way a handshake would. The
// directory is fetched first: when the CA is unreachable that fails here,
// before autocert records a failed state it would keep for a minute.
func (s *Service) obtain(ctx context.Context, n *name) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.AttemptTimeout)
	defer cancel()
	// With a valid certificate in the store autocert loads it and starts
	// its renewal timer without asking the CA (a restart, or a name a
	// reload moved to a fresh manager), so the CA being down then is no
	// reason to wait.
	if s.stored(n.mgr, n.domain) == nil {
		if _, err := n.mgr.client.Discover(ctx); err != nil {
			return nil, fmt.Errorf("ACME directory %s: %w", n.mgr.key.directory, err)
		}
	}
	n.mu.Lock()
	n.pending = "asking the CA"
	n.mu.Unlock()
	type result struct {
		c   *tls.Certificate
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// autocert picks an ECDSA key when the hello supports it.
		c, err := n.mgr.m.GetCertificate(&tls.ClientHelloInfo{
			ServerName:        n.domain,
			CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:   []tls.CurveID{tls.CurveP256},
			SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		})
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.c.Leaf == nil {
			leaf, err := x509.ParseCertificate(r.c.Certificate[0])
			if err != nil {
				return nil, fmt.Errorf("parsing issued certificate: %w", err)
			}
			r.c.Leaf = leaf
		}
		return r.c, nil
	case <-ctx.Done():
		// autocert's attempt carries on under its own timeout; its
		// result reaches us through the cache hook if it succeeds.
		return nil, fmt.Errorf("ACME issuance for %s: %w", n.domain, ctx.Err())
	}
}

// Certificate returns the issued certificate for d, or nil.
func (s *Service) Certificate(d string) *tls.Certificate {
	s.mu.Lock()
	n := s.names[d]
	s.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.cert.Load()
}

// State reports d's progress: why it is pending, the CA's last error, and
// when renewal is due.
func (s *Service) State(d string) certs.ACMEState {
	s.mu.Lock()
	n := s.names[d]
	s.mu.Unlock()
	if n == nil {
		return certs.ACMEState{Pending: "not managed"}
	}
	n.mu.Lock()
	st := certs.ACMEState{Pending: n.pending, LastError: n.lastErr}
	n.mu.Unlock()
	if c := n.cert.Load(); c != nil {
		st.Pending = ""
		// autocert renews this long before expiry, plus a jitter of up to
		// a tenth of it (at most an hour).
		threshold := min(n.mgr.key.renewBefore, config.MaxACMERenewBefore)
		st.NextRenewal = c.Leaf.NotAfter.Add(-threshold)
		// autocert's renewal timer reports nothing; a certificate still
		// not replaced well after its renewal time means it failed, and
		// the transport has the CA's words for why.
		grace := min(threshold/10, time.Hour) + min(threshold/5, 5*time.Minute)
		if now := time.Now(); now.After(st.NextRenewal.Add(grace)) {
			msg := "renewal overdue since " + st.NextRenewal.UTC().Format(time.RFC3339)
			if e := n.mgr.ca.lastErr.Load(); e != nil && e.at.After(st.NextRenewal) {
				msg += "; last CA error: " + e.msg
			}
			st.LastError = msg
		}
	}
	return st
}

func (s *Service) managerForHost(host string) *manager {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.names[host]; n != nil {
		return n.mgr
	}
	return nil
}

// HTTPHandler answers http-01 challenges (RFC 8555 §8.3) for the names of
// http-01 accounts; every other request gets a short 404.
func (s *Service) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			if m := s.managerForHost(r.Host); m != nil && m.http != nil {
				m.http.ServeHTTP(w, r)
				return
			}
		}
		http.Error(w, "404 not found", http.StatusNotFound)
	})
}

// IsChallengeHello reports whether a TLS hello is a CA validating
// tls-alpn-01 (RFC 8737 §3: it offers only the acme-tls/1 protocol).
func IsChallengeHello(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == xacme.ALPNProto
}

// ALPNProto is the protocol a tls-alpn-01 listener must offer.
const ALPNProto = xacme.ALPNProto

// ChallengeCertificate answers a tls-alpn-01 hello with the validation
// certificate of the manager that owns the name.
func (s *Service) ChallengeCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := s.managerForHost(hello.ServerName)
	if m == nil {
		return nil, fmt.Errorf("acme: no ACME name %q", hello.ServerName)
	}
	return m.m.GetCertificate(hello)
}

// Close stops every issuance loop and waits for them, and retires every
// manager: autocert's renewal timers outlive this (they cannot be
// stopped) but can no longer reach the CA or write the store.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	for d, n := range s.names {
		n.stop()
		delete(s.names, d)
	}
	for k, m := range s.managers {
		m.ca.retire()
		m.cache.retired.Store(true)
		delete(s.managers, k)
	}
	s.mu.Unlock()
	s.wg.Wait()
}
