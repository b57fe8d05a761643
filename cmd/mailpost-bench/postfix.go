package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// postfix is a private Postfix instance (its own config, queue and data
// directories under the bench's temp dir, started with `postfix -c DIR
// start-fg`) with submission on a loopback port, SASL through a Dovecot
// auth socket, and virtual(8) delivery into the Maildirs that Dovecot
// serves. The system instance (/etc/postfix) is neither read nor started.
type postfix struct {
	g       *group
	etc     string
	addr    string
	dovecot *dovecot
	once    sync.Once
}

func (p *postfix) pop3Addr() string   { return p.dovecot.addr }
func (p *postfix) submitAddr() string { return p.addr }
func (p *postfix) pid() int           { return p.g.cmd.Process.Pid }

func (p *postfix) stop() { p.once.Do(p.doStop) }

func (p *postfix) doStop() {
	// `postfix stop` signals the master through its pid file and waits
	// for it; the group sweep then catches anything left.
	if out, err := exec.Command("postfix", "-c", p.etc, "stop").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "postfix stop: %v\n%s\n", err, out)
	}
	p.g.stop()
	p.dovecot.stop()
}

// postfixVersion asks postconf for the built-in mail_version; postconf
// wants a main.cf, so it gets an empty one in the instance's directory
// (the system's /etc/postfix/main.cf may not exist).
func postfixVersion(dir string) (string, error) {
	etc := filepath.Join(dir, "postfix", "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), nil, 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("postconf", "-c", etc, "-d", "-h", "mail_version").Output()
	if err != nil {
		return "", fmt.Errorf("postconf: %w (install it: apt-get install -y postfix, choosing \"No configuration\")", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// postfixMainCf: no DNS anywhere (no peer name lookup, no DNS in the
// SMTP client, no outbound transport at all), every name literal, only
// bench.test as a virtual mailbox domain with its recipients listed.
func postfixMainCf(dir, authSocket, certPath, keyPath string) string {
	return fmt.Sprintf(`# written by mailpost-bench; a private instance, not /etc/postfix
compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = %[1]s/postfix.log
# Postfix refuses log paths outside these prefixes (default /var)
maillog_file_prefixes = %[1]s
myhostname = mail.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is off in this bench
relayhost =
relay_domains =
default_transport = error:5.7.1 no outbound delivery in this bench
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
append_dot_mydomain = no
biff = no
virtual_mailbox_domains = bench.test
virtual_mailbox_base = %[2]s/mail
virtual_mailbox_maps = texthash:%[1]s/etc/vmailbox
virtual_uid_maps = static:%[3]d
virtual_gid_maps = static:%[4]d
virtual_mailbox_limit = 0
smtpd_tls_cert_file = %[5]s
smtpd_tls_key_file = %[6]s
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = %[7]s
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
# like mailpost's send_as: MAIL FROM must belong to the logged-in user
smtpd_sender_login_maps = texthash:%[1]s/etc/senders
smtpd_sender_restrictions = reject_sender_login_mismatch
smtpd_relay_restrictions = permit_sasl_authenticated, reject
`, dir, filepath.Dir(dir), mailUID, mailGID, certPath, keyPath, authSocket)
}

// postfixMasterCf is Debian's master.cf reduced to what runs here, with
// no chroot (the instance's paths are outside any chroot) and the
// submission listener on a loopback port in place of smtp on 25.
func postfixMasterCf(port int) string {
	return fmt.Sprintf(`# written by mailpost-bench
127.0.0.1:%d inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, port)
}

// startPostfix starts Dovecot (POP3 and the SASL socket) and then the
// private Postfix instance, and waits until submission answers.
func startPostfix(dir string, do dovecotOpts, users []string) (*postfix, error) {
	pdir := filepath.Join(dir, "postfix")
	etc := filepath.Join(pdir, "etc")
	for _, d := range []string{etc, filepath.Join(pdir, "queue"), filepath.Join(pdir, "data"), filepath.Join(dir, "auth")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chown(filepath.Join(pdir, "data"), postfixUID(), -1); err != nil {
		return nil, fmt.Errorf("chown postfix data_directory: %w", err)
	}
	do.authSocket = filepath.Join(dir, "auth", "auth-postfix")
	dv, err := startDovecot(do, users)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		dv.stop()
		return nil, err
	}
	var vmb, snd strings.Builder
	for _, u := range users {
		local, domain, _ := strings.Cut(u, "@")
		fmt.Fprintf(&vmb, "%s %s/%s/Maildir/\n", u, domain, local) // trailing slash: Maildir
		fmt.Fprintf(&snd, "%s %s\n", u, u)
	}
	files := map[string]string{
		"main.cf":   postfixMainCf(pdir, do.authSocket, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")),
		"master.cf": postfixMasterCf(port),
		"vmailbox":  vmb.String(),
		"senders":   snd.String(),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(body), 0o644); err != nil {
			dv.stop()
			return nil, err
		}
	}
	// Creates the queue's subdirectories with the owners Postfix wants.
	if out, err := exec.Command("postfix", "-c", etc, "set-permissions").CombinedOutput(); err != nil {
		dv.stop()
		return nil, fmt.Errorf("postfix set-permissions: %v\n%s", err, out)
	}
	g, err := startGroup("postfix", exec.Command("postfix", "-c", etc, "start-fg"), filepath.Join(pdir, "postfix.stderr"))
	if err != nil {
		dv.stop()
		return nil, err
	}
	p := &postfix{g: g, etc: etc, addr: fmt.Sprintf("127.0.0.1:%d", port), dovecot: dv}
	if err := waitListening(p.addr, g.done, 30*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("postfix: %w\n%s\n%s", err,
			tail(filepath.Join(pdir, "postfix.stderr"), 2000), tail(filepath.Join(pdir, "postfix.log"), 2000))
	}
	return p, nil
}

// postfixUID is the postfix user's id, or -1 (leave as is) if absent;
// Postfix then says what is wrong when it starts.
func postfixUID() int {
	u, err := user.Lookup("postfix")
	if err != nil {
		return -1
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return -1
	}
	return uid
}
