// Command mailpost is a single-binary mail appliance: POP3 and authenticated
// SMTP submission for a small domain, configured by one HCL file and storing
// everything in one bbolt file.
//
// Usage: mailpost COMMAND [-config FILE] [flags]; see `mailpost help`.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
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
  mailpost serve          [-config FILE] [-log-level debug|info|warn|error] [-log-format text|json]
  mailpost check          [-config FILE]     validate the file: every problem, FILE:LINE:COL
  mailpost settings       [-config FILE]     effective settings, certificates, mailboxes
  mailpost status         [-config FILE]     ask the running server how it is
  mailpost reload         [-config FILE]     make the running server re-read its file now
  mailpost queue          [-config FILE]     mail waiting for delivery to other domains
  mailpost queue retry|drop ID [-config FILE] deliver now, or give up on one message
  mailpost backup FILE    [-config FILE]     a consistent hot copy of the store (- for stdout)
  mailpost login-limits   [-config FILE]     networks and accounts login_limits refuses now
  mailpost login-limits clear IP|PREFIX|ACCOUNT [-config FILE] let them log in again at once
  mailpost mailbox list|stats [-config FILE] messages, bytes, last login per mailbox
  mailpost import -to ADDR mbox:FILE|maildir:DIR|pop3s://USER@HOST[:PORT] [-config FILE]
                 [-password-file F|-password-stdin] [-ca F] [-insecure-skip-verify] [-include-deleted]
  mailpost dns            [-config FILE]     DNS records per domain: MX, SPF, DKIM, DMARC, client SRV, autoconfig
  mailpost config history [-config FILE]     the recorded config revisions
  mailpost config show REV [-config FILE]    print one recorded revision
  mailpost deliver -to ADDR [-config FILE] < message
  mailpost hash-password                     read a password (no echo, or stdin), print its hash
  mailpost hash-password -random             a new random password (for a device) and its hash
  mailpost test roundtrip -user ADDR [-config FILE] [-password-file F] [-strict] [-host H]
                                             send to yourself, read it back over POP3, step by step
  mailpost test pop3|smtp -host H [-port P] [-method ssl|tls] [-user ADDR -password-file F] [-domain D]
                                             check a server step by step (DNS, TLS, certificate, auth)

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
	if cmd == "test" {
		return cmdTest(args, stdin, stdout, stderr)
	}
	if cmd == "import" {
		// Its own flags (password, CA, …): cmdImport parses them all.
		if err := cmdImport("mailpost.hcl", args, stdin, stdout, stderr); errors.Is(err, flag.ErrHelp) {
			return 0
		} else if err != nil {
			fmt.Fprintf(stderr, "mailpost import: %v\n", err)
			return 1
		}
		return 0
	}
	if cmd == "queue" && len(args) > 0 && (args[0] == "retry" || args[0] == "drop") {
		cmd, args = "queue "+args[0], args[1:]
	}
	if cmd == "login-limits" && len(args) > 0 && args[0] == "clear" {
		cmd, args = "login-limits clear", args[1:]
	}
	if cmd == "config" {
		// Two-word commands: "config history", "config show REV".
		if len(args) == 0 || (args[0] != "history" && args[0] != "show") {
			fmt.Fprintf(stderr, "mailpost config: want \"history\" or \"show REV\"\n\n%s", usage)
			return 2
		}
		cmd, args = "config "+args[0], args[1:]
	}
	fs := flag.NewFlagSet("mailpost "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "mailpost.hcl", "configuration file")
	var (
		logLevel  = new(string)
		logFormat = new(string)
		to        = new(string)
		random    = new(bool)
	)
	switch cmd {
	case "serve":
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text (key=value) or json (one object per line)")
	case "deliver":
		to = fs.String("to", "", "recipient address (a mailbox or an alias)")
	case "hash-password":
		random = fs.Bool("random", false, "generate a strong random password (for a device) and print it with its hash")
	case "check", "settings", "status", "reload", "config history", "config show", "queue", "queue retry", "queue drop", "dns", "backup", "mailbox",
		"login-limits", "login-limits clear":
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mailpost: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	// Flags may come before or after positional arguments
	// ("config show 3 -config f" as well as "config show -config f 3").
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	wantArgs := 0
	if cmd == "config show" || cmd == "queue retry" || cmd == "queue drop" || cmd == "backup" || cmd == "mailbox" || cmd == "login-limits clear" {
		wantArgs = 1
	}
	if len(positional) != wantArgs {
		fmt.Fprintf(stderr, "mailpost %s: wrong arguments %q\n", cmd, positional)
		return 2
	}

	var err error
	switch cmd {
	case "serve":
		err = cmdServe(*cfgPath, *logLevel, *logFormat, stderr)
	case "check":
		return cmdCheck(*cfgPath, stdout, stderr)
	case "settings":
		err = cmdSettings(*cfgPath, stdout, stderr)
	case "status":
		err = cmdStatus(*cfgPath, stdout, stderr)
	case "deliver":
		err = cmdDeliver(*cfgPath, *to, stdin, stdout, stderr)
	case "hash-password":
		if *random {
			err = cmdRandomPassword(stdout)
		} else {
			err = cmdHashPassword(stdin, stdout, stderr)
		}
	case "reload":
		return cmdReload(*cfgPath, stdout, stderr)
	case "config history":
		err = cmdConfigHistory(*cfgPath, stdout, stderr)
	case "queue":
		err = cmdQueue(*cfgPath, stdout, stderr)
	case "queue retry", "queue drop":
		err = cmdQueueAction(*cfgPath, []string{strings.TrimPrefix(cmd, "queue "), positional[0]}, stdout, stderr)
	case "dns":
		err = cmdDNS(*cfgPath, stdout, stderr)
	case "backup":
		err = cmdBackup(*cfgPath, positional[0], stdout, stderr)
	case "mailbox":
		err = cmdMailbox(*cfgPath, positional, stdout, stderr)
	case "config show":
		err = cmdConfigShow(*cfgPath, positional[0], stdout, stderr)
	case "login-limits":
		err = cmdLoginLimits(*cfgPath, stdout)
	case "login-limits clear":
		err = cmdLoginLimitsClear(*cfgPath, positional[0], stdout)
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
	pool, err := certs.Build(server.CertSources(cfg, nil), st, time.Now())
	if err != nil {
		return err
	}
	server.WriteSettings(stdout, cfg, pool, st)
	return nil
}

func cmdStatus(path string, stdout, stderr io.Writer) error {
	// The file may be mid-edit and broken; status must still answer.
	st, err := server.NewClient(peekDataDir(path)).Status()
	if err != nil {
		return err
	}
	queue := fmt.Sprintf("%d message(s)", st.QueueLength)
	if st.QueueError != "" {
		queue = "unknown: " + st.QueueError
	}
	fmt.Fprintf(stdout, "hostname         %s\nup since         %s\nconfig revision  %d (sha256 %.12s)\n"+
		"pop3 sessions    %d\nsmtp sessions    %d\nstore            %s\noutbound queue   %s\nlisteners:\n",
		st.Hostname, st.Started.Format(time.RFC3339), st.ConfigRevision, st.ConfigSHA256, st.POP3Sessions, st.SMTPSessions,
		humanBytes(st.StoreBytes), queue)
	for _, l := range st.Listeners {
		fmt.Fprintf(stdout, "  %-12s %s listening\n", l.Proto, l.Addr)
	}
	server.WriteCertStatus(stdout, st.Certificates)
	writeLastLogins(stdout, st)
	writeLoginLimits(stdout, st)
	fmt.Fprintf(stdout, "reloads          %d applied, %d unchanged, %d refused\n", st.Reloads.OK, st.Reloads.NoOp, st.Reloads.Failed)
	if r := st.LastReload; r != nil {
		outcome := "applied"
		switch {
		case !r.OK:
			outcome = "REFUSED: " + r.Error
		case !r.Changed:
			outcome = "nothing changed"
		}
		fmt.Fprintf(stdout, "last reload      %s (%s) %s\n", r.Time.Format(time.RFC3339), r.Trigger, outcome)
		if !r.OK && r.Diagnostics != "" {
			fmt.Fprint(stdout, r.Diagnostics)
		}
	}
	if st.Degraded != "" {
		fmt.Fprintf(stdout, "WARNING          %s\n", st.Degraded)
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
