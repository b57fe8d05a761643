package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"mailpost/config"
	"mailpost/pop3"
	"mailpost/storage"
)

// fakeClock is the server's retention clock in these tests: days pass at
// the test's word.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

const retentionMailboxes = `
mailbox "keep@example.com" {
  password_hash = %[1]q
  retention     = "30d"
}
mailbox "zero@example.com" {
  password_hash = %[1]q
  retention     = "0d"
}
mailbox "newest@example.com" {
  password_hash = %[1]q
  sort_order    = "descending"
}
`

// startRetentionServer runs mailpost on loopback with the mailboxes above
// and clock as its retention clock.
func startRetentionServer(t *testing.T, clock *fakeClock) *testServer {
	t.Helper()
	dir := t.TempDir()
	src := fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
}
%s
`, pop3sOnly) + fmt.Sprintf(retentionMailboxes, demoHash)
	s, err := startServerWith(t, loadFile(t, dir, src), nil, func(o *Options) { o.Now = clock.Now })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func deliverN(t *testing.T, s *testServer, to string, subjects ...string) []storage.MessageInfo {
	t.Helper()
	var out []storage.MessageInfo
	for _, subj := range subjects {
		info, _, err := Deliver(s.cfg, s.store, to, strings.NewReader("Subject: "+subj+"\r\n\r\nbody of "+subj+"\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, info)
	}
	return out
}

// capa returns the CAPA lines of an open session.
func (p *popClient) capa() []string {
	p.t.Helper()
	if r := p.cmd("CAPA"); !strings.HasPrefix(r, "+OK") {
		p.t.Fatalf("CAPA: %q", r)
	}
	var caps []string
	for l := p.line(); l != "."; l = p.line() {
		caps = append(caps, l)
	}
	return caps
}

// multi reads the lines of a multi-line reply after its status line,
// undoing dot-stuffing.
func (p *popClient) multi() []string {
	p.t.Helper()
	var out []string
	for l := p.line(); l != "."; l = p.line() {
		out = append(out, strings.TrimPrefix(l, "."))
	}
	return out
}

func expireCap(caps []string) string {
	for _, c := range caps {
		if strings.HasPrefix(c, "EXPIRE") {
			return c
		}
	}
	return ""
}

// TestRetentionLive: deliver 3, a real client (Python's poplib) retrieves 2
// and quits; 31 days later those two are gone at login, the unread one
// stays with its UIDL; the sweep removes retrieved mail of a mailbox nobody
// logs in to, skipping one a session holds.
func TestRetentionLive(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed (scripts/install-test-deps.sh installs it)")
	}
	day0 := time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: day0}
	s := startRetentionServer(t, clock)
	addr := popsAddr(t, s)
	const keep = "keep@example.com"
	msgs := deliverN(t, s, keep, "one", "two", "three")

	script := `
