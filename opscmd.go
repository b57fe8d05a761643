package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/term"

	"mailpost/importer"
	"mailpost/server"
	"mailpost/storage"
)

// Operations commands: backup, mailbox list|stats, import.

// cmdBackup writes a consistent copy of the store to file ("-" for stdout):
// through the running server when there is one (it holds the database),
// else from the file directly. The copy is written beside its destination
// under a temporary name, synced, opened and checked with bbolt, and only
// then renamed into place, so FILE is either a whole verified copy or
// untouched.
func cmdBackup(path, file string, stdout, stderr io.Writer) error {
	if file == "" {
		return errors.New("want `backup FILE` (or `backup -` for stdout)")
	}
	dir := peekDataDir(path)
	live := server.DatabasePath(dir)
	copyTo := func(w io.Writer) (int64, error) {
		c := server.NewClient(dir)
		if c.Running() {
			return c.Backup(context.Background(), w)
		}
		if _, err := os.Stat(live); err != nil {
			return 0, fmt.Errorf("no running server and no database at %s", live)
		}
		st, err := storage.Open(live)
		if err != nil {
			return 0, err
		}
		defer st.Close()
		return st.Backup(w)
	}
	if file == "-" {
		_, err := copyTo(stdout)
		return err
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	if same, _ := sameFile(abs, live); same || abs == live {
		return fmt.Errorf("%s is the live database; back up to another file", file)
	}
	start := time.Now()
	tmp, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".tmp-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing left to remove
	// The copy holds private keys and everyone's mail, like the original.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("backup: %w", err)
	}
	n, err := copyTo(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := verifyBackup(tmp.Name()); err != nil {
		return fmt.Errorf("backup: the copy failed verification: %w", err)
	}
	if err := os.Rename(tmp.Name(), abs); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(abs)); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Fprintf(stdout, "backup: %d bytes written to %s in %s (consistent copy, checked)\n", n, file, time.Since(start).Round(time.Millisecond))
	return nil
}

// verifyBackup opens the copy read-only and runs bbolt's page check.
func verifyBackup(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drained, so the checker ends
			if first == nil {
				first = err
			}
		}
		return first
	})
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

