package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Dovecot runs as root here (it drops privileges itself); mail belongs to
// nobody:nogroup, which every Debian system has and which owns nothing else
// that Dovecot could touch.
const (
	mailUID = 65534
	mailGID = 65534
)

// dovecotOpts describe one Dovecot instance, everything in dir.
type dovecotOpts struct {
	dir         string
	port        int    // pop3s on 127.0.0.1
	scheme      string // passdb scheme, e.g. ARGON2ID
	noCache     bool   // auth_cache_size = 0
	login       string // "high-security" or "performance"
	maxSessions int    // process limits are sized from this
	authSocket  string // if set, a SASL socket for Postfix (owned by postfix)
}

type dovecot struct {
	g    *group
	addr string
	dir  string
}

func (d *dovecot) pop3Addr() string   { return d.addr }
func (d *dovecot) submitAddr() string { return "" }
func (d *dovecot) pid() int           { return d.g.cmd.Process.Pid }
func (d *dovecot) stop()              { d.g.stop() }

func dovecotVersion() (string, error) {
	out, err := exec.Command("dovecot", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("dovecot --version: %w (install it: apt-get install -y dovecot-pop3d)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// pickScheme returns the scheme asked for, or ARGON2ID when this Dovecot
// build has it (libsodium), else SHA512-CRYPT.
func pickScheme(asked string) (string, error) {
	if asked != "" {
		return strings.ToUpper(asked), nil
	}
	out, err := exec.Command("doveadm", "pw", "-l").Output()
	if err != nil {
		return "", fmt.Errorf("doveadm pw -l: %w", err)
	}
	for _, s := range strings.Fields(string(out)) {
		if s == "ARGON2ID" {
			return s, nil
		}
	}
	return "SHA512-CRYPT", nil
}

// passwordHash is the passdb entry for benchPassword. For ARGON2ID it is
// mailpost's own hash, byte for byte (libsodium verifies it), so both
// servers pay exactly the same per verification.
func passwordHash(scheme string) (string, error) {
	if scheme == "ARGON2ID" {
		return "{ARGON2ID}" + benchHash, nil
	}
	out, err := exec.Command("doveadm", "pw", "-s", scheme, "-p", benchPassword).Output()
	if err != nil {
		return "", fmt.Errorf("doveadm pw -s %s: %w", scheme, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// dovecotConf renders a self-contained dovecot.conf: nothing from
// /etc/dovecot is read, every path is under o.dir, the only listener is
// pop3s on 127.0.0.1.
func dovecotConf(o dovecotOpts, certPath, keyPath string) string {
	ncpu := runtime.NumCPU()
	limit := o.maxSessions + 100
	var b strings.Builder
	fmt.Fprintf(&b, `# written by mailpost-bench; nothing else reads it
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
# mailpost runs at -log-level error in the bench; the same here (no
# per-login info lines)
info_log_path = /dev/null
instance_name = mailpost-bench
protocols = pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <%[2]s
ssl_key = <%[3]s
disable_plaintext_auth = yes
auth_mechanisms = plain
mail_location = maildir:~/Maildir
pop3_uidl_format = %%08Xu%%08Xv
default_process_limit = %[4]d
default_client_limit = %[5]d
passdb {
  driver = dict
  args = %[1]s/dict-auth.conf
}
userdb {
  driver = static
  args = uid=%[6]d gid=%[7]d home=%[1]s/mail/%%d/%%n
}
`, o.dir, certPath, keyPath, limit, 4*limit, mailUID, mailGID)
	// Hashes are verified in auth-worker processes (the dict passdb
	// runs there, and so do cache hits with the option below); one per
	// core, as mailpost runs at most one hash per core.
	fmt.Fprintf(&b, "auth_worker_max_count = %d\n", ncpu)
	if o.noCache {
		b.WriteString("auth_cache_size = 0\n")
	} else {
		// Like mailpost's success cache: 10 minutes, failures not cached.
		// Dovecot's cache keeps the passdb record, not the outcome, so a
		// hit still verifies the password against the stored hash.
		b.WriteString(`auth_cache_size = 10M
auth_cache_ttl = 10 mins
auth_cache_negative_ttl = 0
auth_cache_verify_password_with_worker = yes
`)
	}
	fmt.Fprintf(&b, `service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = %d
    ssl = yes
  }
  process_limit = %d
`, o.port, limit)
	if o.login == "performance" {
		// Dovecot's documented high-performance mode: long-lived login
		// processes, one per core, each serving many connections.
		fmt.Fprintf(&b, "  service_count = 0\n  process_min_avail = %d\n  client_limit = %d\n", ncpu, limit)
	}
	fmt.Fprintf(&b, "}\nservice pop3 {\n  process_limit = %d\n}\n", limit)
	if o.authSocket != "" {
		fmt.Fprintf(&b, `service auth {
  unix_listener %s {
    mode = 0660
    user = postfix
    group = postfix
  }
}
`, o.authSocket)
	}
	return b.String()
}

// startDovecot writes the config and passwd file and runs `dovecot -F`
// in its own process group until pop3s answers.
func startDovecot(o dovecotOpts, users []string) (*dovecot, error) {
	for _, d := range []string{"run", "state"} {
		if err := os.MkdirAll(filepath.Join(o.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	certPath, keyPath, err := writeSelfSigned(o.dir)
	if err != nil {
		return nil, err
	}
	hash, err := passwordHash(o.scheme)
	if err != nil {
		return nil, err
	}
	// The passdb is a file dict: Dovecot 2.3 never caches passwd-file
	// lookups (no cache key), while dict lookups are cached like SQL or
	// LDAP ones. The file holds hashes: group read for the auth process
	// (Dovecot's internal user), nothing for others.
	var db strings.Builder
	for _, u := range users {
		fmt.Fprintf(&db, "shared/passdb/%s\n{\"password\":%q}\n", u, hash)
	}
	dictPath := filepath.Join(o.dir, "auth.dict")
	dictConf := fmt.Sprintf("uri = file:%s\npassword_key = passdb/%%u\niterate_disable = yes\n", dictPath)
	if err := os.WriteFile(filepath.Join(o.dir, "dict-auth.conf"), []byte(dictConf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(dictPath, []byte(db.String()), 0o640); err != nil {
		return nil, err
	}
	g, err := user.LookupGroup("dovecot")
	if err != nil {
		return nil, fmt.Errorf("dovecot group: %w", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.Chown(dictPath, 0, gid); err != nil {
		return nil, err
	}
	conf := filepath.Join(o.dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(dovecotConf(o, certPath, keyPath)), 0o644); err != nil {
		return nil, err
	}
	pg, err := startGroup("dovecot", exec.Command("dovecot", "-F", "-c", conf), filepath.Join(o.dir, "dovecot.stderr"))
	if err != nil {
		return nil, err
	}
	d := &dovecot{g: pg, addr: fmt.Sprintf("127.0.0.1:%d", o.port), dir: o.dir}
	if err := waitListening(d.addr, pg.done, 20*time.Second); err != nil {
		d.stop()
		return nil, fmt.Errorf("dovecot: %w\n%s\n%s", err,
			tail(filepath.Join(o.dir, "dovecot.stderr"), 2000), tail(filepath.Join(o.dir, "dovecot.log"), 2000))
	}
	return d, nil
}

// maildir is a user's Maildir under Dovecot's home layout (home =
// mail/DOMAIN/LOCALPART).
func maildir(root, user string) string {
	local, domain, _ := strings.Cut(user, "@")
	return filepath.Join(root, "mail", domain, local, "Maildir")
}

// seedMaildirs creates every user's Maildir and fills the same mailboxes
// mailpost's seed fills, with the same generated messages, stored the way
// Dovecot's own delivery stores them: LF line ends, with S= (file size)
// and W= (size with CRLF) in the name so POP3 sizes need no reading.
// rateOnly seeds only the rate users (the submission comparison).
func seedMaildirs(root string, users []string, nclients int, rateOnly bool) error {
	for _, u := range users {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(maildir(root, u), sub), 0o700); err != nil {
				return err
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2)) // the same stream as seed()
	seq := 0
	put := func(user string, msg []byte) error {
		seq++
		lf := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
		name := fmt.Sprintf("%d.M%dP%d.bench,S=%d,W=%d", 1700000000+seq, seq, os.Getpid(), len(lf), len(msg))
		return os.WriteFile(filepath.Join(maildir(root, user), "new", name), lf, 0o600)
	}
	for i := 0; i < 2000; i++ {
		m := message(20<<10, r)
		if !rateOnly {
			if err := put("small@bench.test", m); err != nil {
				return err
			}
		}
	}
	for i := 0; i < 50; i++ {
		m := message(5<<20, r)
		if !rateOnly {
			if err := put("big@bench.test", m); err != nil {
				return err
			}
		}
	}
	for i := 0; i < nclients; i++ {
		for j := 0; j < 5; j++ {
			if err := put("rate"+strconv.Itoa(i)+"@bench.test", message(2<<10, r)); err != nil {
				return err
			}
		}
	}
	return chownTree(filepath.Join(root, "mail"), mailUID, mailGID)
}

// countMaildir counts the messages in users' Maildirs (new and cur).
func countMaildir(root string, users []string) (int, error) {
	n := 0
	for _, u := range users {
		for _, sub := range []string{"new", "cur"} {
			ents, err := os.ReadDir(filepath.Join(maildir(root, u), sub))
			if err != nil {
				return 0, err
			}
			n += len(ents)
		}
	}
	return n, nil
}

// benchUsers lists the mailboxes every target has: small, big, the rate
// users and the idle users.
func benchUsers(nclients, nidle int) []string {
	u := []string{"small@bench.test", "big@bench.test"}
	for i := 0; i < nclients; i++ {
		u = append(u, fmt.Sprintf("rate%d@bench.test", i))
	}
	for i := 0; i < nidle; i++ {
		u = append(u, fmt.Sprintf("idle%d@bench.test", i))
	}
	return u
}
