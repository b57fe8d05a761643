package auth

import (
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// dummyHash is an argon2id hash with DefaultParams of a password nobody
// knows. VerifyUnknown checks against it so that a login for a mailbox that
// does not exist costs the same as a wrong password (chasquid flattens timing
// for the same reason: no user enumeration by stopwatch).
const dummyHash = "$argon2id$v=19$m=65536,t=3,p=2$Rc/QM+FD65imVKgz1odjNw$fTnu4Tg/7d96j6eGHIFy966A/P/RrPIQhQpj5yZEp2U"

// VerifierOptions configure a Verifier. Zero values take the defaults.
type VerifierOptions struct {
	// MaxConcurrent bounds how many hash computations run at once; each
	// argon2id check with DefaultParams holds 64 MiB, so this bounds memory
	// under a flood of logins. Default runtime.NumCPU().
	MaxConcurrent int
	// CacheTTL is how long a successful verification is remembered.
	// Default 10 minutes; a negative value disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached successes (oldest evicted
	// first). Default 10000.
	CacheSize int
}

// VerifierStats is a snapshot of a Verifier's counters.
type VerifierStats struct {
	CacheHits   uint64 // Verify answered from the cache
	CacheMisses uint64 // Verify had to compute a hash (includes cache disabled)
	Computed    uint64 // hash computations finished, including VerifyUnknown
	InFlight    int64  // hash computations running now
	Waiting     int64  // callers waiting for a computation slot
	CacheLen    int    // entries currently cached
}

// Verifier checks passwords against stored hashes with a bounded number of
// concurrent computations and a cache of recent successes. It is safe for
// concurrent use.
type Verifier struct {
	sem   chan struct{}
	ttl   time.Duration // <= 0: cache disabled
	size  int
	key   [32]byte // HMAC key, random per Verifier, never leaves the process
	check func(hash, password string) (bool, error)
	now   func() time.Time

	mu    sync.Mutex
	cache map[[sha256.Size]byte]*list.Element
	order *list.List // of *cacheEntry, oldest first (insertion order = expiry order)

	hits, misses, computed atomic.Uint64
	inFlight, waiting      atomic.Int64

	// trim returns memory to the OS once no hash is running (see
	// scheduleTrim); trimPending coalesces requests.
	trim        func()
	trimDelay   time.Duration
	trimPending atomic.Bool
}

type cacheEntry struct {
	id      [sha256.Size]byte
	expires time.Time
}

// NewVerifier returns a Verifier with o's settings.
func NewVerifier(o VerifierOptions) *Verifier {
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = runtime.NumCPU()
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = 10 * time.Minute
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	v := &Verifier{
		sem:       make(chan struct{}, o.MaxConcurrent),
		ttl:       o.CacheTTL,
		size:      o.CacheSize,
		check:     CheckPassword,
		now:       time.Now,
		cache:     make(map[[sha256.Size]byte]*list.Element),
		order:     list.New(),
		trim:      debug.FreeOSMemory,
		trimDelay: time.Second,
	}
	if _, err := rand.Read(v.key[:]); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+ panics
		// itself rather than return an error); be explicit anyway.
		panic(fmt.Sprintf("auth: reading HMAC key: %v", err))
	}
	return v
}

// Verify reports whether password matches hash. A success remembered from
// the last CacheTTL is answered without hashing; otherwise Verify waits for a
// computation slot (giving up with ctx.Err() if ctx ends first) and computes
// the hash. The error is non-nil for a malformed hash or a canceled ctx.
func (v *Verifier) Verify(ctx context.Context, hash, password string) (bool, error) {
	var id [sha256.Size]byte
	if v.ttl > 0 {
		id = v.cacheID(hash, password)
		if v.lookup(id) {
			v.hits.Add(1)
			return true, nil
		}
	}
	v.misses.Add(1)
	ok, err := v.compute(ctx, hash, password)
	if err != nil {
		return false, err
	}
	// Failures are never cached: caching them would only help a guesser.
	if ok && v.ttl > 0 {
		v.store(id)
	}
	return ok, nil
}

