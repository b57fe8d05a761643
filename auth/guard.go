package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Tier is one counter a login attempt is charged to: the client's address
// at three prefix lengths of its family, and the account.
type Tier uint8

const (
	TierIPv4_32 Tier = iota
	TierIPv4_26
	TierIPv4_21
	TierIPv6_64
	TierIPv6_48
	TierIPv6_32
	TierAccount
	numTiers
)

// tierBits is each network tier's prefix length.
var tierBits = [numTiers]int{32, 26, 21, 64, 48, 32, 0}

// String is the tier's name as written in the login_limits block.
func (t Tier) String() string {
	switch t {
	case TierIPv4_32:
		return "ipv4_32"
	case TierIPv4_26:
		return "ipv4_26"
	case TierIPv4_21:
		return "ipv4_21"
	case TierIPv6_64:
		return "ipv6_64"
	case TierIPv6_48:
		return "ipv6_48"
	case TierIPv6_32:
		return "ipv6_32"
	case TierAccount:
		return "account"
	}
	return fmt.Sprintf("tier(%d)", uint8(t))
}

// GuardLimits are the failed logins each tier may have per Window (the
// config's login_limits block). A limit of 0 switches its tier off.
type GuardLimits struct {
	IPv4_32, IPv4_26, IPv4_21 int
	IPv6_64, IPv6_48, IPv6_32 int
	Account                   int
	Window                    time.Duration
	// ExemptAfterSuccess: after a right password from a network, that
	// network is exempt for this long (0: never); see Guard.
	ExemptAfterSuccess time.Duration
}

func (l *GuardLimits) limit(t Tier) int {
	if l.Window <= 0 {
		return 0
	}
	switch t {
	case TierIPv4_32:
		return l.IPv4_32
	case TierIPv4_26:
		return l.IPv4_26
	case TierIPv4_21:
		return l.IPv4_21
	case TierIPv6_64:
		return l.IPv6_64
	case TierIPv6_48:
		return l.IPv6_48
	case TierIPv6_32:
		return l.IPv6_32
	case TierAccount:
		return l.Account
	}
	return 0
}

// GuardOptions configure a Guard. Zero values take the defaults.
type GuardOptions struct {
	// Limits is read at every call, so a reload that changes the limits
	// applies from the next login while the counters carry on. nil means
	// no limits at all.
	Limits func() GuardLimits
	// MaxEntries bounds each tier's table, the exemptions and the
	// remembered wrong passwords; the least recently touched entry goes
	// first. Default 20000 (about 100 bytes an entry).
	MaxEntries int
	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now func() time.Time
	// Log receives one line when a refused network or account has cooled
	// down completely; nil discards.
	Log *slog.Logger
}

// Guard is the defence against password guessing that needs no fail2ban.
// Failed logins fill a leaky bucket per tier key (the client's address at
// three prefix lengths, and the account), each draining at Limit per
// Window. A login is refused before any password hashing while one of its
// buckets is full, so a blocked guesser costs a map lookup rather than an
// argon2 computation; over time an attacker gets at most Limit attempts per
// Window per bucket, plus the initial Limit and one burst of parallel
// attempts from a clean bucket (bounded by the per-address connection cap).
//
// Check notes an attempt in flight in every bucket before the password is
// checked, and Failure, Success or Abort settle it. Once a bucket holds a
// failure, attempts in flight count against its room: parallel connections
// cannot all slip past a bucket that has room for one. A clean bucket
// ignores them, so many right passwords at once from one address are
// never refused for being many.
//
// A right password exempts its network (the address for IPv4, its /64 for
// IPv6) for ExemptAfterSuccess: logins from there are not refused by the
// network tiers, so an office or home whose users log in is not locked out
// by its own typos or by a neighbour's guessing. The network is also exempt
// from the account tier for the account that logged in, so the owner keeps
// access while a distributed run fills that account's bucket. Other
// accounts' buckets still bind an exempt network, so one valid mailbox
// buys no unlimited guessing at the others; and an exemption ends early
// after exemptFailures failed logins from it without a success in between,
// so a guesser sharing an exempt address (a carrier NAT) is soon limited
// again. Failures from exempt networks are charged to the buckets like any
// other, which is what binds them once the exemption has gone.
//
// The same wrong password for the same account (a phone with an old
// password) counts once per Window: Fingerprint names a guess by a keyed
// HMAC (the key is random per process, the password is never stored), and
// Failure does not charge a guess remembered as wrong.
//
// Memory is bounded: every table holds at most MaxEntries, and entries
// whose bucket has drained are dropped as calls pass by. Safe for
// concurrent use; it keeps no goroutines.
type Guard struct {
	limits func() GuardLimits
	now    func() time.Time
	log    *slog.Logger
	base   time.Time // instants are kept as nanoseconds since base
	key    [32]byte  // HMAC key for fingerprints

	mu       sync.Mutex
	nets     [TierAccount]lru[uint64, bucket] // network tiers, by masked address
	accounts lru[string, bucket]
	exempt   lru[exemptKey, exemption]
	repeats  lru[Fingerprint, int64] // wrong guesses, until when
	limited  [numTiers]int           // entries refused at least once and not drained yet
	refused  uint64
}

