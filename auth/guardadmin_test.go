package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The snapshot lists exactly the keys that refuse now, fullest first, with
// what the client is told; it changes nothing in the Guard.
func TestGuardSnapshot(t *testing.T) {
	g, clk, _, _ := newTestGuard(GuardLimits{IPv4_32: 3, IPv4_26: 5, IPv6_64: 2, Account: 4, Window: time.Minute,
		ExemptAfterSuccess: time.Hour}, 0)
	if s := g.Snapshot(10); s.Networks != 0 || s.Accounts != 0 || len(s.Entries) != 0 || s.Entries == nil {
		t.Fatalf("empty guard: %+v", s)
	}
	start := clk.now()
	// 192.0.2.1: full and refusing twice. 192.0.2.2: two failures, not
	// full. Together they fill their /26 (5).
	for i := range 3 {
		fail(g, addr("192.0.2.1"), fmt.Sprintf("u%d@x", i), "pw")
	}
	clk.advance(time.Second)
	for range 2 {
		if r := fail(g, addr("192.0.2.1"), "u9@x", "x"); r == nil {
			t.Fatal("192.0.2.1 not refused")
		}
	}
	fail(g, addr("192.0.2.2"), "v@x", "a")
	fail(g, addr("192.0.2.2"), "v@x", "b")
	// An IPv6 /64, full, nobody refused yet; and an account full from
	// four different networks.
	fail(g, addr("2001:db8::1"), "w@x", "a")
	fail(g, addr("2001:db8::2"), "w@x", "b")
	for i := range 4 {
		fail(g, addr(fmt.Sprintf("198.51.%d.1", 10*i)), "Owner@X", fmt.Sprint(i))
	}
	// A full /32 whose network logged in (exempt) refuses nobody.
	ok(g, addr("203.0.113.9"), "me@x")
	for i := range 4 {
		fail(g, addr("203.0.113.9"), fmt.Sprintf("t%d@x", i), "typo")
	}
	before := g.Stats()

	s := g.Snapshot(10)
	if s.Networks != 3 || s.Accounts != 1 || len(s.Entries) != 4 || !s.At.Equal(clk.now()) {
		t.Fatalf("snapshot: %d networks, %d accounts, entries %+v", s.Networks, s.Accounts, s.Entries)
	}
	want := []struct {
		tier  Tier
		key   string
		level float64
		limit int
	}{
		// By level: the /26 holds 5, the account 4, the /32 3, the /64 2.
		{TierIPv4_26, "192.0.2.0/26", 5, 5},
		{TierAccount, "owner@x", 4, 4},
		{TierIPv4_32, "192.0.2.1/32", 3, 3},
		{TierIPv6_64, "2001:db8::/64", 2, 2},
	}
	for i, w := range want {
		e := s.Entries[i]
		if e.Tier != w.tier || e.Key != w.key || e.Limit != w.limit || !e.Refusing || e.Level < w.level-0.1 || e.Level > w.level {
			t.Errorf("entry %d = %+v, want %v %s at ~%v of %d", i, e, w.tier, w.key, w.level, w.limit)
		}
	}
	a32 := s.Entries[2]
	// It refused two logins, first one second in; 3 of 3 at 20s a
	// failure less the second drained: ~19s until one more fits.
	if a32.Refused != 2 || !a32.Since.Equal(start.Add(time.Second)) || a32.RetryAfter <= 18*time.Second || a32.RetryAfter > 20*time.Second {
		t.Errorf("192.0.2.1/32: %+v", a32)
	}
	if v6 := s.Entries[3]; v6.Refused != 0 || !v6.Since.IsZero() || v6.RetryAfter <= 0 {
		t.Errorf("full /64 that refused nobody yet: %+v", v6)
	}
	// Read-only: the tables are as they were.
	if after := g.Stats(); after.Entries != before.Entries || after.Limited != before.Limited || after.Refused != before.Refused {
		t.Errorf("snapshot changed the guard: %+v -> %+v", before, after)
	}
	// The client hears the same wait.
	if r := g.Check(addr("2001:db8::3"), "w@x"); r == nil || r.Wait != s.Entries[3].RetryAfter {
		t.Errorf("client's wait %+v, snapshot's %v", r, s.Entries[3].RetryAfter)
	}
	// Bounded: the fullest n, the counts still whole; 0 only counts.
	if s := g.Snapshot(2); len(s.Entries) != 2 || s.Entries[0].Key != "192.0.2.0/26" || s.Entries[1].Key != "owner@x" || s.Networks != 3 {
		t.Errorf("top 2: %+v", s)
	}
	if s := g.Snapshot(0); len(s.Entries) != 0 || s.Networks+s.Accounts != 4 {
		t.Errorf("counts only: %+v", s)
	}
	// Drained buckets leave the list: after 20s the /32 has room.
	clk.advance(20 * time.Second)
	for _, e := range g.Snapshot(10).Entries {
		if e.Key == "192.0.2.1/32" {
			t.Errorf("drained /32 still listed: %+v", e)
		}
	}
	// Tiers carry their names in JSON, and read back.
	b, err := json.Marshal(s.Entries[0])
	if err != nil || !strings.Contains(string(b), `"tier":"ipv4_26"`) {
		t.Fatalf("json: %s, %v", b, err)
	}
	var e LimitEntry
	if err := json.Unmarshal(b, &e); err != nil || e.Tier != TierIPv4_26 {
		t.Fatalf("json back: %+v, %v", e, err)
	}
}