// VerifyUnknown spends the same work as Verify against a real argon2id hash
// with DefaultParams, for logins naming a mailbox that does not exist. It
// waits for a slot like Verify and returns early if ctx ends.
func (v *Verifier) VerifyUnknown(ctx context.Context, password string) {
	_, _ = v.compute(ctx, dummyHash, password)
}

// Stats returns the current counters.
func (v *Verifier) Stats() VerifierStats {
	v.mu.Lock()
	n := len(v.cache)
	v.mu.Unlock()
	return VerifierStats{
		CacheHits:   v.hits.Load(),
		CacheMisses: v.misses.Load(),
		Computed:    v.computed.Load(),
		InFlight:    v.inFlight.Load(),
		Waiting:     v.waiting.Load(),
		CacheLen:    n,
	}
}

func (v *Verifier) compute(ctx context.Context, hash, password string) (bool, error) {
	// Checked first so a canceled ctx never takes a free slot: select picks
	// randomly among ready cases.
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("auth: verify: %w", err)
	}
	v.waiting.Add(1)
	select {
	case v.sem <- struct{}{}:
		v.waiting.Add(-1)
	case <-ctx.Done():
		v.waiting.Add(-1)
		return false, fmt.Errorf("auth: verify: waiting for a hash slot: %w", ctx.Err())
	}
	v.inFlight.Add(1)
	defer func() {
		if v.inFlight.Add(-1) == 0 {
			v.scheduleTrim()
		}
		<-v.sem
	}()
	ok, err := v.check(hash, password)
	v.computed.Add(1)
	if err != nil {
		return false, fmt.Errorf("auth: verify: %w", err)
	}
	return ok, nil
}

// cacheID is HMAC-SHA256(key, len(hash) || hash || password). Keying the
// entry by the hash means a changed password hash simply misses; the HMAC
// with a per-process key means the cache holds nothing that helps an
// attacker who dumps memory guess the password faster than the real hash.
func (v *Verifier) cacheID(hash, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, v.key[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(hash)))
	m.Write(n[:])
	m.Write([]byte(hash))
	m.Write([]byte(password))
	var id [sha256.Size]byte
	m.Sum(id[:0])
	return id
}

func (v *Verifier) lookup(id [sha256.Size]byte) bool {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	v.expireLocked(now)
	_, ok := v.cache[id]
	return ok
}

func (v *Verifier) store(id [sha256.Size]byte) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.cache[id]; ok {
		// Two concurrent misses for the same login: keep one entry, moved
		// to the back with the fresher expiry.
		v.order.Remove(e)
		delete(v.cache, id)
	}
	v.expireLocked(now)
	for len(v.cache) >= v.size {
		oldest := v.order.Front()
		v.order.Remove(oldest)
		delete(v.cache, oldest.Value.(*cacheEntry).id)
	}
	v.cache[id] = v.order.PushBack(&cacheEntry{id: id, expires: now.Add(v.ttl)})
}

// expireLocked drops expired entries from the front. Entries are inserted
// with a fixed TTL, so the list is ordered by expiry and this stops at the
// first live one.
func (v *Verifier) expireLocked(now time.Time) {
	for e := v.order.Front(); e != nil; e = v.order.Front() {
		ce := e.Value.(*cacheEntry)
		if now.Before(ce.expires) {
			return
		}
		v.order.Remove(e)
		delete(v.cache, ce.id)
	}
}

// scheduleTrim hands memory back to the OS a moment after the last running
// hash finished. Each argon2id check allocates its 64 MiB afresh; the Go
// runtime would otherwise keep the process at its peak size for minutes
// (the collector sizes its next goal from that peak), which is exactly
// wrong for a small VPS or a container with a memory limit. At most one
// trim a second, and never while a hash is running.
func (v *Verifier) scheduleTrim() {
	if v.trim == nil || !v.trimPending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(v.trimDelay, func() {
		v.trimPending.Store(false)
		if v.inFlight.Load() == 0 {
			v.trim()
		}
	})
}
