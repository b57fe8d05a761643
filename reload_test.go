package main

// Hot reload, end to end: the real binary, its file watcher and signal
// handling, real TLS clients. TestZeroDowntimeReload is the proof the
// README names: run it with -v to see the counts.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mailpost/server"
)

// replaceFile writes data next to path and renames it over path, the way
// editors and config management tools save.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func status(t *testing.T, in *instance) server.Status {
	t.Helper()
	st, err := server.NewClient(filepath.Join(in.dir, "data")).Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// popLogin dials implicit TLS and logs in, returning the first error reply.
func popLogin(addr, user, pass string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var last string
	for _, cmd := range []string{"", "USER " + user, "PASS " + pass, "QUIT"} {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		last, err = r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(last, "+OK") {
			return strings.TrimSpace(last), nil
		}
	}
	return "+OK", nil
}

func addMailbox(cfg, addr string) string {
	return cfg + fmt.Sprintf("\nmailbox %q {\n  password_hash = %q\n}\n", addr, demoHash)
}

// Editors save by rename, Kubernetes swaps a ..data symlink, others write
// in place: each is seen, applied, and a bad edit in between is refused
// without harm.
func TestReloadTriggers(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	base := e2eConfig(certFile, keyFile)
	cfgPath := writeConfig(t, dir, base)
	in := startServe(t, dir)
	addr := in.addrs["pop3s"]
	loginOK := func(user string) func() bool {
		return func() bool { r, err := popLogin(addr, user, "demo-password"); return err == nil && r == "+OK" }
	}

	// Rename-replace.
	replaceFile(t, cfgPath, []byte(addMailbox(base, "renamed@example.com")))
	if !waitFor(5*time.Second, loginOK("renamed@example.com")) {
		t.Fatalf("rename-replace not applied\n%s", in.log.String())
	}

	// In-place write.
	if err := os.WriteFile(cfgPath, []byte(addMailbox(base, "inplace@example.com")), 0o600); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, loginOK("inplace@example.com")) {
		t.Fatalf("in-place write not applied\n%s", in.log.String())
	}

	// A broken edit: refused with a positioned error, the running config
	// stays, `mailpost reload` reports it and exits 1, status shows it.
	broken := addMailbox(base, "inplace@example.com") + "\nmailbox \"bad@example.com\" {\n  quota = \"lots\"\n}\n"
	replaceFile(t, cfgPath, []byte(broken))
	if !waitFor(5*time.Second, func() bool { st := status(t, in); return st.Reloads.Failed > 0 }) {
		t.Fatalf("broken edit not noticed\n%s", in.log.String())
	}
	if r, err := popLogin(addr, "inplace@example.com", "demo-password"); err != nil || r != "+OK" {
		t.Errorf("after a broken edit the running config should stay: %q %v", r, err)
	}
	out, errOut, code := mailpost(t, "", "reload", "-config", cfgPath)
	if code != 1 || !strings.Contains(errOut, cfgPath+":") || !strings.Contains(errOut, "error:") {
		t.Errorf("mailpost reload on a broken file: code %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	out, _, _ = mailpost(t, "", "status", "-config", cfgPath)
	if !strings.Contains(out, "REFUSED") || !strings.Contains(out, cfgPath+":") {
		t.Errorf("status after a broken edit:\n%s", out)
	}

	// The Kubernetes ConfigMap pattern: mailpost.hcl -> ..data/mailpost.hcl,
	// ..data -> ..<timestamp>/, updated by swapping ..data atomically.
	kdir := t.TempDir()
	v1 := filepath.Join(kdir, "..2026_11_25_01")
	os.Mkdir(v1, 0o700)
	os.WriteFile(filepath.Join(v1, "mailpost.hcl"), []byte(addMailbox(base, "k8s-one@example.com")), 0o600)
	os.Symlink("..2026_11_25_01", filepath.Join(kdir, "..data"))
	os.Symlink("..data/mailpost.hcl", filepath.Join(kdir, "mailpost.hcl"))
	// Point the running server's file at the ConfigMap by replacing it with
	// a symlink to it (the watcher follows the chain).
	os.Remove(cfgPath)
	if err := os.Symlink(filepath.Join(kdir, "mailpost.hcl"), cfgPath); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, loginOK("k8s-one@example.com")) {
		t.Fatalf("symlinked config not applied\n%s", in.log.String())
	}
	v2 := filepath.Join(kdir, "..2026_11_25_02")
	os.Mkdir(v2, 0o700)
	os.WriteFile(filepath.Join(v2, "mailpost.hcl"), []byte(addMailbox(base, "k8s-two@example.com")), 0o600)
	os.Symlink("..2026_11_25_02", filepath.Join(kdir, "..data_tmp"))
	if err := os.Rename(filepath.Join(kdir, "..data_tmp"), filepath.Join(kdir, "..data")); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, loginOK("k8s-two@example.com")) {
		t.Fatalf("..data symlink swap not applied\n%s", in.log.String())
	}

	// SIGHUP re-reads too (here: nothing changed since the last reload).
	before := status(t, in).Reloads
	in.cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { r := status(t, in).Reloads; return r.NoOp+r.OK > before.NoOp+before.OK }) {
		t.Errorf("SIGHUP did not reload")
	}

	// Every applied file is on record.
	out, errOut, code = mailpost(t, "", "config", "history", "-config", cfgPath)
	if code != 0 || strings.Count(out, "\n") < 5 {
		t.Errorf("config history: code %d\n%s%s", code, out, errOut)
	}
	out, _, code = mailpost(t, "", "config", "show", "1", "-config", cfgPath)
	if code != 0 || out != base {
		t.Errorf("config show 1 = code %d\n%q\nwant the first file", code, out)
	}
	in.stop()
}