// Clear drops what its key names and nothing else; the next login from
// there goes straight to the password check.
func TestGuardClear(t *testing.T) {
	g, _, _, logs := newTestGuard(GuardLimits{IPv4_32: 2, IPv4_26: 4, IPv4_21: 6, IPv6_64: 2, IPv6_48: 4, Account: 3, Window: time.Hour}, 0)
	phone := addr("192.0.2.10")
	for i := range 2 {
		fail(g, phone, fmt.Sprintf("a%d@x", i), "pw")
	}
	fail(g, addr("192.0.2.11"), "n@x", "1")
	fail(g, addr("192.0.2.11"), "n@x", "2")
	if r := fail(g, phone, "alice@x", "right"); r == nil {
		t.Fatal("the phone is not refused")
	}
	if st := g.Stats(); st.LimitedNetworks() != 2 { // its /32 and its /26
		t.Fatalf("limited before clear: %+v", st)
	}

	// An address: its /32, /26 and /21, whatever their level.
	res, err := g.Clear(" 192.0.2.10 ")
	if err != nil || res.As != "address" || res.Key != "192.0.2.10" || len(res.Cleared) != 3 {
		t.Fatalf("clear address: %+v, %v", res, err)
	}
	keys := []string{}
	for _, e := range res.Cleared {
		keys = append(keys, fmt.Sprintf("%s %s %v", e.Tier, e.Key, e.Refusing))
	}
	if got := strings.Join(keys, ", "); got != "ipv4_32 192.0.2.10/32 true, ipv4_26 192.0.2.0/26 true, ipv4_21 192.0.0.0/21 false" {
		t.Errorf("cleared %s", got)
	}
	if c := res.Cleared[1]; c.Refused != 1 || c.Since.IsZero() || c.Level != 4 || c.RetryAfter <= 0 {
		t.Errorf("the /26's state when cleared: %+v", c)
	}
	st := g.Stats()
	if st.LimitedNetworks() != 0 || st.Entries[TierIPv4_32] != 1 { // 192.0.2.11's stays
		t.Fatalf("after clear: %+v", st)
	}
	if r := ok(g, phone, "alice@x"); r != nil {
		t.Fatalf("right after clear: %v", r)
	}
	if strings.Contains(logs.String(), "cooled down") {
		t.Errorf("a clear logged a cool-down:\n%s", logs)
	}
	// An address nothing was charged to: nothing matches.
	if res, err := g.Clear("198.18.0.1"); err != nil || len(res.Cleared) != 0 || res.Cleared == nil {
		t.Fatalf("second clear: %+v, %v", res, err)
	}

	// A network: only the tier of that size (host bits ignored).
	if res, err := g.Clear("192.0.2.11/32"); err != nil || res.As != "network" || len(res.Cleared) != 1 || res.Cleared[0].Key != "192.0.2.11/32" {
		t.Fatalf("clear /32: %+v, %v", res, err)
	}
	fail(g, addr("2001:db8:1:2::5"), "v@x", "1")
	fail(g, addr("2001:db8:1:3::5"), "v@x", "2")
	if res, err := g.Clear("2001:db8:1:99::/48"); err != nil || len(res.Cleared) != 1 || res.Cleared[0].Key != "2001:db8:1::/48" || res.Key != "2001:db8:1::/48" {
		t.Fatalf("clear /48: %+v, %v", res, err)
	}
	if st := g.Stats(); st.Entries[TierIPv6_64] != 2 || st.Entries[TierIPv6_48] != 0 {
		t.Fatalf("after clearing the /48: %+v", st)
	}
	// An IPv4-mapped address is its IPv4 address.
	fail(g, addr("198.51.100.1"), "m@x", "1")
	if res, err := g.Clear("::ffff:198.51.100.1"); err != nil || res.Key != "198.51.100.1" || len(res.Cleared) != 3 {
		t.Fatalf("clear mapped: %+v, %v", res, err)
	}

	// An account, by any case.
	for i := range 3 {
		fail(g, addr(fmt.Sprintf("203.0.113.%d", i*64)), "bob@x", fmt.Sprint(i))
	}
	if r := g.Check(addr("203.0.114.1"), "bob@x"); r == nil || !r.AccountLimited() {
		t.Fatalf("bob not refused: %+v", r)
	}
	res, err = g.Clear("BOB@x")
	if err != nil || res.As != "account" || len(res.Cleared) != 1 || res.Cleared[0].Tier != TierAccount || res.Cleared[0].Key != "bob@x" {
		t.Fatalf("clear account: %+v, %v", res, err)
	}
	if r := ok(g, addr("203.0.114.1"), "bob@x"); r != nil {
		t.Fatalf("bob after clear: %v", r)
	}

	// What cannot be a key.
	for _, k := range []string{"", "  ", "192.0.2.0/24", "2001:db8::/56", "192.0.2.0/33", "a b@x"} {
		if _, err := g.Clear(k); !errors.Is(err, ErrBadLimitKey) {
			t.Errorf("Clear(%q) = %v, want ErrBadLimitKey", k, err)
		}
	}
	if _, err := g.Clear("192.0.2.0/24"); err == nil || !strings.Contains(err.Error(), "/32, /26 or /21") {
		t.Errorf("the error names the sizes: %v", err)
	}
}

