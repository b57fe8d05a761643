package storage

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A backup taken while deliveries run is a bbolt file of its own, opens with
// Open, passes bbolt's consistency check, and holds every message that was
// committed before it started, byte for byte.
func TestBackupWhileWriting(t *testing.T) {
	s := openTest(t)
	const before = 50
	for i := 0; i < before; i++ {
		deliver(t, s, "alice@example.com", fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))
	}
	// Writers keep committing during the copy; they must neither block
	// on it nor tear it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 10_000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Deliver("bob@example.com", strings.NewReader("Subject: during\r\n\r\nx\r\n"), DeliverOptions{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	dst := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	var announced int64 = -1
	n, err := s.BackupSized(f, func(size int64) { announced = size })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n != announced {
		t.Errorf("wrote %d bytes, announced %d", n, announced)
	}
	if fi, _ := os.Stat(dst); fi.Size() != n {
		t.Errorf("file holds %d bytes, Backup reported %d", fi.Size(), n)
	}

	b, err := Open(dst)
	if err != nil {
		t.Fatalf("backup does not open: %v", err)
	}
	defer b.Close()
	if err := b.db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drained, so the checker ends
			if first == nil {
				first = err
			}
		}
		return first
	}); err != nil {
		t.Fatalf("backup fails bbolt's check: %v", err)
	}
	list, err := b.List("alice@example.com")
	if err != nil || len(list) != before {
		t.Fatalf("backup has %d of alice's %d messages (%v)", len(list), before, err)
	}
	for i, m := range list {
		want := fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)
		if got := string(readMessage(t, b, "alice@example.com", m.ID)); got != want {
			t.Fatalf("message %d in backup = %q, want %q", i, got, want)
		}
	}
	// The copy is one committed state: bob's usage counter agrees with
	// his index, whatever moment the copy caught.
	bl, _ := b.List("bob@example.com")
	if c, _, _ := b.Usage("bob@example.com"); c != len(bl) {
		t.Errorf("backup's usage says %d messages for bob, index has %d", c, len(bl))
	}
	// Same store id, so restored UIDLs stay the ones clients have seen.
	if b.uidlPrefix != s.uidlPrefix {
		t.Errorf("backup's UIDL prefix %q differs from %q", b.uidlPrefix, s.uidlPrefix)
	}
}

// A backup into a writer that fails reports the error.
func TestBackupWriterError(t *testing.T) {
	s := openTest(t)
	deliver(t, s, "a@example.com", "Subject: x\r\n\r\nx\r\n")
	_, err := s.Backup(failingWriter{})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the writer's error", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }

var _ io.Writer = failingWriter{}

func TestRecordLoginAndStats(t *testing.T) {
	s := openTest(t)
	deliver(t, s, "alice@example.com", "Subject: 1\r\n\r\none\r\n")
	deliver(t, s, "alice@example.com", "Subject: 2\r\n\r\ntwo\r\n")
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC)
	s.RecordLogin(LoginEvent{Mailbox: "alice@example.com", Login: Login{IP: "192.0.2.7", Proto: "pop3", Time: t0}})
	s.RecordLogin(LoginEvent{Mailbox: "carol@example.com", Login: Login{IP: "2001:db8::1", Proto: "submission", Time: t0}})
	// An older login arriving late does not win.
	s.RecordLogin(LoginEvent{Mailbox: "alice@example.com", Login: Login{IP: "192.0.2.99", Proto: "pop3", Time: t0.Add(-time.Hour)}})

	check := func(st []MailboxStats, when string) {
		t.Helper()
		if len(st) != 2 || st[0].Mailbox != "alice@example.com" || st[1].Mailbox != "carol@example.com" {
			t.Fatalf("%s: stats = %+v", when, st)
		}
		a, c := st[0], st[1]
		if a.Messages != 2 || a.Bytes != int64(len("Subject: 1\r\n\r\none\r\n")*2) {
			t.Errorf("%s: alice has %d messages, %d bytes", when, a.Messages, a.Bytes)
		}
		if a.LastLogin == nil || !a.LastLogin.Time.Equal(t0) || a.LastLogin.IP != "192.0.2.7" || a.LastLogin.Proto != "pop3" {
			t.Errorf("%s: alice's last login = %+v", when, a.LastLogin)
		}
		if c.Messages != 0 || c.LastLogin == nil || c.LastLogin.IP != "2001:db8::1" || c.LastLogin.Proto != "submission" {
			t.Errorf("%s: carol = %+v %+v", when, c, c.LastLogin)
		}
	}
	// Before the flush, from memory.
	st, err := s.MailboxStats()
	if err != nil {
		t.Fatal(err)
	}
	check(st, "pending")
	// Flushed, then the older record again: the stored newer one stays.
	if err := s.FlushLogins(); err != nil {
		t.Fatal(err)
	}
	s.RecordLogin(LoginEvent{Mailbox: "alice@example.com", Login: Login{IP: "192.0.2.99", Proto: "pop3", Time: t0.Add(-time.Hour)}})
	if err := s.FlushLogins(); err != nil {
		t.Fatal(err)
	}
	st, _ = s.MailboxStats()
	check(st, "flushed")
	// A login recorded just before Close survives it.
	t1 := t0.Add(time.Minute)
	s.RecordLogin(LoginEvent{Mailbox: "alice@example.com", Login: Login{IP: "192.0.2.8", Proto: "pop3", Time: t1}})
	s = reopen(t, s)
	st, _ = s.MailboxStats()
	if len(st) != 2 || st[0].LastLogin == nil || !st[0].LastLogin.Time.Equal(t1) || st[0].LastLogin.IP != "192.0.2.8" {
		t.Fatalf("after reopen: %+v %+v", st, st[0].LastLogin)
	}
}

// The timer flushes by itself, without Close.
func TestRecordLoginFlushesInBackground(t *testing.T) {
	s := openTest(t)
	s.RecordLogin(LoginEvent{Mailbox: "alice@example.com", Login: Login{IP: "127.0.0.1", Proto: "pop3", Time: time.Now()}})
	deadline := time.Now().Add(10 * loginFlushDelay)
	for {
		var stored bool
		s.db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(bucketLogins); b != nil {
				stored = b.Get([]byte("alice@example.com")) != nil
			}
			return nil
		})
		if stored {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the login record was not written within 10 flush delays")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLoginRecordCorruptIgnored(t *testing.T) {
	for _, v := range [][]byte{nil, make([]byte, 12), append(make([]byte, 12), 9, 'p')} {
		if _, ok := decodeLogin(v); ok {
			t.Errorf("decodeLogin(%x) accepted", v)
		}
	}
	l := Login{Time: normTime(time.Now()), IP: "::1", Proto: "pop3"}
	if got, ok := decodeLogin(encodeLogin(l)); !ok || got != l {
		t.Errorf("round trip: %+v -> %+v", l, got)
	}
}
