// Command mailpost is a single-binary mail appliance: POP3 and authenticated
// SMTP submission for a small domain, configured by one HCL file and storing
// everything in one bbolt file.
//
// Usage: mailpost COMMAND [-config FILE] [flags]; see `mailpost help`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"mailpost/auth"
	"mailpost/certs"
	"mailpost/config"
	"mailpost/server"
	"mailpost/storage"
)

const usage = `mailpost: POP3 and authenticated SMTP for a small domain, from one HCL file.

Usage:
  mailpost serve          [-config FILE] [-log-level debug|info|warn|error]
  mailpost check          [-config FILE]     validate the file: every problem, FILE:LINE:COL
  mailpost settings       [-config FILE]     effective settings, certificates, mailboxes
  mailpost status         [-config FILE]     ask the running server how it is
  mailpost deliver -to ADDR [-config FILE] < message
  mailpost hash-password                     read a password (no echo, or stdin), print its hash

-config defaults to ./mailpost.hcl.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can call it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("mailpost "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "mailpost.hcl", "configuration file")
	var (
		logLevel = new(string)
		to       = new(string)
	)
	switch cmd {
	case "serve":
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	case "deliver":
		to = fs.String("to", "", "recipient address (a mailbox or an alias)")
	case "check", "settings", "status", "hash-password":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mailpost: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailpost %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}

	var err error
	switch cmd {
	case "serve":
		err = cmdServe(*cfgPath, *logLevel, stderr)
	case "check":
		return cmdCheck(*cfgPath, stdout, stderr)
	case "settings":
		err = cmdSettings(*cfgPath, stdout, stderr)
	case "status":
		err = cmdStatus(*cfgPath, stdout, stderr)
	case "deliver":
		err = cmdDeliver(*cfgPath, *to, stdin, stdout, stderr)
	case "hash-password":
		err = cmdHashPassword(stdin, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailpost %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// loadConfig reads and validates the file, printing every diagnostic
// (warnings too) to w.
func loadConfig(path string, w io.Writer) (*config.Config, error) {
	cfg, diags := config.Load(path)
	if len(diags) > 0 {
		src, _ := os.ReadFile(path)
		config.WriteDiagnostics(w, diags, src)
	}
	if diags.HasErrors() {
		n := 0
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				n++
			}
		}
		return nil, fmt.Errorf("%s: %d error(s) in the configuration", path, n)
	}
	return cfg, nil
}

func cmdCheck(path string, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mailpost check: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: configuration is valid (hostname %s, %d mailbox(es))\n", path, cfg.Hostname, len(cfg.Mailboxes))
	return 0
}

// openStore opens the database, explaining the usual reason it can't be.
func openStore(cfg *config.Config) (*storage.Store, error) {
	if err := server.EnsureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	st, err := storage.Open(server.DatabasePath(cfg.DataDir))
	if err != nil {
		return nil, fmt.Errorf("%w (is another mailpost serving from %s?)", err, cfg.DataDir)
	}
	return st, nil
}

func cmdServe(path, level string, stderr io.Writer) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if path := os.Getenv("MAILPOST_CPUPROFILE"); path != "" {
		// A profiling knob for benchmarks: CPU profile of the whole run.
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var opt server.Options
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
	if err := srv.Start(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
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

func cmdSettings(path string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return err
	}
	if text, err := server.NewClient(cfg.DataDir).Settings(); err == nil {
		fmt.Fprint(stdout, text)
		return nil
	} else if !errors.Is(err, server.ErrNotRunning) {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	var sources []certs.Source
	for _, c := range cfg.Certificates {
		sources = append(sources, certs.Source{Name: c.Name, Static: c.Static, SelfSigned: c.SelfSigned, Names: c.Names})
	}
	pool, err := certs.Build(sources, st, time.Now())
	if err != nil {
		return err
	}
	server.WriteSettings(stdout, cfg, pool, st)
	return nil
}

func cmdStatus(path string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return err
	}
	st, err := server.NewClient(cfg.DataDir).Status()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "hostname         %s\nup since         %s\nconfig revision  %d (sha256 %.12s)\npop3 sessions    %d\nlisteners:\n",
		st.Hostname, st.Started.Format(time.RFC3339), st.ConfigRevision, st.ConfigSHA256, st.POP3Sessions)
	for _, l := range st.Listeners {
		fmt.Fprintf(stdout, "  %-6s %s\n", l.Proto, l.Addr)
	}
	return nil
}

func cmdDeliver(path, to string, stdin io.Reader, stdout, stderr io.Writer) error {
	if to == "" {
		return errors.New("-to ADDR is required")
	}
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return err
	}
	// While serve runs it holds the database; the message goes through it.
	res, err := server.NewClient(cfg.DataDir).Deliver(to, stdin)
	if err == nil {
		fmt.Fprintf(stdout, "delivered to %s (uidl %s, %d octets) through the running server\n", res.Mailbox, res.UIDL, res.Size)
		return nil
	}
	if !errors.Is(err, server.ErrNotRunning) {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return fmt.Errorf("neither a running server nor the database is available: %w", err)
	}
	defer st.Close()
	info, mailbox, err := server.Deliver(cfg, st, to, stdin)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "delivered to %s (uidl %s, %d octets) into %s\n", mailbox, info.UIDL, info.Size, st.Path())
	return nil
}

func cmdHashPassword(stdin io.Reader, stdout, stderr io.Writer) error {
	var pw string
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return err
		}
		fmt.Fprint(stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return err
		}
		if string(a) != string(b) {
			return errors.New("the passwords differ")
		}
		pw = string(a)
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return errors.New("empty password")
	}
	h, err := auth.HashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}
