package auth

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestGuard(lim GuardLimits, maxEntries int) (*Guard, *fakeClock, *GuardLimits, *bytes.Buffer) {
	c := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := lim
	var logs bytes.Buffer
	g := NewGuard(GuardOptions{
		Limits:     func() GuardLimits { return l },
		MaxEntries: maxEntries,
		Now:        c.now,
		Log:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	return g, c, &l, &logs
}

// fail runs one wrong-password attempt through the guard, as checkPassword
// does, and returns the refusal if it was refused.
func fail(g *Guard, ip netip.Addr, account, password string) *Refusal {
	if r := g.Check(ip, account); r != nil {
		return r
	}
	g.Failure(ip, account, g.Fingerprint(account, password))
	return nil
}

func ok(g *Guard, ip netip.Addr, account string) *Refusal {
	if r := g.Check(ip, account); r != nil {
		return r
	}
	g.Success(ip, account)
	return nil
}

var addr = netip.MustParseAddr

func TestGuardIPv4Tiers(t *testing.T) {
	g, clk, _, _ := newTestGuard(GuardLimits{IPv4_32: 3, IPv4_26: 5, IPv4_21: 8, Window: time.Minute}, 0)
	a := addr("192.0.2.1")
	for i := range 3 {
		if r := fail(g, a, fmt.Sprintf("u%d@x", i), fmt.Sprint("pw", i)); r != nil {
			t.Fatalf("attempt %d refused: %v", i+1, r)
		}
	}
	r := fail(g, a, "u9@x", "pw9")
	if r == nil || r.Tier != TierIPv4_32 || r.Network != netip.MustParsePrefix("192.0.2.1/32") || r.AccountLimited() {
		t.Fatalf("4th attempt from one address: got %+v, want a refusal by ipv4_32", r)
	}
	// One failure drains every Window/Limit = 20s.
	if r.Wait <= 0 || r.Wait > 20*time.Second {
		t.Fatalf("wait %v, want (0, 20s]", r.Wait)
	}
	if !r.First || !strings.Contains(r.Error(), "192.0.2.1/32") {
		t.Fatalf("first refusal: First=%v text %q", r.First, r.Error())
	}
	if r2 := fail(g, a, "u9@x", "pw10"); r2 == nil || r2.First {
		t.Fatalf("second refusal %+v: want refused, not First", r2)
	}

	// Neighbours in the same /26 share its bucket: 2 more fit (5 in all).
	if fail(g, addr("192.0.2.2"), "v@x", "a") != nil || fail(g, addr("192.0.2.3"), "v@x", "b") != nil {
		t.Fatal("/26 refused before its limit")
	}
	if r := fail(g, addr("192.0.2.4"), "w@x", "c"); r == nil || r.Tier != TierIPv4_26 || r.Network.String() != "192.0.2.0/26" {
		t.Fatalf("6th failure in the /26: %+v", r)
	}
	// Another /26 of the same /21 still has room: the /21 allows 8.
	for i := range 3 {
		if r := fail(g, addr("192.0.2.65"), "x@x", fmt.Sprint(i)); r != nil {
			t.Fatalf("/21 attempt %d refused early: %v", i, r)
		}
	}
	if r := fail(g, addr("192.0.3.200"), "y@x", "z"); r == nil || r.Tier != TierIPv4_21 || r.Network.String() != "192.0.0.0/21" {
		t.Fatalf("9th failure in the /21: %+v", r)
	}
	// Outside the /21: untouched.
	if r := fail(g, addr("192.0.8.1"), "y@x", "z"); r != nil {
		t.Fatalf("other /21 refused: %v", r)
	}

	// After the wait the address gets exactly one more attempt.
	clk.advance(21 * time.Second)
	if r := g.Check(addr("198.51.100.1"), "q@x"); r != nil {
		t.Fatal(r)
	}
	g.Abort(addr("198.51.100.1"), "q@x")
}

func TestGuardIPv6AndMapped(t *testing.T) {
	g, _, _, _ := newTestGuard(GuardLimits{IPv4_32: 2, IPv6_64: 2, IPv6_48: 3, IPv6_32: 100, Window: time.Hour}, 0)
	// Two addresses of one /64 are one client.
	fail(g, addr("2001:db8:1:1::1"), "a@x", "1")
	fail(g, addr("2001:db8:1:1:ffff::2"), "a@x", "2")
	if r := fail(g, addr("2001:db8:1:1::3"), "a@x", "3"); r == nil || r.Tier != TierIPv6_64 || r.Network.String() != "2001:db8:1:1::/64" {
		t.Fatalf("third failure in the /64: %+v", r)
	}
	// Another /64 of the same /48 adds to the /48 (limit 3).
	fail(g, addr("2001:db8:1:2::1"), "a@x", "4")
	if r := fail(g, addr("2001:db8:1:3::1"), "a@x", "5"); r == nil || r.Tier != TierIPv6_48 || r.Network.String() != "2001:db8:1::/48" {
		t.Fatalf("4th failure in the /48: %+v", r)
	}
	if r := fail(g, addr("2001:db8:2::1"), "a@x", "6"); r != nil {
		t.Fatalf("other /48 refused: %v", r)
	}
	// IPv4-mapped addresses are their IPv4 selves; zones do not matter.
	fail(g, addr("::ffff:203.0.113.5"), "b@x", "1")
	fail(g, addr("203.0.113.5"), "b@x", "2")
	if r := fail(g, addr("::ffff:203.0.113.5"), "b@x", "3"); r == nil || r.Tier != TierIPv4_32 || r.Network.String() != "203.0.113.5/32" {
		t.Fatalf("mapped address: %+v", r)
	}
	fail(g, addr("fe80::1%eth0"), "c@x", "1")
	fail(g, addr("fe80::1%eth1"), "c@x", "2")
	if r := fail(g, addr("fe80::1"), "c@x", "3"); r == nil {
		t.Fatal("zones split one address into several")
	}
}

// Over a long run the guard lets through at most Limit per Window plus the
// initial Limit, and not much less: a guesser who keeps trying gets the
// configured rate, no more.
func TestGuardCoolDownRate(t *testing.T) {
	const limit = 10
	window := 2 * time.Second
	g, clk, _, _ := newTestGuard(GuardLimits{IPv4_32: limit, Window: window}, 0)
	a := addr("192.0.2.7")
	passed := 0
	step := 3 * time.Millisecond
	total := 60 * time.Second
	for el := time.Duration(0); el < total; el += step {
		if fail(g, a, "victim@x", fmt.Sprint("guess", el)) == nil {
			passed++
		}
		clk.advance(step)
	}
	bound := limit*float64(total)/float64(window) + limit
	t.Logf("%d of %d attempts reached the password check in %v (bound %.0f)", passed, int(total/step), total, bound)
	if float64(passed) > bound {
		t.Fatalf("%d attempts passed, bound %.0f", passed, bound)
	}
	if float64(passed) < bound-limit-2 {
		t.Fatalf("only %d attempts passed: the guard is stricter than the configured %d per %v", passed, limit, window)
	}
}

func TestGuardSamePasswordCountsOnce(t *testing.T) {
	g, clk, _, _ := newTestGuard(GuardLimits{IPv4_32: 3, Account: 3, Window: time.Minute}, 0)
	phone := addr("192.0.2.10")
	fp := g.Fingerprint("alice@x", "old-password")
	for i := range 50 {
		if r := g.Check(phone, "alice@x"); r != nil {
			t.Fatalf("retry %d of the same old password refused: %v", i, r)
		}
		if !g.Repeated(fp) && i > 0 {
			t.Fatalf("retry %d: guess not remembered", i)
		}
		if counted := g.Failure(phone, "alice@x", fp); counted != (i == 0) {
			t.Fatalf("retry %d counted=%v", i, counted)
		}
		clk.advance(10 * time.Second) // still within a window of the last try
	}
	// The old password has drained by now (one counted failure, 500s
	// ago); three different wrong ones fit, the fourth does not.
	fail(g, phone, "alice@x", "x1")
	fail(g, phone, "alice@x", "x2")
	fail(g, phone, "alice@x", "x3")
	if r := fail(g, phone, "alice@x", "x4"); r == nil {
		t.Fatal("different passwords were not counted")
	}
	// Forgotten once it has not been tried for a window.
	clk.advance(2 * time.Minute)
	if g.Repeated(fp) {
		t.Fatal("guess remembered past the window")
	}
	// The fingerprint depends on every part, in order.
	if g.Fingerprint("ab", "c") == g.Fingerprint("a", "bc") || g.Fingerprint("a") == g.Fingerprint("A") {
		t.Fatal("fingerprint parts run together")
	}
	other := NewGuard(GuardOptions{})
	if other.Fingerprint("alice@x", "old-password") == fp {
		t.Fatal("fingerprint key is not per guard")
	}
}

// A distributed run fills the account tier; the owner's network that
// logged in before is exempt, a new address is not. The network is exempt
// from the network tiers for everyone (an office's typos do not lock it
// out) but other accounts' buckets still bind it, and too many failures
// from it without a success end the exemption early.
func TestGuardExemptAfterSuccess(t *testing.T) {
	g, clk, lim, _ := newTestGuard(GuardLimits{IPv4_32: 5, IPv4_26: 5, IPv4_21: 5, IPv6_64: 5, Account: 4, Window: time.Hour, ExemptAfterSuccess: 24 * time.Hour}, 0)
	home := addr("198.51.100.20")
	if r := ok(g, home, "Owner@x"); r != nil {
		t.Fatal(r)
	}
	for i := range 4 {
		if r := fail(g, addr(fmt.Sprintf("203.0.113.%d", 1+i*64)), "owner@x", fmt.Sprint(i)); r != nil {
			t.Fatalf("attempt %d: %v", i, r)
		}
	}
	r := fail(g, addr("203.0.113.250"), "owner@x", "z")
	if r == nil || !r.AccountLimited() || r.Account != "owner@x" || !strings.Contains(r.Error(), "owner@x") {
		t.Fatalf("account over its limit: %+v", r)
	}
	if r := ok(g, home, "owner@x"); r != nil {
		t.Fatalf("owner from the exempt address refused: %v", r)
	}
	if r := g.Check(addr("2001:db8::1"), "owner@x"); r == nil || !r.AccountLimited() {
		t.Fatalf("new address for the attacked account: %+v, want the account refusal", r)
	}

	// Typos from home for other mailboxes go past the /32 limit of 5
	// without a refusal: the network is exempt...
	for i := range 8 {
		if r := fail(g, home, fmt.Sprintf("n%d@x", i), fmt.Sprint("typo", i)); r != nil {
			t.Fatalf("exempt network refused at failure %d: %v", i+1, r)
		}
	}
	if r := ok(g, home, "colleague@x"); r != nil {
		t.Fatalf("a colleague from the exempt network: %v", r)
	}
	// ...but each other account's own bucket binds it.
	for i := range 4 {
		fail(g, home, "victim@x", fmt.Sprint("guess", i))
	}
	if r := fail(g, home, "victim@x", "guess-5"); r == nil || !r.AccountLimited() {
		t.Fatalf("guessing one other account from the exempt network: %+v", r)
	}

	// More than 3x the /32 limit of failures with no success in between
	// ends the exemption, and the charges made meanwhile bind at once.
	other := addr("192.0.2.77")
	ok(g, other, "someone@x")
	for i := range 16 { // the 16th is over the budget of 15 and ends it
		if r := fail(g, other, fmt.Sprintf("m%d@x", i), "g"); r != nil {
			t.Fatalf("failure %d from a fresh exemption: %v", i+1, r)
		}
	}
	if r := fail(g, other, "m99@x", "g"); r == nil || r.Tier != TierIPv4_32 {
		t.Fatalf("exemption kept after 16 failures: %+v", r)
	}
	// The same wrong password repeated costs no budget (a phone).
	phone := addr("198.18.0.200") // another /21: 192.0.0.0/21 is full by now
	if r := ok(g, phone, "p@x"); r != nil {
		t.Fatal(r)
	}
	for range 50 {
		if r := fail(g, phone, "p@x", "old-password"); r != nil {
			t.Fatalf("an old password repeated from an exempt network: %v", r)
		}
	}

	// The exemption ends after ExemptAfterSuccess; 0 turns it off.
	clk.advance(25 * time.Hour)
	if st := g.Stats(); st.Exempt != 0 {
		t.Fatalf("exemption kept past its time: %+v", st)
	}
	lim.ExemptAfterSuccess = 0
	ok(g, home, "owner@x")
	if st := g.Stats(); st.Exempt != 0 {
		t.Fatalf("exemption granted with exempt_after_success = 0: %+v", st)
	}
}

// Attempts in flight count once the bucket holds a real failure: parallel
// guessers then cannot all pass through one free slot. From a clean
// bucket they do not, so a burst of right passwords from one address (an
// office behind NAT) is never refused by itself.
func TestGuardPendingAttempts(t *testing.T) {
	g, _, _, _ := newTestGuard(GuardLimits{IPv4_32: 5, Window: time.Minute}, 0)
	a := addr("192.0.2.50")
	for i := range 20 {
		if r := g.Check(a, fmt.Sprintf("u%d@x", i)); r != nil {
			t.Fatalf("concurrent login %d from a clean address refused: %v", i+1, r)
		}
	}
	for i := range 20 {
		g.Success(a, fmt.Sprintf("u%d@x", i))
	}

	b := addr("192.0.2.60")
	if r := fail(g, b, "v@x", "wrong"); r != nil {
		t.Fatal(r)
	}
	passed := 0
	for range 20 {
		if g.Check(b, "v@x") == nil {
			passed++
		}
	}
	if passed != 4 { // room for 4 more failures in a limit of 5
		t.Fatalf("%d concurrent attempts passed after a failure, want 4", passed)
	}
	// Abort gives the reservation back.
	g.Abort(b, "v@x")
	if g.Check(b, "v@x") != nil {
		t.Fatal("Abort did not give the reservation back")
	}
	for range 4 {
		g.Abort(b, "v@x")
	}
	// The failures that do come in are what counts: 1 + 4 = 5 of 5.
	for range 4 {
		if g.Check(b, "v@x") != nil {
			t.Fatal("refused with room left")
		}
	}
	for i := range 4 {
		g.Failure(b, "v@x", g.Fingerprint("v@x", fmt.Sprint("w", i)))
	}
	if r := g.Check(b, "v@x"); r == nil {
		t.Fatal("not refused with the bucket full")
	}
}

func TestGuardBoundedMemory(t *testing.T) {
	const max = 100
	g, clk, _, logs := newTestGuard(GuardLimits{IPv4_32: 1, IPv4_26: 1000, IPv4_21: 1000, IPv6_64: 1, IPv6_48: 1000, IPv6_32: 1000, Account: 1, Window: time.Minute, ExemptAfterSuccess: time.Hour}, max)
	for i := range 10000 {
		v4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 0, byte(i), 15: 1})
		acct := fmt.Sprintf("user%d@x", i)
		fail(g, v4, acct, "p")
		fail(g, v4, acct, "q") // refused: marks the /32 and account limited
		fail(g, v6, acct, "p")
		ok(g, v6, acct)
	}
	st := g.Stats()
	for tier, n := range st.Entries {
		if n > max || st.Limited[tier] > n {
			t.Fatalf("tier %v: %d entries, %d limited (max %d)", Tier(tier), n, st.Limited[tier], max)
		}
	}
	if st.Exempt > max || st.Repeats > max {
		t.Fatalf("exempt %d, repeats %d, max %d", st.Exempt, st.Repeats, max)
	}
	if len(g.nets[TierIPv4_32].nodes) > max+1 {
		t.Fatalf("table storage grew to %d slots", len(g.nets[TierIPv4_32].nodes))
	}
	// Everything drains: a window later a sweep empties the tables and
	// reports the cooled-down keys.
	clk.advance(2 * time.Hour)
	for range 50 { // each call sweeps a bounded batch
		g.Stats()
	}
	st = g.Stats()
	for tier, n := range st.Entries {
		if n != 0 || st.Limited[tier] != 0 {
			t.Fatalf("after draining: tier %v has %d entries, %d limited", Tier(tier), n, st.Limited[tier])
		}
	}
	if st.Exempt != 0 || st.Repeats != 0 {
		t.Fatalf("after expiry: %+v", st)
	}
	if !strings.Contains(logs.String(), "login limit cooled down") {
		t.Fatal("no cool-down summary logged")
	}
}

