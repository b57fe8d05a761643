package watch_test

import (
	"context"
	"log/slog"

	"mailpost/watch"
)

// The reload loop a caller runs. The config file is watched before it is
// first read; files it names are read and then handed to SetPaths, which
// reports them once more so a change between the read and the call is not
// lost. An unchanged hash in load makes such an Event a no-op.
func Example() {
	ctx := context.Background()
	load := func() (files []string, err error) { // read, hash, validate, apply
		return []string{"/etc/mailpost/mailpost.hcl", "/etc/letsencrypt/live/mail/fullchain.pem"}, nil
	}

	w, err := watch.New([]string{"/etc/mailpost/mailpost.hcl"}, watch.Options{})
	if err != nil {
		slog.Error("watch", "err", err)
		return
	}
	defer w.Close()
	files, err := load()
	if err == nil {
		_ = w.SetPaths(files)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events():
			if !ok {
				return
			}
			slog.Info("files changed", "paths", ev.Paths)
			if files, err := load(); err != nil {
				slog.Warn("reload failed; keeping the running config", "err", err)
			} else if err := w.SetPaths(files); err != nil {
				slog.Warn("watch", "err", err)
			}
		}
	}
}
