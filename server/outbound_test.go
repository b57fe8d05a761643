package server

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
)

// relayStub is a go-smtp server on loopback that keeps what it is given.
type relayStub struct {
	addr string
	mu   sync.Mutex
	got  []string // message data
	rcpt [][]string
}

func startRelayStub(t *testing.T) *relayStub {
	t.Helper()
	r := &relayStub{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &relayStubSession{r: r}, nil }))
	s.Domain = "relay.test"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return r
}

func (r *relayStub) messages() ([]string, [][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...), append([][]string(nil), r.rcpt...)
}

type relayStubSession struct {
	r  *relayStub
	to []string
}

func (s *relayStubSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *relayStubSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *relayStubSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	s.r.got = append(s.r.got, string(b))
	s.r.rcpt = append(s.r.rcpt, s.to)
	return nil
}
func (s *relayStubSession) Reset()        { s.to = nil }
func (s *relayStubSession) Logout() error { return nil }

const outboundSubmission = pop3sOnly + `
submission {
  unencrypted_or_tls_bindings = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:587:tls"]
}
mailbox "bob@example.com" {
  password_hash = "` + demoHash + `"
}
`

// TestOutboundEndToEnd: a message submitted for another domain waits in
// the queue while there is no outbound block, leaves (DKIM-signed) as soon
// as a reload adds one, and `mailpost dns` (through the control socket)
// publishes the key it was signed with.
func TestOutboundEndToEnd(t *testing.T) {
	relay := startRelayStub(t)
	dir := t.TempDir()
	s, err := startServer(t, testConfig(t, dir, outboundSubmission))
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: bob@example.com\r\nTo: carol@example.net\r\nSubject: out\r\n\r\nHi Carol\r\n"
	if err := submit(t, addrOf(t, s, "submission"), "bob@example.com", "bob@example.com", []string{"carol@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if q, _ := s.store.Queue(); len(q) != 1 {
		t.Fatalf("queue holds %d, want 1 (no outbound block, nothing leaves)", len(q))
	}
	if got, _ := relay.messages(); len(got) != 0 {
		t.Fatal("mail left without an outbound block")
	}

	// Reload with an outbound block: the runner takes the new settings.
	cfg := testConfig(t, dir, outboundSubmission+`
outbound {
  relay {
    address = "`+relay.addr+`"
    tls     = "none"
  }
  dkim {
    selector = "mail"
  }
}
`)
	if changed, err := s.Apply(cfg); err != nil || !changed {
		t.Fatalf("apply: %v %v", changed, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if q, _ := s.store.Queue(); len(q) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue was not delivered after the reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, rcpts := relay.messages()
	if len(got) != 1 || strings.Join(rcpts[0], ",") != "carol@example.net" {
		t.Fatalf("relay got %d messages, recipients %v", len(got), rcpts)
	}

	records, err := NewClient(cfg.DataDir).DNS()
	if err != nil {
		t.Fatal(err)
	}
	var txt string
	for _, line := range strings.Split(records, "\n") {
		if strings.HasPrefix(line, "mail._domainkey.example.com.") {
			_, v, _ := strings.Cut(line, "TXT\t")
			txt = strings.ReplaceAll(strings.Trim(v, `"`), `" "`, "")
		}
	}
	if !strings.Contains(txt, "k=ed25519") {
		t.Fatalf("no DKIM record in\n%s", records)
	}
	vs, err := dkim.VerifyWithOptions(strings.NewReader(got[0]), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return []string{txt}, nil }})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.com" {
		t.Fatalf("the relayed message does not verify against the published key: %v %+v", err, vs)
	}
	for _, want := range []string{
		"example.com.\t3600\tIN\tMX\t10 mail.example.com.",
		"_dmarc.example.com.",
		"_submission._tcp.example.com.\t3600\tIN\tSRV\t0 1 587 mail.example.com.",
		"_pop3s._tcp.example.com.",
	} {
		if !strings.Contains(records, want) {
			t.Errorf("dns output lacks %q:\n%s", want, records)
		}
	}
	if err := NewClient(cfg.DataDir).QueueAction("retry", 999); err == nil || !strings.Contains(err.Error(), "no queue entry 999") {
		t.Errorf("retry of a missing entry: %v", err)
	}
}