// cmdMailbox runs `mailbox list` (configuration: access, quota, aliases)
// and `mailbox stats` (messages, bytes against quota, last login), from
// the running server or, when none runs, from the file and the store.
func cmdMailbox(path string, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || (args[0] != "list" && args[0] != "stats") {
		return errors.New("want `mailbox list` or `mailbox stats`")
	}
	var reps []server.MailboxReport
	c := server.NewClient(peekDataDir(path))
	if c.Running() {
		var err error
		if reps, err = c.Mailboxes(); err != nil {
			return err
		}
	} else {
		cfg, err := loadConfig(path, stderr)
		if err != nil {
			return err
		}
		st, err := openStore(cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		if reps, err = server.MailboxReports(cfg, st); err != nil {
			return err
		}
	}
	if args[0] == "list" {
		writeMailboxList(stdout, reps)
	} else {
		writeMailboxStats(stdout, reps, time.Now())
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func writeMailboxList(w io.Writer, reps []server.MailboxReport) {
	fmt.Fprintf(w, "%-32s  %-4s  %-10s  %10s  %-30s  %s\n", "MAILBOX", "POP3", "SUBMISSION", "QUOTA", "ALIASES", "DEVICES")
	for _, r := range reps {
		if !r.Configured {
			fmt.Fprintf(w, "%-32s  (not in the config; %d message(s) left in the store)\n", r.Address, r.Messages)
			continue
		}
		quota := "unlimited"
		if r.Quota > 0 {
			quota = humanBytes(r.Quota)
		}
		devices := 0
		for _, d := range r.Devices {
			if !d.Removed {
				devices++
			}
		}
		fmt.Fprintf(w, "%-32s  %-4s  %-10s  %10s  %-30s  %d\n", r.Address, onOff(r.POP3), onOff(r.Submission), quota, strings.Join(r.Aliases, ","), devices)
	}
}

// lastUse renders a login as "2026-03-01 12:00:00 (5s ago) pop3 from
// 192.0.2.7", or "never".
func lastUse(l *storage.Login, now time.Time) string {
	if l == nil {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago) %s from %s", l.Time.Local().Format(time.DateTime), now.Sub(l.Time).Round(time.Second), l.Proto, l.IP)
}

// writeMailboxStats prints a line per mailbox and, under a mailbox with
// device passwords (configured, or removed but with a recorded last use),
// a line per credential.
func writeMailboxStats(w io.Writer, reps []server.MailboxReport, now time.Time) {
	fmt.Fprintf(w, "%-32s  %8s  %10s  %6s  %s\n", "MAILBOX", "MESSAGES", "SIZE", "QUOTA", "LAST LOGIN")
	for _, r := range reps {
		used := "-"
		if r.Quota > 0 {
			used = fmt.Sprintf("%d%%", r.Bytes*100/r.Quota)
		}
		last := lastUse(r.LastLogin, now)
		if l := r.LastLogin; l != nil && l.Device != "" {
			last += " (device " + l.Device + ")"
		}
		name := r.Address
		if !r.Configured {
			name += " (removed)"
		}
		fmt.Fprintf(w, "%-32s  %8d  %10s  %6s  %s\n", name, r.Messages, humanBytes(r.Bytes), used, last)
		if len(r.Devices) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-30s  %s\n", "main password", "last use "+lastUse(r.MainLogin, now))
		for _, d := range r.Devices {
			label := "device " + d.Name
			if d.Removed {
				fmt.Fprintf(w, "  %-30s  removed from the config; last use %s\n", label, lastUse(d.LastUse, now))
				continue
			}
			from := "any network"
			if len(d.From) > 0 {
				from = strings.Join(d.From, ",")
			}
			expires := "never"
			if d.Expires != nil {
				expires = d.Expires.Local().Format(time.DateTime)
				if d.Expired {
					expires += " (EXPIRED)"
				}
			}
			fmt.Fprintf(w, "  %-30s  allow %s; from %s; expires %s; last use %s\n", label, strings.Join(d.Allow, ","), from, expires, lastUse(d.LastUse, now))
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), []string{"KiB", "MiB", "GiB", "TiB"}
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, suffix[i])
}

// importUsage is the one-line summary of `mailpost import`.
const importUsage = "want `import -to ADDR mbox:FILE|maildir:DIR|pop3s://USER@HOST[:PORT]|pop3://USER@HOST[:PORT]`"

// cmdImport runs `import -to ADDR SOURCE`: every message of another
// server's mailbox goes into ADDR, through the running server when there
// is one, else straight into the store. SOURCE is mbox:FILE (mbox:- reads
// stdin), maildir:DIR, or a POP3 server (see importer.ParseURL); the
// sources live in package importer.
//
// Re-running an import copies only what is new: a message is stored under
// its old server's UIDL (POP3) or a hash of its content (files), the
// target is asked which UIDLs it already has before anything is
// downloaded, and every import is recorded in the mailbox's import ledger,
// so a message imported, downloaded and deleted here does not come back
// (-include-deleted brings such messages back).
func cmdImport(path string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mailpost import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "config", path, "configuration file")
	to := fs.String("to", "", "the mailbox (address or alias) to import into")
	pwFile := fs.String("password-file", "", "POP3: read the password from the first line of this file")
	pwStdin := fs.Bool("password-stdin", false, "POP3: read the password from the first line of stdin")
	caFile := fs.String("ca", "", "POP3: also trust this CA (PEM) for the old server's certificate")
	skipVerify := fs.Bool("insecure-skip-verify", false, "POP3: accept any certificate (self-signed old servers)")
	inclDeleted := fs.Bool("include-deleted", false, "also copy messages imported before and deleted here since")
	// Flags may come before or after the source.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *to == "" || len(positional) != 1 {
		return errors.New(importUsage)
	}
	srcArg := positional[0]

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The target first: a wrong -to fails before any password prompt or
	// connection to the old server.
	t, err := openImportTarget(path, *to, !*inclDeleted, stderr)
	if err != nil {
		return err
	}
	defer t.close()
	info, err := t.known(nil)
	if err != nil {
		return err
	}

	var src importer.Source
	label := srcArg
	kind, rest, _ := strings.Cut(srcArg, ":")
	switch {
	case kind == "mbox" && rest == "-":
		src = importer.Mbox{R: stdin}
	case kind == "mbox" && rest != "":
		f, err := os.Open(rest)
		if err != nil {
			return err
		}
		defer f.Close()
		src = importer.Mbox{R: f}
	case kind == "maildir" && rest != "":
		src = importer.Maildir{Dir: rest}
	case kind == "pop3" || kind == "pop3s":
		p, err := importer.ParseURL(srcArg)
		if err != nil {
			return err
		}
		label = (&url.URL{Scheme: kind, User: url.User(p.User), Host: p.Addr}).String()
		tcfg := &tls.Config{InsecureSkipVerify: *skipVerify}
		if *skipVerify {
			fmt.Fprintf(stderr, "warning: -insecure-skip-verify: the certificate of %s is not checked; anyone on the path can read the password and the mail\n", p.Addr)
		}
		if *caFile != "" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return fmt.Errorf("-ca: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("-ca %s: no PEM certificate in it", *caFile)
			}
			tcfg.RootCAs = pool
		}
		p.TLS = tcfg
		p.Dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		p.Log = stderr
		// The target's size limit: nothing larger than its whole quota
		// can ever fit, and nothing above 1 GiB is fetched at all.
		p.MaxSize = importer.DefaultMaxSize
		if info.Quota > 0 && info.Quota < p.MaxSize {
			p.MaxSize = info.Quota
		}
		if p.Password, err = importPassword(*pwFile, *pwStdin, p.User+"@"+p.Host, stdin, stderr); err != nil {
			return err
		}
		src = &p
	default:
		return fmt.Errorf("the source %q is neither mbox:FILE, maildir:DIR nor pop3s://USER@HOST (%s)", srcArg, importUsage)
	}

	var imported, dup int
	var octets int64
	mailbox := info.Mailbox
	st, err := src.Each(ctx, func(uidls []string) (map[string]bool, error) {
		res, err := t.known(uidls)
		if err != nil {
			return nil, fmt.Errorf("asking the mailbox which messages it has: %w", err)
		}
		m := make(map[string]bool, len(res.Known))
		for _, u := range res.Known {
			m[u] = true
		}
		return m, nil
	}, func(m importer.Message) error {
		mb, err := t.put(m.UIDL, m.Arrived, m.Data)
		if uidl := importer.ContentUIDL(m.Data); errors.Is(err, storage.ErrInvalidUIDL) && m.UIDL != uidl {
			// RFC 1939-valid, but this store refuses it (its own generated
			// form, e.g. mail coming back from a restored copy of this
			// store): the content hash names it instead.
			fmt.Fprintf(stderr, "warning: UIDL %q refused here (%v); storing the message as %s\n", m.UIDL, err, uidl)
			mb, err = t.put(uidl, m.Arrived, m.Data)
		}
		if mb != "" {
			mailbox = mb
		}
		switch {
		case errors.Is(err, server.ErrAlreadyImported):
			// Twice in the same source, or stored by another run meanwhile.
			dup++
			return nil
		case err != nil:
			return fmt.Errorf("message %s: %w", m.UIDL, err)
		}
		imported++
		octets += int64(len(m.Data))
		if imported%importProgressEvery == 0 {
			fmt.Fprintf(stderr, "… %d message(s) imported (%s)\n", imported, humanBytes(octets))
		}
		return nil
	})
	fmt.Fprintf(stdout, "import into %s %s: %d message(s) imported (%s), %d already there", mailbox, t.where, imported, humanBytes(octets), st.Known+dup)
	if st.TooLarge > 0 {
		fmt.Fprintf(stdout, ", %d too large (skipped)", st.TooLarge)
	}
	fmt.Fprintf(stdout, "; source %s holds %d\n", label, st.Seen)
	if err != nil {
		return fmt.Errorf("stopped: %w (running the same import again copies only what is not in yet)", err)
	}
	if st.TooLarge > 0 {
		return fmt.Errorf("%d message(s) larger than the limit were not imported", st.TooLarge)
	}
	return nil
}