// TestGuardFullTables measures the worst case of the default bound: every
// table full (a botnet of 20,000+ addresses in as many networks, naming
// 20,000 accounts).
func TestGuardFullTables(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 180,000 entries")
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	g, _, _, _ := newTestGuard(GuardLimits{IPv4_32: 1, IPv4_26: 1, IPv4_21: 1, IPv6_64: 1, IPv6_48: 1, IPv6_32: 1, Account: 1,
		Window: time.Hour, ExemptAfterSuccess: time.Hour}, 0)
	for i := range 25000 {
		v4 := netip.AddrFrom4([4]byte{byte(i >> 5), byte(i >> 13), byte(i << 3), 1})
		v6 := netip.AddrFrom16([16]byte{byte(i >> 8), byte(i), byte(i >> 8), byte(i), byte(i >> 8), byte(i), byte(i >> 8), byte(i), 15: 1})
		acct := fmt.Sprintf("user%05d@example.com", i)
		ok(g, v4, "ok"+acct)
		fail(g, v4, acct, "p")
		fail(g, v6, "6"+acct, "p")
	}
	st := g.Stats()
	runtime.GC()
	runtime.ReadMemStats(&after)
	total := 0
	for _, n := range st.Entries {
		total += n
	}
	total += st.Exempt + st.Repeats
	t.Logf("entries per tier %v, exempt %d, repeats %d: %d in all, heap in use +%.1f MiB (%.0f bytes an entry)",
		st.Entries, st.Exempt, st.Repeats, total, float64(after.HeapInuse-before.HeapInuse)/(1<<20),
		float64(after.HeapInuse-before.HeapInuse)/float64(total))
	for tier, n := range st.Entries {
		if n > 20000 {
			t.Fatalf("tier %v: %d entries", Tier(tier), n)
		}
	}
	runtime.KeepAlive(g)
}

