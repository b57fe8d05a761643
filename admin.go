package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"mailpost/auth"
	"mailpost/server"
	"mailpost/storage"
)

// cmdReload asks the running server to re-read its file, and prints the
// outcome with any diagnostics. Exit 1 when the edit was refused.
func cmdReload(path string, stdout, stderr io.Writer) int {
	res, err := server.NewClient(peekDataDir(path)).Reload()
	if err != nil {
		fmt.Fprintf(stderr, "mailpost reload: %v\n", err)
		return 1
	}
	fmt.Fprint(stderr, res.Diagnostics)
	switch {
	case !res.OK:
		fmt.Fprintf(stderr, "mailpost reload: refused: %s\n", res.Error)
		return 1
	case !res.Changed:
		fmt.Fprintf(stdout, "nothing changed (revision %d still running)\n", res.Revision)
	default:
		fmt.Fprintf(stdout, "reloaded: revision %d running (%s)\n", res.Revision, res.Duration.Round(time.Microsecond))
	}
	return 0
}

// withServerOrStore asks the running server when there is one, else reads
// the store directly.
func withServerOrStore(path string, running func(*server.Client) error, offline func(*storage.Store) error) error {
	dir := peekDataDir(path)
	c := server.NewClient(dir)
	if c.Running() {
		return running(c)
	}
	db := server.DatabasePath(dir)
	if _, err := os.Stat(db); err != nil {
		return fmt.Errorf("no running server and no database at %s", db)
	}
	st, err := storage.Open(db)
	if err != nil {
		return err
	}
	defer st.Close()
	return offline(st)
}

func cmdConfigHistory(path string, stdout, stderr io.Writer) error {
	show := func(revs []storage.Revision) error {
		fmt.Fprintf(stdout, "%-5s  %-25s  %s\n", "REV", "RECORDED", "SHA-256")
		for _, r := range revs {
			fmt.Fprintf(stdout, "%-5d  %-25s  %s\n", r.Seq, r.Time.Local().Format(time.RFC3339), r.SHA256)
		}
		return nil
	}
	return withServerOrStore(path, func(c *server.Client) error {
		revs, err := c.Revisions()
		if err != nil {
			return err
		}
		return show(revs)
	}, func(st *storage.Store) error {
		revs, err := st.Revisions()
		if err != nil {
			return err
		}
		return show(revs)
	})
}

func cmdConfigShow(path, arg string, stdout, stderr io.Writer) error {
	seq, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return errors.New("REV must be a revision number (see `mailpost config history`)")
	}
	var rev storage.Revision
	err = withServerOrStore(path, func(c *server.Client) error {
		rev, err = c.Revision(seq)
		return err
	}, func(st *storage.Store) error {
		rev, err = st.Revision(seq)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "# revision %d, recorded %s, sha256 %s\n", rev.Seq, rev.Time.Local().Format(time.RFC3339), rev.SHA256)
	stdout.Write(rev.Source)
	return nil
}

// cmdQueue lists the outbound queue: mail for other domains waiting for
// delivery (the delivery itself comes with the outbound issue).
func cmdQueue(path string, stdout, stderr io.Writer) error {
	show := func(q []storage.QueuedMessage) error {
		if len(q) == 0 {
			fmt.Fprintln(stdout, "the outbound queue is empty")
			return nil
		}
		fmt.Fprintf(stdout, "%-6s  %-19s  %-19s  %8s  %-25s  %-25s  %s\n", "ID", "QUEUED", "NEXT ATTEMPT", "SIZE", "FROM", "TO", "ATTEMPTS / LAST ERROR")
		for _, m := range q {
			from := m.From
			if from == "" {
				from = "<>"
			}
			fmt.Fprintf(stdout, "%-6d  %-19s  %-19s  %8d  %-25s  %-25s  %d %s\n", m.ID, m.Queued.Local().Format(time.DateTime),
				m.NextAttempt.Local().Format(time.DateTime), m.Size, from, strings.Join(m.To, ","), m.Attempts, m.LastError)
		}
		fmt.Fprintf(stdout, "%d message(s)\n", len(q))
		return nil
	}
	return withServerOrStore(path, func(c *server.Client) error {
		q, err := c.Queue()
		if err != nil {
			return err
		}
		return show(q)
	}, func(st *storage.Store) error {
		q, err := st.Queue()
		if err != nil {
			return err
		}
		return show(q)
	})
}

