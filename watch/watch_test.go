package watch

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

func TestInPlaceWrite(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "mailpost.hcl")
	write(t, p, "v1")
	w := start(t, []string{p}, fsOpts())

	// os.WriteFile truncates and writes, like a shell ">" redirection.
	write(t, p, "v2")
	waitContent(t, w, p, "v2")
	write(t, p, "")
	waitContent(t, w, p, "")
	write(t, p, "v3 is longer")
	waitContent(t, w, p, "v3 is longer")
}

// A save in two writes must give one Event, after the second write.
func TestTwoStepWriteDebounced(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "mailpost.hcl")
	other := filepath.Join(dir, "other.pem")
	write(t, p, "old")
	write(t, other, "x")
	o := fsOpts()
	o.Debounce = 200 * time.Millisecond
	w := start(t, []string{p, other}, o)

	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("first half;"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the gap between the steps, well under Debounce
	if _, err := f.WriteString("second half"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	ev := waitFor(t, w, p)
	if b, _ := os.ReadFile(p); string(b) != "first half;second half" {
		t.Errorf("first event came before the second step: read %q", b)
	}
	if !slices.Equal(ev.Paths, []string{p}) {
		t.Errorf("Paths = %v, want only %s", ev.Paths, p)
	}
	if ev.Time.IsZero() {
		t.Error("Event.Time is zero")
	}
	// And no second Event for the same burst.
	expectNotReported(t, w, other, "y", p)
}

func TestRenameReplace(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "mailpost.hcl")
	write(t, p, "v0")
	w := start(t, []string{p}, fsOpts())

	// Several rounds: each rename replaces the inode, and the watch (on the
	// directory) must survive that.
	for i := 1; i <= 3; i++ {
		want := fmt.Sprintf("v%d", i)
		renameReplace(t, p, want)
		waitContent(t, w, p, want)
	}
}

// k8sUpdate performs one Kubernetes ConfigMap update: a new timestamped
// directory, a new ..data link beside the old one, renamed over it.
func k8sUpdate(t *testing.T, dir, stamp, content string) string {
	t.Helper()
	ts := filepath.Join(dir, "..2026_11_25_"+stamp)
	mkdirAll(t, ts)
	write(t, filepath.Join(ts, "mailpost.hcl"), content)
	tmp := filepath.Join(dir, "..data_tmp")
	symlink(t, filepath.Base(ts), tmp)
	rename(t, tmp, filepath.Join(dir, "..data"))
	return ts
}

func TestKubernetesConfigMap(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "mailpost.hcl")
	side := filepath.Join(realTempDir(t), "sentinel")
	write(t, side, "0")
	tsA := k8sUpdate(t, dir, "a", "A")
	symlink(t, filepath.Join("..data", "mailpost.hcl"), p)
	w := start(t, []string{p, side}, fsOpts())

	tsB := k8sUpdate(t, dir, "b", "B")
	waitContent(t, w, p, "B")

	// kubelet then removes the old version; that is not a change of p.
	if err := os.RemoveAll(tsA); err != nil {
		t.Fatal(err)
	}
	expectNotReported(t, w, side, "1", p)

	// The swap moved the watch to the new timestamped directory.
	write(t, filepath.Join(tsB, "mailpost.hcl"), "B2")
	waitContent(t, w, p, "B2")

	tsC := k8sUpdate(t, dir, "c", "C")
	waitContent(t, w, p, "C")
	if err := os.RemoveAll(tsB); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(tsC, "mailpost.hcl"), "C2")
	waitContent(t, w, p, "C2")
}

