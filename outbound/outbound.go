// Package outbound delivers the durable outbound queue that submission
// fills: to a smarthost, or directly to each domain's MX, with per-recipient
// results, exponential backoff for temporary failures, RFC 3464 bounces
// into the sender's mailbox, and DKIM signing (RFC 6376).
//
// A queue entry is removed only after the next hop answered 2xx for every
// recipient (or the rest failed for good and were bounced), so a crash at
// any moment loses nothing and re-delivers at most the messages in flight.
package outbound

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"mailpost/storage"
)

// Settings is the reloadable part: what the config file says. The runner
// reads the current Settings once per delivery attempt.
type Settings struct {
	// Hostname is the name we greet with (EHLO) and report in bounces.
	Hostname string
	// Relay, when set, takes every message; nil means direct delivery.
	Relay *Relay
	// MaxAttemptsFor is how long temporary failures are retried before
	// the message is bounced.
	MaxAttemptsFor time.Duration
	// DKIM signs mail whose From domain is in Domains; nil: no signing.
	DKIM *DKIMSettings
	// Domains are the local domains (lower case).
	Domains []string
	// Mailbox maps an address to the local mailbox that receives it
	// (mailbox or alias), or "" when it is not local. Bounces go there.
	Mailbox func(addr string) string
}

// Relay is a smarthost.
type Relay struct {
	Address            string // host:port
	TLS                string // "implicit", "starttls" or "none"
	Username, Password string // no AUTH when Username is ""
}

// DKIMSettings selects the signing key.
type DKIMSettings struct {
	Selector  string
	Algorithm string // "ed25519" or "rsa"
}

// Resolver is the part of *net.Resolver that direct delivery uses; tests
// inject a stub so that no test ever asks the system resolver.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// Options are the parts tests and benchmarks reach into; zero values take
// the production defaults.
type Options struct {
	Resolver Resolver // default net.DefaultResolver
	Port     int      // next-hop port for direct delivery; default 25
	// Dial opens TCP connections; default a net.Dialer with Timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verifies next hops' certificates; nil = the system pool.
	RootCAs *x509.CertPool
	// Timeout bounds connecting and each command's reply (RFC 5321
	// §4.5.3.2 suggests minutes; default 5m). SessionTimeout bounds one
	// whole SMTP session, message included (default 30m).
	Timeout, SessionTimeout time.Duration
	// RetryBase is the first retry delay, doubled per attempt up to
	// RetryMax (defaults 5m and 4h).
	RetryBase, RetryMax time.Duration
	// Poll is how often the queue is scanned without a wake-up; default 30s.
	Poll time.Duration
	// IdleTimeout is how long a connection waits in the pool for the next
	// message to the same next hop; default 5s.
	IdleTimeout time.Duration
	// MaxConcurrent caps deliveries in flight (default 16);
	// MaxPerDestination caps sessions to one relay or domain (default 4).
	MaxConcurrent, MaxPerDestination int
	Now                              func() time.Time
}

