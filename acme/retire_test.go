package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"mailpost/acme/acmetest"
	"mailpost/config"
)

// caCounter sits below every manager's caTransport (Service.caHook), so it
// sees only requests that really leave for the CA. It counts them per
// manager (in creation order, from 1) and counts new-order requests (RFC
// 8555 §7.4) per identifier, read from the JWS payload.
type caCounter struct {
	mu       sync.Mutex
	managers int
	requests map[int]int
	orders   map[string]int
}

func newCACounter() *caCounter {
	return &caCounter{requests: map[int]int{}, orders: map[string]int{}}
}

func (c *caCounter) wrap(base http.RoundTripper) http.RoundTripper {
	c.mu.Lock()
	c.managers++
	gen := c.managers
	c.mu.Unlock()
	return countingTransport{c: c, gen: gen, base: base}
}

func (c *caCounter) requestsOf(gen int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests[gen]
}

func (c *caCounter) ordersFor(domain string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.orders[domain]
}

type countingTransport struct {
	c    *caCounter
	gen  int
	base http.RoundTripper
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var ids []string
	if req.Method == http.MethodPost && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		ids = orderIdentifiers(body)
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	t.c.mu.Lock()
	t.c.requests[t.gen]++
	for _, id := range ids {
		t.c.orders[id]++
	}
	t.c.mu.Unlock()
	return t.base.RoundTrip(req)
}