// bucket is one tier key's leaky bucket. Once it refuses a login it is
// limited, since limitedAt, and counts the refusals; that ends when the
// bucket has drained and the entry goes.
type bucket struct {
	level float64 // counted failures, drained to at
	// pending counts attempts Check let through whose answer is not in
	// yet. They weigh only once the bucket holds a real failure: parallel
	// guessers then cannot all slip through one free slot, while a burst
	// of right passwords from one address (an office behind NAT, a
	// client opening several connections) is never refused by itself.
	pending   int32
	at        int64
	limitedAt int64
	refused   uint32
	limited   bool
}

// exemptKey names an exempt network (account "") or an exempt network
// and account pair.
type exemptKey struct {
	net     uint64
	v6      bool
	account string
}

// exemption is granted by a right password and ends at until, or early
// once fails (failed logins since the last success) exceeds
// exemptFailures.
type exemption struct {
	until int64
	fails int
}

// exemptFailures is how many failed logins an exempt network or pair may
// have without a success before it loses the exemption: three times the
// address's own limit, room for a few people's typos.
func exemptFailures(lim *GuardLimits, a *tiered) int {
	n := 3 * lim.limit(a.first)
	if n <= 0 {
		n = 3 * lim.limit(TierAccount)
	}
	return max(n, 1)
}

// Fingerprint names one guess (account, password and whatever decides the
// answer) without holding the password. The zero Fingerprint is "none".
type Fingerprint [16]byte

