package auth

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// What an operator sees of the Guard and may undo: the buckets that refuse
// logins now, and clearing one network or account, the way
// `fail2ban-client status` and `unban` do for a firewall.

// MarshalText writes a tier by its login_limits name, so JSON carries
// "ipv4_32" rather than a number that changes if tiers are added.
func (t Tier) MarshalText() ([]byte, error) {
	if t >= numTiers {
		return nil, fmt.Errorf("auth: no tier %d", uint8(t))
	}
	return []byte(t.String()), nil
}

// UnmarshalText reads a tier name written by MarshalText.
func (t *Tier) UnmarshalText(b []byte) error {
	for c := range numTiers {
		if c.String() == string(b) {
			*t = c
			return nil
		}
	}
	return fmt.Errorf("auth: unknown tier %q", b)
}

// LimitEntry is one tier key's bucket as the operator sees it.
type LimitEntry struct {
	Tier Tier `json:"tier"`
	// Key is the network prefix ("192.0.2.0/26") or the account (lower
	// case).
	Key string `json:"key"`
	// Level is the failures the bucket holds now (drained to now), against
	// Limit; it refuses while Level > Limit-1.
	Level float64 `json:"level"`
	Limit int     `json:"limit"`
	// Refusing: the next login charged to it would be refused (always true
	// in a snapshot).
	Refusing bool `json:"refusing"`
	// Refused counts the logins it refused since it filled up; Since is the
	// first of them (zero while it has refused nobody yet).
	Refused uint32    `json:"refused"`
	Since   time.Time `json:"since,omitzero"`
	// RetryAfter is how long until it lets one login through again.
	RetryAfter time.Duration `json:"retry_after_ns"`
}

// LimitSnapshot is what the Guard refuses at one instant.
type LimitSnapshot struct {
	At time.Time `json:"at"`
	// Networks and Accounts count every key refusing now, listed or not.
	Networks int `json:"networks"`
	Accounts int `json:"accounts"`
	// Entries are the fullest of them, by level, highest first.
	Entries []LimitEntry `json:"entries"`
}

// maxSnapshotEntries bounds what one snapshot lists, whatever is asked.
const maxSnapshotEntries = 1000

// candidate is a refusing bucket found under the lock; its key is
// rendered only if it makes the list.
type candidate struct {
	tier    Tier
	net     uint64
	account string
	b       bucket
	level   float64
	limit   int
	wait    time.Duration
}

// less orders candidates weakest first (the heap's root is the first to
// give way): lower level, then the later tier and key, so equal levels
// list in a stable order.
func (c *candidate) less(d *candidate) bool {
	if c.level != d.level {
		return c.level < d.level
	}
	if c.tier != d.tier {
		return c.tier > d.tier
	}
	if c.net != d.net {
		return c.net > d.net
	}
	return c.account > d.account
}

// topN is a min-heap of the n fullest candidates seen so far.
type topN []candidate

func (h topN) Len() int           { return len(h) }
func (h topN) Less(i, j int) bool { return h[i].less(&h[j]) }
func (h topN) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *topN) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *topN) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// offer keeps c if it is among the n fullest.
func (h *topN) offer(c candidate, n int) {
	switch {
	case n <= 0:
	case h.Len() < n:
		heap.Push(h, c)
	case (*h)[0].less(&c):
		(*h)[0] = c
		heap.Fix(h, 0)
	}
}

// Snapshot lists the tier keys that refuse logins now, the n fullest
// (n is capped at 1000; 0 lists none and only counts). It changes nothing:
// levels are drained to now in the copy only, and no entry is touched,
// swept or logged. A /32 or /64 bucket whose network is exempt after a
// success refuses nobody, so it is left out; wider buckets and accounts
// still refuse everyone else and are listed.
//
// It walks every table under the Guard's lock: a full set of tables
// (20,000 entries each) is a few milliseconds, fine for an operator's
// command, not for every login.
func (g *Guard) Snapshot(n int) LimitSnapshot {
	n = min(max(n, 0), maxSnapshotEntries)
	lim := g.limits()
	at := g.now()
	now := int64(at.Sub(g.base))
	snap := LimitSnapshot{At: at, Entries: []LimitEntry{}}
	var top topN
	g.mu.Lock()
	for t := range TierAccount {
		limit := lim.limit(t)
		if limit <= 0 {
			continue
		}
		r := rate(&lim, t)
		first := t == TierIPv4_32 || t == TierIPv6_64
		tb := &g.nets[t]
		for key, i := range tb.idx {
			c, ok := refusing(tb.nodes[i].val, now, r, limit)
			if !ok || (first && g.exemptNow(exemptKey{net: key, v6: t >= TierIPv6_64}, now)) {
				continue
			}
			c.tier, c.net = t, key
			snap.Networks++
			top.offer(c, n)
		}
	}
	if limit := lim.limit(TierAccount); limit > 0 {
		r := rate(&lim, TierAccount)
		for key, i := range g.accounts.idx {
			c, ok := refusing(g.accounts.nodes[i].val, now, r, limit)
			if !ok {
				continue
			}
			c.tier, c.account = TierAccount, key
			snap.Accounts++
			top.offer(c, n)
		}
	}
	g.mu.Unlock()
	slices.SortFunc(top, func(a, b candidate) int {
		if a.less(&b) {
			return 1
		} else if b.less(&a) {
			return -1
		}
		return 0
	})
	for i := range top {
		snap.Entries = append(snap.Entries, g.entry(&top[i]))
	}
	return snap
}