// writeLastLogins prints status's most recent logins across mailboxes,
// newest first: who, when, from where, over what.
func writeLastLogins(w io.Writer, st server.Status) {
	switch {
	case st.LastLoginsError != "":
		fmt.Fprintf(w, "last logins      unavailable: %s\n", st.LastLoginsError)
		return
	case len(st.LastLogins) == 0:
		fmt.Fprintln(w, "last logins      none recorded")
		return
	}
	fmt.Fprintln(w, "last logins      (newest first, one per mailbox)")
	mw, iw := 0, 0
	for _, l := range st.LastLogins {
		mw, iw = max(mw, len(l.Mailbox)), max(iw, len(l.IP))
	}
	for _, l := range st.LastLogins {
		fmt.Fprintf(w, "  %-*s  %-25s  %-*s  %s\n", mw, l.Mailbox, l.Time.Local().Format(time.RFC3339), iw, l.IP, l.Proto)
	}
}

// retryText words a wait for the operator as the logs do: whole seconds,
// rounded up ("9m40s"), never "0s" while something is still refused.
func retryText(d time.Duration) string {
	return (d + time.Second - 1).Truncate(time.Second).String()
}

// writeLoginLimits prints status's login limits section: how many
// networks and accounts are refused now, and the fullest few.
func writeLoginLimits(w io.Writer, st server.Status) {
	ll := st.LoginLimits
	switch {
	case ll == nil:
		return // a server from before the field
	case ll.Networks+ll.Accounts == 0:
		fmt.Fprintln(w, "login limits     nobody refused now")
		return
	}
	fmt.Fprintf(w, "login limits     %d network(s), %d account(s) refused now", ll.Networks, ll.Accounts)
	if n := ll.Networks + ll.Accounts; n > len(ll.Entries) {
		fmt.Fprintf(w, " (the fullest %d; all: mailpost login-limits)", len(ll.Entries))
	}
	fmt.Fprintln(w)
	kw := 0
	for _, e := range ll.Entries {
		kw = max(kw, len(e.Key))
	}
	for _, e := range ll.Entries {
		fmt.Fprintf(w, "  %-7s  %-*s  %s  retry in %s\n", e.Tier, kw, e.Key, levelText(e), retryText(e.RetryAfter))
	}
}

// levelText is a bucket's failures against its limit.
func levelText(e auth.LimitEntry) string {
	return fmt.Sprintf("%.1f of %d failures", e.Level, e.Limit)
}

// notRunning explains a login-limits command without a server: the counts
// live in its memory, so there is nothing to see or clear.
func notRunning(err error) error {
	if errors.Is(err, server.ErrNotRunning) {
		return fmt.Errorf("%w; login limits live in the running server's memory, so with none running nobody is refused", err)
	}
	return err
}

// cmdLoginLimits lists what login_limits refuses now, like
// `fail2ban-client status JAIL`.
func cmdLoginLimits(path string, stdout io.Writer) error {
	snap, err := server.NewClient(peekDataDir(path)).LoginLimits(100)
	if err != nil {
		return notRunning(err)
	}
	if snap.Networks+snap.Accounts == 0 {
		fmt.Fprintln(stdout, "nobody is refused by login_limits now")
		return nil
	}
	kw := len("KEY")
	for _, e := range snap.Entries {
		kw = max(kw, len(e.Key))
	}
	fmt.Fprintf(stdout, "%-7s  %-*s  %-20s  %7s  %-25s  %s\n", "TIER", kw, "KEY", "LEVEL", "REFUSED", "FIRST REFUSED", "RETRY IN")
	for _, e := range snap.Entries {
		since := "-"
		if !e.Since.IsZero() {
			since = e.Since.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%-7s  %-*s  %-20s  %7d  %-25s  %s\n", e.Tier, kw, e.Key, levelText(e), e.Refused, since, retryText(e.RetryAfter))
	}
	fmt.Fprintf(stdout, "%d network(s) and %d account(s) refused now", snap.Networks, snap.Accounts)
	if n := snap.Networks + snap.Accounts; n > len(snap.Entries) {
		fmt.Fprintf(stdout, "; the fullest %d listed", len(snap.Entries))
	}
	fmt.Fprintln(stdout)
	return nil
}

// cmdLoginLimitsClear drops the limits on an address (every tier holding
// it), one tier's network or an account, like `fail2ban-client unban`.
func cmdLoginLimitsClear(path, key string, stdout io.Writer) error {
	res, err := server.NewClient(peekDataDir(path)).ClearLoginLimit(key)
	if err != nil {
		return notRunning(err)
	}
	if len(res.Cleared) == 0 {
		fmt.Fprintf(stdout, "nothing matched %s %s: no failed logins are counted against it\n", res.As, res.Key)
		return nil
	}
	for _, e := range res.Cleared {
		state := "was not refusing"
		if e.Refusing {
			state = fmt.Sprintf("was refusing for another %s", retryText(e.RetryAfter))
		}
		fmt.Fprintf(stdout, "cleared %-7s  %s  (%s, %s, %d refused)\n", e.Tier, e.Key, levelText(e), state, e.Refused)
	}
	return nil
}