// A file that is broken at start-up: serve runs the last good revision
// from the store, says so, and picks up the fixed file.
func TestStartFromStoredRevision(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	good := e2eConfig(certFile, keyFile)
	cfgPath := writeConfig(t, dir, good)
	in := startServe(t, dir)
	in.stop()

	os.WriteFile(cfgPath, []byte(good+"\nthis is not HCL {{{\n"), 0o600)
	in = startServe(t, dir)
	if !strings.Contains(in.log.String(), "CONFIG FILE UNUSABLE") {
		t.Errorf("no loud warning about running from the store:\n%s", in.log.String())
	}
	st := status(t, in)
	if st.Degraded == "" || st.ConfigRevision != 1 {
		t.Errorf("status: degraded %q revision %d", st.Degraded, st.ConfigRevision)
	}
	if r, err := popLogin(in.addrs["pop3s"], "alice@example.com", "demo-password"); err != nil || r != "+OK" {
		t.Errorf("login while running from the stored revision: %q %v", r, err)
	}
	replaceFile(t, cfgPath, []byte(addMailbox(good, "fixed@example.com")))
	if !waitFor(5*time.Second, func() bool { return status(t, in).Degraded == "" }) {
		t.Errorf("fixing the file did not clear the degraded state\n%s", in.log.String())
	}
	in.stop()
}

// TestZeroDowntimeReload rewrites the config 60 times (bindings, the
// certificate, mailboxes, limits) while clients log in, list, retrieve and
// delete over TLS and mail is delivered. No session may fail; every message
// must be retrieved exactly once.
func TestZeroDowntimeReload(t *testing.T) {
	const rewrites = 60
	const readers = 4
	dir := t.TempDir()
	caFile, certA, keyA := testCA(t, dir, "mail.example.com")
	caPEM, _ := os.ReadFile(caFile)
	// A second certificate from the same CA, to swap in on odd revisions.
	certB, keyB := filepath.Join(dir, "b-cert.pem"), filepath.Join(dir, "b-key.pem")
	leafFromCA(t, caFile, dir, certB, keyB)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)

	stablePort := freeTCPPort(t)
	extraPorts := []int{freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)}
	makeConfig := func(rev int) string {
		cert, key := certA, keyA
		if rev%2 == 1 {
			cert, key = certB, keyB
		}
		var b strings.Builder
		fmt.Fprintf(&b, `hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "rotating" {
  cert_file = %q
  key_file  = %q
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:%d", "127.0.0.1:%d"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:%d"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
  max_connections              = %d
  banner                       = "revision %d"
}
`, cert, key, stablePort, extraPorts[rev%3], extraPorts[(rev+1)%3], 1000+rev, rev)
		for r := 0; r < readers; r++ {
			fmt.Fprintf(&b, "mailbox \"reader%d@example.com\" {\n  password_hash = %q\n}\n", r, demoHash)
		}
		for m := 0; m < rev%4; m++ {
			fmt.Fprintf(&b, "mailbox \"extra%d@example.com\" {\n  password_hash = %q\n}\n", m, demoHash)
		}
		return b.String()
	}
	cfgPath := writeConfig(t, dir, makeConfig(0))
	in := startServe(t, dir)
	stable := fmt.Sprintf("127.0.0.1:%d", stablePort)
	client := server.NewClient(filepath.Join(dir, "data"))

	var (
		stop      atomic.Bool
		delivered atomic.Int64
		sessions  atomic.Int64
		failures  atomic.Int64
		mu        sync.Mutex
		seen      = map[string]int{}
		firstErr  atomic.Value
	)
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the deliverer
		defer wg.Done()
		for i := 0; !stop.Load() && i < 5000; i++ {
			msg := fmt.Sprintf("Message-ID: <m%d@test>\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i, i)
			if _, err := client.Deliver(fmt.Sprintf("reader%d@example.com", i%readers), strings.NewReader(msg)); err != nil {
				fail(fmt.Errorf("deliver %d: %w", i, err))
				return
			}
			delivered.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	drained := make([]atomic.Bool, readers)
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				if stop.Load() && drained[r].Load() {
					return
				}
				ids, err := popSession(stable, roots, fmt.Sprintf("reader%d@example.com", r))
				sessions.Add(1)
				if err != nil {
					fail(fmt.Errorf("reader %d: %w", r, err))
					return
				}
				mu.Lock()
				for _, id := range ids {
					seen[id]++
				}
				mu.Unlock()
				drained[r].Store(len(ids) == 0)
			}
		}(r)
	}

	var latencies []time.Duration
	for rev := 1; rev <= rewrites; rev++ {
		before := status(t, in).Reloads
		start := time.Now()
		replaceFile(t, cfgPath, []byte(makeConfig(rev)))
		if !waitFor(5*time.Second, func() bool {
			r := status(t, in).Reloads
			return r.OK+r.Failed > before.OK+before.Failed
		}) {
			t.Fatalf("rewrite %d was not applied\n%s", rev, in.log.String())
		}
		latencies = append(latencies, time.Since(start))
		if st := status(t, in); st.LastReload == nil || !st.LastReload.OK {
			t.Fatalf("rewrite %d refused: %+v", rev, st.LastReload)
		}
		// The banner shows the revision a new session gets.
		if g := greeting(t, stable); !strings.Contains(g, fmt.Sprintf("revision %d", rev)) {
			t.Fatalf("after rewrite %d the greeting is %q", rev, g)
		}
	}
	stop.Store(true)
	wg.Wait()
	// Anything delivered after a reader's last pass is still waiting.
	for r := 0; r < readers; r++ {
		for i := 0; i < 20; i++ {
			ids, err := popSession(stable, roots, fmt.Sprintf("reader%d@example.com", r))
			if err != nil {
				fail(err)
				break
			}
			for _, id := range ids {
				seen[id]++
			}
			if len(ids) == 0 {
				break
			}
		}
	}

	var dup, lost int
	for i := 0; i < int(delivered.Load()); i++ {
		switch n := seen[fmt.Sprintf("<m%d@test>", i)]; {
		case n == 0:
			lost++
		case n > 1:
			dup++
		}
	}
	slices.Sort(latencies)
	t.Logf("zero-downtime reload: %d rewrites applied; %d sessions, %d failed; %d messages delivered, %d retrieved once, %d lost, %d duplicated; reload latency median %s, max %s",
		rewrites, sessions.Load(), failures.Load(), delivered.Load(), len(seen), lost, dup,
		latencies[len(latencies)/2].Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
	if failures.Load() > 0 {
		t.Errorf("%d sessions failed; first: %v", failures.Load(), firstErr.Load())
	}
	if lost > 0 || dup > 0 || len(seen) != int(delivered.Load()) {
		t.Errorf("messages: %d delivered, %d seen, %d lost, %d duplicated", delivered.Load(), len(seen), lost, dup)
	}
	if delivered.Load() < 100 || sessions.Load() < 100 {
		t.Errorf("too little traffic to prove anything: %d messages, %d sessions", delivered.Load(), sessions.Load())
	}
	in.stop()
}