// NewGuard returns a Guard with o's settings.
func NewGuard(o GuardOptions) *Guard {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 20000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Limits == nil {
		o.Limits = func() GuardLimits { return GuardLimits{} }
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{limits: o.Limits, now: o.Now, log: o.Log, base: o.Now()}
	if _, err := rand.Read(g.key[:]); err != nil {
		panic(fmt.Sprintf("auth: reading HMAC key: %v", err)) // see NewVerifier
	}
	for i := range g.nets {
		g.nets[i].init(o.MaxEntries)
	}
	g.accounts.init(o.MaxEntries)
	g.exempt.init(o.MaxEntries)
	g.repeats.init(o.MaxEntries)
	return g
}

// Refusal is a login refused by the Guard before its password was
// checked. It is an error; RetryAfter says when the tier accepts again.
type Refusal struct {
	Tier    Tier
	Network netip.Prefix // the refused network; invalid for the account tier
	Account string       // the refused account (lower case); "" for a network tier
	Wait    time.Duration
	// First is set on the first refusal since the tier key was last
	// quiet: log that one, not each of thousands.
	First bool
}

func (r *Refusal) Error() string {
	if r.Tier == TierAccount {
		return fmt.Sprintf("too many failed logins for account %s; retry in %s", r.Account, r.waitText())
	}
	return fmt.Sprintf("too many failed logins from %s (%s); retry in %s", r.Network, r.Tier, r.waitText())
}

// waitText is Wait rounded up to whole seconds: "retry in 0s" would be
// a lie.
func (r *Refusal) waitText() string {
	return (r.Wait + time.Second - 1).Truncate(time.Second).String()
}

// RetryAfter is the time until the refusing tier accepts a login again.
func (r *Refusal) RetryAfter() time.Duration { return r.Wait }

// RetryIn words RetryAfter for people, rounded up, as the protocols put it
// in their replies: "in about 40 seconds", "in about 3 minutes".
func (r *Refusal) RetryIn() string {
	unit, name := time.Second, "second"
	switch {
	case r.Wait > 90*time.Minute:
		unit, name = time.Hour, "hour"
	case r.Wait > 90*time.Second:
		unit, name = time.Minute, "minute"
	}
	n := max(1, int64((r.Wait+unit-1)/unit))
	if n != 1 {
		name += "s"
	}
	return fmt.Sprintf("in about %d %s", n, name)
}

// AccountLimited reports whether the account, not the client's network,
// is over its limit.
func (r *Refusal) AccountLimited() bool { return r.Tier == TierAccount }

// GuardStats is a snapshot of a Guard's tables.
type GuardStats struct {
	Entries [numTiers]int // bucket entries per tier
	// Limited counts per tier the keys that refused a login and have not
	// drained since: networks and accounts under a guessing run.
	Limited [numTiers]int
	Exempt  int    // address/account pairs exempt after a success
	Repeats int    // wrong guesses remembered
	Refused uint64 // logins refused since NewGuard
}

// LimitedNetworks sums Limited over the network tiers.
func (st GuardStats) LimitedNetworks() int {
	n := 0
	for t := Tier(0); t < TierAccount; t++ {
		n += st.Limited[t]
	}
	return n
}

// tiered is a login attempt resolved to its tier keys.
type tiered struct {
	first, last Tier      // network tiers of the address family
	keys        [3]uint64 // network keys, first..last
	own         exemptKey // the exemption key of the network and account
	ip          netip.Addr
	account     string
}

// resolve maps ip (IPv4-mapped IPv6 unmapped first) and account to keys.
// An invalid address is counted as 0.0.0.0, all such clients together.
func resolve(ip netip.Addr, account string) tiered {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	a := tiered{ip: ip, account: strings.ToLower(account)}
	if ip.Is4() {
		a.first, a.last = TierIPv4_32, TierIPv4_21
		b := ip.As4()
		v := uint64(binary.BigEndian.Uint32(b[:]))
		for i := range 3 {
			bits := tierBits[a.first+Tier(i)]
			a.keys[i] = v &^ (1<<(32-bits) - 1)
		}
	} else {
		a.first, a.last = TierIPv6_64, TierIPv6_32
		b := ip.As16()
		v := binary.BigEndian.Uint64(b[:8])
		for i := range 3 {
			bits := tierBits[a.first+Tier(i)]
			a.keys[i] = v &^ (1<<(64-bits) - 1)
		}
	}
	a.own = exemptKey{net: a.keys[0], v6: ip.Is6(), account: a.account}
	return a
}

// network is the exemption key of a's network, for any account.
func (a *tiered) network() exemptKey {
	k := a.own
	k.account = ""
	return k
}

// nowNS is the clock as nanoseconds since the Guard was made (monotonic
// when the clock is time.Now).
func (g *Guard) nowNS() int64 { return int64(g.now().Sub(g.base)) }

// rate is how much a bucket of tier t drains per nanosecond.
func rate(lim *GuardLimits, t Tier) float64 {
	return float64(lim.limit(t)) / float64(lim.Window)
}

// drain brings b's level to now.
func drain(b *bucket, now int64, r float64) {
	if now > b.at {
		b.level = math.Max(0, b.level-float64(now-b.at)*r)
		b.at = now
	}
}

// excess is how far b is past room for one more attempt: its failures,
// plus the attempts in flight once there is a real failure; > 0 is full.
func excess(b *bucket, limit int) float64 {
	x := b.level
	if b.level > 0 {
		x += float64(b.pending)
	}
	return x - float64(limit-1)
}

// full reports whether b refuses another attempt.
func full(b *bucket, limit int) bool { return excess(b, limit) > 0 }

// bucketFor finds the bucket of tier t for a, or nil. The pointer is valid
// until the next insertion into that table.
func (g *Guard) bucketFor(t Tier, a *tiered) *bucket {
	if t == TierAccount {
		if i := g.accounts.get(a.account); i != 0 {
			g.accounts.touch(i)
			return &g.accounts.nodes[i].val
		}
		return nil
	}
	tb := &g.nets[t]
	if i := tb.get(a.keys[t-a.first]); i != 0 {
		tb.touch(i)
		return &tb.nodes[i].val
	}
	return nil
}

// bucketAdd finds or makes the bucket of tier t for a.
func (g *Guard) bucketAdd(t Tier, a *tiered, now int64, ends *[]cooled) *bucket {
	if b := g.bucketFor(t, a); b != nil {
		return b
	}
	if t == TierAccount {
		i, old, ev := g.accounts.put(a.account, bucket{at: now})
		if ev {
			g.dropped(t, old.key, old.val, now, ends)
		}
		return &g.accounts.nodes[i].val
	}
	tb := &g.nets[t]
	i, old, ev := tb.put(a.keys[t-a.first], bucket{at: now})
	if ev {
		g.dropped(t, netName(t, old.key), old.val, now, ends)
	}
	return &tb.nodes[i].val
}

// tiers calls f for each tier of a whose limit is on.
func (a *tiered) tiers(lim *GuardLimits, f func(t Tier, limit int)) {
	for t := a.first; t <= a.last; t++ {
		if l := lim.limit(t); l > 0 {
			f(t, l)
		}
	}
	if a.account != "" {
		if l := lim.limit(TierAccount); l > 0 {
			f(TierAccount, l)
		}
	}
}

// Check decides whether a login from ip for account may have its password
// checked. It returns a Refusal when a tier is full, and otherwise notes
// one failure in each tier: the caller must follow with exactly one of
// Failure, Success or Abort.
func (g *Guard) Check(ip netip.Addr, account string) *Refusal {
	a := resolve(ip, account)
	lim := g.limits()
	now := g.nowNS()
	var ends []cooled
	g.mu.Lock()
	g.sweep(now, &lim, &ends)
	pair := g.exempted(a.own, now) != 0
	network := pair || g.exempted(a.network(), now) != 0
	var ref *Refusal
	first := false
	a.tiers(&lim, func(t Tier, limit int) {
		if (t == TierAccount && pair) || (t != TierAccount && network) {
			return
		}
		b := g.bucketFor(t, &a)
		if b == nil {
			return
		}
		r := rate(&lim, t)
		drain(b, now, r)
		if !full(b, limit) {
			return
		}
		if !b.limited {
			b.limited, b.limitedAt = true, now
			g.limited[t]++
			first = true
		}
		b.refused++
		wait := time.Duration(math.Ceil(excess(b, limit) / r))
		if ref == nil || wait > ref.Wait {
			ref = &Refusal{Tier: t, Wait: wait}
		}
	})
	if ref != nil {
		g.refused++
	} else {
		a.tiers(&lim, func(t Tier, limit int) {
			b := g.bucketAdd(t, &a, now, &ends)
			drain(b, now, rate(&lim, t))
			b.pending++
		})
	}
	g.mu.Unlock()
	g.logCooled(ends)
	if ref != nil {
		ref.First = first
		if ref.Tier == TierAccount {
			ref.Account = a.account
		} else {
			ref.Network, _ = a.ip.Prefix(tierBits[ref.Tier])
		}
	}
	return ref
}

// Failure records that the attempt Check let through had a wrong
// password. A guess whose fingerprint is remembered as wrong is not
// charged again (its reservation is given back); it reports whether this
// failure counted. fp may be the zero Fingerprint: always counted.
func (g *Guard) Failure(ip netip.Addr, account string, fp Fingerprint) (counted bool) {
	a := resolve(ip, account)
	lim := g.limits()
	now := g.nowNS()
	var ends []cooled
	g.mu.Lock()
	defer func() {
		g.mu.Unlock()
		g.logCooled(ends)
	}()
	if fp != (Fingerprint{}) {
		until := now + int64(lim.Window)
		if i := g.repeats.get(fp); i != 0 && g.repeats.nodes[i].val > now {
			g.repeats.nodes[i].val = until // still being tried: remember it longer
			g.repeats.touch(i)
			g.refund(&a, &lim, now)
			return false
		} else if i != 0 {
			g.repeats.remove(i)
		}
		if lim.Window > 0 {
			g.repeats.put(fp, until)
		}
	}
	a.tiers(&lim, func(t Tier, _ int) {
		b := g.bucketAdd(t, &a, now, &ends)
		drain(b, now, rate(&lim, t))
		b.level++
		b.pending = max(0, b.pending-1)
	})
	budget := exemptFailures(&lim, &a)
	for _, k := range []exemptKey{a.own, a.network()} {
		if i := g.exempted(k, now); i != 0 {
			if g.exempt.nodes[i].val.fails++; g.exempt.nodes[i].val.fails > budget {
				g.exempt.remove(i)
			}
		}
	}
	return true
}

// Repeated reports whether fp is a guess remembered as wrong, so the
// caller may answer it without hashing again. Only safe when fp covers
// everything the answer depends on (see Fingerprint).
func (g *Guard) Repeated(fp Fingerprint) bool {
	if fp == (Fingerprint{}) {
		return false
	}
	now := g.nowNS()
	g.mu.Lock()
	defer g.mu.Unlock()
	i := g.repeats.get(fp)
	return i != 0 && g.repeats.nodes[i].val > now
}

// Success records a right password: the reservation is given back, and the
// network, and the network for this account, are exempt for
// ExemptAfterSuccess with a fresh budget of failures.
func (g *Guard) Success(ip netip.Addr, account string) {
	a := resolve(ip, account)
	lim := g.limits()
	now := g.nowNS()
	g.mu.Lock()
	g.refund(&a, &lim, now)
	if lim.ExemptAfterSuccess > 0 && a.account != "" {
		e := exemption{until: now + int64(lim.ExemptAfterSuccess)}
		for _, k := range []exemptKey{a.own, a.network()} {
			if i := g.exempt.get(k); i != 0 {
				g.exempt.nodes[i].val = e
				g.exempt.touch(i)
			} else {
				g.exempt.put(k, e)
			}
		}
	}
	g.mu.Unlock()
}

// Abort gives back the reservation of an attempt that was neither a
// failure nor a success (the check itself failed, or the client left).
func (g *Guard) Abort(ip netip.Addr, account string) {
	a := resolve(ip, account)
	lim := g.limits()
	now := g.nowNS()
	g.mu.Lock()
	g.refund(&a, &lim, now)
	g.mu.Unlock()
}

func (g *Guard) refund(a *tiered, lim *GuardLimits, now int64) {
	a.tiers(lim, func(t Tier, _ int) {
		if b := g.bucketFor(t, a); b != nil {
			b.pending = max(0, b.pending-1)
		}
	})
}

// exempted returns the index of k's unexpired exemption, or 0.
func (g *Guard) exempted(k exemptKey, now int64) int32 {
	if k.net == 0 && !k.v6 {
		return 0 // 0.0.0.0 stands for clients without an address: never exempt
	}
	i := g.exempt.get(k)
	if i == 0 {
		return 0
	}
	if g.exempt.nodes[i].val.until <= now {
		g.exempt.remove(i)
		return 0
	}
	return i
}

// Fingerprint names a guess: a keyed HMAC-SHA256 (the key is random per
// Guard) over the parts, each length-prefixed, cut to 128 bits. Callers
// put in the account, the password and everything else the answer depends
// on (the credential hashes it is checked against, which ones are tried),
// so that a remembered wrong guess stops matching when a reload changes
// them.
func (g *Guard) Fingerprint(parts ...string) Fingerprint {
	m := hmac.New(sha256.New, g.key[:])
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	var fp Fingerprint
	copy(fp[:], m.Sum(sum[:0]))
	return fp
}

// Stats returns the table sizes and counters, after dropping what has
// drained (so a scrape also ends blocks nobody touches any more).
func (g *Guard) Stats() GuardStats {
	lim := g.limits()
	now := g.nowNS()
	var ends []cooled
	g.mu.Lock()
	g.sweep(now, &lim, &ends)
	st := GuardStats{Limited: g.limited, Exempt: g.exempt.len(), Repeats: g.repeats.len(), Refused: g.refused}
	for t := range TierAccount {
		st.Entries[t] = g.nets[t].len()
	}
	st.Entries[TierAccount] = g.accounts.len()
	g.mu.Unlock()
	g.logCooled(ends)
	return st
}

// sweepBatch bounds the work one call does on each table, so no login
// pays for a big backlog at once; what is left is taken by later calls.
const sweepBatch = 64

// sweep drops drained buckets, expired exemptions and forgotten guesses
// from the least recently touched end of each table. It stops at the
// first live entry: touch order is close enough to drain order, and what
// it misses goes when the table is full.
func (g *Guard) sweep(now int64, lim *GuardLimits, ends *[]cooled) {
	for t := range TierAccount {
		tb := &g.nets[t]
		r := rate(lim, t)
		for n := 0; n < sweepBatch; n++ {
			i := tb.front()
			if i == 0 || !drained(&tb.nodes[i].val, now, r) {
				break
			}
			key, b := tb.nodes[i].key, tb.nodes[i].val
			tb.remove(i)
			g.dropped(t, netName(t, key), b, now, ends)
		}
	}
	r := rate(lim, TierAccount)
	for n := 0; n < sweepBatch; n++ {
		i := g.accounts.front()
		if i == 0 || !drained(&g.accounts.nodes[i].val, now, r) {
			break
		}
		key, b := g.accounts.nodes[i].key, g.accounts.nodes[i].val
		g.accounts.remove(i)
		g.dropped(TierAccount, key, b, now, ends)
	}
	for n := 0; n < sweepBatch; n++ {
		i := g.exempt.front()
		if i == 0 || g.exempt.nodes[i].val.until > now {
			break
		}
		g.exempt.remove(i)
	}
	for n := 0; n < sweepBatch; n++ {
		i := g.repeats.front()
		if i == 0 || g.repeats.nodes[i].val > now {
			break
		}
		g.repeats.remove(i)
	}
}

// drained reports whether b is empty at now. A tier switched off (rate 0)
// counts as drained, so its table empties after a reload turned it off.
func drained(b *bucket, now int64, r float64) bool {
	return r <= 0 || (b.pending == 0 && b.level-float64(now-b.at)*r <= 0)
}

// cooled is a limited key that left its table: logged after the lock.
type cooled struct {
	tier    Tier
	key     string
	refused uint32
	limited time.Duration
}

// dropped accounts for a bucket leaving its table (drained or evicted).
func (g *Guard) dropped(t Tier, key string, b bucket, now int64, ends *[]cooled) {
	if !b.limited {
		return
	}
	g.limited[t]--
	*ends = append(*ends, cooled{tier: t, key: key, refused: b.refused, limited: time.Duration(now - b.limitedAt)})
}

func (g *Guard) logCooled(ends []cooled) {
	for _, e := range ends {
		g.log.Info("login limit cooled down", "tier", e.tier.String(), "key", e.key,
			"refused", e.refused, "limited_for", e.limited.Round(time.Second).String())
	}
}

// netName renders a network tier's key as a prefix for logs.
func netName(t Tier, key uint64) string {
	if t <= TierIPv4_21 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(key))
		return netip.PrefixFrom(netip.AddrFrom4(b), tierBits[t]).String()
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], key)
	return netip.PrefixFrom(netip.AddrFrom16(b), tierBits[t]).String()
}
