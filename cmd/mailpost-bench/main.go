// Command mailpost-bench measures a real `mailpost serve` over POP3 with TLS
// on loopback: full-handshake sessions per second (connect, TLS, login, STAT,
// UIDL, QUIT) with concurrent clients, with and without the password cache;
// RETR throughput for a mailbox of 2,000 x 20 KiB and one of 50 x 5 MiB; and
// the server's memory (PSS) per idle logged-in TLS session.
//
// It builds the binary, seeds a fresh database, starts the server as a child
// process, and stops it again. Everything stays on 127.0.0.1.
//
//	go run ./cmd/mailpost-bench [-clients 32] [-duration 10s] [-idle 1000]
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/server"
	"mailpost/storage"
)

// benchHash is argon2id (m=64MiB, t=3, p=2) of "bench-password".
const benchPassword = "demo-password"
const benchHash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"

var (
	clients  = flag.Int("clients", 32, "concurrent clients for the session-rate test")
	duration = flag.Duration("duration", 10*time.Second, "length of each session-rate run")
	idle     = flag.Int("idle", 1000, "idle logged-in TLS sessions for the memory test")
	binFlag  = flag.String("bin", "", "mailpost binary (default: build it)")
	keep     = flag.Bool("keep", false, "keep the temporary directory")
	jsonOut  = flag.Bool("json", false, "print results as JSON")
	settle   = flag.Duration("settle", 150*time.Second, "how long to let the server's memory settle with idle sessions (Go forces a GC every 2 minutes)")
	only     = flag.String("only", "", "run one test: memory, rate, retr20k, retr5m, submit, nocache")
)

