package server

import (
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/textproto"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/auth"
)

// guardConfig is a complete file: POP3S and submission on loopback, the
// given login_limits body, and alice and bob with cheap hashes.
func guardConfig(t *testing.T, limits string) string {
	return deviceConfig(fmt.Sprintf(`
login_limits {
%s
}
mailbox "alice@example.com" {
  password_hash = %q
}
mailbox "bob@example.com" {
  password_hash = %q
}
`, limits, cheapHash(t, "alice-pw"), cheapHash(t, "bob-pw")))
}

func popLoginFrom(t *testing.T, local, addr, user, pass string) string {
	t.Helper()
	p := popFrom(t, local, addr)
	defer p.c.Close()
	return p.login(user, pass)
}

// A network whose users logged in is exempt from the network tiers for a
// day: more typos than the per-address limit, then the right password, all
// from there, over POP3 and submission. Past the exemption's budget of
// failures (three times the address's limit) it is limited again.
func TestExemptNetworkAfterLogin(t *testing.T) {
	s := startDeviceServer(t, guardConfig(t, `
  ipv4_32 = 3
  ipv4_26 = 0
  ipv4_21 = 0
  account = 20
  window  = "10m"
`))
	pops, subm := addrOf(t, s.testServer, "pop3s"), addrOf(t, s.testServer, "submission")
	const office = "127.0.0.20"
	if r := popLoginFrom(t, office, pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	for i := range 6 { // twice the limit of 3
		if r := popLoginFrom(t, office, pops, "bob@example.com", fmt.Sprint("typo", i)); !strings.HasPrefix(r, "-ERR [AUTH]") {
			t.Fatalf("typo %d from the exempt network: %q", i+1, r)
		}
	}
	if r := popLoginFrom(t, office, pops, "bob@example.com", "bob-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("bob from the exempt network after 6 typos: %q", r)
	}
	if _, err := smtpFrom(t, office, subm, "alice@example.com", "alice-pw"); err != nil {
		t.Fatalf("submission from the exempt network: %v", err)
	}
	// The same typos from a network nobody logged in from: limited at 3.
	for i := range 3 {
		popLoginFrom(t, "127.0.0.21", pops, "bob@example.com", fmt.Sprint("other", i))
	}
	if r := popLoginFrom(t, "127.0.0.21", pops, "bob@example.com", "bob-pw"); !strings.HasPrefix(r, "-ERR [SYS/TEMP]") {
		t.Fatalf("a network that never logged in, over its limit: %q", r)
	}
	// Ten distinct wrong guesses from the office (the budget is 9 since
	// bob's success): the exemption ends and the charges bind.
	for i := range 10 {
		popLoginFrom(t, office, pops, "alice@example.com", fmt.Sprint("guess", i))
	}
	if r := popLoginFrom(t, office, pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "-ERR [SYS/TEMP]") {
		t.Fatalf("exempt network past its budget of failures: %q", r)
	}
}

// Each refusal is a temporary one with the wait, never [AUTH] or 535, and
// it comes before the password is checked (the right one is refused too).
func TestLoginLimitsReplies(t *testing.T) {
	s := startDeviceServer(t, guardConfig(t, `
  ipv4_32 = 3
  ipv4_26 = 0
  ipv4_21 = 0
  account = 5
  window  = "1m"
`))
	pops, subm := addrOf(t, s.testServer, "pop3s"), addrOf(t, s.testServer, "submission")

	// A phone retrying its old password: counted once, hashed once.
	computed := s.verifier.Stats().Computed
	for i := range 8 {
		if r := popLoginFrom(t, "127.0.0.7", pops, "alice@example.com", "old-pw"); !strings.HasPrefix(r, "-ERR [AUTH]") {
			t.Fatalf("retry %d of an old password: %q", i, r)
		}
	}
	if got := s.verifier.Stats().Computed - computed; got != 1 {
		t.Fatalf("the same wrong password was hashed %d times, want 1", got)
	}

	// The client's network: three failures, then refused.
	for i := range 3 {
		if r := popLoginFrom(t, "127.0.0.2", pops, "alice@example.com", fmt.Sprint("wrong", i)); !strings.HasPrefix(r, "-ERR [AUTH]") {
			t.Fatalf("failure %d: %q", i, r)
		}
	}
	computed = s.verifier.Stats().Computed
	r := popLoginFrom(t, "127.0.0.2", pops, "alice@example.com", "alice-pw")
	if !strings.HasPrefix(r, "-ERR [SYS/TEMP] too many failed logins from your network, try again in about ") || !strings.HasSuffix(r, "seconds") {
		t.Fatalf("right password from a network over its limit: %q", r)
	}
	_, err := smtpFrom(t, "127.0.0.2", subm, "alice@example.com", "alice-pw")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) || !strings.Contains(se.Message, "try again in about") {
		t.Fatalf("submission from a network over its limit: %v", err)
	}
	if got := s.verifier.Stats().Computed; got != computed {
		t.Fatalf("refused logins hashed %d passwords", got-computed)
	}
	// Another address is not affected.
	if r := popLoginFrom(t, "127.0.0.3", pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("other address: %q", r)
	}

	// The account: five failures from three addresses (each under its
	// own limit), then bob is refused from anywhere new with LOGIN-DELAY.
	for i, ip := range []string{"127.0.0.4", "127.0.0.4", "127.0.0.5", "127.0.0.5", "127.0.0.8"} {
		if r := popLoginFrom(t, ip, pops, "bob@example.com", fmt.Sprint("guess", i)); !strings.HasPrefix(r, "-ERR [AUTH]") {
			t.Fatalf("bob failure %d: %q", i, r)
		}
	}
	if r := popLoginFrom(t, "127.0.0.6", pops, "bob@example.com", "bob-pw"); !strings.HasPrefix(r, "-ERR [LOGIN-DELAY] too many failed logins for this account, try again in about ") {
		t.Fatalf("account over its limit: %q", r)
	}
	if _, err := smtpFrom(t, "127.0.0.6", subm, "bob@example.com", "bob-pw"); err == nil || !strings.Contains(err.Error(), "454") {
		t.Fatalf("submission for an account over its limit: %v", err)
	}

	// Counters, gauge and logs: one Warn per block, not per attempt.
	for range 20 {
		popLoginFrom(t, "127.0.0.2", pops, "alice@example.com", "x")
	}
	if n := s.throttledPOP3.Load(); n < 22 {
		t.Fatalf("throttled POP3 logins counted: %d", n)
	}
	if n := s.throttledSubmission.Load(); n != 2 {
		t.Fatalf("throttled submission logins counted: %d", n)
	}
	if st := s.guard.Stats(); st.Limited[auth.TierIPv4_32] != 1 || st.Limited[auth.TierAccount] != 1 {
		t.Fatalf("limited: %+v", st.Limited)
	}
	if warns := s.logs.lines("login refused: too many failed logins"); len(warns) != 2 {
		t.Fatalf("%d refusal lines for two blocks:\n%s", len(warns), strings.Join(warns, "\n"))
	}

	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`mailpost_logins_total{protocol="pop3",result="throttled"} 2`,
		`mailpost_logins_total{protocol="submission",result="throttled"} 2`,
		`mailpost_login_limited{tier="ipv4_32"} 1`,
		`mailpost_login_limited{tier="account"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A reload raising the limit lets the network in at once; the counts
	// carried over.
	rewrite(t, s.dir, guardConfig(t, `
  ipv4_32 = 100
  account = 5
  window  = "1m"
`))
	mustReload(t, s.testServer)
	if r := popLoginFrom(t, "127.0.0.2", pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("after raising the limit: %q", r)
	}
	if r := popLoginFrom(t, "127.0.0.6", pops, "bob@example.com", "bob-pw"); !strings.HasPrefix(r, "-ERR [LOGIN-DELAY]") {
		t.Fatalf("account count lost by the reload: %q", r)
	}
}

// dictionaryClient is one attacker connection loop: plain POP3 from local,
// USER/PASS with a fresh guess each time, reconnecting when the server
// closes the session.
type dictionaryClient struct {
	local, addr string
	c           net.Conn
	tp          *textproto.Conn
	strikes     int // logins answered on this connection
}

func (d *dictionaryClient) attempt(user, pass string) (string, error) {
	if d.c == nil {
		dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(d.local)}}
		c, err := dl.Dial("tcp", d.addr)
		if err != nil {
			return "", err
		}
		d.c, d.tp = c, textproto.NewConn(c)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := d.tp.ReadLine(); err != nil {
			d.close()
			return "", err
		}
	}
	if err := d.tp.PrintfLine("USER %s", user); err != nil {
		d.close()
		return "", err
	}
	if l, err := d.tp.ReadLine(); err != nil || !strings.HasPrefix(l, "+OK") {
		d.close()
		return l, errors.Join(err, fmt.Errorf("USER: %q", l))
	}
	if err := d.tp.PrintfLine("PASS %s", pass); err != nil {
		d.close()
		return "", err
	}
	l, err := d.tp.ReadLine()
	if err != nil {
		d.close()
		return "", err
	}
	return l, nil
}

func (d *dictionaryClient) close() {
	if d.c != nil {
		d.c.Close()
		d.c, d.tp, d.strikes = nil, nil, 0
	}
}

// The acceptance test: a 10,000-guess dictionary run from one
// address (4 parallel connections) against one account is held to the
// configured rate, a first-time user elsewhere and the attacked account's
// owner on their usual (exempt) network log in at once, and memory stays
// flat.
func TestDictionaryRunHeldToRate(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 logins over TCP")
	}
	const (
		attempts = 10000
		workers  = 4
		limit    = 10
		pace     = 2000 // guesses offered per second, all workers together
	)
	window := 2 * time.Second
	port := freePort(t)
	src := guardConfig(t, fmt.Sprintf(`
  ipv4_32 = %d
  ipv4_26 = %d
  ipv4_21 = %d
  account = %d
  window  = "2s"
  exempt_after_success = "1h"
`, limit, limit, limit, limit))
	// A plain-text POP3 listener too, so the run measures the guard and
	// not 3,000 TLS handshakes.
	src = strings.Replace(src, "unencrypted_or_tls_bindings = []", fmt.Sprintf(`unencrypted_or_tls_bindings = ["127.0.0.1:%d"]
  login_type = "plain_text_login"`, port), 1)
	s := startDeviceServer(t, src)
	plain := fmt.Sprintf("127.0.0.1:%d", port)
	pops := addrOf(t, s.testServer, "pop3s")

	// The owner's usual network logged in before the attack.
	if r := popLoginFrom(t, "127.0.0.9", pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("owner before the run: %q", r)
	}
	goruntime.GC()
	var before goruntime.MemStats
	goruntime.ReadMemStats(&before)
	computedBefore := s.verifier.Stats().Computed

	var next, reached, refused atomic.Int64
	var errMu sync.Mutex
	var runErr error
	var wg sync.WaitGroup
	start := time.Now()
	var lastReply atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &dictionaryClient{local: "127.0.0.2", addr: plain}
			defer d.close()
			for fails := 0; ; {
				n := next.Add(1)
				if n > attempts {
					return
				}
				// Offered at a fixed pace, so the run spans several
				// windows and the allowed rate shows against it.
				if d := time.Until(start.Add(time.Duration(n) * time.Second / pace)); d > 0 {
					time.Sleep(d)
				}
				l, err := d.attempt("alice@example.com", fmt.Sprintf("guess-%d-%d", w, n))
				if err != nil {
					// A broken connection is retried once with a new one;
					// a second error in a row ends the run.
					if fails++; fails > 1 {
						errMu.Lock()
						runErr = errors.Join(runErr, err)
						errMu.Unlock()
						return
					}
					next.Add(-1)
					continue
				}
				fails = 0
				lastReply.Store(int64(time.Since(start)))
				switch {
				case strings.HasPrefix(l, "-ERR [AUTH]"):
					reached.Add(1)
				case strings.HasPrefix(l, "-ERR [SYS/TEMP] too many failed logins") || strings.HasPrefix(l, "-ERR [LOGIN-DELAY]"):
					refused.Add(1)
				default:
					errMu.Lock()
					runErr = errors.Join(runErr, fmt.Errorf("unexpected reply %q", l))
					errMu.Unlock()
					return
				}
				// The server closes a session after its third failed or
				// refused login; so does the client.
				if d.strikes++; d.strikes == 3 {
					d.close()
				}
			}
		}()
	}

	// While the run goes on: a first-time user from another /21, the
	// owner from the exempt address, and (the trade-off) the owner from an
	// address never seen, which the full account tier refuses.
	for i := 0; next.Load() < attempts/2 && i < 3000; i++ { // bounded: 30 s
		time.Sleep(10 * time.Millisecond)
	}
	if next.Load() >= attempts {
		t.Fatal("the run ended before the real users tried")
	}
	t0 := time.Now()
	if r := popLoginFrom(t, "127.0.8.1", pops, "bob@example.com", "bob-pw"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("first-time user from another /21 during the run: %q", r)
	}
	firstTimer := time.Since(t0)
	t0 = time.Now()
	if r := popLoginFrom(t, "127.0.0.9", pops, "alice@example.com", "alice-pw"); !strings.HasPrefix(r, "+OK") {
		t.Errorf("owner from the exempt address during the run: %q", r)
	}
	owner := time.Since(t0)
	delayed := false
	for range 3 { // the attacker may have just drained a slot: try thrice
		r := popLoginFrom(t, "127.0.8.2", pops, "alice@example.com", "alice-pw")
		if strings.HasPrefix(r, "-ERR [LOGIN-DELAY]") {
			delayed = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !delayed {
		t.Errorf("the owner from a new address was never refused while the account was under attack")
	}

	probedAt := next.Load()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("dictionary run: %v", runErr)
	}
	elapsed := time.Duration(lastReply.Load())
	computed := s.verifier.Stats().Computed - computedBefore
	st := s.guard.Stats()
	goruntime.GC()
	var after goruntime.MemStats
	goruntime.ReadMemStats(&after)

	bound := float64(limit)*elapsed.Seconds()/window.Seconds() + limit
	t.Logf("%d guesses from 127.0.0.2 offered at %d/s over %d parallel connections, %v: %d reached the password check (%.1f/s; bound %.0f = %d per %v + %d), %d refused before hashing; argon2 computations during the run %d",
		attempts, pace, workers, elapsed.Round(time.Millisecond), reached.Load(), float64(reached.Load())/elapsed.Seconds(), bound, limit, window, limit, refused.Load(), computed)
	t.Logf("during the run (at guess %d): first-time user from 127.0.8.1 logged in in %v; owner from exempt 127.0.0.9 in %v; owner from new 127.0.8.2 got LOGIN-DELAY",
		probedAt, firstTimer.Round(time.Microsecond), owner.Round(time.Microsecond))
	t.Logf("heap in use %.1f MiB before, %.1f MiB after; guard entries per tier %v, limited %v, repeats %d, exempt %d; refusal log lines %d, cool-down lines %d",
		float64(before.HeapInuse)/(1<<20), float64(after.HeapInuse)/(1<<20), st.Entries, st.Limited, st.Repeats, st.Exempt,
		len(s.logs.lines("login refused: too many failed logins")), len(s.logs.lines("login limit cooled down")))

	if reached.Load()+refused.Load() != attempts {
		t.Fatalf("%d answered of %d", reached.Load()+refused.Load(), attempts)
	}
	if float64(reached.Load()) > bound {
		t.Fatalf("%d guesses reached the password check in %v; the configured rate allows %.0f", reached.Load(), elapsed, bound)
	}
	// Hashing work follows the guesses checked, not the guesses made
	// (the real users' logins add a few, or none from the cache).
	if computed > uint64(reached.Load())+5 {
		t.Fatalf("%d argon2 computations for %d checked guesses", computed, reached.Load())
	}
	for tier, n := range st.Entries {
		if n > 10 {
			t.Fatalf("tier %v holds %d entries after a one-address run", auth.Tier(tier), n)
		}
	}
	if st.Repeats > int(reached.Load()) {
		t.Fatalf("%d remembered guesses for %d checked", st.Repeats, reached.Load())
	}
	if growth := int64(after.HeapInuse) - int64(before.HeapInuse); growth > 16<<20 {
		t.Fatalf("heap in use grew by %.1f MiB over the run", float64(growth)/(1<<20))
	}
	if n := len(s.logs.lines("login refused: too many failed logins")); n > 20 {
		t.Fatalf("%d refusal log lines for one continuous run", n)
	}
}

// Many right passwords at once from one address that has no failures (an
// office behind NAT, a client opening several connections) are never
// refused for being many, even far past the per-address limit.
func TestConcurrentRightPasswordsNotLimited(t *testing.T) {
	// A hash that takes some milliseconds and no success cache, so the
	// logins overlap in the password check.
	h, err := auth.HashPasswordParams("alice-pw", auth.Argon2Params{Memory: 8 << 10, Time: 2, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	src := deviceConfig(fmt.Sprintf(`
login_limits {
  ipv4_32 = 2
  account = 2
}
mailbox "alice@example.com" {
  password_hash = %q
}
`, h))
	s, err := startServerWith(t, loadFile(t, t.TempDir(), src), nil, func(o *Options) { o.Verifier.CacheTTL = -1 })
	if err != nil {
		t.Fatal(err)
	}
	subm := addrOf(t, s, "submission")
	const n = 12
	var start, done sync.WaitGroup
	start.Add(1)
	errs := make(chan error, n)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.40")}}
			conn, err := d.Dial("tcp", subm)
			if err != nil {
				errs <- err
				return
			}
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			c, err := smtp.NewClientStartTLS(conn, insecureTLS)
			if err != nil {
				conn.Close()
				errs <- err
				return
			}
			defer c.Close()
			start.Wait() // every session is past STARTTLS: AUTH all at once
			if err := c.Auth(sasl.NewPlainClient("", "alice@example.com", "alice-pw")); err != nil {
				errs <- fmt.Errorf("login %d: %w", i+1, err)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	start.Done()
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := s.guard.Stats(); st.Refused != 0 {
		t.Errorf("the guard refused %d right passwords", st.Refused)
	}
}
