package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

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
	fmt.Fprintf(w, "%-32s  %-4s  %-10s  %10s  %s\n", "MAILBOX", "POP3", "SUBMISSION", "QUOTA", "ALIASES")
	for _, r := range reps {
		if !r.Configured {
			fmt.Fprintf(w, "%-32s  (not in the config; %d message(s) left in the store)\n", r.Address, r.Messages)
			continue
		}
		quota := "unlimited"
		if r.Quota > 0 {
			quota = humanBytes(r.Quota)
		}
		fmt.Fprintf(w, "%-32s  %-4s  %-10s  %10s  %s\n", r.Address, onOff(r.POP3), onOff(r.Submission), quota, strings.Join(r.Aliases, ","))
	}
}

func writeMailboxStats(w io.Writer, reps []server.MailboxReport, now time.Time) {
	fmt.Fprintf(w, "%-32s  %8s  %10s  %6s  %s\n", "MAILBOX", "MESSAGES", "SIZE", "QUOTA", "LAST LOGIN")
	for _, r := range reps {
		used := "-"
		if r.Quota > 0 {
			used = fmt.Sprintf("%d%%", r.Bytes*100/r.Quota)
		}
		last := "never"
		if l := r.LastLogin; l != nil {
			last = fmt.Sprintf("%s (%s ago) %s from %s", l.Time.Local().Format(time.DateTime), now.Sub(l.Time).Round(time.Second), l.Proto, l.IP)
		}
		name := r.Address
		if !r.Configured {
			name += " (removed)"
		}
		fmt.Fprintf(w, "%-32s  %8d  %10s  %6s  %s\n", name, r.Messages, humanBytes(r.Bytes), used, last)
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

// cmdImport runs `import -to ADDR mbox:FILE|maildir:DIR` (mbox:- reads
// stdin): every message of another server's mailbox goes into ADDR, through
// the running server when there is one, else straight into the store.
//
// Re-running an import is safe: each message is stored under the UIDL
// "imp-" + the first 128 bits of SHA-256 over its CRLF-normalized bytes, and
// a mailbox refuses a UIDL it already holds, so messages imported before
// are skipped. (A content hash rather than Message-ID: Message-IDs are
// missing or reused in real archives; identical bytes are the same message.)
// A message imported, downloaded and deleted comes back on a re-import.
func cmdImport(path string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mailpost import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "the mailbox (address or alias) to import into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *to == "" || fs.NArg() != 1 {
		return errors.New("want `import -to ADDR mbox:FILE` or `import -to ADDR maildir:DIR`")
	}
	kind, src, _ := strings.Cut(fs.Arg(0), ":")
	var each func(func(msg []byte, arrived time.Time) error) error
	switch {
	case kind == "mbox" && src == "-":
		each = func(fn func([]byte, time.Time) error) error { return readMbox(stdin, fn) }
	case kind == "mbox" && src != "":
		each = func(fn func([]byte, time.Time) error) error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			return readMbox(f, fn)
		}
	case kind == "maildir" && src != "":
		each = func(fn func([]byte, time.Time) error) error { return readMaildir(src, fn) }
	default:
		return fmt.Errorf("the source %q is neither mbox:FILE nor maildir:DIR", fs.Arg(0))
	}

	var (
		put   func(uidl string, arrived time.Time, msg []byte) (string, error)
		where string
	)
	c := server.NewClient(peekDataDir(path))
	if c.Running() {
		where = "through the running server"
		put = func(uidl string, arrived time.Time, msg []byte) (string, error) {
			res, err := c.Import(*to, uidl, arrived, bytes.NewReader(msg))
			return res.Mailbox, err
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
		where = "into " + st.Path()
		put = func(uidl string, arrived time.Time, msg []byte) (string, error) {
			_, mb, err := server.Import(cfg, st, *to, uidl, arrived, bytes.NewReader(msg))
			return mb, err
		}
	}

	var imported, skipped int
	var octets int64
	mailbox := *to
	err := each(func(msg []byte, arrived time.Time) error {
		if arrived.IsZero() {
			arrived = headerDate(msg)
		}
		mb, err := put(importUIDL(msg), arrived, msg)
		if mb != "" {
			mailbox = mb
		}
		switch {
		case errors.Is(err, server.ErrAlreadyImported):
			skipped++
			return nil
		case err != nil:
			return fmt.Errorf("message %d: %w", imported+skipped+1, err)
		}
		imported++
		octets += int64(len(msg))
		return nil
	})
	fmt.Fprintf(stdout, "import into %s %s: %d message(s) imported (%s), %d already there\n",
		mailbox, where, imported, humanBytes(octets), skipped)
	if err != nil {
		return fmt.Errorf("stopped: %w (running the same import again skips what is already in)", err)
	}
	return nil
}

// importUIDL names a message by its content (see cmdImport): 36 printable
// characters, well inside RFC 1939 §7's 70, and never this store's own
// generated "xxxxxxxx.N" form.
func importUIDL(msg []byte) string {
	sum := sha256.Sum256(msg)
	return "imp-" + hex.EncodeToString(sum[:16])
}

// headerDate is the message's Date header, or zero.
func headerDate(msg []byte) time.Time {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return time.Time{}
	}
	t, err := m.Header.Date()
	if err != nil {
		return time.Time{}
	}
	return t
}

