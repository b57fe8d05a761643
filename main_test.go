package main

// End-to-end tests: the real mailpost binary, started as `mailpost serve` on
// loopback, driven by the command line and by real POP3 clients (python's
// poplib, curl, fetchmail).

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailpost/auth"
	"mailpost/server"
)

var binary string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailpost-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mailpost")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building mailpost: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// demoHash is the argon2id hash of "demo-password" (examples/quickstart.hcl).
const demoHash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"

// requireTool finds an external client; when MAILPOST_REQUIRE_CLIENTS is set
// (scripts/test.sh sets it) a missing one fails the test instead of skipping.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("MAILPOST_REQUIRE_CLIENTS") != "" {
			t.Fatalf("%s is not installed (scripts/install-test-deps.sh installs it)", name)
		}
		t.Skipf("%s is not installed; run scripts/install-test-deps.sh", name)
	}
	return p
}

// testCA writes a CA and a leaf for names into dir, returning their paths.
func testCA(t *testing.T, dir string, names ...string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailpost test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(p, typ string, der []byte) {
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(caFile, "CERTIFICATE", caDER)
	caKeyDER, _ := x509.MarshalECPrivateKey(caKey)
	write(filepath.Join(dir, "ca-key.pem"), "EC PRIVATE KEY", caKeyDER)
	write(certFile, "CERTIFICATE", leafDER)
	write(keyFile, "EC PRIVATE KEY", keyDER)
	return caFile, certFile, keyFile
}

// syncBuffer collects a child's stderr while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is one running `mailpost serve`.
type instance struct {
	t       *testing.T
	dir     string
	cfgPath string
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan error
	addrs   map[string]string // listener key prefix ("pop3s", "pop3") -> bound address
}

// writeConfig puts cfg into dir/mailpost.hcl.
func writeConfig(t *testing.T, dir, cfg string) string {
	t.Helper()
	p := filepath.Join(dir, "mailpost.hcl")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startServe runs `mailpost serve` on the config in dir and waits until its
// control socket answers, learning the ports it bound.
func startServe(t *testing.T, dir string) *instance {
	t.Helper()
	in := startCmd(t, exec.Command(binary, "serve", "-config", filepath.Join(dir, "mailpost.hcl"), "-log-level", "debug"),
		filepath.Join(dir, "data"))
	in.dir = dir
	return in
}

// startCmd starts cmd (a `mailpost serve` prepared by the caller: other
// flags, a chroot) with its output in the instance's log, kills it at
// cleanup if it still runs, and waits until the control socket in dataDir
// answers, learning the ports it bound.
func startCmd(t *testing.T, cmd *exec.Cmd, dataDir string) *instance {
	t.Helper()
	in := &instance{t: t, cmd: cmd, log: &syncBuffer{}, done: make(chan error, 1), addrs: map[string]string{}}
	if i := slices.Index(cmd.Args, "-config"); i >= 0 && i+1 < len(cmd.Args) {
		in.cfgPath = cmd.Args[i+1]
	}
	cmd.Stderr, cmd.Stdout = in.log, in.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-in.done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", in.log.String())
		}
	})
	client := server.NewClient(dataDir)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := client.Status()
		if err == nil {
			for _, l := range st.Listeners {
				in.addrs[l.Proto] = l.Addr
			}
			return in
		}
		select {
		case err := <-in.done:
			t.Fatalf("mailpost serve exited early: %v\n%s", err, in.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpost serve did not answer on its control socket: %v\n%s", err, in.log.String())
		}
	}
}

// stop sends SIGTERM and expects a clean exit.
func (in *instance) stop() {
	in.t.Helper()
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-in.done:
		if err != nil {
			in.t.Fatalf("mailpost serve exited with %v after SIGTERM\n%s", err, in.log.String())
		}
	case <-time.After(20 * time.Second):
		in.t.Fatalf("mailpost serve did not exit after SIGTERM\n%s", in.log.String())
	}
}

