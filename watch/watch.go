// Package watch tells mailpost that a file it depends on (the config file,
// the certificates and keys it names) may have changed, so the caller can
// re-read, hash and validate it. Spurious events are cheap there (an
// unchanged hash is a no-op); a missed event is a bug here.
//
// Following fsnotify's own advice, the watcher watches directories, never
// the files: editors and sed -i replace a file by rename, which would end a
// watch on the file. For every watched path it walks the symlink chain and
// also watches the directories holding each link, so the Kubernetes
// ConfigMap swap of "..data" and a certbot renewal repointing
// live/x/fullchain.pem are seen. A path that does not exist yet is watched
// through its nearest existing ancestor directory.
//
// Bursts are debounced into one Event. As a safety net for file systems
// where inotify sees nothing (some bind mounts, NFS), every path is also
// polled: stat through the symlinks, compare device, inode, size, mtime and
// the chain of link targets with what was seen last.
package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options tunes a Watcher. The zero value is usable.
type Options struct {
	// Debounce is how long the watched files must stay quiet before an
	// Event is sent; default 150 ms. A file that never goes quiet is still
	// reported every 4×Debounce.
	Debounce time.Duration
	// PollInterval is how often every path is stat'ed as a safety net;
	// default 2 s; negative disables polling.
	PollInterval time.Duration
	// Logger receives fsnotify errors (Warn) and event traces (Debug);
	// nil discards.
	Logger *slog.Logger
	// DisableFSNotify leaves only the poller; for tests of the poller and
	// for file systems where inotify is known not to work.
	DisableFSNotify bool
}

const (
	defaultDebounce     = 150 * time.Millisecond
	defaultPollInterval = 2 * time.Second
	// maxWaitFactor × Debounce bounds how long a continuous stream of
	// changes can hold an Event back.
	maxWaitFactor = 4
	// maxRewatch bounds the watch-then-resolve rounds of one refresh; each
	// round only repeats when the files moved under it.
	maxRewatch = 4
)

// ErrClosed is returned by SetPaths after Close.
var ErrClosed = errors.New("watch: watcher closed")

// Event says that the files at Paths may have changed.
type Event struct {
	// Paths are the watched paths (as passed to New or SetPaths) that
	// changed, sorted; best effort: a coalesced or overflow event may name
	// more than changed.
	Paths []string
	// Time is when the event was sent (the latest, if coalesced).
	Time time.Time
}

// Watcher watches a set of paths. Its methods are safe for concurrent use.
type Watcher struct {
	debounce time.Duration
	poll     time.Duration
	log      *slog.Logger
	fsw      *fsnotify.Watcher // nil with DisableFSNotify

	events   chan Event
	setc     chan setRequest
	quit     chan struct{}
	loopDone chan struct{}

	closeOnce sync.Once
	closeErr  error
	sent      atomic.Int64 // events handed to the channel; read by tests

	// Owned by the loop goroutine once New returns.
	targets   []*target
	byEntry   map[entry][]*target
	byDir     map[string][]*target
	watched   map[string]bool // directories added to fsw
	pending   map[string]bool // names to report
	firstPend time.Time
	timer     *time.Timer
}

// target is one watched path.
type target struct {
	name  string // as the caller gave it; what Event.Paths reports
	abs   string
	res   resolution // as of the last refresh
	known bool       // res was taken at least once
}

type setRequest struct {
	targets []*target
	done    chan error
}

// New starts watching paths. A path need not exist, nor its parent: the
// nearest existing ancestor directory is watched for it, and every level
// that appears is followed.
//
// New fails for an empty path or "/", when inotify cannot be set up, or when
// both fsnotify and polling are disabled. A directory fsnotify refuses to
// watch (the inotify watch limit, permissions) is logged and left to the
// poller, which retries the watch on every poll; only with polling disabled
// is that an error. On error nothing is left running.
func New(paths []string, o Options) (*Watcher, error) {
	ts, err := makeTargets(paths)
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		debounce: o.Debounce,
		poll:     o.PollInterval,
		log:      o.Logger,
		events:   make(chan Event, 1),
		setc:     make(chan setRequest),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
		watched:  make(map[string]bool),
		pending:  make(map[string]bool),
		targets:  ts,
	}
	if w.debounce <= 0 {
		w.debounce = defaultDebounce
	}
	if w.poll == 0 {
		w.poll = defaultPollInterval
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if o.DisableFSNotify && w.poll < 0 {
		return nil, errors.New("watch: fsnotify and polling both disabled")
	}
	if !o.DisableFSNotify {
		w.fsw, err = fsnotify.NewWatcher()
		if err != nil {
			return nil, fmt.Errorf("watch: start fsnotify: %w", err)
		}
	}
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	if err := w.checkRefresh(w.refresh(nil)); err != nil {
		if w.fsw != nil {
			_ = w.fsw.Close()
		}
		return nil, err
	}
	go w.loop()
	return w, nil
}