type results struct {
	Submit1PerSec          float64 `json:"submit_1_client_per_sec"`
	Submit16PerSec         float64 `json:"submit_16_clients_per_sec"`
	SessionsPerSec         float64 `json:"sessions_per_sec"`
	SessionsPerSecNoCache  float64 `json:"sessions_per_sec_no_cache"`
	Retr20KiBMBps          float64 `json:"retr_20kib_mb_per_sec"`
	Retr20KiBFirstMBps     float64 `json:"retr_20kib_first_pass_mb_per_sec"`
	Retr20KiBPipelinedMBps float64 `json:"retr_20kib_pipelined_mb_per_sec"`
	Retr5MiBMBps           float64 `json:"retr_5mib_mb_per_sec"`
	IdleSessions           int     `json:"idle_sessions"`
	PSSBaseKiB             int64   `json:"pss_base_kib"`
	PSSIdleFirstKiB        int64   `json:"pss_idle_first_kib"`
	PSSIdleKiB             int64   `json:"pss_idle_kib"`
	PerIdleSessionKiB      float64 `json:"per_idle_session_kib"`
	GoHeapPerSessionKiB    float64 `json:"go_heap_and_stacks_per_session_kib"` // upper bound: includes the base heap
	GoGoroutines           uint64  `json:"goroutines"`
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mailpost-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	dir, err := os.MkdirTemp("", "mailpost-bench")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "working directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin := *binFlag
	if bin == "" {
		bin = filepath.Join(dir, "mailpost")
		step("building mailpost")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	cfgPath := filepath.Join(dir, "mailpost.hcl")
	if err := os.WriteFile(cfgPath, []byte(benchConfig(*clients, *idle)), 0o600); err != nil {
		return err
	}
	step("seeding the store")
	if err := seed(filepath.Join(dir, "data"), *clients); err != nil {
		return err
	}

	var res results
	want := func(name string) bool { return *only == "" || *only == name }
	srv, err := start(bin, cfgPath, dir, nil)
	if err != nil {
		return err
	}
	err = func() error {
		defer srv.stop()
		// Memory first, on a fresh process, so earlier tests' garbage
		// doesn't blur the per-session figure.
		if want("memory") {
			step(fmt.Sprintf("memory: %d idle logged-in TLS sessions (settling up to %s)", *idle, *settle))
			if err := memory(srv, &res); err != nil {
				return err
			}
		}
		if want("rate") {
			step(fmt.Sprintf("session rate: %d clients for %s", *clients, *duration))
			if res.SessionsPerSec, err = sessionRate(srv.addr, *clients, *duration); err != nil {
				return err
			}
		}
		if want("retr20k") {
			step("RETR 2,000 x 20 KiB (5 passes, one command at a time, then pipelined)")
			if res.Retr20KiBMBps, res.Retr20KiBFirstMBps, err = retrPasses(srv.addr, "small@bench.test", 5); err != nil {
				return err
			}
			if res.Retr20KiBPipelinedMBps, err = retrAll(srv.addr, "small@bench.test", 32); err != nil {
				return err
			}
		}
		if want("submit") {
			step(fmt.Sprintf("submission: 10 KiB messages over STARTTLS, 1 then 16 clients, %s each", *duration))
			if res.Submit1PerSec, err = submitRate(srv.submitAddr, 1, *duration); err != nil {
				return err
			}
			if res.Submit16PerSec, err = submitRate(srv.submitAddr, 16, *duration); err != nil {
				return err
			}
		}
		if want("retr5m") {
			step("RETR 50 x 5 MiB (3 passes)")
			if res.Retr5MiBMBps, _, err = retrPasses(srv.addr, "big@bench.test", 3); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		return err
	}
	if want("nocache") {
		step("session rate without the password cache")
		srv, err = start(bin, cfgPath, dir, []string{"MAILPOST_AUTH_CACHE=off"})
		if err != nil {
			return err
		}
		res.SessionsPerSecNoCache, err = sessionRate(srv.addr, *clients, *duration/2)
		srv.stop()
		if err != nil {
			return err
		}
	}

	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("\nPOP3 over TLS on loopback (%d clients):\n", *clients)
	fmt.Printf("  sessions/s (connect, TLS, login, STAT, UIDL, QUIT)  %8.0f\n", res.SessionsPerSec)
	fmt.Printf("  sessions/s without the password cache               %8.1f\n", res.SessionsPerSecNoCache)
	fmt.Printf("  RETR MB/s, 2,000 x 20 KiB, median of 5 passes       %8.1f  (first pass %.1f)\n", res.Retr20KiBMBps, res.Retr20KiBFirstMBps)
	fmt.Printf("  RETR MB/s, 2,000 x 20 KiB, pipelined 32 deep        %8.1f\n", res.Retr20KiBPipelinedMBps)
	fmt.Printf("  RETR MB/s, 50 x 5 MiB, median of 3 passes           %8.1f\n", res.Retr5MiBMBps)
	fmt.Printf("  submissions/s, 10 KiB over STARTTLS+AUTH, 1 client   %8.0f\n", res.Submit1PerSec)
	fmt.Printf("  submissions/s, 10 KiB over STARTTLS+AUTH, 16 clients %8.0f\n", res.Submit16PerSec)
	fmt.Printf("  server PSS: %d KiB at rest; with %d idle sessions %d KiB after 2 s, %d KiB settled: %.1f KiB per session\n",
		res.PSSBaseKiB, res.IdleSessions, res.PSSIdleFirstKiB, res.PSSIdleKiB, res.PerIdleSessionKiB)
	fmt.Printf("  Go heap objects + stacks with the idle sessions: %.1f KiB per session (%d goroutines)\n",
		res.GoHeapPerSessionKiB, res.GoGoroutines)
	return nil
}

func step(s string) { fmt.Fprintln(os.Stderr, "==>", s) }

func benchConfig(nclients, nidle int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `hostname = "mail.bench.test"
data_dir = "data"
domains  = ["bench.test"]
certificate "bench" {
  self_signed = true
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = []
  external_connection_settings = ["mail.bench.test:995:ssl"]
  max_connections              = %d
  max_connections_per_ip       = %d
}
submission {
  ssl_bindings                 = []
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.bench.test:587:tls"]
  max_connections_per_ip       = 500
}
`, nidle+nclients+100, nidle+nclients+100)
	mbox := func(name string) {
		fmt.Fprintf(&b, "mailbox %q {\n  password_hash = %q\n}\n", name, benchHash)
	}
	mbox("small@bench.test")
	mbox("big@bench.test")
	for i := 0; i < nclients; i++ {
		mbox(fmt.Sprintf("rate%d@bench.test", i))
	}
	for i := 0; i < nidle; i++ {
		mbox(fmt.Sprintf("idle%d@bench.test", i))
	}
	return b.String()
}

// message makes a plain-text message of about size octets with 76-column
// lines, some starting with a dot so dot-stuffing is exercised.
func message(size int, r *rand.Rand) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: bench@bench.test\r\nSubject: benchmark %d\r\n\r\n", r.Int())
	const alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	line := make([]byte, 76)
	for b.Len() < size {
		for i := range line {
			line[i] = alphabet[r.IntN(len(alphabet))]
		}
		if r.IntN(50) == 0 {
			line[0] = '.'
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func seed(dataDir string, nclients int) error {
	if err := server.EnsureDataDir(dataDir); err != nil {
		return err
	}
	st, err := storage.Open(server.DatabasePath(dataDir))
	if err != nil {
		return err
	}
	defer st.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		if _, err := st.Deliver("small@bench.test", bytes.NewReader(message(20<<10, r)), storage.DeliverOptions{}); err != nil {
			return err
		}
	}
	for i := 0; i < 50; i++ {
		if _, err := st.Deliver("big@bench.test", bytes.NewReader(message(5<<20, r)), storage.DeliverOptions{}); err != nil {
			return err
		}
	}
	for i := 0; i < nclients; i++ {
		for j := 0; j < 5; j++ {
			if _, err := st.Deliver(fmt.Sprintf("rate%d@bench.test", i), bytes.NewReader(message(2<<10, r)), storage.DeliverOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}

type proc struct {
	dir        string
	cmd        *exec.Cmd
	addr       string // pop3s
	submitAddr string // submission with STARTTLS
	done       chan error
}

func start(bin, cfgPath, dir string, env []string) (*proc, error) {
	cmd := exec.Command(bin, "serve", "-config", cfgPath, "-log-level", "error")
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{dir: dir, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	client := server.NewClient(filepath.Join(dir, "data"))
	for i := 0; i < 300; i++ {
		if st, err := client.Status(); err == nil {
			for _, l := range st.Listeners {
				switch l.Proto {
				case "pop3s":
					p.addr = l.Addr
				case "submission":
					p.submitAddr = l.Addr
				}
			}
			return p, nil
		}
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("server exited: %v (see %s)", err, filepath.Join(dir, "server.log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.stop()
	return nil, errors.New("server did not come up")
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// conn is a minimal POP3 client.
type conn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

var clientTLS = &tls.Config{InsecureSkipVerify: true} // self-signed bench cert; no session cache: every handshake is full

func dial(addr string) (*conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, clientTLS)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	pc := &conn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriter(c)}
	if _, err := pc.line(); err != nil {
		c.Close()
		return nil, err
	}
	return pc, nil
}

func (p *conn) line() (string, error) {
	l, err := p.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(l, "+OK") {
		return "", fmt.Errorf("server said %q", strings.TrimSpace(l))
	}
	return l, nil
}

func (p *conn) cmd(format string, args ...any) (string, error) {
	fmt.Fprintf(p.w, format+"\r\n", args...)
	if err := p.w.Flush(); err != nil {
		return "", err
	}
	return p.line()
}

// multi reads a dot-terminated body, returning its size in octets.
func (p *conn) multi() (int64, error) {
	var n int64
	for {
		l, err := p.r.ReadSlice('\n')
		if err != nil {
			return n, err
		}
		if len(l) == 3 && l[0] == '.' && l[1] == '\r' {
			return n, nil
		}
		n += int64(len(l))
	}
}

func (p *conn) login(user string) error {
	if _, err := p.cmd("USER %s", user); err != nil {
		return err
	}
	_, err := p.cmd("PASS %s", benchPassword)
	return err
}

func sessionRate(addr string, n int, d time.Duration) (float64, error) {
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	begin := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(user string) {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := oneSession(addr, user); err != nil {
					once.Do(func() { firstErr = err })
					cancel()
					return
				}
				count.Add(1)
			}
		}(fmt.Sprintf("rate%d@bench.test", i))
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(count.Load()) / time.Since(begin).Seconds(), nil
}

func oneSession(addr, user string) error {
	p, err := dial(addr)
	if err != nil {
		return err
	}
	defer p.c.Close()
	if err := p.login(user); err != nil {
		return err
	}
	if _, err := p.cmd("STAT"); err != nil {
		return err
	}
	if _, err := p.cmd("UIDL"); err != nil {
		return err
	}
	if _, err := p.multi(); err != nil {
		return err
	}
	_, err = p.cmd("QUIT")
	return err
}

// retrPasses runs retrAll (one command at a time) n times and returns the
// median and the first pass in MB/s.
func retrPasses(addr, user string, n int) (median, first float64, err error) {
	var v []float64
	for i := 0; i < n; i++ {
		x, err := retrAll(addr, user, 1)
		if err != nil {
			return 0, 0, err
		}
		v = append(v, x)
	}
	first = v[0]
	sort.Float64s(v)
	return v[len(v)/2], first, nil
}

// retrAll logs in and retrieves every message, keeping up to depth RETR
// commands in flight (1 is how fetchmail and most clients work; more uses
// RFC 2449 PIPELINING), and returns MB/s of message octets.
func retrAll(addr, user string, depth int) (float64, error) {
	p, err := dial(addr)
	if err != nil {
		return 0, err
	}
	defer p.c.Close()
	if err := p.login(user); err != nil {
		return 0, err
	}
	st, err := p.cmd("STAT")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(st)
	count, _ := strconv.Atoi(f[1])
	var total int64
	begin := time.Now()
	sent := 0
	for got := 0; got < count; got++ {
		for sent < count && sent-got < depth {
			sent++
			fmt.Fprintf(p.w, "RETR %d\r\n", sent)
		}
		if err := p.w.Flush(); err != nil {
			return 0, err
		}
		if _, err := p.line(); err != nil {
			return 0, err
		}
		n, err := p.multi()
		if err != nil {
			return 0, err
		}
		total += n
	}
	el := time.Since(begin)
	p.cmd("QUIT")
	return float64(total) / 1e6 / el.Seconds(), nil
}

func pss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Pss:") {
			f := strings.Fields(l)
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, errors.New("no Pss in smaps_rollup")
}

func memory(srv *proc, res *results) error {
	// Warm up: one login so the password cache and TLS paths are set up.
	if err := oneSession(srv.addr, "idle0@bench.test"); err != nil {
		return err
	}
	// The server hands argon2's 64 MiB back a second after the last hash.
	time.Sleep(3 * time.Second)
	base, err := pss(srv.cmd.Process.Pid)
	if err != nil {
		return err
	}
	conns := make([]*conn, 0, *idle)
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	for i := 0; i < *idle; i++ {
		c, err := dial(srv.addr)
		if err != nil {
			return fmt.Errorf("idle session %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.login(fmt.Sprintf("idle%d@bench.test", i)); err != nil {
			return fmt.Errorf("idle session %d: %w", i, err)
		}
		// Let go of the client's big read buffer; only the server counts.
		c.r = bufio.NewReaderSize(c.c, 512)
	}
	time.Sleep(2 * time.Second)
	after, err := pss(srv.cmd.Process.Pid)
	if err != nil {
		return err
	}
	res.PSSIdleFirstKiB = after
	client := server.NewClient(filepath.Join(srv.dir, "data"))
	if st, err := client.Status(); err == nil {
		res.GoHeapPerSessionKiB = float64(st.Memory.HeapLive+st.Memory.Stacks) / 1024 / float64(*idle)
		res.GoGoroutines = st.Memory.Goroutines
	}
	// The first figure holds handshake garbage the collector has not yet
	// returned; a long-lived server with idle sessions settles lower.
	for end := time.Now().Add(*settle); time.Now().Before(end); {
		time.Sleep(5 * time.Second)
		if p, err := pss(srv.cmd.Process.Pid); err == nil && p < after {
			after = p
		}
	}
	for _, c := range conns {
		c.cmd("QUIT")
	}
	res.IdleSessions = *idle
	res.PSSBaseKiB, res.PSSIdleKiB = base, after
	res.PerIdleSessionKiB = float64(after-base) / float64(*idle)
	return nil
}

// submitRate runs n clients, each sending 10 KiB messages on a fresh
// connection every time (connect, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA,
// QUIT), for d; a message counts once the server said 250 after DATA,
// which mailpost only says once it is on disk.
func submitRate(addr string, n int, d time.Duration) (float64, error) {
	msg := message(10<<10, rand.New(rand.NewPCG(3, 4)))
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	begin := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(user string) {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := smtp.DialStartTLS(addr, clientTLS)
				if err == nil {
					err = c.Auth(sasl.NewPlainClient("", user, benchPassword))
					if err == nil {
						err = c.SendMail(user, []string{user}, bytes.NewReader(msg))
					}
					if err == nil {
						err = c.Quit()
					}
					c.Close()
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					cancel()
					return
				}
				count.Add(1)
			}
		}(fmt.Sprintf("rate%d@bench.test", i%*clients))
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(count.Load()) / time.Since(begin).Seconds(), nil
}
