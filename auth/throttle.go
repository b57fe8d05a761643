package auth

import (
	"container/list"
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ThrottleOptions configure a Throttle. Zero values take the defaults.
type ThrottleOptions struct {
	Base       time.Duration // delay after the first failure; default 250ms
	Max        time.Duration // cap on the delay; default 15s
	Forget     time.Duration // a counter quiet this long starts over; default 15m
	MaxEntries int           // bound on each of the IP and account tables; default 100000
	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now func() time.Time
}

// Throttle counts recent login failures per client network and per account
// and turns them into a delay to impose before answering. It keeps no
// goroutines and bounded memory: each table holds at most MaxEntries, and the
// least recently touched entries go first. Safe for concurrent use.
//
// The delay is meant to be waited with Wait on the session's own goroutine, so
// a canceled or closed session stops waiting at once; a fixed server-wide
// sleep would instead let an attacker pin goroutines.
type Throttle struct {
	o ThrottleOptions

	mu       sync.Mutex
	ips      table[netip.Prefix]
	accounts table[string]
}

// NewThrottle returns a Throttle with o's settings.
func NewThrottle(o ThrottleOptions) *Throttle {
	if o.Base <= 0 {
		o.Base = 250 * time.Millisecond
	}
	if o.Max <= 0 {
		o.Max = 15 * time.Second
	}
	if o.Max < o.Base {
		o.Max = o.Base
	}
	if o.Forget <= 0 {
		o.Forget = 15 * time.Minute
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 100000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := &Throttle{o: o}
	t.ips.init(o.MaxEntries, o.Forget)
	t.accounts.init(o.MaxEntries, o.Forget)
	return t
}

// Failure records a failed login from ip for account and returns the delay
// to impose before answering: Base after the first failure, doubling with
// each further one counted against either the client's network or the
// account (whichever has more), capped at Max.
func (t *Throttle) Failure(ip netip.Addr, account string) time.Duration {
	now := t.o.Now()
	t.mu.Lock()
	n := t.ips.bump(ipKey(ip), now)
	if m := t.accounts.bump(accountKey(account), now); m > n {
		n = m
	}
	t.mu.Unlock()
	return t.delay(n)
}

// Success clears the account's failures. The client network's count stays:
// one good password (perhaps the attacker's own mailbox) must not reset a
// guessing run against others.
func (t *Throttle) Success(ip netip.Addr, account string) {
	t.mu.Lock()
	t.accounts.remove(accountKey(account))
	t.mu.Unlock()
}

// Len returns the number of IP and account entries held, for tests and
// metrics.
func (t *Throttle) Len() (ips, accounts int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ips.m), len(t.accounts.m)
}

func (t *Throttle) delay(n int) time.Duration {
	d := t.o.Base
	for i := 1; i < n; i++ { // n is bounded by the cap check: at most ~64 rounds
		d *= 2
		if d >= t.o.Max || d <= 0 {
			return t.o.Max
		}
	}
	return min(d, t.o.Max)
}

// ipKey maps an address to the network that one host controls: the address
// itself for IPv4, its /64 for IPv6 (RFC 4291 §2.5.4; a host is routinely
// given a whole /64, so counting single addresses would be trivial to dodge).
func ipKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil { // invalid (zero) Addr: count all of them together
		return netip.Prefix{}
	}
	return p
}

// accountKey folds case so "Alice" and "alice" share a counter even if the
// mailbox lookup is case-sensitive; throttling more is the safe side.
func accountKey(a string) string { return strings.ToLower(a) }

// table is a bounded failure counter keyed by K, kept in least-recently
// touched order so that both expiry and eviction take from the front.
type table[K comparable] struct {
	max    int
	forget time.Duration
	m      map[K]*list.Element
	order  *list.List // of *counter[K], least recently touched first
}

type counter[K comparable] struct {
	key  K
	n    int
	last time.Time
}

func (tb *table[K]) init(max int, forget time.Duration) {
	tb.max, tb.forget = max, forget
	tb.m = make(map[K]*list.Element)
	tb.order = list.New()
}

// bump counts one failure for k at now and returns the new count.
func (tb *table[K]) bump(k K, now time.Time) int {
	tb.expire(now)
	if e, ok := tb.m[k]; ok {
		c := e.Value.(*counter[K])
		c.n++
		c.last = now
		tb.order.MoveToBack(e)
		return c.n
	}
	for len(tb.m) >= tb.max {
		tb.removeElem(tb.order.Front())
	}
	tb.m[k] = tb.order.PushBack(&counter[K]{key: k, n: 1, last: now})
	return 1
}

func (tb *table[K]) remove(k K) {
	if e, ok := tb.m[k]; ok {
		tb.removeElem(e)
	}
}

func (tb *table[K]) removeElem(e *list.Element) {
	tb.order.Remove(e)
	delete(tb.m, e.Value.(*counter[K]).key)
}

// expire drops entries quiet for at least forget. The list is in touch
// order, so it stops at the first entry still remembered.
func (tb *table[K]) expire(now time.Time) {
	for e := tb.order.Front(); e != nil; e = tb.order.Front() {
		if now.Sub(e.Value.(*counter[K]).last) < tb.forget {
			return
		}
		tb.removeElem(e)
	}
}

// Wait sleeps for d, or until ctx is done, whichever comes first. It returns
// ctx.Err() if cut short and nil otherwise.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