// Events delivers change notifications. It is buffered and coalesced: a
// reader that falls behind finds one Event naming everything that changed
// meanwhile, and the watcher never blocks on it. Closed by Close.
func (w *Watcher) Events() <-chan Event { return w.events }

// SetPaths replaces the watched set, e.g. after a reload that names other
// certificate files. Paths kept from the old set keep their watches, so
// their changes are not lost across the call. A path new to the set is
// watched when SetPaths returns and is reported once in the next Event,
// because the caller has usually read it before calling SetPaths and a
// change in between would otherwise be lost.
// Errors are as for New, except that the watcher keeps running.
func (w *Watcher) SetPaths(paths []string) error {
	ts, err := makeTargets(paths)
	if err != nil {
		return err
	}
	req := setRequest{targets: ts, done: make(chan error, 1)}
	select {
	case w.setc <- req:
	case <-w.loopDone:
		return ErrClosed
	}
	return <-req.done
}

// Close stops the watcher and its goroutines and closes the Events channel.
// Changes still being debounced are dropped. Safe to call more than once.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.quit)
		<-w.loopDone
		if w.fsw != nil {
			if err := w.fsw.Close(); err != nil {
				w.closeErr = fmt.Errorf("watch: close fsnotify: %w", err)
			}
		}
	})
	return w.closeErr
}

func makeTargets(paths []string) ([]*target, error) {
	ts := make([]*target, 0, len(paths))
	seen := make(map[string]bool, len(paths))
	for _, p := range paths {
		if p == "" {
			return nil, errors.New("watch: empty path")
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("watch: %s: %w", p, err)
		}
		if abs == string(filepath.Separator) {
			return nil, fmt.Errorf("watch: %s: not a file path", p)
		}
		if seen[abs] {
			continue
		}
		seen[abs] = true
		ts = append(ts, &target{name: p, abs: abs})
	}
	return ts, nil
}

func (w *Watcher) loop() {
	defer close(w.loopDone)
	defer close(w.events)
	defer w.timer.Stop()

	var (
		fsEvents <-chan fsnotify.Event
		fsErrors <-chan error
		tick     <-chan time.Time
	)
	if w.fsw != nil {
		fsEvents, fsErrors = w.fsw.Events, w.fsw.Errors
	}
	if w.poll > 0 {
		t := time.NewTicker(w.poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-w.quit:
			return
		case ev, ok := <-fsEvents:
			if !ok {
				fsEvents = nil
				continue
			}
			w.handle(ev)
		case err, ok := <-fsErrors:
			if !ok {
				fsErrors = nil
				continue
			}
			w.handleError(err)
		case <-tick:
			w.logRefresh(w.refresh(nil))
		case <-w.timer.C:
			w.fire()
		case req := <-w.setc:
			req.done <- w.setTargets(req.targets)
		}
	}
}

// handle maps one fsnotify event on a watched directory to watched paths.
func (w *Watcher) handle(ev fsnotify.Event) {
	// Chmod alone changes no content. (Linux also reports link-count
	// changes as Chmod; a real removal comes with its own Remove.)
	if ev.Op&^fsnotify.Chmod == 0 {
		return
	}
	name := filepath.Clean(ev.Name)
	var hit []*target
	hit = append(hit, w.byEntry[entry{dir: filepath.Dir(name), name: filepath.Base(name)}]...)
	// An event naming a watched directory itself: it was removed or renamed
	// away, and the paths under it with it.
	hit = append(hit, w.byDir[name]...)
	if len(hit) == 0 {
		return
	}
	w.log.Debug("watch: change", "name", name, "op", ev.Op)
	w.mark(hit, time.Now())
	// Creates, removes and renames can change where a path leads (a swapped
	// symlink, a re-created directory): follow it now, before the Event
	// goes out, so that whatever the reader then sees is under watch.
	if ev.Op.Has(fsnotify.Create | fsnotify.Remove | fsnotify.Rename) {
		w.logRefresh(w.refresh(nil))
	}
}

func (w *Watcher) handleError(err error) {
	w.log.Warn("watch: fsnotify error", "err", err)
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		// The kernel dropped events; anything may have changed.
		w.mark(w.targets, time.Now())
		w.logRefresh(w.refresh(nil))
	}
}

func (w *Watcher) logRefresh(err error) {
	if err != nil {
		w.log.Warn("watch: cannot watch directory", "err", err, "polling", w.poll > 0)
	}
}

// checkRefresh turns a failed watch into an error for New and SetPaths only
// when no poller covers it; otherwise it is logged.
func (w *Watcher) checkRefresh(err error) error {
	if err == nil || w.poll < 0 {
		return err
	}
	w.logRefresh(err)
	return nil
}