// mailpost runs one CLI command against the instance's config.
func mailpost(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func e2eConfig(certFile, keyFile string) string {
	return fmt.Sprintf(`
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]

certificate "test" {
  cert_file = %q
  key_file  = %q
}

pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}

mailbox "alice@example.com" {
  password_hash = %q
  aliases       = ["a.smith@example.com"]
}

mailbox "admin@example.com" {
  password_hash = %q
  pop3          = false
}
`, certFile, keyFile, demoHash, demoHash)
}

const message1 = "From: bob@example.net\r\nTo: alice@example.com\r\nSubject: one\r\n\r\nfirst body\r\n.starts with a dot\r\n"
const message2 = "From: carol@example.net\nSubject: two\n\nsecond body, LF only\n"

// poplibScript is run by python3: it checks a verified TLS session (implicit
// or STLS) and prints what it saw, one fact per line.
const poplibScript = `
import poplib, ssl, sys
mode, host, port, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "ssl":
    # server_hostname makes Python check the certificate for this name,
    # while the connection goes to the loopback IP (no DNS).
    sock_ctx = ctx
    class P(poplib.POP3_SSL):
        def _create_socket(self, timeout):
            import socket
            s = socket.create_connection((host, port), timeout)
            return sock_ctx.wrap_socket(s, server_hostname="mail.example.com")
    p = P(host, port, context=ctx)
else:
    p = poplib.POP3(host, port)
    try:
        p.user("alice@example.com")
        print("user-before-stls: accepted")
    except poplib.error_proto as e:
        print("user-before-stls:", e.args[0].decode())
    # stls() wraps with server_hostname=host; give it the name to check.
    p.host = "mail.example.com"
    p.stls(context=ctx)
caps = p.capa()
print("capa:", " ".join(sorted(caps)))
p.user("alice@example.com")
p.pass_("demo-password")
count, size = p.stat()
print("stat:", count, size)
resp, listing, _ = p.list()
print("list:", " ".join(l.decode() for l in listing))
resp, uidls, _ = p.uidl()
print("uidl-count:", len(uidls))
if count:
    resp, lines, octets = p.retr(1)
    print("retr1:", "|".join(l.decode() for l in lines))
    print("retr1-octets:", octets)
if mode == "ssl" and count:
    p.dele(1)
    print("dele: ok")
print("quit:", p.quit().decode())
`

func runPoplib(t *testing.T, mode, addr, caFile string) map[string]string {
	t.Helper()
	py := requireTool(t, "python3")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(py, "-c", poplibScript, mode, host, port, caFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("poplib (%s) failed: %v\n%s", mode, err, out)
	}
	facts := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, ":")
		facts[k] = strings.TrimSpace(v)
	}
	return facts
}

