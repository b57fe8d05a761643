package watch

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// waitLimit bounds every wait on the Events channel; generous because the
// test machine is shared, and never reached when things work.
const waitLimit = 5 * time.Second

// realTempDir is t.TempDir with symlinks resolved, so paths compare with
// what the resolver produces.
func realTempDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// fsOpts are options for tests of the fsnotify path: polling is off so that
// it cannot hide a missed inotify event.
func fsOpts() Options {
	return Options{Debounce: 40 * time.Millisecond, PollInterval: -1}
}

func start(t *testing.T, paths []string, o Options) *Watcher {
	t.Helper()
	w, err := New(paths, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

func write(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdirAll(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func rename(t testing.TB, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// renameReplace saves the way vim, emacs and sed -i do: a temporary file in
// the same directory, renamed over the target.
func renameReplace(t *testing.T, p, s string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	write(t, tmp, s)
	rename(t, tmp, p)
}

// next returns the next Event, failing after waitLimit.
func next(t *testing.T, w *Watcher) Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatal("Events closed")
		}
		return ev
	case <-time.After(waitLimit):
		t.Fatalf("no event within %v", waitLimit)
	}
	panic("unreachable")
}

// waitFor reads Events until one names p and returns it.
func waitFor(t *testing.T, w *Watcher, p string) Event {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		ev := next(t, w)
		if slices.Contains(ev.Paths, p) {
			return ev
		}
	}
	t.Fatalf("no event naming %s within %v", p, waitLimit)
	return Event{}
}

// waitContent takes pairs of path and wanted content. It reads Events until,
// for each path, right after an Event naming it the path reads as wanted:
// the guarantee callers rely on (the last change is followed by an Event
// after which a re-read sees it). A missing file reads as "". Paths changed
// together go in one call, since one Event may name them all.
func waitContent(t *testing.T, w *Watcher, pathWant ...string) {
	t.Helper()
	todo := make(map[string]string)
	for i := 0; i+1 < len(pathWant); i += 2 {
		todo[pathWant[i]] = pathWant[i+1]
	}
	last := make(map[string]string)
	deadline := time.Now().Add(waitLimit)
	for len(todo) > 0 && time.Now().Before(deadline) {
		ev := next(t, w)
		for _, p := range ev.Paths {
			want, ok := todo[p]
			if !ok {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if last[p] = string(b); last[p] == want {
				delete(todo, p)
			}
		}
	}
	for p, want := range todo {
		t.Errorf("%s: last read after an event %q, want %q", p, last[p], want)
	}
	if len(todo) > 0 {
		t.FailNow()
	}
}

// expectNotReported proves without a fixed sleep that nothing was reported
// for any of quiet: it changes sentinel (another watched path) and reads
// Events up to the one naming sentinel. Events are ordered, and a pending
// change of a quiet path would be sent in or before that Event.
func expectNotReported(t *testing.T, w *Watcher, sentinel, content string, quiet ...string) {
	t.Helper()
	write(t, sentinel, content)
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		ev := next(t, w)
		for _, q := range quiet {
			if slices.Contains(ev.Paths, q) {
				t.Fatalf("unexpected event for %s: %v", q, ev.Paths)
			}
		}
		if slices.Contains(ev.Paths, sentinel) {
			return
		}
	}
	t.Fatalf("no event naming sentinel %s within %v", sentinel, waitLimit)
}
