package smtpauth

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiterEntries caps the memory of the per-IP message rate limiter.
const rateLimiterEntries = 16384

// rateLimiter is a token bucket per client network: each holds up to
// perMinute tokens, refills at perMinute per minute, and a MAIL takes one.
// IPv6 clients are counted per /64, since one host usually has a whole /64
// to pick addresses from.
//
// Memory is bounded: when the table is full, buckets idle for a minute
// (full again, so forgetting them changes nothing) are dropped; if none
// is, an arbitrary one is, which at worst hands that network a fresh burst.
type rateLimiter struct {
	mu        sync.Mutex
	max       int
	buckets   map[netip.Addr]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(max int) *rateLimiter {
	return &rateLimiter{max: max, buckets: make(map[netip.Addr]*bucket)}
}

func limiterKey(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip.Unmap()
}

// allow takes a token for ip if there is one.
func (rl *rateLimiter) allow(ip netip.Addr, perMinute int, now time.Time) bool {
	key := limiterKey(ip)
	limit := float64(perMinute)
	rl.mu.Lock()
	defer rl.mu.Unlock()
	b := rl.buckets[key]
	if b == nil {
		if len(rl.buckets) >= rl.max {
			rl.evict(now)
		}
		b = &bucket{tokens: limit, last: now}
		rl.buckets[key] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(limit, b.tokens+el.Minutes()*limit)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict makes room for one bucket. A full sweep runs at most once a
// second, so a flood of new addresses does not cost a sweep each.
func (rl *rateLimiter) evict(now time.Time) {
	if now.Sub(rl.lastSweep) >= time.Second {
		rl.lastSweep = now
		for k, b := range rl.buckets {
			if now.Sub(b.last) >= time.Minute {
				delete(rl.buckets, k)
			}
		}
	}
	for k := range rl.buckets {
		if len(rl.buckets) < rl.max {
			break
		}
		delete(rl.buckets, k)
	}
}

func (rl *rateLimiter) len() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.buckets)
}