// A refused network logs its block once and its end once, however many
// attempts it makes in between.
func TestGuardCoolDownSummary(t *testing.T) {
	g, clk, _, logs := newTestGuard(GuardLimits{IPv4_32: 2, Window: 10 * time.Second}, 0)
	a := addr("192.0.2.99")
	firsts := 0
	for range 1000 {
		if r := fail(g, a, "v@x", fmt.Sprint(clk.t.UnixNano())); r != nil && r.First {
			firsts++
		}
		clk.advance(time.Millisecond)
	}
	if firsts != 1 {
		t.Fatalf("%d first refusals in one continuous run, want 1", firsts)
	}
	if st := g.Stats(); st.Limited[TierIPv4_32] != 1 || st.LimitedNetworks() != 1 || st.Refused < 900 {
		t.Fatalf("stats during the run: %+v", st)
	}
	clk.advance(time.Minute)
	g.Stats()
	out := logs.String()
	if strings.Count(out, "login limit cooled down") != 1 || !strings.Contains(out, "key=192.0.2.99/32") || !strings.Contains(out, "tier=ipv4_32") {
		t.Fatalf("cool-down log:\n%s", out)
	}
	if g.Stats().Limited[TierIPv4_32] != 0 {
		t.Fatal("still limited after cooling down")
	}
}

