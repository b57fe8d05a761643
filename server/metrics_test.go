package server

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics from an admin listener and parses the text format.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := freshClient().Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// freshClient opens a new connection per request, so that a kept-alive one
// from an earlier scrape cannot answer for a listener that is gone.
func freshClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// value finds the sample of family name whose labels include want
// ("k=v" pairs); it fails the test when there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
		t.Fatalf("%s%v is neither counter nor gauge", name, want)
	}
	t.Fatalf("no sample %s%v", name, want)
	return 0
}

// TestMetricsScrape drives real POP3 and submission sessions and a reload
// against a running server, then scrapes its admin listener over HTTP and
// checks that each figure moved by exactly what was done.
func TestMetricsScrape(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, pop3sOnly+`
submission {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl"]
}
admin {
  bindings = ["127.0.0.1:0"]
}
mailbox "bob@example.com" {
  password_hash = "`+demoHash+`"
}`)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin := addrOf(t, s, "admin")

	// Before anything happened.
	fams := scrape(t, admin)
	if v := value(t, fams, "mailpost_logins_total", "protocol=pop3", "result=success"); v != 0 {
		t.Errorf("logins before any session = %v", v)
	}
	if v := value(t, fams, "mailpost_mailboxes"); v != 3 {
		t.Errorf("mailpost_mailboxes = %v, want 3", v)
	}

	// Submission: one local, one outside (queued: no outbound block), one
	// over alice's 1 KiB quota (refused).
	sub := addrOf(t, s, "submission")
	if err := submit(t, sub, "alice@example.com", "alice@example.com", []string{"bob@example.com"}, "Subject: hi\n\nhello\n"); err != nil {
		t.Fatal(err)
	}
	if err := submit(t, sub, "alice@example.com", "alice@example.com", []string{"carol@example.net"}, "Subject: out\n\nbye\n"); err != nil {
		t.Fatal(err)
	}
	big := "Subject: big\n\n" + strings.Repeat(strings.Repeat("x", 76)+"\n", 30)
	if err := submit(t, sub, "bob@example.com", "bob@example.com", []string{"alice@example.com"}, big); !strings.HasPrefix(replyText(err), "552") {
		t.Fatalf("a message over alice's quota: %s, want 552", replyText(err))
	}
	// An unknown local recipient is refused at RCPT.
	if err := submit(t, sub, "alice@example.com", "alice@example.com", []string{"nobody@example.com"}, "x\n"); !strings.HasPrefix(replyText(err), "550") {
		t.Fatalf("unknown recipient: %s, want 550", replyText(err))
	}
	c, err := smtp.DialStartTLS(sub, insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "bob@example.com", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	c.Quit()

	// POP3: a wrong password, then bob reads and deletes his message.
	p := dialPOP(t, popsAddr(t, s))
	if r := p.login("bob@example.com", "nope"); !strings.HasPrefix(r, "-ERR") {
		t.Fatalf("wrong password: %q", r)
	}
	if r := p.login("bob@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	if r := p.cmd("RETR 1"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}
	for p.line() != "." {
	}
	p.cmd("DELE 1")
	if r := p.cmd("QUIT"); !strings.HasPrefix(r, "+OK") {
		t.Fatal(r)
	}

	// Reloads: the same file (noop), then a broken one (failed).
	if r := s.ReloadFile("test"); !r.OK || r.Changed {
		t.Fatalf("reloading the same file: %+v", r)
	}
	if err := os.WriteFile(cfg.Filename, []byte("hostname = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ReloadFile("test")

	// Sessions end after the client's QUIT is answered; wait for the
	// gauges to come back to zero before reading the counters.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = scrape(t, admin)
		if value(t, fams, "mailpost_sessions", "protocol=pop3") == 0 &&
			value(t, fams, "mailpost_sessions", "protocol=submission") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sessions still open")
		}
		time.Sleep(20 * time.Millisecond)
	}

	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"mailpost_logins_total", []string{"protocol=pop3", "result=success"}, 1},
		{"mailpost_logins_total", []string{"protocol=pop3", "result=failed"}, 1},
		{"mailpost_logins_total", []string{"protocol=submission", "result=success"}, 4},
		{"mailpost_logins_total", []string{"protocol=submission", "result=failed"}, 1},
		{"mailpost_sessions_total", []string{"protocol=pop3"}, 1},
		{"mailpost_sessions_total", []string{"protocol=submission"}, 5},
		{"mailpost_pop3_retrieved_total", nil, 1},
		{"mailpost_pop3_deleted_total", nil, 1},
		{"mailpost_deliveries_total", []string{"result=stored"}, 1},
		{"mailpost_deliveries_total", []string{"result=queued"}, 1},
		{"mailpost_deliveries_total", []string{"result=refused"}, 2},
		{"mailpost_outbound_queue_length", nil, 1},
		{"mailpost_reloads_total", []string{"result=failed"}, 1},
		{"mailpost_reloads_total", []string{"result=noop"}, 1},
		{"mailpost_reloads_total", []string{"result=ok"}, 0},
		{"mailpost_config_revision", nil, float64(s.Status().ConfigRevision)},
		{"mailpost_mailboxes", nil, 3},
	}
	for _, w := range want {
		if got := value(t, fams, w.name, w.labels...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
	// USER+PASS twice, RETR, DELE, QUIT.
	if got := value(t, fams, "mailpost_commands_total", "protocol=pop3"); got != 7 {
		t.Errorf("pop3 commands = %v, want 7", got)
	}
	// 5 AUTH; MAIL, RCPT, DATA for each of the 3 messages; MAIL, RCPT
	// for the refused recipient.
	if got := value(t, fams, "mailpost_commands_total", "protocol=submission"); got != 5+3*3+2 {
		t.Errorf("submission commands = %v, want 16", got)
	}
	for _, proto := range []string{"pop3", "submission"} {
		in := value(t, fams, "mailpost_received_bytes_total", "protocol="+proto)
		out := value(t, fams, "mailpost_sent_bytes_total", "protocol="+proto)
		if in < 500 || out < 1000 { // TLS handshakes alone are more
			t.Errorf("%s bytes in/out = %v/%v: too few", proto, in, out)
		}
	}
	if got := value(t, fams, "mailpost_received_bytes_total", "protocol=submission"); got < 2000 {
		t.Errorf("submission received %v bytes, less than the 2000-octet message it refused", got)
	}
	// The self-signed certificate: a year or so ahead, not pending.
	exp := value(t, fams, "mailpost_certificate_expiry_seconds", "name=dev", "source=self-signed")
	if exp < 24*3600 || exp > 20*365*24*3600 {
		t.Errorf("certificate expiry in %v s", exp)
	}
	if v := value(t, fams, "mailpost_certificate_pending", "name=dev"); v != 0 {
		t.Errorf("self-signed certificate pending = %v", v)
	}
	fi, err := os.Stat(DatabasePath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	if got := value(t, fams, "mailpost_store_size_bytes"); got != float64(fi.Size()) || got == 0 {
		t.Errorf("store size %v, file is %d", got, fi.Size())
	}
	// Process and Go runtime metrics come along (RSS for the memory target).
	if v := value(t, fams, "mailpost_process_resident_memory_bytes"); v <= 0 {
		t.Errorf("resident memory %v", v)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no go_goroutines")
	}
}

// TestAdminListenerFollowsReload: adding the admin block by reload opens
// the listener, removing it closes it, and a shut-down server answers
// nothing more.
func TestAdminListenerFollowsReload(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, pop3sOnly)
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range s.Listeners() {
		if l.Proto == "admin" {
			t.Fatalf("admin listener without an admin block: %v", l)
		}
	}
	port := freePort(t)
	withAdmin := testConfig(t, dir, pop3sOnly+fmt.Sprintf("\nadmin {\n  bindings = [\"127.0.0.1:%d\"]\n}\n", port))
	if _, err := s.Apply(withAdmin); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, s, "admin")
	if got := value(t, scrape(t, addr), "mailpost_sessions", "protocol=pop3"); got != 0 {
		t.Errorf("pop3 sessions = %v", got)
	}
	if _, err := s.Apply(testConfig(t, dir, pop3sOnly)); err != nil {
		t.Fatal(err)
	}
	if resp, err := freshClient().Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("admin listener still answers after the block was removed: %s", resp.Status)
	}
}