// A full table (the bound every tier can reach) snapshots in bounded
// memory: only n entries are rendered.
func TestGuardSnapshotFullTables(t *testing.T) {
	g, _, _, _ := newTestGuard(GuardLimits{IPv4_32: 1, Window: time.Hour}, 5000)
	for i := range 5000 {
		fail(g, addr(fmt.Sprintf("10.%d.%d.1", i/256, i%256)), "x@x", fmt.Sprint(i))
	}
	s := g.Snapshot(5)
	if s.Networks != 5000 || len(s.Entries) != 5 {
		t.Fatalf("%d networks, %d entries", s.Networks, len(s.Entries))
	}
	if s := g.Snapshot(1 << 20); len(s.Entries) != maxSnapshotEntries {
		t.Fatalf("a huge n lists %d", len(s.Entries))
	}
}

func BenchmarkGuardSnapshotFull(b *testing.B) {
	g, _, _, _ := newTestGuard(GuardLimits{IPv4_32: 1, IPv4_26: 1000000, IPv4_21: 1000000, Account: 1000000, Window: time.Hour}, 20000)
	for i := range 20000 {
		ip := addr(fmt.Sprintf("10.%d.%d.%d", i/4096, (i/16)%256, (i%16)*16))
		fail(g, ip, fmt.Sprintf("u%d@x", i), "pw")
	}
	b.ResetTimer()
	for b.Loop() {
		g.Snapshot(50)
	}
}
