// Package acmetest runs Pebble, Let's Encrypt's test CA, for mailpost's
// tests: pebble and pebble-challtestsrv as child processes on loopback, the
// latter as the only DNS server Pebble asks (every A query answers
// 127.0.0.1, AAAA nothing), so no test ever needs the internet or the
// machine's resolver.
//
// The binaries come from scripts/install-test-deps.sh (go install
// …/cmd/pebble@v2.10.1). When they are missing a test is skipped, or fails
// if MAILPOST_REQUIRE_CLIENTS is set (the rule main_test.go applies to mail
// clients).
package acmetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the Pebble release the tests are written against.
const Version = "v2.10.1"

// tool finds a binary in GOPATH/bin or PATH, or skips (fails when
// MAILPOST_REQUIRE_CLIENTS is set).
func tool(t testing.TB, name string) string {
	t.Helper()
	if gopath := goEnv(t, "GOPATH"); gopath != "" {
		for _, dir := range filepath.SplitList(gopath) {
			p := filepath.Join(dir, "bin", name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not installed; run scripts/install-test-deps.sh (go install github.com/letsencrypt/pebble/v2/cmd/%s@%s)", name, name, Version)
	if os.Getenv("MAILPOST_REQUIRE_CLIENTS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

var goEnvCache sync.Map

func goEnv(t testing.TB, key string) string {
	if v, ok := goEnvCache.Load(key); ok {
		return v.(string)
	}
	out, err := exec.Command("go", "env", key).Output()
	if err != nil {
		t.Logf("go env %s: %v", key, err)
		return ""
	}
	v := strings.TrimSpace(string(out))
	goEnvCache.Store(key, v)
	return v
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartDNS runs pebble-challtestsrv as a DNS server only and returns its
// address. It is stopped at the end of the test.
func StartDNS(t testing.TB) string {
	t.Helper()
	bin := tool(t, "pebble-challtestsrv")
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	mgmt := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cmd := exec.Command(bin, "-dnsserver", addr, "-management", mgmt,
		"-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	start(t, cmd, "pebble-challtestsrv")
	waitTCP(t, mgmt)
	return addr
}

// Options say how to run Pebble.
type Options struct {
	DNS      string // the DNS server Pebble asks (StartDNS)
	HTTPPort int    // where Pebble connects for http-01
	TLSPort  int    // where Pebble connects for tls-alpn-01
	// Port is where the ACME directory listens (0 = a free one). A test
	// of "CA down at start" picks it first and starts Pebble later.
	Port int
	// Validity is the lifetime of issued certificates (0 = Pebble's 90
	// days); a few seconds make autocert renew during a test.
	Validity time.Duration
}

// Pebble is a running Pebble.
type Pebble struct {
	DirectoryURL string // https://127.0.0.1:PORT/dir
	CAFile       string // Pebble's HTTPS root (minica), for ca_file
	mgmt         string
	cmd          *exec.Cmd
	stopOnce     sync.Once
	out          *bytes.Buffer
	mu           *sync.Mutex
}

// ModuleDir is Pebble's module directory in the module cache, where its
// test certificates are (go install put it there).
func ModuleDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(goEnv(t, "GOMODCACHE"), "github.com", "letsencrypt", "pebble", "v2@"+Version)
	if _, err := os.Stat(filepath.Join(dir, "test", "certs", "pebble.minica.pem")); err != nil {
		msg := "pebble module not in the module cache; run scripts/install-test-deps.sh"
		if os.Getenv("MAILPOST_REQUIRE_CLIENTS") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// Start runs Pebble with a config made for the test, waits until its
// directory answers, and stops it at the end of the test.
func Start(t testing.TB, opt Options) *Pebble {
	t.Helper()
	bin := tool(t, "pebble")
	mod := ModuleDir(t)
	if opt.Port == 0 {
		opt.Port = FreePort(t)
	}
	mgmt := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	validity := uint64(opt.Validity / time.Second)
	if validity == 0 {
		validity = 90 * 24 * 3600
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", opt.Port),
		"managementListenAddress": mgmt,
		"certificate":             filepath.Join(mod, "test", "certs", "localhost", "cert.pem"),
		"privateKey":              filepath.Join(mod, "test", "certs", "localhost", "key.pem"),
		"httpPort":                opt.HTTPPort,
		"tlsPort":                 opt.TLSPort,
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "mailpost tests", "validityPeriod": validity}},
	}}
	data, _ := json.Marshal(cfg)
	path := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", path, "-dnsserver", opt.DNS, "-strict=false")
	// No random sleeps or nonce rejections: fast and deterministic.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	p := &Pebble{
		DirectoryURL: fmt.Sprintf("https://127.0.0.1:%d/dir", opt.Port),
		CAFile:       filepath.Join(mod, "test", "certs", "pebble.minica.pem"),
		mgmt:         mgmt,
		cmd:          cmd,
	}
	p.out, p.mu = start(t, cmd, "pebble")
	t.Cleanup(p.Stop)
	p.waitReady(t)
	return p
}

// Stop ends Pebble (the CA goes down); safe to call twice.
func (p *Pebble) Stop() {
	p.stopOnce.Do(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
}

// Log returns what Pebble printed so far.
func (p *Pebble) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *Pebble) client(t testing.TB) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
}

func (p *Pebble) waitReady(t testing.TB) {
	t.Helper()
	c := p.client(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start: %v\n%s", err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Roots returns the root that issued certificates chain to (made fresh at
// each Pebble start).
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.client(t).Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble roots: %v", err)
	}
	defer resp.Body.Close()
	pem, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble roots: %d %v", resp.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("pebble roots: no certificate in %q", pem)
	}
	return pool
}

// start runs cmd with its output captured (shown if the test fails) and
// kills it at the end of the test.
func start(t testing.TB, cmd *exec.Cmd, what string) (*bytes.Buffer, *sync.Mutex) {
	t.Helper()
	var mu sync.Mutex
	buf := &bytes.Buffer{}
	w := lockedWriter{&mu, buf}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("%s output:\n%s", what, buf.String())
			mu.Unlock()
		}
	})
	return buf, &mu
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func waitTCP(t testing.TB, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never answered: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