func TestCertbotRenewal(t *testing.T) {
	root := realTempDir(t)
	live := filepath.Join(root, "live", "mail.example")
	archive := filepath.Join(root, "archive", "mail.example")
	mkdirAll(t, live)
	mkdirAll(t, archive)
	chain := filepath.Join(live, "fullchain.pem")
	key := filepath.Join(live, "privkey.pem")
	link := func(name string, n int) string {
		return filepath.Join("..", "..", "archive", "mail.example", fmt.Sprintf("%s%d.pem", name, n))
	}
	write(t, filepath.Join(archive, "fullchain1.pem"), "chain1")
	write(t, filepath.Join(archive, "privkey1.pem"), "key1")
	symlink(t, link("fullchain", 1), chain)
	symlink(t, link("privkey", 1), key)
	w := start(t, []string{chain, key}, fsOpts())

	// Renewal 1: new archive files, links replaced by unlink + symlink.
	write(t, filepath.Join(archive, "fullchain2.pem"), "chain2")
	write(t, filepath.Join(archive, "privkey2.pem"), "key2")
	for _, l := range [][2]string{{chain, link("fullchain", 2)}, {key, link("privkey", 2)}} {
		if err := os.Remove(l[0]); err != nil {
			t.Fatal(err)
		}
		symlink(t, l[1], l[0])
	}
	waitContent(t, w, chain, "chain2", key, "key2")

	// Renewal 2: links replaced atomically by rename of a new link.
	write(t, filepath.Join(archive, "fullchain3.pem"), "chain3")
	write(t, filepath.Join(archive, "privkey3.pem"), "key3")
	for _, l := range [][2]string{{chain, link("fullchain", 3)}, {key, link("privkey", 3)}} {
		symlink(t, l[1], l[0]+".new")
		rename(t, l[0]+".new", l[0])
	}
	waitContent(t, w, chain, "chain3", key, "key3")

	// The target file itself is watched too (e.g. fixed up by hand).
	write(t, filepath.Join(archive, "privkey3.pem"), "key3 fixed")
	waitContent(t, w, key, "key3 fixed")
}

func TestDeleteAndRecreate(t *testing.T) {
	root := realTempDir(t)
	dir := filepath.Join(root, "etc")
	mkdirAll(t, dir)
	p := filepath.Join(dir, "mailpost.hcl")
	write(t, p, "one")
	w := start(t, []string{p}, fsOpts())

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	waitContent(t, w, p, "")
	write(t, p, "two")
	waitContent(t, w, p, "two")

	// The whole directory goes away and comes back.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitContent(t, w, p, "")
	mkdirAll(t, dir)
	write(t, p, "three")
	waitContent(t, w, p, "three")
	write(t, p, "four")
	waitContent(t, w, p, "four")

	// Directory renamed away and another renamed into its place.
	repl := filepath.Join(root, "etc.new")
	mkdirAll(t, repl)
	write(t, filepath.Join(repl, "mailpost.hcl"), "five")
	rename(t, dir, filepath.Join(root, "etc.old"))
	rename(t, repl, dir)
	waitContent(t, w, p, "five")
	write(t, p, "six")
	waitContent(t, w, p, "six")
}

// A path whose directories do not exist yet is picked up when they appear.
func TestMissingAtStart(t *testing.T) {
	root := realTempDir(t)
	p := filepath.Join(root, "a", "b", "mailpost.hcl")
	w := start(t, []string{p}, fsOpts())

	mkdirAll(t, filepath.Join(root, "a"))
	mkdirAll(t, filepath.Join(root, "a", "b"))
	write(t, p, "here")
	waitContent(t, w, p, "here")
	write(t, p, "again")
	waitContent(t, w, p, "again")
}

func TestChmodIgnored(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "privkey.pem")
	side := filepath.Join(dir, "fullchain.pem")
	write(t, p, "key")
	write(t, side, "chain")
	w := start(t, []string{p, side}, fsOpts())

	for _, m := range []os.FileMode{0o600, 0o640, 0o644} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	expectNotReported(t, w, side, "chain2", p)
}

