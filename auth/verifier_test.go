package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingCheck wraps CheckPassword and counts calls.
type countingCheck struct{ calls atomic.Int64 }

func (c *countingCheck) check(hash, password string) (bool, error) {
	c.calls.Add(1)
	return CheckPassword(hash, password)
}

func newTestVerifier(t *testing.T, o VerifierOptions) (*Verifier, *countingCheck) {
	t.Helper()
	v := NewVerifier(o)
	c := &countingCheck{}
	v.check = c.check
	return v, c
}

func mustHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := HashPasswordParams(pw, cheap)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// waitFor polls cond for up to 10 s; it is for waiting on other goroutines to
// reach a state, not for timing assertions.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestVerifyCache(t *testing.T) {
	v, c := newTestVerifier(t, VerifierOptions{})
	ctx := t.Context()
	h := mustHash(t, "pw")

	for i := range 3 {
		ok, err := v.Verify(ctx, h, "pw")
		if !ok || err != nil {
			t.Fatalf("Verify #%d = %v, %v", i, ok, err)
		}
	}
	if n := c.calls.Load(); n != 1 {
		t.Errorf("3 successful Verify calls computed %d hashes, want 1 (cache)", n)
	}
	if s := v.Stats(); s.CacheHits != 2 || s.CacheMisses != 1 || s.CacheLen != 1 {
		t.Errorf("stats = %+v, want 2 hits, 1 miss, 1 entry", s)
	}

	// Failures are never cached: each one costs a full hash.
	for range 2 {
		if ok, err := v.Verify(ctx, h, "wrong"); ok || err != nil {
			t.Fatalf("wrong password = %v, %v", ok, err)
		}
	}
	if n := c.calls.Load(); n != 3 {
		t.Errorf("after 2 failures, %d computations, want 3", n)
	}

	// A new hash for the same password (password changed and changed back,
	// or rehashed) misses: the cache key covers the hash.
	h2 := mustHash(t, "pw")
	if ok, err := v.Verify(ctx, h2, "pw"); !ok || err != nil {
		t.Fatalf("Verify(h2) = %v, %v", ok, err)
	}
	if n := c.calls.Load(); n != 4 {
		t.Errorf("changed hash: %d computations, want 4 (miss)", n)
	}
	// And a new hash for a new password does not accept the old one.
	h3 := mustHash(t, "new")
	if ok, _ := v.Verify(ctx, h3, "pw"); ok {
		t.Error("old password accepted against a new hash")
	}
}

func TestVerifyCacheTTL(t *testing.T) {
	v, c := newTestVerifier(t, VerifierOptions{CacheTTL: time.Minute})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	v.now = func() time.Time { return now }
	h := mustHash(t, "pw")
	ctx := t.Context()

	verify := func() {
		t.Helper()
		if ok, err := v.Verify(ctx, h, "pw"); !ok || err != nil {
			t.Fatalf("Verify = %v, %v", ok, err)
		}
	}
	verify()
	now = now.Add(59 * time.Second)
	verify()
	if n := c.calls.Load(); n != 1 {
		t.Fatalf("within TTL: %d computations, want 1", n)
	}
	now = now.Add(time.Second) // exactly TTL after the first success
	verify()
	if n := c.calls.Load(); n != 2 {
		t.Fatalf("after TTL: %d computations, want 2", n)
	}
}

