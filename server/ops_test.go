package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mailpost/storage"
)

// Backup, mailbox stats and import, through the control socket of a running
// server that is serving POP3 and submission at the same time.
func TestOpsThroughControlSocket(t *testing.T) {
	dir := t.TempDir()
	s := smtpConfig(t, dir)
	c := NewClient(s.cfg.DataDir)

	for i := 0; i < 3; i++ {
		if _, err := c.Deliver("alice@example.com", strings.NewReader(fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i))); err != nil {
			t.Fatal(err)
		}
	}
	// A POP3 login and a submission login are both recorded.
	p := dialPOP(t, popsAddr(t, s))
	if r := p.login("alice@example.com", "demo-password"); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("login: %s", r)
	}
	p.cmd("QUIT")
	if err := submit(t, addrOf(t, s, "submission"), "bob@example.com", "bob@example.com", []string{"bob@example.com"}, "Subject: self\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}

	reps, err := c.Mailboxes()
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[string]MailboxReport{}
	for _, r := range reps {
		byAddr[r.Address] = r
	}
	alice, bob, off := byAddr["alice@example.com"], byAddr["bob@example.com"], byAddr["off@example.com"]
	if !alice.Configured || alice.Messages != 3 || alice.Quota != 1024 || len(alice.Aliases) != 1 {
		t.Errorf("alice = %+v", alice)
	}
	if l := alice.LastLogin; l == nil || l.Proto != "pop3" || l.IP != "127.0.0.1" || time.Since(l.Time) > time.Minute {
		t.Errorf("alice's last login = %+v", l)
	}
	if l := bob.LastLogin; bob.Messages != 1 || l == nil || l.Proto != "submission" || l.IP != "127.0.0.1" {
		t.Errorf("bob = %+v, last login %+v", bob, l)
	}
	if !off.Configured || off.POP3 || off.LastLogin != nil || off.Messages != 0 {
		t.Errorf("off = %+v", off)
	}

	// The hot copy, taken while deliveries go on.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Deliver("bob@example.com", strings.NewReader("Subject: during\n\nx\n")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	dst := filepath.Join(t.TempDir(), "copy.db")
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Backup(t.Context(), f)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(dst); fi.Size() != n || n == 0 {
		t.Fatalf("copy is %d bytes, client reported %d", fi.Size(), n)
	}
	cp, err := storage.Open(dst)
	if err != nil {
		t.Fatalf("the copy does not open: %v", err)
	}
	defer cp.Close()
	list, err := cp.List("alice@example.com")
	if err != nil || len(list) != 3 {
		t.Fatalf("the copy holds %d of alice's messages (%v)", len(list), err)
	}
	rc, err := cp.OpenMessage("alice@example.com", list[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != "Subject: 2\r\n\r\nbody 2\r\n" {
		t.Errorf("message 3 in the copy = %q", body)
	}

	// Import keeps the UIDL and arrival time and refuses a second copy.
	arrived := time.Date(2019, 5, 4, 3, 2, 1, 0, time.UTC)
	res, err := c.Import("A.Smith@example.com", "imp-0123abcd", arrived, strings.NewReader("Subject: old\n\nold\n"))
	if err != nil || res.Mailbox != "alice@example.com" || res.UIDL != "imp-0123abcd" {
		t.Fatalf("import = %+v, %v", res, err)
	}
	if _, err := c.Import("alice@example.com", "imp-0123abcd", arrived, strings.NewReader("Subject: old\n\nold\n")); !errors.Is(err, ErrAlreadyImported) {
		t.Errorf("second import: %v, want ErrAlreadyImported", err)
	}
	if _, err := c.Import("nobody@example.com", "imp-1", time.Time{}, strings.NewReader("x\n")); !errors.Is(err, ErrNoSuchRecipient) {
		t.Errorf("import to nobody: %v", err)
	}
	if _, err := c.Import("alice@example.com", "imp-2", time.Time{}, strings.NewReader(strings.Repeat("x", 2000))); !errors.Is(err, storage.ErrQuotaExceeded) {
		t.Errorf("import over quota: %v", err)
	}
	l, _ := s.store.List("alice@example.com")
	if last := l[len(l)-1]; len(l) != 4 || last.UIDL != "imp-0123abcd" || !last.Arrived.Equal(arrived) {
		t.Errorf("alice's list after import: %+v", l)
	}
}

func TestBackupWithoutServer(t *testing.T) {
	_, err := NewClient(t.TempDir()).Backup(t.Context(), io.Discard)
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("backup with no server: %v, want ErrNotRunning", err)
	}
}