func TestManyFilesAndSetPaths(t *testing.T) {
	root := realTempDir(t)
	cfg := filepath.Join(root, "etc", "mailpost.hcl")
	pair := func(name string) (string, string) {
		d := filepath.Join(root, "certs", name)
		mkdirAll(t, d)
		c, k := filepath.Join(d, "fullchain.pem"), filepath.Join(d, "privkey.pem")
		write(t, c, name+" chain")
		write(t, k, name+" key")
		return c, k
	}
	mkdirAll(t, filepath.Dir(cfg))
	write(t, cfg, "cfg0")
	c1, k1 := pair("one")
	c2, k2 := pair("two")
	c3, k3 := pair("three")
	w := start(t, []string{cfg, c1, k1, c2, k2}, fsOpts())

	for i, p := range []string{cfg, c1, k1, c2, k2} {
		want := fmt.Sprintf("change %d", i)
		write(t, p, want)
		waitContent(t, w, p, want)
	}

	// A reload names other certificates. The config file changes while the
	// set is being swapped; that change must still be reported.
	write(t, cfg, "cfg1")
	if err := w.SetPaths([]string{cfg, c2, k2, c3, k3}); err != nil {
		t.Fatal(err)
	}
	// The new pair is reported once, unchanged, in case it changed between
	// the caller's read and the call.
	waitContent(t, w, cfg, "cfg1", c3, "three chain", k3, "three key")

	renameReplace(t, c3, "three renewed")
	waitContent(t, w, c3, "three renewed")
	write(t, k2, "two rekeyed")
	waitContent(t, w, k2, "two rekeyed")

	// The dropped pair is no longer reported, nor its directory watched.
	write(t, c1, "one changed after removal")
	expectNotReported(t, w, cfg, "cfg2", c1, k1)
	if slices.Contains(w.fsw.WatchList(), filepath.Dir(c1)) {
		t.Errorf("%s still watched: %v", filepath.Dir(c1), w.fsw.WatchList())
	}

	// Back to fewer paths, then to none, then one again.
	if err := w.SetPaths(nil); err != nil {
		t.Fatal(err)
	}
	if l := w.fsw.WatchList(); len(l) != 0 {
		t.Errorf("watching %v with no paths", l)
	}
	if err := w.SetPaths([]string{k3}); err != nil {
		t.Fatal(err)
	}
	write(t, k3, "three rekeyed")
	waitContent(t, w, k3, "three rekeyed")
}

// 100 writes within about 50 ms make few Events, soon after the last write.
func TestBurst(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "mailpost.hcl")
	side := filepath.Join(dir, "sentinel")
	write(t, p, "start")
	write(t, side, "0")
	o := fsOpts()
	o.Debounce = 100 * time.Millisecond
	w := start(t, []string{p, side}, o)

	began := time.Now()
	var last time.Time
	for i := range 100 {
		write(t, p, fmt.Sprintf("write %d", i))
		last = time.Now()
	}
	burst := last.Sub(began)

	first := waitFor(t, w, p)
	latency := first.Time.Sub(last)
	t.Logf("burst of 100 writes took %v; first event %v after the last write", burst, latency)
	// The tight figure (Debounce + ~100 ms) is a benchmark; here only a
	// bound that proves the event is not held back indefinitely.
	if latency > o.Debounce+time.Second {
		t.Errorf("event %v after the last write", latency)
	}

	// Count the Events naming p, up to one naming the sentinel.
	n := 1
	write(t, side, "1")
	for {
		ev := next(t, w)
		if slices.Contains(ev.Paths, p) {
			n++
		}
		if slices.Contains(ev.Paths, side) {
			break
		}
	}
	if n > 3 {
		t.Errorf("burst gave %d events, want 1 to 3", n)
	}
	if b, _ := os.ReadFile(p); string(b) != "write 99" {
		t.Errorf("read %q after the last event", b)
	}
}

