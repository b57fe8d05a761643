package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"mailpost/config"
	"mailpost/server"
	"mailpost/storage"
	"mailpost/watch"
)

func cmdServe(path, level, format string, stderr io.Writer) error {
	log, err := newLogger(stderr, level, format)
	if err != nil {
		return err
	}

	cfg, degraded, st, err := loadForServe(path, log, stderr)
	if err != nil {
		return err
	}
	defer st.Close()

	if p := os.Getenv("MAILPOST_CPUPROFILE"); p != "" {
		// A profiling knob for benchmarks: CPU profile of the whole run.
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	opt := server.Options{ConfigPath: path}
	// A benchmarking knob, not a setting: measure logins that pay the full
	// password hash every time.
	if os.Getenv("MAILPOST_AUTH_CACHE") == "off" {
		opt.Verifier.CacheTTL = -1
		log.Warn("password verification cache disabled by MAILPOST_AUTH_CACHE=off")
	}
	srv, err := server.New(cfg, st, log, opt)
	if err != nil {
		return err
	}
	if degraded != "" {
		srv.SetDegraded(degraded)
	}
	if err := srv.Start(); err != nil {
		return err
	}

	// Reload triggers: the file (and the certificate files it names)
	// changing, SIGHUP, and `mailpost reload` (through the control socket).
	w, err := watch.New(watchedPaths(path, cfg), watch.Options{Logger: log.With("component", "watch")})
	if err != nil {
		// Reload still works through SIGHUP and `mailpost reload`.
		log.Error("cannot watch the config file; reload with SIGHUP or `mailpost reload`", "err", err)
	}
	var events <-chan watch.Event
	if w != nil {
		defer w.Close()
		events = w.Events()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	for running := true; running; {
		trigger := ""
		select {
		case <-ctx.Done():
			running = false
			continue
		case <-hup:
			trigger = "signal"
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			trigger = "file"
		}
		res := srv.ReloadFile(trigger)
		if res.Diagnostics != "" && !res.OK {
			fmt.Fprint(stderr, res.Diagnostics)
		}
		if w != nil && res.OK && res.Changed {
			// The new config may name other certificate files.
			if cur, err := config.Load(path); err == nil {
				w.SetPaths(watchedPaths(path, cur))
			}
		}
	}

	log.Info("shutting down: draining sessions")
	sctx, cancel := context.WithTimeoutCause(context.Background(), 30*time.Second,
		errors.New("sessions did not finish within 30s"))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown incomplete", "err", err, "cause", context.Cause(sctx))
	}
	log.Info("stopped")
	return nil
}

// watchedPaths is the config file and every certificate, key and CA file
// it names (certbot renews those in place or by symlink swap).
func watchedPaths(path string, cfg *config.Config) []string {
	paths := []string{path}
	for _, c := range cfg.Certificates {
		if c.CertFile != "" {
			paths = append(paths, c.CertFile, c.KeyFile)
		}
		if c.ACME != nil && c.ACME.CAFile != "" {
			paths = append(paths, c.ACME.CAFile)
		}
	}
	return paths
}

// newLogger is serve's logger: slog's text handler (key=value, what
// fail2ban filters match) by default, or one JSON object per line for log
// shippers (-log-format json).
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opt := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opt)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opt)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is neither text nor json", format)
}

// loadForServe loads the config file. If it is broken or missing but the
// store holds a revision that worked before, serve starts from that (and
// says so loudly) rather than leave the mail service down until someone
// notices.
func loadForServe(path string, log *slog.Logger, stderr io.Writer) (*config.Config, string, *storage.Store, error) {
	cfg, loadErr := loadConfig(path, stderr)
	if loadErr == nil {
		st, err := openStore(cfg)
		return cfg, "", st, err
	}
	dbPath := server.DatabasePath(peekDataDir(path))
	if _, err := os.Stat(dbPath); err != nil {
		return nil, "", nil, loadErr
	}
	st, err := storage.Open(dbPath)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w; and the store for a fallback: %v", loadErr, err)
	}
	rev, err := st.LatestRevision()
	if err != nil {
		st.Close()
		return nil, "", nil, fmt.Errorf("%w; and no stored revision to fall back to: %v", loadErr, err)
	}
	stored, diags := config.Parse(path, rev.Source)
	if diags.HasErrors() {
		st.Close()
		config.WriteDiagnostics(stderr, diags, rev.Source)
		return nil, "", nil, fmt.Errorf("%w; and stored revision %d no longer validates either", loadErr, rev.Seq)
	}
	why := fmt.Sprintf("%s is broken or missing: serving stored revision %d of %s; fix the file and it is picked up",
		path, rev.Seq, rev.Time.Format(time.RFC3339))
	log.Error("CONFIG FILE UNUSABLE: " + why)
	return stored, why, st, nil
}

// peekDataDir finds data_dir in a config file that does not validate, so
// the store (and its last good revision) can still be found, and so reload,
// status and history work right after a bad edit. It reads the
// one attribute if it can and falls back to the default.
func peekDataDir(path string) string {
	src, err := os.ReadFile(path)
	if err == nil {
		f, _ := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
		if f != nil {
			if body, ok := f.Body.(*hclsyntax.Body); ok {
				if a, ok := body.Attributes["data_dir"]; ok {
					if v, diags := a.Expr.Value(nil); !diags.HasErrors() && v.Type().FriendlyName() == "string" && v.IsKnown() && !v.IsNull() {
						dir := v.AsString()
						if !filepath.IsAbs(dir) {
							dir = filepath.Join(filepath.Dir(path), dir)
						}
						return dir
					}
				}
			}
		}
	}
	return config.DefaultDataDir
}