func (o *Options) defaults() {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Port == 0 {
		o.Port = 25
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 30 * time.Minute
	}
	if o.Dial == nil {
		d := &net.Dialer{Timeout: o.Timeout}
		o.Dial = d.DialContext
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 5 * time.Minute
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 4 * time.Hour
	}
	if o.Poll <= 0 {
		o.Poll = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 16
	}
	if o.MaxPerDestination <= 0 {
		o.MaxPerDestination = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Runner delivers the queue in the background.
type Runner struct {
	store *storage.Store
	log   *slog.Logger
	opt   Options
	st    atomic.Pointer[Settings]
	wake  chan struct{} // new mail, reload, retry: scan the queue
	freed chan struct{} // a delivery finished: a slot is free

	mu       sync.Mutex
	inflight map[uint64]bool
	hint     time.Time                // earliest retry set since the last scan
	dests    map[string]chan struct{} // per-destination semaphores
	cancel   context.CancelFunc
	done     chan struct{}
	workers  sync.WaitGroup

	pool  *pool
	stats stats // totals for Stats

	keyMu sync.Mutex
	keys  map[string]*dkimKey // by blob key
}

// New returns a runner for store; nothing runs until Start. A nil st keeps
// the queue as it is (no outbound block).
func New(store *storage.Store, st *Settings, log *slog.Logger, opt Options) *Runner {
	opt.defaults()
	r := &Runner{store: store, log: log, opt: opt, wake: make(chan struct{}, 1), freed: make(chan struct{}, 1),
		inflight: map[uint64]bool{}, dests: map[string]chan struct{}{}, keys: map[string]*dkimKey{},
		pool: newPool(opt.MaxPerDestination, opt.IdleTimeout)}
	r.st.Store(st)
	return r
}

// SetSettings swaps in new settings (a reload); deliveries in flight finish
// with the ones they started with. A DKIM key the new settings name is
// made now, so `mailpost dns` can show it before the first message.
func (r *Runner) SetSettings(st *Settings) {
	r.ensureKey(st)
	r.st.Store(st)
	r.Wake()
}

// ensureKey loads or makes the DKIM key st names. A failure is logged, not
// fatal: mail still flows (unsigned) and signing retries per message.
func (r *Runner) ensureKey(st *Settings) {
	if st == nil || st.DKIM == nil {
		return
	}
	if _, err := r.key(st.DKIM); err != nil {
		r.log.Error("outbound: DKIM key", "selector", st.DKIM.Selector, "err", err)
	}
}

// Wake makes the runner look at the queue now; it never blocks, so the
// SMTP path can call it after every queued message.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs the scheduler until Stop. The DKIM key is made here if the
// settings ask for one that the store does not hold yet.
func (r *Runner) Start() error {
	r.ensureKey(r.st.Load())
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	if r.cancel != nil {
		r.mu.Unlock()
		cancel()
		return errors.New("outbound: runner already started")
	}
	r.cancel, r.done = cancel, make(chan struct{})
	r.mu.Unlock()
	go r.loop(ctx)
	return nil
}

// Stop cancels deliveries in flight (they stay queued, to be retried at the
// next start) and waits for them, or for ctx.
func (r *Runner) Stop(ctx context.Context) error {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("outbound: stop: %w", context.Cause(ctx))
	}
}

func (r *Runner) loop(ctx context.Context) {
	defer close(r.done)
	defer r.pool.close()
	defer r.workers.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var (
		pending []uint64 // due at the last scan, not started yet
		next    time.Time
	)
	rescan := true
	for {
		if rescan {
			pending, next = r.scan(ctx)
		}
		pending = r.startDue(ctx, pending)
		r.pool.prune()
		wait := r.opt.Poll
		r.mu.Lock()
		soonest := earliest(next, r.hint)
		idle := len(r.inflight) == 0
		r.mu.Unlock()
		if !soonest.IsZero() {
			wait = min(wait, max(soonest.Sub(r.opt.Now()), time.Millisecond))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			rescan = true
		case <-r.freed:
			// A slot is free: take the next entry of the last scan,
			// without reading the whole queue again for each one (which
			// made a long queue quadratic). Once everything is done,
			// scan again for what arrived meanwhile.
			rescan = len(pending) == 0 && idle
		case <-timer.C:
			rescan = true
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// scan reads the queue records and returns the entries due now that are
// not in flight, and the earliest future attempt.
func (r *Runner) scan(ctx context.Context) (due []uint64, next time.Time) {
	if r.st.Load() == nil || ctx.Err() != nil {
		return nil, time.Time{}
	}
	q, err := r.store.Queue()
	if err != nil {
		r.log.Error("reading the outbound queue", "err", err)
		return nil, time.Time{}
	}
	now := r.opt.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hint = time.Time{} // this scan sees every deferral made so far
	for _, m := range q {
		switch {
		case r.inflight[m.ID]:
		case m.NextAttempt.After(now):
			next = earliest(next, m.NextAttempt)
		default:
			due = append(due, m.ID)
		}
	}
	return due, next
}

// startDue starts workers for pending entries while MaxConcurrent allows,
// and returns those left waiting for a slot.
func (r *Runner) startDue(ctx context.Context, pending []uint64) []uint64 {
	if r.st.Load() == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(pending) > 0 && len(r.inflight) < r.opt.MaxConcurrent && ctx.Err() == nil {
		id := pending[0]
		pending = pending[1:]
		if r.inflight[id] {
			continue
		}
		r.inflight[id] = true
		r.workers.Add(1)
		go func() {
			defer r.workers.Done()
			r.attempt(ctx, id)
			r.mu.Lock()
			delete(r.inflight, id)
			r.mu.Unlock()
			select {
			case r.freed <- struct{}{}:
			default:
			}
		}()
	}
	return pending
}

// deferred tells the scheduler about an attempt moved to t, which the last
// scan did not see.
func (r *Runner) deferred(t time.Time) {
	r.mu.Lock()
	r.hint = earliest(r.hint, t)
	r.mu.Unlock()
}

// destSlot takes one of the MaxPerDestination slots for dest.
func (r *Runner) destSlot(ctx context.Context, dest string) (release func(), err error) {
	r.mu.Lock()
	sem := r.dests[dest]
	if sem == nil {
		sem = make(chan struct{}, r.opt.MaxPerDestination)
		r.dests[dest] = sem
	}
	r.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// backoff is the delay before retry number n (n >= 1).
func (r *Runner) backoff(n int) time.Duration {
	d := r.opt.RetryBase
	for i := 1; i < n && d < r.opt.RetryMax; i++ {
		d *= 2
	}
	return min(d, r.opt.RetryMax)
}

// Retry makes a queued message due now (`mailpost queue retry`).
func Retry(store *storage.Store, id uint64, now time.Time) error {
	return store.UpdateQueued(id, func(q *storage.QueuedMessage) { q.NextAttempt = now })
}

// Drop removes a queued message without delivering or bouncing it
// (`mailpost queue drop`).
func Drop(store *storage.Store, id uint64) error {
	return store.Dequeue(id)
}