// importProgressEvery is how often (in messages stored) an import reports
// progress on stderr.
const importProgressEvery = 100

// importTarget is where an import stores: the running server over its
// control socket, or the store file when no server runs.
type importTarget struct {
	where string
	known func(uidls []string) (server.KnownResult, error)
	put   func(uidl string, arrived time.Time, msg []byte) (string, error)
	close func()
}

// knownQueryMax is the most UIDLs sent in one query (the control socket
// takes up to 1 MiB of them).
const knownQueryMax = 5000

func openImportTarget(path, to string, withLedger bool, stderr io.Writer) (*importTarget, error) {
	c := server.NewClient(peekDataDir(path))
	if c.Running() {
		return &importTarget{
			where: "through the running server",
			known: func(uidls []string) (server.KnownResult, error) {
				var all server.KnownResult
				// At least one query, also for none: it resolves the mailbox.
				for first := true; first || len(uidls) > 0; first = false {
					batch := uidls[:min(len(uidls), knownQueryMax)]
					uidls = uidls[len(batch):]
					res, err := c.KnownUIDLs(to, batch, withLedger)
					if err != nil {
						return res, err
					}
					res.Known = append(all.Known, res.Known...)
					all = res
				}
				return all, nil
			},
			put: func(uidl string, arrived time.Time, msg []byte) (string, error) {
				res, err := c.Import(to, uidl, arrived, bytes.NewReader(msg))
				return res.Mailbox, err
			},
			close: func() {},
		}, nil
	}
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return nil, err
	}
	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	return &importTarget{
		where: "into " + st.Path(),
		known: func(uidls []string) (server.KnownResult, error) {
			return server.KnownUIDLs(cfg, st, to, uidls, withLedger)
		},
		put: func(uidl string, arrived time.Time, msg []byte) (string, error) {
			_, mb, err := server.Import(cfg, st, to, uidl, arrived, bytes.NewReader(msg))
			return mb, err
		},
		close: func() { st.Close() },
	}, nil
}

// importPassword reads the old server's password: from a file, from stdin
// when asked to, else from the terminal without echo. It is never printed.
func importPassword(file string, fromStdin bool, who string, stdin io.Reader, stderr io.Writer) (string, error) {
	switch {
	case file != "" && fromStdin:
		return "", errors.New("give -password-file or -password-stdin, not both")
	case file != "":
		return readSecret(file, "", stdin, stderr)
	case fromStdin:
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("-password-stdin: %w", err)
		}
		if pw := strings.TrimRight(line, "\r\n"); pw != "" {
			return pw, nil
		}
		return "", errors.New("-password-stdin: empty password")
	}
	if f, ok := stdin.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("no password: stdin is not a terminal, so give -password-file FILE or -password-stdin")
	}
	return readSecret("", "Password for "+who+": ", stdin, stderr)
}
