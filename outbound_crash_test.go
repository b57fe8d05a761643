package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/server"
)

// countingRelay is a loopback smarthost that counts deliveries per
// Message-ID, a little slowly so that deliveries are in flight when the
// server dies.
type countingRelay struct {
	addr string
	mu   sync.Mutex
	seen map[string]int
}

func (c *countingRelay) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.seen))
	for k, v := range c.seen {
		out[k] = v
	}
	return out
}

type countingSession struct{ r *countingRelay }

func (s countingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s countingSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s countingSession) Reset()                               {}
func (s countingSession) Logout() error                        { return nil }
func (s countingSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, m.Body)
	time.Sleep(3 * time.Millisecond)
	s.r.mu.Lock()
	s.r.seen[m.Header.Get("Message-ID")]++
	s.r.mu.Unlock()
	return nil
}

func startCountingRelay(t *testing.T) *countingRelay {
	t.Helper()
	r := &countingRelay{seen: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return countingSession{r}, nil }))
	s.Domain = "relay.test"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.ErrorLog = log.New(io.Discard, "", 0) // the kill resets connections
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return r
}

// TestOutboundSurvivesKill submits and delivers under load, kills `mailpost
// serve` with SIGKILL in the middle, restarts it, and checks that every
// message that got its 250 reaches the relay, and only messages in flight
// at the kill twice: between the relay's 250 and the commit that dequeues
// it, which is at most the runner's 16 concurrent deliveries.
func TestOutboundSurvivesKill(t *testing.T) {
	relay := startCountingRelay(t)
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, submissionConfig(certFile, keyFile)+`
outbound {
  relay {
    address = "`+relay.addr+`"
    tls     = "none"
  }
}
`)
	in := startServe(t, dir)

	const submitters = 4
	var (
		mu        sync.Mutex
		accepted  []string // got 250 after DATA
		uncertain []string // the connection died during DATA: stored or not
		wg, ready sync.WaitGroup
	)
	ready.Add(submitters)
	killAt := make(chan struct{})
	var once sync.Once
	for w := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.DialTLS(in.addrs["submissions"], &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				ready.Done()
				t.Error(err)
				return
			}
			defer c.Close()
			err = c.Auth(sasl.NewPlainClient("", "alice@example.com", "demo-password"))
			// Everyone logs in before anyone sends, so the kill cannot
			// land on a login (argon2 is slow on purpose).
			ready.Done()
			ready.Wait()
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; i < 500; i++ {
				id := fmt.Sprintf("<crash-%d-%d@example.com>", w, i)
				msg := "From: alice@example.com\r\nTo: x@elsewhere.org\r\nMessage-ID: " + id + "\r\nSubject: load\r\n\r\n" +
					strings.Repeat("body line\r\n", 100)
				err := c.SendMail("alice@example.com", []string{"x@elsewhere.org"}, strings.NewReader(msg))
				mu.Lock()
				if err != nil {
					uncertain = append(uncertain, id)
					mu.Unlock()
					return // the server is gone
				}
				accepted = append(accepted, id)
				if len(accepted) == 60 {
					once.Do(func() { close(killAt) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-killAt:
	case <-time.After(30 * time.Second):
		t.Fatal("submissions too slow to reach the kill point")
	}
	if err := in.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-in.done
	wg.Wait()
	before := relay.counts()

	in2 := startServe(t, dir)
	client := server.NewClient(in2.dir + "/data")
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := client.Queue()
		if err == nil && len(q) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained after restart: %d left (%v)", len(q), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	in2.stop()

	counts := relay.counts()
	missing, dups := 0, 0
	for _, id := range accepted {
		switch n := counts[id]; {
		case n == 0:
			missing++
			t.Errorf("accepted message %s never delivered", id)
		case n > 1:
			dups++
		}
	}
	for _, id := range uncertain {
		if counts[id] > 1 {
			dups++
		}
	}
	t.Logf("accepted %d (delivered before the kill: %d), cut during DATA %d, lost %d, delivered twice %d",
		len(accepted), len(before), len(uncertain), missing, dups)
	if dups > 16 {
		t.Errorf("%d messages delivered twice; at most the 16 in flight may be", dups)
	}
	if len(before) == 0 || len(before) >= len(accepted) {
		t.Logf("note: the kill did not land mid-delivery this run (%d of %d delivered before it)", len(before), len(accepted))
	}
}