// refusing reports whether b, drained to now in a copy, is full, and
// what a listing needs of it.
func refusing(b bucket, now int64, r float64, limit int) (candidate, bool) {
	if limit <= 0 || r <= 0 {
		return candidate{}, false // the tier is off
	}
	drain(&b, now, r)
	if !full(&b, limit) {
		return candidate{}, false
	}
	// Rounded up as Check does, so the operator and the client are told
	// the same wait.
	wait := time.Duration(math.Ceil(excess(&b, limit) / r))
	return candidate{b: b, level: b.level, limit: limit, wait: wait}, true
}

// entry renders a candidate for the operator.
func (g *Guard) entry(c *candidate) LimitEntry {
	e := LimitEntry{Tier: c.tier, Key: c.account, Level: c.level, Limit: c.limit, Refusing: true,
		Refused: c.b.refused, RetryAfter: c.wait}
	if c.tier != TierAccount {
		e.Key = netName(c.tier, c.net)
	}
	if c.b.limited {
		e.Since = g.base.Add(time.Duration(c.b.limitedAt))
	}
	return e
}

// exemptNow is exempted without its side effect of dropping an expired
// exemption.
func (g *Guard) exemptNow(k exemptKey, now int64) bool {
	if k.net == 0 && !k.v6 {
		return false
	}
	i := g.exempt.get(k)
	return i != 0 && g.exempt.nodes[i].val.until > now
}

// ErrBadLimitKey is a key Clear cannot read as an address, a tier's
// network or an account.
var ErrBadLimitKey = errors.New("not an IP address, a network of a login_limits tier or an account")

// ClearResult says how Clear read its key and what it dropped.
type ClearResult struct {
	Key string `json:"key"` // as read: the address or prefix normalized, the account lower case
	// As is "address", "network" or "account".
	As string `json:"as"`
	// Cleared are the buckets dropped, with the state they had; empty when
	// nothing matched.
	Cleared []LimitEntry `json:"cleared"`
}

// Clear drops the buckets key names, whatever their level, so the next
// login charged to them starts afresh:
//   - an address ("192.0.2.7", "2001:db8::1"): every network tier that
//     contains it (its /32, /26 and /21; or its /64, /48 and /32);
//   - a network ("192.0.2.0/26", "2001:db8::/48"): the bucket of the tier
//     of that size (host bits are ignored; a size no tier counts is an
//     error wrapping ErrBadLimitKey);
//   - anything else with an @ or without a /: the account of that name
//     (case-insensitive).
//
// Remembered wrong guesses stay: a repeat of one is not charged, so they
// refuse nobody. Exemptions stay too. A dropped bucket that had refused
// logins no longer counts in Stats' Limited, and logs no cool-down line.
func (g *Guard) Clear(key string) (ClearResult, error) {
	key = strings.TrimSpace(key)
	res := ClearResult{Key: key, Cleared: []LimitEntry{}}
	if key == "" || strings.ContainsAny(key, " \t\r\n") {
		return res, fmt.Errorf("%q: %w", key, ErrBadLimitKey)
	}
	type target struct {
		tier Tier
		net  uint64
	}
	var targets []target
	if ip, err := netip.ParseAddr(key); err == nil {
		a := resolve(ip, "")
		res.As, res.Key = "address", a.ip.String()
		for t := a.first; t <= a.last; t++ {
			targets = append(targets, target{t, a.keys[t-a.first]})
		}
	} else if p, err := netip.ParsePrefix(key); err == nil {
		a := resolve(p.Addr(), "")
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96 // an IPv4-mapped prefix counts by its IPv4 length
		}
		for t := a.first; t <= a.last; t++ {
			if tierBits[t] == bits {
				targets = append(targets, target{t, a.keys[t-a.first]})
				res.As, res.Key = "network", netName(t, a.keys[t-a.first])
			}
		}
		if len(targets) == 0 {
			sizes := "/32, /26 or /21"
			if a.first == TierIPv6_64 {
				sizes = "/64, /48 or /32"
			}
			return res, fmt.Errorf("%s: no login_limits tier counts networks of that size (%s): %w", key, sizes, ErrBadLimitKey)
		}
	} else if strings.Contains(key, "/") && !strings.Contains(key, "@") {
		return res, fmt.Errorf("%q: %w", key, ErrBadLimitKey) // a mistyped prefix, most likely
	} else {
		res.As, res.Key = "account", strings.ToLower(key)
	}

	lim := g.limits()
	now := g.nowNS()
	drop := func(t Tier, b bucket, name string) {
		limit := lim.limit(t)
		r := rate(&lim, t)
		drain(&b, now, r)
		e := LimitEntry{Tier: t, Key: name, Level: b.level, Limit: limit, Refused: b.refused}
		if c, ok := refusing(b, now, r, limit); ok {
			e.Refusing, e.RetryAfter = true, c.wait
		}
		if b.limited {
			e.Since = g.base.Add(time.Duration(b.limitedAt))
			g.limited[t]--
		}
		res.Cleared = append(res.Cleared, e)
	}
	g.mu.Lock()
	for _, tg := range targets {
		tb := &g.nets[tg.tier]
		if i := tb.get(tg.net); i != 0 {
			b := tb.nodes[i].val
			tb.remove(i)
			drop(tg.tier, b, netName(tg.tier, tg.net))
		}
	}
	if res.As == "account" {
		if i := g.accounts.get(res.Key); i != 0 {
			b := g.accounts.nodes[i].val
			g.accounts.remove(i)
			drop(TierAccount, b, res.Key)
		}
	}
	g.mu.Unlock()
	return res, nil
}