// readMbox calls fn for every message of an mbox file, normalized to CRLF.
//
// A message starts at a "From " line at the start of the file or after an
// empty line (the blank-line rule keeps an unquoted "From " inside a body
// from splitting it, which sloppy mboxo writers leave behind); the empty
// line before it belongs to the separator, not the message. Body lines
// ">From ", ">>From ", … lose one ">" (mboxrd, RFC 4155 appendix A). For
// mboxo files that is the same for ">From ", and only a body line that
// really began ">From " comes out one ">" short.
func readMbox(r io.Reader, fn func(msg []byte, arrived time.Time) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		cur       bytes.Buffer
		started   bool
		prevBlank = true // the start of the file counts as after an empty line
		arrived   time.Time
		lineNo    int
	)
	flush := func() error {
		if !started {
			return nil
		}
		msg := cur.Bytes()
		// The empty line that separated this message from the next (or
		// that writers put after the last one) is mbox framing.
		// Every line was written with its CRLF, so that is one CRLF.
		if bytes.HasSuffix(msg, []byte("\r\n\r\n")) {
			msg = msg[:len(msg)-2]
		}
		out := append([]byte(nil), msg...)
		cur.Reset()
		if len(out) == 0 { // "From " lines back to back: nothing to import
			return nil
		}
		return fn(out, arrived)
	}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return flush()
			}
			return err
		}
		lineNo++
		line = bytes.TrimRight(line, "\r\n")
		if prevBlank && bytes.HasPrefix(line, []byte("From ")) {
			if err := flush(); err != nil {
				return err
			}
			started = true
			arrived = fromLineDate(string(line))
			prevBlank = false
			continue
		}
		if !started {
			if len(line) == 0 {
				continue
			}
			return fmt.Errorf("not an mbox file: line %d comes before any \"From \" line", lineNo)
		}
		if q := bytes.TrimLeft(line, ">"); len(q) < len(line) && bytes.HasPrefix(q, []byte("From ")) {
			line = line[1:]
		}
		cur.Write(line)
		cur.WriteString("\r\n")
		prevBlank = len(line) == 0
	}
}

// fromLineDate reads the date of an mbox "From sender date" line, which is
// asctime() in the writer's local time, sometimes with a zone after it.
func fromLineDate(line string) time.Time {
	f := strings.Fields(line)
	if len(f) < 3 {
		return time.Time{}
	}
	rest := strings.Join(f[2:], " ")
	for _, layout := range []string{"Mon Jan 2 15:04:05 2006", "Mon Jan 2 15:04:05 2006 -0700", "Mon Jan 2 15:04:05 -0700 2006", "Mon Jan 2 15:04:05 MST 2006"} {
		if t, err := time.ParseInLocation(layout, rest, time.Local); err == nil {
			return t
		}
	}
	return time.Time{}
}

// readMaildir calls fn for every message in DIR/cur and DIR/new (tmp holds
// deliveries in progress), in file-name order, which for the usual
// "<unix time>.<unique>" names is arrival order. A file's modification time
// is its arrival time, as in Dovecot. Maildir++ subfolders (.Sent, …) are
// not imported: POP3 only ever sees the inbox.
func readMaildir(dir string, fn func(msg []byte, arrived time.Time) error) error {
	type entry struct {
		path, name string
		mtime      time.Time
	}
	var all []entry
	found := false
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		found = true
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			all = append(all, entry{filepath.Join(dir, sub, e.Name()), e.Name(), info.ModTime()})
		}
	}
	if !found {
		return fmt.Errorf("%s is not a Maildir (no cur/ or new/)", dir)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	for _, e := range all {
		b, err := os.ReadFile(e.path)
		if err != nil {
			return err
		}
		if err := fn(crlf(b), e.mtime); err != nil {
			return fmt.Errorf("%s: %w", e.path, err)
		}
	}
	return nil
}

// crlf turns every line ending (LF or CRLF) into CRLF and ends the last
// line, so a message hashes the same whichever way it was stored.
func crlf(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		out = append(out, bytes.TrimSuffix(line, []byte("\r"))...)
		out = append(out, '\r', '\n')
		b = rest
	}
	return out
}