// Limits come from the callback at each call: a reload changes them while
// the counts carry on.
func TestGuardLimitsReload(t *testing.T) {
	g, _, lim, _ := newTestGuard(GuardLimits{IPv4_32: 10, Window: time.Hour}, 0)
	a := addr("192.0.2.77")
	for i := range 4 {
		fail(g, a, "v@x", fmt.Sprint(i))
	}
	lim.IPv4_32 = 3
	if r := fail(g, a, "v@x", "x"); r == nil {
		t.Fatal("lowered limit did not apply to the counted failures")
	}
	lim.IPv4_32 = 6
	if r := fail(g, a, "v@x", "y"); r != nil {
		t.Fatalf("raised limit: %v", r)
	}
	lim.IPv4_32 = 0 // tier off
	for i := range 20 {
		if r := fail(g, a, "v@x", fmt.Sprint("z", i)); r != nil {
			t.Fatalf("tier switched off still refuses: %v", r)
		}
	}
	if st := g.Stats(); st.Entries[TierIPv4_32] != 0 {
		t.Fatalf("tier switched off keeps %d entries", st.Entries[TierIPv4_32])
	}
	// No window at all: nothing is counted.
	*lim = GuardLimits{}
	if r := fail(g, a, "v@x", "w"); r != nil {
		t.Fatal(r)
	}
}

