package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
)

// fakeBackend is an in-memory Backend with knobs. Its users:
//
//	alice/secret    the fixture maildrop (aliceMessages)
//	bob/hunter2     an empty maildrop
//	spacey/"a b c"  a password with spaces
//	flaky/x         two messages; message 2 cannot be opened; Commit fails
//	locked/x        Login returns ErrInUse
//	disabled/x      Login returns ErrAccessDisabled
//	broken/x        Login returns some other error
//	panic/x         Login panics
//	keeper/x        three messages, retention 30 days (EXPIRE 30)
//	zero/x          three messages, retention 0 (EXPIRE 0)
type fakeBackend struct {
	mu    sync.Mutex
	users map[string]*fakeUser
	drops []*fakeDrop // every maildrop handed out, for assertions

	loginGate  chan struct{} // when set, Login waits for it to be closed
	loginEnter chan struct{} // when set, Login signals it on entry
	commitGate chan struct{} // when set, Commit waits for it to be closed
}

type fakeUser struct {
	pass      string
	msgs      [][]byte
	loginErr  error
	panics    bool
	openErr   map[int]error
	commitErr error
	// revokeAfter > 0: Revalidate succeeds that many times, then reports
	// the access as withdrawn (a config reload in the real backend).
	revokeAfter int
	revalidated int
	// expireDays is the retention the maildrop announces when expires is
	// set; otherwise it announces NEVER.
	expires    bool
	expireDays int
}

// aliceMessages is the fixture maildrop; dialogs refer to it by number.
var aliceMessages = [][]byte{
	// 1: plain, 23 octets.
	[]byte("Subject: one\r\n\r\nHello\r\n"),
	// 2: lines that need dot-stuffing, 42 octets.
	[]byte("Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nend\r\n"),
	// 3: no CRLF at the end, 28 octets.
	[]byte("Subject: nocrlf\r\n\r\nlast line"),
	// 4: bare LF line ends, 25 octets.
	[]byte("Subject: lf\n\nline1\nline2\n"),
	// 5: for TOP, 39 octets.
	[]byte("Subject: top\r\nX: y\r\n\r\nb1\r\nb2\r\n.b3\r\nb4\r\n"),
	// 6: header only, no blank line, 18 octets.
	[]byte("Subject: hdronly\r\n"),
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{users: map[string]*fakeUser{
		"alice":    {pass: "secret", msgs: aliceMessages},
		"bob":      {pass: "hunter2"},
		"spacey":   {pass: "a b c", msgs: aliceMessages[:1]},
		"flaky":    {pass: "x", msgs: aliceMessages[:2], openErr: map[int]error{1: errors.New("disk on fire")}, commitErr: errors.New("disk full")},
		"locked":   {pass: "x", loginErr: ErrInUse},
		"disabled": {pass: "x", loginErr: ErrAccessDisabled},
		"broken":   {pass: "x", loginErr: errors.New("database unavailable")},
		"panic":    {pass: "x", panics: true},
		"revoked":  {pass: "x", msgs: aliceMessages[:2], revokeAfter: 2},
		"keeper":   {pass: "x", msgs: aliceMessages[:3], expires: true, expireDays: 30},
		"zero":     {pass: "x", msgs: aliceMessages[:3], expires: true},
	}}
}

func (b *fakeBackend) Login(ctx context.Context, ci ConnInfo, username, password string) (Maildrop, error) {
	if b.loginEnter != nil {
		b.loginEnter <- struct{}{}
	}
	if b.loginGate != nil {
		<-b.loginGate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.users[username]
	if !ok || u.pass != password {
		return nil, ErrAuthFailed
	}
	if u.panics {
		panic("fake backend told to panic")
	}
	if u.loginErr != nil {
		return nil, fmt.Errorf("fake login %s: %w", username, u.loginErr)
	}
	d := &fakeDrop{b: b, u: u, ci: ci}
	b.drops = append(b.drops, d)
	return d, nil
}

// retrievals returns every Retrieved call so far, over all maildrops, in
// order.
func (b *fakeBackend) retrievals() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for _, d := range b.drops {
		out = append(out, d.retrieved...)
	}
	return out
}

// snapshot returns copies of what happened to every maildrop so far.
func (b *fakeBackend) snapshot() (commits [][]int, closes []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range b.drops {
		for _, c := range d.commits {
			commits = append(commits, slices.Clone(c))
		}
		closes = append(closes, d.closed)
	}
	return commits, closes
}

type fakeDrop struct {
	b         *fakeBackend
	u         *fakeUser
	ci        ConnInfo
	commits   [][]int // guarded by b.mu
	closed    int     // guarded by b.mu
	retrieved []int   // Retrieved calls; guarded by b.mu
}

var (
	_ Expirer           = (*fakeDrop)(nil)
	_ RetrievalRecorder = (*fakeDrop)(nil)
)

func (d *fakeDrop) Expire() (int, bool) { return d.u.expireDays, d.u.expires }

func (d *fakeDrop) Retrieved(i int) {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.retrieved = append(d.retrieved, i)
}

var _ Maildrop = (*fakeDrop)(nil)

func (d *fakeDrop) Messages() []MessageInfo {
	var out []MessageInfo
	for i, m := range d.u.msgs {
		out = append(out, MessageInfo{Size: int64(len(m)), UIDL: fmt.Sprintf("uid-%d", i+1)})
	}
	return out
}

func (d *fakeDrop) Open(i int) (io.ReadCloser, error) {
	if err := d.u.openErr[i]; err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(d.u.msgs[i])), nil
}

func (d *fakeDrop) Commit(deleted []int) error {
	if d.b.commitGate != nil {
		<-d.b.commitGate
	}
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.u.commitErr != nil {
		return d.u.commitErr
	}
	d.commits = append(d.commits, slices.Clone(deleted))
	return nil
}

var _ Revalidator = (*fakeDrop)(nil)

func (d *fakeDrop) Revalidate() error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.u.revokeAfter == 0 {
		return nil
	}
	d.u.revalidated++
	if d.u.revalidated > d.u.revokeAfter {
		return errors.New("POP3 access for this mailbox was withdrawn")
	}
	return nil
}

func (d *fakeDrop) Close() error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.closed++
	return nil
}

// checkClosedOnce fails unless every maildrop handed out was closed once.
func checkClosedOnce(t *testing.T, b *fakeBackend) {
	t.Helper()
	_, closes := b.snapshot()
	for i, n := range closes {
		if n != 1 {
			t.Errorf("maildrop %d closed %d times, want 1", i, n)
		}
	}
}
