package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestThrottle(o ThrottleOptions) (*Throttle, *fakeClock) {
	c := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	o.Now = c.now
	return NewThrottle(o), c
}

var (
	ip1 = netip.MustParseAddr("192.0.2.1")
	ip2 = netip.MustParseAddr("192.0.2.2")
	ip3 = netip.MustParseAddr("198.51.100.7")
)

func TestThrottleGrowthAndCap(t *testing.T) {
	th, _ := newTestThrottle(ThrottleOptions{Base: 100 * time.Millisecond, Max: time.Second})
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		if got := th.Failure(ip1, "alice"); got != w*time.Millisecond {
			t.Errorf("failure %d: delay %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	// The cap holds however long the run goes (no overflow to negative).
	for range 200 {
		th.Failure(ip1, "alice")
	}
	if got := th.Failure(ip1, "alice"); got != time.Second {
		t.Errorf("after 200 more failures: %v, want cap 1s", got)
	}
}

func TestThrottleDefaults(t *testing.T) {
	th, _ := newTestThrottle(ThrottleOptions{})
	if d := th.Failure(ip1, "a"); d != 250*time.Millisecond {
		t.Errorf("default base = %v, want 250ms", d)
	}
	var d time.Duration
	for range 20 {
		d = th.Failure(ip1, "a")
	}
	if d != 15*time.Second {
		t.Errorf("default cap = %v, want 15s", d)
	}
}

func TestThrottleMaxOfIPAndAccount(t *testing.T) {
	th, _ := newTestThrottle(ThrottleOptions{Base: time.Millisecond, Max: time.Hour})
	// One account attacked from many addresses: the account count drives it.
	th.Failure(ip1, "alice")
	th.Failure(ip2, "alice")
	if d := th.Failure(ip3, "alice"); d != 4*time.Millisecond {
		t.Errorf("3rd failure on alice from a new IP: %v, want 4ms", d)
	}
	// One address trying many accounts: the IP count drives it.
	th.Failure(ip1, "bob")
	th.Failure(ip1, "carol")
	// ip1 now has 4 failures (alice, bob, carol, dave); dave has 1.
	if d := th.Failure(ip1, "dave"); d != 8*time.Millisecond {
		t.Errorf("4th failure from ip1 on a new account: %v, want 8ms", d)
	}
	// A fresh IP and a fresh account start at Base.
	if d := th.Failure(netip.MustParseAddr("203.0.113.9"), "erin"); d != time.Millisecond {
		t.Errorf("fresh pair: %v, want base", d)
	}
}

func TestThrottleSuccessClearsAccountOnly(t *testing.T) {
	th, _ := newTestThrottle(ThrottleOptions{Base: time.Millisecond, Max: time.Hour})
	for range 3 {
		th.Failure(ip1, "alice")
	}
	th.Success(ip1, "Alice") // case-folded: same counter
	// alice is cleared, so from a new IP she starts at Base again...
	if d := th.Failure(ip2, "alice"); d != time.Millisecond {
		t.Errorf("alice after success from new IP: %v, want base", d)
	}
	// ...but ip1 keeps its 3 failures: a 4th gives 8ms.
	if d := th.Failure(ip1, "zed"); d != 8*time.Millisecond {
		t.Errorf("ip1 after success: %v, want 8ms (IP count kept)", d)
	}
}

func TestThrottleIPv6Slash64(t *testing.T) {
	th, _ := newTestThrottle(ThrottleOptions{Base: time.Millisecond, Max: time.Hour})
	th.Failure(netip.MustParseAddr("2001:db8:1:2::1"), "a")
	th.Failure(netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff"), "b")
	if d := th.Failure(netip.MustParseAddr("2001:db8:1:2::abcd%eth0"), "c"); d != 4*time.Millisecond {
		t.Errorf("3rd failure within one /64: %v, want 4ms", d)
	}
	if d := th.Failure(netip.MustParseAddr("2001:db8:1:3::1"), "d"); d != time.Millisecond {
		t.Errorf("neighbouring /64: %v, want base", d)
	}
	// IPv4-mapped IPv6 is the same client as plain IPv4.
	th.Failure(netip.MustParseAddr("192.0.2.1"), "e")
	if d := th.Failure(netip.MustParseAddr("::ffff:192.0.2.1"), "f"); d != 2*time.Millisecond {
		t.Errorf("v4-mapped: %v, want 2ms", d)
	}
	// IPv4 is counted per address, not per /24 or /64-equivalent.
	if d := th.Failure(netip.MustParseAddr("192.0.2.2"), "g"); d != time.Millisecond {
		t.Errorf("neighbouring IPv4: %v, want base", d)
	}
	if ips, _ := th.Len(); ips != 4 {
		t.Errorf("%d IP entries, want 4", ips)
	}
	// A caller that could not parse the remote address passes the zero
	// Addr; all such failures share one counter rather than none.
	th.Failure(netip.Addr{}, "h")
	if d := th.Failure(netip.Addr{}, "i"); d != 2*time.Millisecond {
		t.Errorf("zero Addr: %v, want 2ms (shared counter)", d)
	}
}

func TestThrottleForget(t *testing.T) {
	th, clk := newTestThrottle(ThrottleOptions{Base: time.Millisecond, Max: time.Hour, Forget: 10 * time.Minute})
	for range 4 {
		th.Failure(ip1, "alice")
	}
	// Quiet for just under Forget: still remembered.
	clk.advance(10*time.Minute - time.Second)
	if d := th.Failure(ip1, "alice"); d != 16*time.Millisecond {
		t.Errorf("before forget: %v, want 16ms", d)
	}
	// Quiet for Forget from the last failure: both counters start over.
	clk.advance(10 * time.Minute)
	if d := th.Failure(ip1, "alice"); d != time.Millisecond {
		t.Errorf("after forget: %v, want base", d)
	}
	// Expired entries are dropped, not just ignored.
	th.Failure(ip2, "bob")
	clk.advance(time.Hour)
	th.Failure(ip3, "carol")
	if ips, accts := th.Len(); ips != 1 || accts != 1 {
		t.Errorf("after an hour: %d IPs, %d accounts held, want 1, 1", ips, accts)
	}
}

func TestThrottleEviction(t *testing.T) {
	th, clk := newTestThrottle(ThrottleOptions{Base: time.Millisecond, Max: time.Hour, MaxEntries: 3})
	addrs := []netip.Addr{
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4"),
	}
	for i := range 3 {
		th.Failure(addrs[i], fmt.Sprint("u", i))
		th.Failure(addrs[i], fmt.Sprint("u", i))
		clk.advance(time.Second)
	}
	th.Failure(addrs[0], "u0") // touch the oldest: it becomes the newest
	clk.advance(time.Second)
	th.Failure(addrs[3], "u3") // table full: evicts the least recently touched, 10.0.0.2
	if ips, accts := th.Len(); ips != 3 || accts != 3 {
		t.Fatalf("held %d IPs, %d accounts, want 3, 3", ips, accts)
	}
	// 10.0.0.1 kept its 3 failures (4th: 8ms); 10.0.0.2 was forgotten (base).
	if d := th.Failure(addrs[0], "u0"); d != 8*time.Millisecond {
		t.Errorf("recently touched entry: %v, want 8ms", d)
	}
	if d := th.Failure(addrs[1], "fresh"); d != time.Millisecond {
		t.Errorf("evicted entry: %v, want base", d)
	}
}

func TestThrottleFloodStaysBounded(t *testing.T) {
	const max = 1000
	th, _ := newTestThrottle(ThrottleOptions{MaxEntries: max})
	for i := range 50000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		th.Failure(a, fmt.Sprint("user", i))
	}
	if ips, accts := th.Len(); ips != max || accts != max {
		t.Errorf("after 50000 distinct failures: %d IPs, %d accounts, want %d each", ips, accts, max)
	}
}

func TestWait(t *testing.T) {
	if err := Wait(t.Context(), time.Millisecond); err != nil {
		t.Errorf("Wait(1ms) = %v", err)
	}
	if err := Wait(t.Context(), 0); err != nil {
		t.Errorf("Wait(0) = %v", err)
	}
	// A canceled ctx cuts an hour short; if it did not, the test would hang.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Wait(ctx, time.Hour) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on canceled ctx = %v, want context.Canceled", err)
	}
	dctx, dcancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer dcancel()
	if err := Wait(dctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past deadline = %v, want DeadlineExceeded", err)
	}
}