// popSession logs in over verified TLS, retrieves and deletes everything,
// and returns the Message-IDs it read.
func popSession(addr string, roots *x509.CertPool, user string) ([]string, error) {
	msgs, err := popFetch(addr, roots, user, true)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		for _, l := range strings.Split(m, "\r\n") {
			if id, ok := strings.CutPrefix(l, "Message-ID: "); ok {
				ids = append(ids, strings.TrimSpace(id))
				break
			}
		}
	}
	return ids, nil
}

func greeting(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	l, _ := bufio.NewReader(c).ReadString('\n')
	return l
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// leafFromCA issues another leaf for mail.example.com from the CA testCA
// wrote (its key is regenerated here, so re-sign with a fresh CA key pair
// stored next to it).
func leafFromCA(t *testing.T, caFile, dir, certFile, keyFile string) {
	t.Helper()
	caKeyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(caFile)
	cb, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(caKeyPEM)
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "mail.example.com"}, DNSNames: []string{"mail.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}

// A certificate renewed on disk (certbot writes new files and repoints
// symlinks; here: rename-replace of both files) is served by the next
// handshake without anyone touching the config or the server.
func TestCertificateFileRenewalIsPickedUp(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, e2eConfig(certFile, keyFile))
	in := startServe(t, dir)
	serial := func() int64 {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", in.addrs["pop3s"],
			&tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 2 {
		t.Fatalf("initial serial %d, want 2", s)
	}
	newCert, newKey := filepath.Join(dir, "renewed-cert.pem"), filepath.Join(dir, "renewed-key.pem")
	leafFromCA(t, caFile, dir, newCert, newKey) // serial 3
	// Key first, then certificate: in between, the pair does not match and
	// that reload must be refused without harm.
	kb, _ := os.ReadFile(newKey)
	cb, _ := os.ReadFile(newCert)
	replaceFile(t, keyFile, kb)
	replaceFile(t, certFile, cb)
	if !waitFor(10*time.Second, func() bool { return serial() == 3 }) {
		t.Fatalf("renewed certificate not served\n%s", in.log.String())
	}
	if r, err := popLogin(in.addrs["pop3s"], "alice@example.com", "demo-password"); err != nil || r != "+OK" {
		t.Errorf("login after the renewal: %q %v", r, err)
	}
	in.stop()
}