// mark schedules ts for the next Event.
func (w *Watcher) mark(ts []*target, now time.Time) {
	if len(ts) == 0 {
		return
	}
	if len(w.pending) == 0 {
		w.firstPend = now
	}
	for _, t := range ts {
		w.pending[t.name] = true
	}
	deadline := now.Add(w.debounce)
	if limit := w.firstPend.Add(maxWaitFactor * w.debounce); deadline.After(limit) {
		deadline = limit
	}
	w.timer.Reset(time.Until(deadline))
}

// fire sends the pending paths as one Event.
func (w *Watcher) fire() {
	if len(w.pending) == 0 {
		return
	}
	fired := w.pending
	w.pending = make(map[string]bool)
	// Take the fired paths' fingerprints now, so the poller does not report
	// again what this Event already covers. Other paths that changed are
	// marked by refresh as usual.
	w.logRefresh(w.refresh(fired))

	ev := Event{Time: time.Now()}
	for p := range fired {
		ev.Paths = append(ev.Paths, p)
	}
	slices.Sort(ev.Paths)
	w.log.Debug("watch: event", "paths", ev.Paths)
	w.send(ev)
}

// send puts ev on the channel without ever blocking: the loop is the only
// sender, so once the buffered Event is taken (by the reader or by us, to
// merge it) there is room.
func (w *Watcher) send(ev Event) {
	select {
	case w.events <- ev:
		w.sent.Add(1)
		return
	default:
	}
	select {
	case old := <-w.events:
		ev.Paths = mergePaths(old.Paths, ev.Paths)
	default:
	}
	w.events <- ev
	w.sent.Add(1)
}

func mergePaths(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

func (w *Watcher) setTargets(ts []*target) error {
	old := make(map[string]*target, len(w.targets))
	for _, t := range w.targets {
		old[t.abs] = t
	}
	var added []*target
	for i, t := range ts {
		if o, ok := old[t.abs]; ok {
			// Keep what was seen last, so a change racing this call is
			// still compared against it.
			o.name = t.name
			ts[i] = o
		} else {
			added = append(added, t)
		}
	}
	w.targets = ts
	err := w.checkRefresh(w.refresh(nil))
	// The caller has likely read a new path already (the config naming it
	// had to be loaded first), before it was watched. Report it once, so a
	// change in that gap is re-read; with the caller's hash check this is
	// free when nothing changed.
	w.mark(added, time.Now())
	return err
}

// refresh resolves every target, makes the fsnotify watches match and marks
// targets whose fingerprint changed since last seen (except those in skip).
//
// Watches are added before the final resolution is taken, and the rounds
// repeat while the resolution needs directories not yet added: whatever the
// last resolution saw is then already under watch, so a change cannot slip
// between looking and watching.
func (w *Watcher) refresh(skip map[string]bool) error {
	var (
		res   []resolution
		added = make(map[string]bool)
		errs  []error
	)
	for round := 0; ; round++ {
		res = res[:0]
		want := make(map[string]bool)
		for _, t := range w.targets {
			r := resolve(t.abs)
			r.addDirs(want)
			res = append(res, r)
		}
		if w.fsw == nil || round == maxRewatch {
			break
		}
		grew := false
		for d := range want {
			if added[d] {
				continue
			}
			added[d] = true
			grew = true
			if err := w.fsw.Add(d); err != nil {
				// Gone between resolve and Add: the next round resolves
				// past it to an ancestor that exists.
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, fmt.Errorf("watch: add %s: %w", d, err))
				}
				continue
			}
			w.watched[d] = true
		}
		if !grew {
			break
		}
	}

	var changed []*target
	want := make(map[string]bool)
	for i, t := range w.targets {
		if t.known && res[i].fp != t.res.fp && !skip[t.name] {
			changed = append(changed, t)
		}
		t.res, t.known = res[i], true
		t.res.addDirs(want)
	}
	w.index()
	if w.fsw != nil {
		for d := range w.watched {
			if want[d] {
				continue
			}
			delete(w.watched, d)
			// The kernel may have dropped it already (directory removed).
			if err := w.fsw.Remove(d); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
				w.log.Debug("watch: remove", "dir", d, "err", err)
			}
		}
	}
	if len(changed) > 0 {
		w.log.Debug("watch: fingerprint changed", "n", len(changed))
		w.mark(changed, time.Now())
	}
	return errors.Join(errs...)
}

// index rebuilds the event lookup tables from the targets' resolutions.
func (w *Watcher) index() {
	w.byEntry = make(map[entry][]*target)
	w.byDir = make(map[string][]*target)
	for _, t := range w.targets {
		for _, e := range t.res.entries {
			w.byEntry[e] = append(w.byEntry[e], t)
			if l := w.byDir[e.dir]; len(l) == 0 || l[len(l)-1] != t {
				w.byDir[e.dir] = append(l, t)
			}
		}
	}
}