import json, poplib, ssl, sys
p = poplib.POP3_SSL(sys.argv[1], int(sys.argv[2]), context=ssl._create_unverified_context(), timeout=20)
before = p.capa().get("EXPIRE")
p.user(sys.argv[3]); p.pass_(sys.argv[4])
after = p.capa().get("EXPIRE")
p.retr(1); p.retr(3)
p.top(2, 0)
uidl = [l.decode().split()[1] for l in p.uidl()[1]]
p.quit()
print(json.dumps({"before": before, "after": after, "uidl": uidl}))
`
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("python3", "-c", script, host, port, keep, "demo-password").Output()
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	var got struct {
		Before, After []string
		UIDL          []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// Mailboxes differ (30, 0, NEVER): the lowest with USER before login,
	// the mailbox's own after.
	if strings.Join(got.Before, " ") != "0 USER" || strings.Join(got.After, " ") != "30" {
		t.Errorf("EXPIRE before login %q, after %q; want [0 USER] and [30]", got.Before, got.After)
	}
	if strings.Join(got.UIDL, " ") != msgs[0].UIDL+" "+msgs[1].UIDL+" "+msgs[2].UIDL {
		t.Errorf("UIDLs %v", got.UIDL)
	}
	// The first retrieval is on disk, dated by the server's clock; TOP did
	// not count.
	list, _ := s.store.List(keep)
	if len(list) != 3 || !list[0].Retrieved.Equal(day0) || !list[1].Retrieved.IsZero() || !list[2].Retrieved.Equal(day0) {
		t.Fatalf("after the session: %+v", list)
	}

	stat := func() string {
		p := dialPOP(t, addr)
		if r := p.login(keep, "demo-password"); !strings.HasPrefix(r, "+OK") {
			t.Fatal(r)
		}
		r := p.cmd("STAT")
		p.cmd("QUIT")
		return r
	}
	clock.Set(day0.Add(30*storage.Day - time.Minute))
	if r := stat(); !strings.HasPrefix(r, "+OK 3 ") {
		t.Errorf("a minute before 30 days: STAT %q, want 3 messages", r)
	}
	clock.Set(day0.Add(31 * storage.Day))
	p := dialPOP(t, addr)
	if r := p.login(keep, "demo-password"); r != "+OK maildrop has 1 messages ("+fmt.Sprint(msgs[1].Size)+" octets)" {
		t.Fatalf("login after 31 days: %q", r)
	}
	if r := p.cmd("UIDL 1"); r != "+OK 1 "+msgs[1].UIDL {
		t.Errorf("survivor's UIDL: %q, want %s", r, msgs[1].UIDL)
	}
	if r := p.cmd("RETR 1"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	if body := p.multi(); body[0] != "Subject: two" {
		t.Errorf("survivor is %q", body)
	}
	p.cmd("QUIT")
	if n := s.prom.expired.Load(); n != 2 {
		t.Errorf("expired counter %d, want 2", n)
	}

	// The sweep: 30 days after that retrieval, with nobody logging in. A
	// mailbox a session holds is skipped, not waited for.
	clock.Set(day0.Add(61 * storage.Day))
	unlock, err := s.store.Lock(keep) // as a POP3 session would
	if err != nil {
		t.Fatal(err)
	}
	sw := &sweeper{}
	if res := s.sweepRetention(t.Context(), sw, 100); res.Locked != 1 || res.Expired != 0 {
		t.Errorf("sweep over a held mailbox: %+v", res)
	}
	unlock()
	if res := s.sweepRetention(t.Context(), sw, 100); res.Expired != 1 || res.Locked != 0 || res.Mailboxes != 2 {
		t.Errorf("sweep: %+v, want 1 expired over 2 mailboxes", res)
	}
	if n, _, _ := s.store.Usage(keep); n != 0 {
		t.Errorf("%d messages left", n)
	}
	if n := s.prom.expired.Load(); n != 3 {
		t.Errorf("expired counter %d, want 3", n)
	}
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "mailpost_expired_messages_total 3\n") {
		t.Errorf("/metrics lacks mailpost_expired_messages_total 3")
	}
	// New mail never reuses a removed message's UIDL.
	fresh := deliverN(t, s, keep, "five")[0]
	for _, m := range msgs {
		if fresh.UIDL == m.UIDL {
			t.Errorf("UIDL %s reused", m.UIDL)
		}
	}
}

// TestSweepBudget: a sweep stops at its budget, says so, and the next one
// goes on where it stopped.
func TestSweepBudget(t *testing.T) {
	day0 := time.Date(2026, 1, 10, 9, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: day0}
	s := startRetentionServer(t, clock)
	for _, mb := range []string{"keep@example.com", "zero@example.com"} {
		var ids []uint64
		for _, m := range deliverN(t, s, mb, "a", "b", "c") {
			ids = append(ids, m.ID)
		}
		if err := s.store.CommitSession(mb, nil, ids, day0); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(day0.Add(40 * storage.Day))
	sw := &sweeper{}
	total := 0
	for i := 0; i < 10; i++ {
		res := s.sweepRetention(t.Context(), sw, 2)
		total += res.Expired
		if res.Expired > 2 {
			t.Fatalf("sweep %d removed %d, over its budget", i, res.Expired)
		}
		if !res.More {
			break
		}
	}
	if total != 6 {
		t.Errorf("removed %d in all, want 6", total)
	}
	// A cancelled sweep does nothing.
	deliverN(t, s, "zero@example.com", "d")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if res := s.sweepRetention(ctx, sw, 100); res.Mailboxes != 0 {
		t.Errorf("cancelled sweep: %+v", res)
	}
}

// TestSortDescending: message 1 is the newest; UIDLs stay the messages'
// own; DELE removes the message it names.
func TestSortDescending(t *testing.T) {
	s := startRetentionServer(t, &fakeClock{t: time.Now()})
	const mb = "newest@example.com"
	msgs := deliverN(t, s, mb, "first", "second", "third")
	p := dialPOP(t, popsAddr(t, s))
	if r := p.login(mb, "demo-password"); !strings.HasPrefix(r, "+OK maildrop has 3 messages") {
		t.Fatal(r)
	}
	if caps := p.capa(); expireCap(caps) != "EXPIRE NEVER" {
		t.Errorf("CAPA after login: %v", caps)
	}
	p.cmd("UIDL")
	uidl := p.multi()
	want := []string{"1 " + msgs[2].UIDL, "2 " + msgs[1].UIDL, "3 " + msgs[0].UIDL}
	if strings.Join(uidl, ",") != strings.Join(want, ",") {
		t.Errorf("UIDL %v, want %v", uidl, want)
	}
	p.cmd("RETR 1")
	if body := p.multi(); body[0] != "Subject: third" {
		t.Errorf("message 1 is %q, want the newest", body[0])
	}
	if r := p.cmd("DELE 1"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	if r := p.cmd("QUIT"); r != "+OK bye, 2 messages left" {
		t.Fatal(r)
	}
	list, _ := s.store.List(mb)
	if len(list) != 2 || list[0].ID != msgs[0].ID || list[1].ID != msgs[1].ID {
		t.Errorf("left %+v, want first and second", list)
	}
	// Retention NEVER still records the retrieval (a later policy counts
	// from it), but removes nothing.
	if !list[0].Retrieved.IsZero() || !list[1].Retrieved.IsZero() {
		t.Errorf("unretrieved messages carry a retrieval: %+v", list)
	}
}

// TestExpireZeroLive: EXPIRE 0 deletes what a session retrieved at QUIT; a
// session dropped without QUIT deletes nothing and records nothing, so the
// next session still finds the message.
func TestExpireZeroLive(t *testing.T) {
	s := startRetentionServer(t, &fakeClock{t: time.Now()})
	const mb = "zero@example.com"
	msgs := deliverN(t, s, mb, "a", "b", "c")
	addr := popsAddr(t, s)

	p := dialPOP(t, addr)
	p.login(mb, "demo-password")
	if c := expireCap(p.capa()); c != "EXPIRE 0" {
		t.Errorf("CAPA after login: %q", c)
	}
	p.cmd("RETR 2")
	p.multi()
	if r := p.cmd("QUIT"); r != "+OK bye, 2 messages left" {
		t.Errorf("QUIT: %q", r)
	}
	list, _ := s.store.List(mb)
	if len(list) != 2 || list[0].ID != msgs[0].ID || list[1].ID != msgs[2].ID {
		t.Fatalf("after QUIT: %+v", list)
	}

	// Dropped: retrieve message 1, then close the connection.
	p = dialPOP(t, addr)
	p.login(mb, "demo-password")
	p.cmd("RETR 1")
	p.multi()
	p.c.Close()
	// The session ends (and releases the lock) after the server notices.
	deadline := time.Now().Add(10 * time.Second)
	for {
		unlock, err := s.store.Lock(mb)
		if err == nil {
			unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dropped session still holds the mailbox after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p = dialPOP(t, addr)
	if r := p.login(mb, "demo-password"); !strings.HasPrefix(r, "+OK maildrop has 2 messages") {
		t.Errorf("after a dropped session: %q", r)
	}
	p.cmd("QUIT")
	list, _ = s.store.List(mb)
	if len(list) != 2 || !list[0].Retrieved.IsZero() {
		t.Errorf("after the drop: %+v", list)
	}
}

// TestDroppedSessionRecordsRetrieval: with a retention, a retrieval counts
// even when the client never says QUIT (a client that only ever hangs up
// would otherwise keep its mail for ever).
func TestDroppedSessionRecordsRetrieval(t *testing.T) {
	day0 := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	s := startRetentionServer(t, &fakeClock{t: day0})
	const mb = "keep@example.com"
	deliverN(t, s, mb, "a", "b")
	p := dialPOP(t, popsAddr(t, s))
	p.login(mb, "demo-password")
	p.cmd("DELE 1")
	p.cmd("RETR 2")
	p.multi()
	p.c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := s.store.List(mb)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 2 && list[1].Retrieved.Equal(day0) {
			if !list[0].Retrieved.IsZero() {
				t.Errorf("message 1 was never retrieved: %+v", list[0])
			}
			break // and DELE 1 was not applied (RFC 1939 §6)
		}
		if time.Now().After(deadline) {
			t.Fatalf("retrieval not recorded 10 s after the drop: %+v", list)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExpirePolicy(t *testing.T) {
	mk := func(days ...int) *config.Config {
		cfg := &config.Config{}
		for i, d := range days {
			cfg.Mailboxes = append(cfg.Mailboxes, &config.Mailbox{Address: fmt.Sprintf("m%d@example.com", i), POP3: true, RetentionDays: d})
		}
		return cfg
	}
	tests := []struct {
		cfg  *config.Config
		want pop3.Expire
	}{
		{mk(), pop3.Expire{Days: pop3.ExpireNever}},
		{mk(-1, -1), pop3.Expire{Days: pop3.ExpireNever}},
		{mk(30, 30), pop3.Expire{Days: 30}},
		{mk(30, -1), pop3.Expire{Days: 30, PerUser: true}},
		{mk(-1, 30), pop3.Expire{Days: 30, PerUser: true}},
		{mk(30, 7, -1), pop3.Expire{Days: 7, PerUser: true}},
		{mk(0, 30), pop3.Expire{Days: 0, PerUser: true}},
	}
	for i, tt := range tests {
		if got := expirePolicy(tt.cfg); *got != tt.want {
			t.Errorf("%d: %+v, want %+v", i, *got, tt.want)
		}
	}
	// Mailboxes without POP3 do not count.
	cfg := mk(30, 5)
	cfg.Mailboxes[1].POP3 = false
	if got := expirePolicy(cfg); *got != (pop3.Expire{Days: 30}) {
		t.Errorf("with a non-POP3 mailbox: %+v", *got)
	}
}