func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, e2eConfig(certFile, keyFile))
	in := startServe(t, dir)
	if in.addrs["pop3s"] == "" || in.addrs["pop3"] == "" {
		t.Fatalf("listeners = %v, want pop3s and pop3", in.addrs)
	}

	// Delivery goes through the running server, which holds the database.
	out, errOut, code := mailpost(t, message1, "deliver", "-config", in.cfgPath, "-to", "alice@example.com")
	if code != 0 || !strings.Contains(out, "through the running server") {
		t.Fatalf("deliver: code %d, out %q, err %q", code, out, errOut)
	}
	// An alias reaches its mailbox.
	if out, errOut, code := mailpost(t, message2, "deliver", "-config", in.cfgPath, "-to", "A.Smith@example.com"); code != 0 || !strings.Contains(out, "alice@example.com") {
		t.Fatalf("deliver to alias: code %d, out %q, err %q", code, out, errOut)
	}
	// An unknown recipient is refused, with a non-zero exit.
	if _, errOut, code := mailpost(t, message2, "deliver", "-config", in.cfgPath, "-to", "nobody@example.com"); code == 0 || !strings.Contains(errOut, "no such mailbox") {
		t.Fatalf("deliver to unknown: code %d, err %q", code, errOut)
	}

	// STLS on the plain port: USER is refused before TLS, then everything
	// works over a verified TLS session.
	f := runPoplib(t, "stls", in.addrs["pop3"], caFile)
	if !strings.HasPrefix(f["user-before-stls"], "-ERR") {
		t.Errorf("USER before STLS: %q, want -ERR", f["user-before-stls"])
	}
	if f["stat"] != fmt.Sprintf("2 %d", len(message1)+len(strings.ReplaceAll(message2, "\n", "\r\n"))) {
		t.Errorf("stat over STLS = %q", f["stat"])
	}

	// Implicit TLS: read message 1 exactly (the dot line survives), delete it.
	f = runPoplib(t, "ssl", in.addrs["pop3s"], caFile)
	wantRetr := "From: bob@example.net|To: alice@example.com|Subject: one||first body|.starts with a dot"
	if f["retr1"] != wantRetr {
		t.Errorf("retr 1 = %q\nwant     %q", f["retr1"], wantRetr)
	}
	for _, c := range []string{"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "SASL"} {
		if !strings.Contains(f["capa"], c) {
			t.Errorf("CAPA over TLS lacks %s: %q", c, f["capa"])
		}
	}
	if f["dele"] != "ok" || !strings.HasPrefix(f["quit"], "+OK") {
		t.Errorf("dele/quit: %q %q", f["dele"], f["quit"])
	}

	// curl speaks pop3s too; the deletion above was committed at QUIT.
	curl := requireTool(t, "curl")
	cout, err := exec.Command(curl, "-sS", "-k", "--max-time", "20", "-u", "alice@example.com:demo-password",
		"pop3s://"+in.addrs["pop3s"]+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, cout)
	}
	// Message 2 is now the only one, renumbered 1, with LF turned into CRLF.
	if got, want := strings.TrimSpace(string(cout)), fmt.Sprintf("1 %d", len(strings.ReplaceAll(message2, "\n", "\r\n"))); got != want {
		t.Errorf("curl list after DELE 1 = %q, want %q", got, want)
	}

	// A wrong password and a POP3-disabled mailbox are refused.
	cout, _ = exec.Command(curl, "-sS", "-k", "--max-time", "20", "-u", "alice@example.com:wrong",
		"pop3s://"+in.addrs["pop3s"]+"/").CombinedOutput()
	if !strings.Contains(string(cout), "Login denied") && !strings.Contains(string(cout), "denied") {
		t.Errorf("curl with a wrong password: %q", cout)
	}
	if !strings.Contains(in.log.String(), "pop3 auth failed") || !strings.Contains(in.log.String(), "remote_ip=127.0.0.1") {
		t.Errorf("no fail2ban-matchable log line for the failed login:\n%s", in.log.String())
	}
	cout, _ = exec.Command(curl, "-sS", "-k", "--max-time", "20", "-u", "admin@example.com:demo-password",
		"pop3s://"+in.addrs["pop3s"]+"/").CombinedOutput()
	if !strings.Contains(string(cout), "denied") {
		t.Errorf("curl into a pop3=false mailbox: %q", cout)
	}

	// status comes from the running server.
	out, errOut, code = mailpost(t, "", "status", "-config", in.cfgPath)
	if code != 0 || !strings.Contains(out, in.addrs["pop3s"]) {
		t.Errorf("status: code %d out %q err %q", code, out, errOut)
	}
	for _, want := range []string{"smtp sessions", "outbound queue   0 message(s)", "store            ", "listening"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	in.stop()

	// With the server gone, deliver writes the store directly; a restart
	// serves it, and the earlier deletion stayed done.
	out, errOut, code = mailpost(t, message1, "deliver", "-config", in.cfgPath, "-to", "alice@example.com")
	if code != 0 || strings.Contains(out, "through the running server") {
		t.Fatalf("offline deliver: code %d out %q err %q", code, out, errOut)
	}
	in = startServe(t, dir)
	f = runPoplib(t, "stls", in.addrs["pop3"], caFile)
	if !strings.HasPrefix(f["stat"], "2 ") {
		t.Errorf("after restart stat = %q, want 2 messages", f["stat"])
	}
	in.stop()
}