func TestVerifyCacheBounded(t *testing.T) {
	v, c := newTestVerifier(t, VerifierOptions{CacheSize: 3})
	ctx := t.Context()
	hashes := make([]string, 5)
	for i := range hashes {
		hashes[i] = mustHash(t, "pw")
		if ok, err := v.Verify(ctx, hashes[i], "pw"); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if s := v.Stats(); s.CacheLen != 3 {
		t.Fatalf("cache holds %d entries, want 3 (CacheSize)", s.CacheLen)
	}
	before := c.calls.Load()
	v.Verify(ctx, hashes[4], "pw") // newest: still cached
	if c.calls.Load() != before {
		t.Error("newest entry was evicted")
	}
	v.Verify(ctx, hashes[0], "pw") // oldest: evicted
	if c.calls.Load() != before+1 {
		t.Error("oldest entry was not evicted")
	}
}

func TestVerifyCacheDisabled(t *testing.T) {
	v, c := newTestVerifier(t, VerifierOptions{CacheTTL: -1})
	h := mustHash(t, "pw")
	for range 3 {
		if ok, err := v.Verify(t.Context(), h, "pw"); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if n := c.calls.Load(); n != 3 {
		t.Errorf("cache disabled: %d computations, want 3", n)
	}
	if s := v.Stats(); s.CacheHits != 0 || s.CacheLen != 0 {
		t.Errorf("cache disabled but stats = %+v", s)
	}
}

func TestVerifyMalformedHash(t *testing.T) {
	v := NewVerifier(VerifierOptions{})
	ok, err := v.Verify(t.Context(), "$argon2id$v=19$m=1,t=1,p=1$x$y", "pw")
	if ok || !errors.Is(err, ErrMalformedHash) {
		t.Errorf("Verify(bad hash) = %v, %v; want false, ErrMalformedHash", ok, err)
	}
}

// blockingCheck holds every computation until release is closed, tracking how
// many run at once.
type blockingCheck struct {
	release          chan struct{}
	cur, peak, calls atomic.Int64
}

func (b *blockingCheck) check(hash, password string) (bool, error) {
	b.calls.Add(1)
	n := b.cur.Add(1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	<-b.release
	b.cur.Add(-1)
	return CheckPassword(hash, password)
}

func TestVerifyConcurrencyBound(t *testing.T) {
	const limit, callers = 2, 10
	v := NewVerifier(VerifierOptions{MaxConcurrent: limit, CacheTTL: -1})
	b := &blockingCheck{release: make(chan struct{})}
	v.check = b.check
	h := mustHash(t, "pw")

	var wg sync.WaitGroup
	var good atomic.Int64
	for i := range callers {
		wg.Go(func() {
			pw := "pw"
			if i%2 == 1 {
				v.VerifyUnknown(t.Context(), pw)
				return
			}
			if ok, err := v.Verify(t.Context(), h, pw); ok && err == nil {
				good.Add(1)
			}
		})
	}
	// Everyone has arrived: limit computing, the rest queued for a slot.
	waitFor(t, "callers to queue", func() bool {
		s := v.Stats()
		return s.InFlight == limit && s.Waiting == callers-limit && b.cur.Load() == limit
	})
	if p := b.peak.Load(); p != limit {
		t.Errorf("peak concurrent computations = %d, want %d", p, limit)
	}
	close(b.release)
	wg.Wait()
	if p := b.peak.Load(); p > limit {
		t.Errorf("peak concurrent computations = %d, above MaxConcurrent %d", p, limit)
	}
	if n := b.calls.Load(); n != callers {
		t.Errorf("%d computations, want %d", n, callers)
	}
	if g := good.Load(); g != callers/2 {
		t.Errorf("%d successful Verify, want %d", g, callers/2)
	}
	if s := v.Stats(); s.InFlight != 0 || s.Waiting != 0 || s.Computed != callers {
		t.Errorf("stats after = %+v", s)
	}
}

func TestVerifyCanceledWhileWaiting(t *testing.T) {
	v := NewVerifier(VerifierOptions{MaxConcurrent: 1, CacheTTL: -1})
	b := &blockingCheck{release: make(chan struct{})}
	v.check = b.check
	h := mustHash(t, "pw")

	first := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), h, "pw")
		first <- err
	}()
	waitFor(t, "first verify to hold the slot", func() bool { return v.Stats().InFlight == 1 })

	ctx, cancel := context.WithCancel(t.Context())
	second := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, h, "pw")
		second <- err
	}()
	waitFor(t, "second verify to wait", func() bool { return v.Stats().Waiting == 1 })
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: err = %v, want context.Canceled", err)
	}
	if s := v.Stats(); s.Waiting != 0 || s.InFlight != 1 {
		t.Errorf("after cancel: stats = %+v, want 0 waiting, 1 in flight", s)
	}
	close(b.release)
	if err := <-first; err != nil {
		t.Errorf("slot holder: %v", err)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("%d computations, want 1: the canceled caller must not compute", n)
	}

	// Already canceled: no slot is taken even though one is free.
	if _, err := v.Verify(ctx, h, "pw"); !errors.Is(err, context.Canceled) {
		t.Errorf("pre-canceled ctx: err = %v", err)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("pre-canceled ctx computed a hash")
	}
}

func TestVerifyUnknownUsesDefaultCost(t *testing.T) {
	// Flattening only works if the dummy costs what a real user's hash does.
	ph, err := parseHash(dummyHash)
	if err != nil {
		t.Fatal(err)
	}
	if ph.params != DefaultParams || len(ph.salt) != saltLen || len(ph.key) != keyLen {
		t.Errorf("dummy hash params %+v salt %d key %d; want %+v, %d, %d",
			ph.params, len(ph.salt), len(ph.key), DefaultParams, saltLen, keyLen)
	}
	v := NewVerifier(VerifierOptions{MaxConcurrent: 1})
	v.VerifyUnknown(t.Context(), "anything")
	if s := v.Stats(); s.Computed != 1 || s.CacheLen != 0 {
		t.Errorf("VerifyUnknown stats = %+v, want one computation and nothing cached", s)
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	h, err := HashPassword("benchmark password")
	if err != nil {
		b.Fatal(err)
	}
	v := NewVerifier(VerifierOptions{})
	ctx := context.Background()
	if ok, err := v.Verify(ctx, h, "benchmark password"); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := v.Verify(ctx, h, "benchmark password"); !ok {
			b.Fatal("cached verify failed")
		}
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	h, err := HashPassword("benchmark password")
	if err != nil {
		b.Fatal(err)
	}
	v := NewVerifier(VerifierOptions{CacheTTL: -1})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := v.Verify(ctx, h, "benchmark password"); !ok {
			b.Fatal("verify failed")
		}
	}
}

// After a burst of hash computations, memory is handed back once, shortly
// after the last one finished, and not while any is running.
func TestVerifierTrimsAfterBurst(t *testing.T) {
	v := NewVerifier(VerifierOptions{MaxConcurrent: 2, CacheTTL: -1})
	trims := make(chan time.Time, 10)
	v.trim = func() { trims <- time.Now() }
	v.trimDelay = 50 * time.Millisecond
	hash, err := HashPasswordParams("pw", Argon2Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := v.Verify(context.Background(), hash, "pw"); !ok || err != nil {
				t.Errorf("verify: %v %v", ok, err)
			}
		}()
	}
	wg.Wait()
	done := time.Now()
	select {
	case at := <-trims:
		if at.Before(done) && v.Stats().InFlight != 0 {
			t.Error("trimmed while a hash was running")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no trim after the burst")
	}
	select {
	case <-trims:
		// A second trim may come only from a hash that finished after the
		// first was scheduled; with the burst over there must be at most
		// one more.
		select {
		case <-trims:
			t.Error("more than two trims for one burst")
		case <-time.After(200 * time.Millisecond):
		}
	case <-time.After(200 * time.Millisecond):
	}
}