func TestGuardConcurrent(t *testing.T) {
	g, _, _, _ := newTestGuard(GuardLimits{IPv4_32: 10, IPv4_26: 20, IPv4_21: 30, Account: 10, Window: time.Minute}, 500)
	var wg sync.WaitGroup
	var mu sync.Mutex
	passed := 0
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if fail(g, addr("192.0.2.1"), "v@x", fmt.Sprint(w, ".", i)) == nil {
					mu.Lock()
					passed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if passed != 10 {
		t.Fatalf("%d attempts passed from 8 goroutines with a frozen clock, want exactly 10", passed)
	}
}

// BenchmarkGuardParallel is the guard's cost per login under parallel
// load: Check (and Failure when let through) from many addresses, mostly
// refused as in a guessing run.
func BenchmarkGuardParallel(b *testing.B) {
	g := NewGuard(GuardOptions{Limits: func() GuardLimits {
		return GuardLimits{IPv4_32: 10, IPv4_26: 30, IPv4_21: 100, IPv6_64: 10, IPv6_48: 30, IPv6_32: 100, Account: 30,
			Window: 15 * time.Minute, ExemptAfterSuccess: 24 * time.Hour}
	}})
	var seq sync.Mutex
	n := 0
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		seq.Lock()
		w := n
		n++
		seq.Unlock()
		i := 0
		for pb.Next() {
			i++
			ip := netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8 & 15), byte(i)})
			acct := "user" + string(rune('a'+i%26)) + "@example.com"
			if g.Check(ip, acct) == nil {
				g.Failure(ip, acct, Fingerprint{byte(i), byte(i >> 8), byte(w), 1})
			}
		}
	})
}

// RetryIn is what POP3 and SMTP replies say: rounded up, never "0".
func TestRefusalRetryIn(t *testing.T) {
	for d, want := range map[time.Duration]string{
		200 * time.Millisecond:       "in about 1 second",
		61 * time.Second:             "in about 61 seconds",
		90 * time.Second:             "in about 90 seconds",
		14*time.Minute + time.Second: "in about 15 minutes",
		6 * 24 * time.Hour:           "in about 144 hours",
	} {
		if got := (&Refusal{Wait: d}).RetryIn(); got != want {
			t.Errorf("RetryIn(%v) = %q, want %q", d, got, want)
		}
	}
}