func TestFetchmail(t *testing.T) {
	fetchmail := requireTool(t, "fetchmail")
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, e2eConfig(certFile, keyFile))
	in := startServe(t, dir)
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("Subject: fetch %d\r\n\r\nbody %d\r\n..dots\r\n", i, i)
		if _, e, code := mailpost(t, msg, "deliver", "-config", in.cfgPath, "-to", "alice@example.com"); code != 0 {
			t.Fatal(e)
		}
	}
	_, port, _ := net.SplitHostPort(in.addrs["pop3s"])
	rc := filepath.Join(dir, "fetchmailrc")
	mbox := filepath.Join(dir, "fetched.mbox")
	// Poll the IP literal (no name lookups) and let sslcommonname say which
	// name the certificate must carry.
	os.WriteFile(rc, []byte(fmt.Sprintf(`poll 127.0.0.1 proto pop3 port %s no dns
  user "alice@example.com" password "demo-password" is "root" here
  ssl sslcertck sslcertfile "%s" sslcommonname "mail.example.com"
  mda "/bin/sh -c 'cat >> %s'"
`, port, caFile, mbox)), 0o600)
	cmd := exec.Command(fetchmail, "-f", rc, "--nosyslog", "--nodetach", "-v", "--idfile", filepath.Join(dir, "fetchids"))
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(mbox)
	for i := 0; i < 3; i++ {
		if !bytes.Contains(got, []byte(fmt.Sprintf("Subject: fetch %d", i))) {
			t.Errorf("fetchmail did not retrieve message %d:\n%s\n%s", i, got, out)
		}
	}
	if !bytes.Contains(got, []byte("\n..dots")) {
		t.Errorf("dot-stuffing was not undone exactly by fetchmail:\n%s", got)
	}
	// fetchmail deletes what it fetched (no "keep").
	if st, e, _ := mailpost(t, "", "status", "-config", in.cfgPath); !strings.Contains(st, "pop3") {
		t.Errorf("status: %s %s", st, e)
	}
	f := runPoplib(t, "stls", in.addrs["pop3"], caFile)
	if f["stat"] != "0 0" {
		t.Errorf("after fetchmail stat = %q, want empty maildrop", f["stat"])
	}
	in.stop()
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	good := writeConfig(t, dir, e2eConfig(certFile, keyFile))
	if out, errOut, code := mailpost(t, "", "check", "-config", good); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("check on a good file: code %d out %q err %q", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("hostname = \"mail.example.com\"\ndomains = [\"example.com\"]\npop3 {\n  max_connections = \"many\"\n  ssl_bindings = [\"localhost:995\"]\n}\nmailbox \"x@elsewhere.org\" {}\n"), 0o600)
	_, errOut, code := mailpost(t, "", "check", "-config", bad)
	if code != 1 {
		t.Fatalf("check on a bad file exited %d, want 1\n%s", code, errOut)
	}
	// Every problem is reported at once, each with FILE:LINE:COLUMN.
	for _, want := range []string{bad + ":4:", bad + ":5:", bad + ":7:"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check output lacks a diagnostic at %s:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine") {
		t.Errorf("check panicked:\n%s", errOut)
	}
}

func TestHashPassword(t *testing.T) {
	out, errOut, code := mailpost(t, "correct horse battery staple\n", "hash-password")
	if code != 0 {
		t.Fatalf("hash-password: code %d, %s", code, errOut)
	}
	h := strings.TrimSpace(out)
	if !strings.HasPrefix(h, "$argon2id$") {
		t.Fatalf("hash = %q", h)
	}
	ok, err := auth.CheckPassword(h, "correct horse battery staple")
	if err != nil || !ok {
		t.Errorf("the printed hash does not verify: %v %v", ok, err)
	}
	if _, _, code := mailpost(t, "", "hash-password"); code == 0 {
		t.Error("an empty password was hashed")
	}
}

func TestQuickstartExampleServes(t *testing.T) {
	// The README's first command must work: the quickstart config, copied to
	// a temp dir so its ./data stays there, on ephemeral ports.
	src, err := os.ReadFile("examples/quickstart.hcl")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("127.0.0.1:10995", "127.0.0.1:0", "127.0.0.1:10110", "127.0.0.1:0",
		"127.0.0.1:10465", "127.0.0.1:0", "127.0.0.1:10587", "127.0.0.1:0").Replace(string(src))
	dir := t.TempDir()
	writeConfig(t, dir, cfg)
	in := startServe(t, dir)
	welcome, _ := os.ReadFile("examples/welcome.eml")
	if _, e, code := mailpost(t, string(welcome), "deliver", "-config", in.cfgPath, "-to", "demo@example.com"); code != 0 {
		t.Fatal(e)
	}
	curl := requireTool(t, "curl")
	out, err := exec.Command(curl, "-sS", "-k", "--max-time", "20", "-u", "demo@example.com:demo-password",
		"pop3s://"+in.addrs["pop3s"]+"/1").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Subject: Welcome to mailpost")) || !bytes.Contains(out, []byte("\n.A line that starts with a dot")) {
		t.Fatalf("curl retrieving the welcome message: %v\n%s", err, out)
	}
	// The README's curl line for sending works too (smtps://, AUTH PLAIN).
	out, err = exec.Command(curl, "-sS", "-k", "--max-time", "20", "--mail-from", "demo@example.com",
		"--mail-rcpt", "demo@example.com", "-u", "demo@example.com:demo-password", "-T", "examples/welcome.eml",
		"smtps://"+in.addrs["submissions"]+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("curl smtps: %v\n%s", err, out)
	}
	out2, _, code := mailpost(t, "", "settings", "-config", in.cfgPath)
	if code != 0 || !strings.Contains(out2, "SSLBindings") || !strings.Contains(out2, "demo@example.com") {
		t.Errorf("settings: %q", out2)
	}
	in.stop()
}