// orderIdentifiers returns the names of a new-order request (a flattened
// JWS whose payload has "identifiers"), or nothing for any other request.
func orderIdentifiers(body []byte) []string {
	var jws struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(body, &jws) != nil || jws.Payload == "" {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return nil
	}
	var order struct {
		Identifiers []struct {
			Value string `json:"value"`
		} `json:"identifiers"`
	}
	if json.Unmarshal(raw, &order) != nil {
		return nil
	}
	var out []string
	for _, id := range order.Identifiers {
		out = append(out, id.Value)
	}
	return out
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRemovedNameIsNotRenewed: two names renew every ~2 s (8-second
// certificates, renew_before 6s); a reload removes one. Over the next
// renewal periods the remaining name keeps renewing while no request of the
// retired manager, and no order for the removed name, reaches Pebble, and
// the removed name's stored certificate is left alone. Adding the name back
// gets it a new certificate.
func TestRemovedNameIsNotRenewed(t *testing.T) {
	const kept, gone = "a.example.com", "b.example.com"
	dns := acmetest.StartDNS(t)
	tlsPort := acmetest.FreePort(t)
	p := acmetest.Start(t, acmetest.Options{DNS: dns, HTTPPort: acmetest.FreePort(t), TLSPort: tlsPort, Validity: 8 * time.Second})
	st := openStore(t)
	logs := &syncBuffer{}
	svc := New(Options{Store: st, Log: slog.New(slog.NewTextHandler(logs, nil)), MinBackoff: 100 * time.Millisecond})
	ctr := newCACounter()
	svc.caHook = ctr.wrap
	t.Cleanup(svc.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})
	serveALPN(t, tlsPort, svc)
	roots := p.Roots(t)

	both := []*config.Certificate{acmeCert(p, p.DirectoryURL, config.ChallengeTLSALPN01, 6*time.Second, kept, gone)}
	if err := svc.Configure(both); err != nil {
		t.Fatal(err)
	}
	waitCert(t, svc, kept, nil, 20*time.Second)
	b1 := waitCert(t, svc, gone, nil, 20*time.Second)
	// The removed name has a live renewal timer in the first manager: it
	// renews once before the reload.
	b2 := waitCert(t, svc, gone, b1, 20*time.Second)
	verify(t, b2, roots, gone)
	svc.mu.Lock()
	old := svc.managers[keyFor(both[0].ACME)]
	svc.mu.Unlock()
	// Its renewal has just completed and the next is ~2 s away, so no
	// order for it is in flight: from the reload on there must be none.
	goneOrders := ctr.ordersFor(gone)
	pebbleGone := strings.Count(p.Log(), `"`+gone+`"`)

	onlyKept := []*config.Certificate{acmeCert(p, p.DirectoryURL, config.ChallengeTLSALPN01, 6*time.Second, kept)}
	if err := svc.Configure(onlyKept); err != nil {
		t.Fatal(err)
	}
	// The kept name is served throughout (from the store, by the new
	// manager), the removed one no longer.
	if svc.Certificate(kept) == nil {
		t.Error("the kept name has no certificate right after the reload")
	}
	if svc.Certificate(gone) != nil || svc.State(gone).Pending != "not managed" {
		t.Errorf("the removed name is still managed: %+v", svc.State(gone))
	}

	// The kept name's renewal may have been in flight in the old manager
	// at the reload: let it end (the kept name renews once through the
	// new manager) before counting the old manager's requests.
	a1 := waitCert(t, svc, kept, svc.Certificate(kept), 20*time.Second)
	oldRequests := ctr.requestsOf(1)
	stored, err := st.GetBlob(namespace, p.DirectoryURL+" "+gone)
	if err != nil || stored == nil {
		t.Fatalf("the removed name's certificate is not in the store: %v", err)
	}
	storedCert, err := tls.X509KeyPair(stored, stored)
	if err != nil {
		t.Fatal(err)
	}

	// Two more renewal periods of the kept name. The removed name's
	// certificate falls due in that time: the old manager's timer fires.
	a2 := waitCert(t, svc, kept, a1, 20*time.Second)
	a3 := waitCert(t, svc, kept, a2, 20*time.Second)
	verify(t, a3, roots, kept)
	if b := storedCert.Leaf.NotAfter; time.Now().Before(b) {
		// Not due yet means the timer may not have fired: wait until the
		// removed certificate has expired, then one renewal more.
		time.Sleep(time.Until(b))
		waitCert(t, svc, kept, svc.Certificate(kept), 20*time.Second)
	}
	if n := ctr.requestsOf(1); n != oldRequests {
		t.Errorf("the retired manager sent %d requests to the CA after the reload", n-oldRequests)
	}
	if n := ctr.ordersFor(gone); n != goneOrders {
		t.Errorf("%d new orders for the removed name %s after the reload", n-goneOrders, gone)
	}
	if n := strings.Count(p.Log(), `"`+gone+`"`); n != pebbleGone {
		t.Errorf("Pebble saw %s %d more times after the reload", gone, n-pebbleGone)
	}
	if ctr.ordersFor(kept) < 3 {
		t.Errorf("only %d orders for the kept name", ctr.ordersFor(kept))
	}
	if now, _ := st.GetBlob(namespace, p.DirectoryURL+" "+gone); !bytes.Equal(now, stored) {
		t.Error("the removed name's stored certificate changed after the reload")
	}
	// The retired manager's own way out is shut too.
	if _, err := old.client.HTTPClient.Get(p.DirectoryURL); !errors.Is(err, errRetired) {
		t.Errorf("the retired client reached the CA: %v", err)
	}
	if err := old.m.Cache.Put(context.Background(), gone, []byte("junk")); !errors.Is(err, errRetired) {
		t.Errorf("the retired cache accepted a put: %v", err)
	}
	if now, _ := st.GetBlob(namespace, p.DirectoryURL+" "+gone); !bytes.Equal(now, stored) {
		t.Error("the retired cache wrote the store")
	}
	if n := ctr.requestsOf(1); n != oldRequests {
		t.Errorf("the retired manager sent %d requests to the CA", n-oldRequests)
	}
	if n := strings.Count(logs.String(), "ACME client retired"); n != 1 {
		t.Errorf("retirement logged %d times, want once", n)
	}
	if l := logs.String(); !strings.Contains(l, "removed=["+gone+"]") || !strings.Contains(l, "kept_by_a_new_client=["+kept+"]") {
		t.Errorf("the retirement log does not name the names:\n%s", l)
	}

	// Adding the name back: the current manager (no retirement: nothing
	// is taken away) gets it a new certificate from the CA.
	if err := svc.Configure(both); err != nil {
		t.Fatal(err)
	}
	b3 := waitCert(t, svc, gone, &storedCert, 20*time.Second)
	verify(t, b3, roots, gone)
	if ctr.ordersFor(gone) <= goneOrders {
		t.Error("the re-added name was served without a new order")
	}
	if n := strings.Count(logs.String(), "ACME client retired"); n != 1 {
		t.Errorf("adding a name retired a manager (%d retirements logged)", n)
	}
	waitCert(t, svc, kept, svc.Certificate(kept), 20*time.Second)
}

// TestRetireOnMoveAndFailedReload covers the other ways a manager loses
// names, without a CA (its directory port refuses): a reload that fails
// changes nothing, a name moved to other ACME settings retires the manager
// it left, and a config without ACME retires them all.
func TestRetireOnMoveAndFailedReload(t *testing.T) {
	dirURL := fmt.Sprintf("https://127.0.0.1:%d/dir", acmetest.FreePort(t))
	logs := &syncBuffer{}
	svc := New(Options{Store: openStore(t), Log: slog.New(slog.NewTextHandler(logs, nil)), MinBackoff: time.Minute})
	t.Cleanup(svc.Close)
	cert := func(name, challenge string, domains ...string) *config.Certificate {
		return &config.Certificate{Name: name, Names: domains, ACME: &config.ACME{Domains: domains,
			DirectoryURL: dirURL, Challenge: challenge, RenewBefore: time.Hour}}
	}
	managerOf := func(d string) *manager {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		if n := svc.names[d]; n != nil {
			return n.mgr
		}
		return nil
	}
	retirements := func() int { return strings.Count(logs.String(), "ACME client retired") }

	if err := svc.Configure([]*config.Certificate{cert("a", config.ChallengeHTTP01, "x.example.com", "y.example.com")}); err != nil {
		t.Fatal(err)
	}
	m1 := managerOf("x.example.com")
	if m1 == nil || managerOf("y.example.com") != m1 {
		t.Fatal("x and y do not share a manager")
	}

	// A ca_file that no longer parses fails the reload before anything
	// is retired.
	bad := cert("b", config.ChallengeTLSALPN01, "y.example.com")
	bad.ACME.CAFile, bad.ACME.CAPEM = "/etc/mailpost/ca.pem", []byte("not a certificate")
	err := svc.Configure([]*config.Certificate{cert("a", config.ChallengeHTTP01, "x.example.com"), bad})
	if err == nil || !strings.Contains(err.Error(), "holds no usable certificate") {
		t.Fatalf("bad ca_file: err = %v", err)
	}
	if m1.ca.retired.Load() || m1.cache.retired.Load() || managerOf("y.example.com") != m1 || retirements() != 0 {
		t.Fatal("a failed reload changed the running managers")
	}

	// y moves to tls-alpn-01: the manager it leaves is retired, x goes
	// on under a fresh one.
	if err := svc.Configure([]*config.Certificate{cert("a", config.ChallengeHTTP01, "x.example.com"),
		cert("b", config.ChallengeTLSALPN01, "y.example.com")}); err != nil {
		t.Fatal(err)
	}
	if !m1.ca.retired.Load() || !m1.cache.retired.Load() || len(*m1.names.Load()) != 0 {
		t.Error("the manager y left is not retired")
	}
	mx, my := managerOf("x.example.com"), managerOf("y.example.com")
	if mx == nil || mx == m1 || my == nil || my == mx || my.key.challenge != config.ChallengeTLSALPN01 {
		t.Errorf("managers after the move: x %p, y %p, old %p", mx, my, m1)
	}
	if l := logs.String(); retirements() != 1 || !strings.Contains(l, "moved_to_other_settings=[y.example.com]") ||
		!strings.Contains(l, "kept_by_a_new_client=[x.example.com]") || !strings.Contains(l, "removed=[]") {
		t.Errorf("retirement log:\n%s", l)
	}

	// The same config again keeps everything.
	if err := svc.Configure([]*config.Certificate{cert("a", config.ChallengeHTTP01, "x.example.com"),
		cert("b", config.ChallengeTLSALPN01, "y.example.com")}); err != nil {
		t.Fatal(err)
	}
	if managerOf("x.example.com") != mx || managerOf("y.example.com") != my || retirements() != 1 {
		t.Error("an unchanged config replaced a manager")
	}

	// No ACME left: both are retired, nothing is managed.
	if err := svc.Configure(nil); err != nil {
		t.Fatal(err)
	}
	if !mx.ca.retired.Load() || !my.ca.retired.Load() || retirements() != 3 {
		t.Errorf("after removing every ACME name: x retired %v, y retired %v, %d retirements logged",
			mx.ca.retired.Load(), my.ca.retired.Load(), retirements())
	}
	if st := svc.State("x.example.com"); st.Pending != "not managed" {
		t.Errorf("x after removal: %+v", st)
	}
}