// A reader that does not keep up gets one Event naming everything.
func TestSlowReaderCoalesces(t *testing.T) {
	dir := realTempDir(t)
	a, b := filepath.Join(dir, "a.pem"), filepath.Join(dir, "b.pem")
	write(t, a, "a")
	write(t, b, "b")
	o := fsOpts()
	o.Debounce = 10 * time.Millisecond
	w := start(t, []string{a, b}, o)

	waitSent := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(waitLimit)
		for w.sent.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("watcher sent %d events, want %d", w.sent.Load(), n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	write(t, a, "a1")
	waitSent(1)
	write(t, b, "b1")
	waitSent(2)

	ev := next(t, w)
	if !slices.Equal(ev.Paths, []string{a, b}) {
		t.Errorf("Paths = %v, want [%s %s]", ev.Paths, a, b)
	}
	select {
	case ev := <-w.Events():
		t.Errorf("second event %v; want them coalesced", ev.Paths)
	default:
	}
}

// Errors from fsnotify are logged and never stop the watcher; an overflow
// (lost kernel events) reports every path.
func TestFSNotifyErrors(t *testing.T) {
	dir := realTempDir(t)
	a, b := filepath.Join(dir, "a.pem"), filepath.Join(dir, "b.pem")
	write(t, a, "a")
	write(t, b, "b")
	var logs lockedBuffer
	o := fsOpts()
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	w := start(t, []string{a, b}, o)

	w.fsw.Errors <- errors.New("some transient error")
	w.fsw.Errors <- fsnotify.ErrEventOverflow
	ev := next(t, w)
	if !slices.Equal(ev.Paths, []string{a, b}) {
		t.Errorf("after overflow Paths = %v, want both", ev.Paths)
	}
	write(t, b, "b2")
	waitContent(t, w, b, "b2")
	if s := logs.String(); !strings.Contains(s, "some transient error") || !strings.Contains(s, "overflow") {
		t.Errorf("errors not logged:\n%s", s)
	}
}

// lockedBuffer is a log sink the watcher goroutine and the test can share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Relative paths are reported as given.
func TestRelativePath(t *testing.T) {
	dir := realTempDir(t)
	t.Chdir(dir)
	write(t, "mailpost.hcl", "x")
	w := start(t, []string{"mailpost.hcl"}, fsOpts())
	write(t, filepath.Join(dir, "mailpost.hcl"), "y")
	waitContent(t, w, "mailpost.hcl", "y")
}

func TestBadPaths(t *testing.T) {
	for _, paths := range [][]string{{""}, {"/"}} {
		if w, err := New(paths, Options{DisableFSNotify: true}); err == nil {
			w.Close()
			t.Errorf("New(%q) succeeded", paths)
		}
	}
	if w, err := New(nil, Options{DisableFSNotify: true, PollInterval: -1}); err == nil {
		w.Close()
		t.Error("New with nothing to watch with succeeded")
	}
	w := start(t, nil, fsOpts())
	if err := w.SetPaths([]string{"ok", ""}); err == nil {
		t.Error("SetPaths with an empty path succeeded")
	}
}

// The poller alone, with fsnotify off, sees every kind of change.
func TestPollerOnly(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "plain.hcl")
	k := filepath.Join(dir, "k8s", "mailpost.hcl")
	side := filepath.Join(dir, "sentinel")
	write(t, p, "p")
	write(t, side, "s")
	mkdirAll(t, filepath.Dir(k))
	k8sUpdate(t, filepath.Dir(k), "a", "A")
	symlink(t, filepath.Join("..data", "mailpost.hcl"), k)
	w := start(t, []string{p, k, side}, Options{
		Debounce:        10 * time.Millisecond,
		PollInterval:    20 * time.Millisecond,
		DisableFSNotify: true,
	})
	if w.fsw != nil {
		t.Fatal("fsnotify running despite DisableFSNotify")
	}

	write(t, p, "pp") // in place, size changes
	waitContent(t, w, p, "pp")
	renameReplace(t, p, "qq") // same size, new inode
	waitContent(t, w, p, "qq")
	k8sUpdate(t, filepath.Dir(k), "b", "B") // same size, new link target
	waitContent(t, w, k, "B")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	waitContent(t, w, p, "")
	write(t, p, "back")
	waitContent(t, w, p, "back")
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	expectNotReported(t, w, side, "ss", p, k)
}

func TestCloseStopsEverything(t *testing.T) {
	dir := realTempDir(t)
	p := filepath.Join(dir, "mailpost.hcl")
	write(t, p, "0")
	before := runtime.NumGoroutine()

	for i, o := range []Options{
		{Debounce: 5 * time.Millisecond, PollInterval: 5 * time.Millisecond},
		{Debounce: 5 * time.Millisecond, PollInterval: -1},
		{Debounce: 5 * time.Millisecond, PollInterval: 5 * time.Millisecond, DisableFSNotify: true},
	} {
		w, err := New([]string{p}, o)
		if err != nil {
			t.Fatal(err)
		}
		write(t, p, fmt.Sprint(i+1))
		waitContent(t, w, p, fmt.Sprint(i+1))
		write(t, p, "pending at close")
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := w.SetPaths([]string{p}); !errors.Is(err, ErrClosed) {
			t.Errorf("SetPaths after Close: %v, want ErrClosed", err)
		}
		// Events is closed (after at most the one buffered Event).
		closed := false
		for range 2 {
			select {
			case _, ok := <-w.Events():
				closed = !ok
			case <-time.After(waitLimit):
				t.Fatal("Events not closed")
			}
			if closed {
				break
			}
		}
		if !closed {
			t.Error("Events still open after Close")
		}
	}

	deadline := time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
