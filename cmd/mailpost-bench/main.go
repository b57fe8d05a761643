// Command mailpost-bench measures a real `mailpost serve` over POP3 with TLS
// on loopback: full-handshake sessions per second (connect, TLS, login, STAT,
// UIDL, QUIT) with concurrent clients, with and without the password cache;
// RETR throughput for a mailbox of 2,000 x 20 KiB and one of 50 x 5 MiB;
// the server's memory (PSS) per idle logged-in TLS session; and
// submissions per second over STARTTLS with AUTH.
//
// It builds the binary, seeds a fresh database, starts the server as a child
// process, and stops it again. Everything stays on 127.0.0.1.
//
// With -target dovecot or -target postfix the same client code measures
// those servers instead, each started privately from a temp dir (see
// dovecot.go and postfix.go); the bench installs nothing, it needs
// dovecot-pop3d and postfix installed and runs as root (both servers
// drop privileges themselves).
//
//	go run ./cmd/mailpost-bench [-clients 32] [-duration 10s] [-idle 1000]
//	go run ./cmd/mailpost-bench -target dovecot [-dovecot-scheme ARGON2ID] [-dovecot-login high-security]
//	go run ./cmd/mailpost-bench -target postfix
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchHash is argon2id (m=64MiB, t=3, p=2) of benchPassword; Dovecot gets
// the very same string.
const benchPassword = "demo-password"
const benchHash = "$argon2id$v=19$m=65536,t=3,p=2$bWFpbHBvc3QtZGVtby0wMQ$Z5hAVRXX4IfwIAG9PrcZ6WZueMggt9OCNsccshGheB0"

var (
	clients  = flag.Int("clients", 32, "concurrent clients for the session-rate test")
	duration = flag.Duration("duration", 10*time.Second, "length of each session-rate run")
	idle     = flag.Int("idle", 1000, "idle logged-in TLS sessions for the memory test")
	binFlag  = flag.String("bin", "", "mailpost binary (default: build it)")
	keep     = flag.Bool("keep", false, "keep the temporary directory")
	jsonOut  = flag.Bool("json", false, "print results as JSON")
	settle   = flag.Duration("settle", 150*time.Second, "how long to let the server's memory settle with idle sessions (Go forces a GC every 2 minutes); default 20s for dovecot, which has no collector")
	only     = flag.String("only", "", "run only these tests (comma-separated): memory, rate, retr20k, retr5m, submit, nocache")
	passes   = flag.Int("passes", 1, "run everything this many times, each on a freshly started server, and report the median and range")

	target        = flag.String("target", "mailpost", "server under test: mailpost (every test), dovecot (the POP3 tests) or postfix (submission, with Dovecot for SASL and the Maildir)")
	dovecotScheme = flag.String("dovecot-scheme", "", "Dovecot passdb scheme (default ARGON2ID with mailpost's own hash if `doveadm pw -l` lists it, else SHA512-CRYPT)")
	dovecotLogin  = flag.String("dovecot-login", "high-security", "Dovecot login processes: high-security (Dovecot's default, one pop3-login per connection) or performance (service_count = 0, one per core)")
)

type results struct {
	Target                 string  `json:"target"`
	Server                 string  `json:"server"`
	Auth                   string  `json:"auth"`
	Submit1PerSec          float64 `json:"submit_1_client_per_sec"`
	Submit16PerSec         float64 `json:"submit_16_clients_per_sec"`
	Submit1DeliveredLag    float64 `json:"submit_1_client_delivered_lag_sec"`   // after the last 250, until every message was in its Maildir (0: in the mailbox at 250)
	Submit16DeliveredLag   float64 `json:"submit_16_clients_delivered_lag_sec"` // the same with 16 clients
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
	PSSIdleProcesses       int     `json:"pss_idle_processes"` // processes summed for pss_idle_kib
	PerIdleSessionKiB      float64 `json:"per_idle_session_kib"`
	GoHeapPerSessionKiB    float64 `json:"go_heap_and_stacks_per_session_kib"` // upper bound: includes the base heap
	GoGoroutines           uint64  `json:"goroutines"`
}

// benchServer is whatever the client code measures: a mailpost child process,
// a private Dovecot, or a private Postfix with its Dovecot.
type benchServer interface {
	pop3Addr() string   // pop3s, "" if none
	submitAddr() string // submission with STARTTLS, "" if none
	pid() int           // the root of the process tree whose PSS counts
	stop()
}

// launcher starts the target afresh; noCache turns its password cache off.
type launcher func(noCache bool) (benchServer, error)

// deliveryCounter is a benchServer whose 250 after DATA means "queued", not
// "in the mailbox": the bench then also waits until the mail arrives.
type deliveryCounter interface {
	delivered() (int, error)
}

var testsOf = map[string][]string{
	"mailpost": {"memory", "rate", "retr20k", "submit", "retr5m", "nocache"},
	"dovecot":  {"memory", "rate", "retr20k", "retr5m", "nocache"},
	"postfix":  {"submit"},
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mailpost-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	tests, ok := testsOf[*target]
	if !ok {
		return fmt.Errorf("-target %q: want mailpost, dovecot or postfix", *target)
	}
	var picked []string
	if *only != "" {
		for _, t := range strings.Split(*only, ",") {
			t = strings.TrimSpace(t)
			if !contains(tests, t) {
				return fmt.Errorf("-only %s: -target %s runs %v", t, *target, tests)
			}
			picked = append(picked, t)
		}
	}
	if *passes < 1 || *passes > 100 {
		return fmt.Errorf("-passes %d: want 1 to 100", *passes)
	}
	if *dovecotLogin != "high-security" && *dovecotLogin != "performance" {
		return fmt.Errorf("-dovecot-login %q: want high-security or performance", *dovecotLogin)
	}
	if *target != "mailpost" && !flagSet("settle") {
		*settle = 20 * time.Second
	}
	dir, err := os.MkdirTemp("", "mailpost-bench")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "working directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	stopOnSignal(dir)
	res := results{Target: *target}
	var l launcher
	switch *target {
	case "mailpost":
		l, err = mailpostLauncher(dir, &res)
	default:
		l, err = externalLauncher(dir, &res)
	}
	if err != nil {
		return err
	}
	want := func(name string) bool { return contains(tests, name) && (picked == nil || contains(picked, name)) }
	var all []results
	for i := 0; i < *passes; i++ {
		if *passes > 1 {
			step(fmt.Sprintf("pass %d of %d", i+1, *passes))
		}
		r := res
		if err := measure(l, want, &r); err != nil {
			return err
		}
		if *jsonOut {
			// One line per pass.
			if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
				return err
			}
		}
		all = append(all, r)
	}
	if !*jsonOut {
		report(all, want)
	}
	return nil
}

func mailpostLauncher(dir string, res *results) (launcher, error) {
	bin := *binFlag
	if bin == "" {
		bin = filepath.Join(dir, "mailpost")
		step("building mailpost")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		res.Server = "mailpost " + string(trimNL(out))
	} else {
		res.Server = "mailpost"
	}
	res.Auth = "argon2id m=64MiB t=3 p=2, at most one hash per core; success cache 10 min"
	cfgPath := filepath.Join(dir, "mailpost.hcl")
	if err := os.WriteFile(cfgPath, []byte(benchConfig(*clients, *idle)), 0o600); err != nil {
		return nil, err
	}
	step("seeding the store")
	if err := seed(filepath.Join(dir, "data"), *clients); err != nil {
		return nil, err
	}
	return func(noCache bool) (benchServer, error) {
		var env []string
		if noCache {
			env = []string{"MAILPOST_AUTH_CACHE=off"}
		}
		return start(bin, cfgPath, dir, env)
	}, nil
}

// externalLauncher prepares Dovecot (and Postfix) in dir: Maildirs seeded
// like mailpost's store, users with the same password.
func externalLauncher(dir string, res *results) (launcher, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("-target dovecot/postfix must run as root: Dovecot and Postfix start as root and drop privileges themselves")
	}
	// Dovecot's unprivileged processes read the config, certificate and
	// Maildirs below dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	dv, err := dovecotVersion()
	if err != nil {
		return nil, err
	}
	scheme, err := pickScheme(*dovecotScheme)
	if err != nil {
		return nil, err
	}
	res.Server = "Dovecot " + dv
	res.Auth = "passdb dict (file), " + scheme
	if scheme == "ARGON2ID" {
		res.Auth += " (mailpost's own hash: m=64MiB t=3 p=2)"
	}
	res.Auth += "; auth cache 10M/10 min (a hit still verifies the hash); hashes verified in auth-worker processes, one per core"
	users := benchUsers(*clients, *idle)
	step("seeding the Maildirs")
	if err := seedMaildirs(dir, users, *clients, *target == "postfix"); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	o := dovecotOpts{dir: dir, port: port, scheme: scheme, login: *dovecotLogin, maxSessions: *idle + *clients}
	if *target == "dovecot" {
		res.Auth += "; pop3-login " + *dovecotLogin
		return func(noCache bool) (benchServer, error) {
			o := o
			o.noCache = noCache
			return startDovecot(o, users)
		}, nil
	}
	pv, err := postfixVersion(dir)
	if err != nil {
		return nil, err
	}
	res.Server = fmt.Sprintf("Postfix %s (SASL and Maildir: Dovecot %s)", pv, dv)
	res.Auth = "SASL via Dovecot auth: " + res.Auth
	rateUsers := users[2 : 2+*clients]
	return func(noCache bool) (benchServer, error) {
		o := o
		o.noCache = noCache
		p, err := startPostfix(dir, o, users)
		if err != nil {
			return nil, err
		}
		return &postfixCounting{postfix: p, root: dir, users: rateUsers}, nil
	}, nil
}

// postfixCounting counts delivered messages in the rate users' Maildirs.
type postfixCounting struct {
	*postfix
	root  string
	users []string
}

func (p *postfixCounting) delivered() (int, error) { return countMaildir(p.root, p.users) }

// measure runs the wanted tests against a fresh server, then the
// no-cache session rate against another one.
func measure(l launcher, want func(string) bool, res *results) error {
	srv, err := l(false)
	if err != nil {
		return err
	}
	track(srv)
	err = func() error {
		defer untrackStop(srv)
		// Memory first, on a fresh process, so earlier tests' garbage
		// doesn't blur the per-session figure.
		if want("memory") {
			step(fmt.Sprintf("memory: %d idle logged-in TLS sessions (settling up to %s)", *idle, *settle))
			if err := memory(srv, res); err != nil {
				return err
			}
		}
		if want("rate") {
			step(fmt.Sprintf("session rate: %d clients for %s", *clients, *duration))
			if res.SessionsPerSec, err = sessionRate(srv.pop3Addr(), *clients, *duration, true); err != nil {
				return err
			}
		}
		if want("retr20k") {
			step("RETR 2,000 x 20 KiB (5 passes, one command at a time, then pipelined)")
			if res.Retr20KiBMBps, res.Retr20KiBFirstMBps, err = retrPasses(srv.pop3Addr(), "small@bench.test", 5); err != nil {
				return err
			}
			if res.Retr20KiBPipelinedMBps, err = retrAll(srv.pop3Addr(), "small@bench.test", 32); err != nil {
				return err
			}
		}
		if want("submit") {
			step(fmt.Sprintf("submission: 10 KiB messages over STARTTLS, 1 then 16 clients, %s each", *duration))
			if res.Submit1PerSec, res.Submit1DeliveredLag, err = submitAndDeliver(srv, 1, *duration); err != nil {
				return err
			}
			if res.Submit16PerSec, res.Submit16DeliveredLag, err = submitAndDeliver(srv, 16, *duration); err != nil {
				return err
			}
		}
		if want("retr5m") {
			step("RETR 50 x 5 MiB (3 passes)")
			if res.Retr5MiBMBps, _, err = retrPasses(srv.pop3Addr(), "big@bench.test", 3); err != nil {
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
		srv, err = l(true)
		if err != nil {
			return err
		}
		track(srv)
		res.SessionsPerSecNoCache, err = sessionRate(srv.pop3Addr(), *clients, *duration/2, false)
		untrackStop(srv)
		if err != nil {
			return err
		}
	}
	return nil
}

// submitAndDeliver runs submitRate and, for a server that queues before
// delivering, waits (up to 5 minutes) until every accepted message is in
// its Maildir, returning how long that took after the last 250.
func submitAndDeliver(srv benchServer, n int, d time.Duration) (perSec, lag float64, err error) {
	dc, queues := srv.(deliveryCounter)
	before := 0
	if queues {
		if before, err = dc.delivered(); err != nil {
			return 0, 0, err
		}
	}
	perSec, accepted, err := submitRate(srv.submitAddr(), n, d)
	if err != nil || !queues {
		return perSec, 0, err
	}
	end := time.Now()
	for deadline := end.Add(5 * time.Minute); ; {
		got, err := dc.delivered()
		if err != nil {
			return 0, 0, err
		}
		if got-before >= accepted {
			return perSec, time.Since(end).Seconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%d of %d accepted messages delivered 5 minutes after the last 250", got-before, accepted)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// report prints one line per measured figure: the value for one pass, or
// the median and [lowest–highest] over several.
func report(all []results, want func(string) bool) {
	a := summarize(all)
	res := all[0]
	fmt.Printf("\n%s\n  auth: %s\n", res.Server, res.Auth)
	if len(all) > 1 {
		fmt.Printf("  median [range] of %d passes, each on a freshly started server\n", len(all))
	}
	line := func(label, key, format string) {
		fmt.Printf("  %-53s %s\n", label, a.show(key, format))
	}
	if want("rate") || want("retr20k") || want("retr5m") || want("nocache") {
		fmt.Printf("POP3 over TLS on loopback (%d clients):\n", *clients)
	}
	if want("rate") {
		line("sessions/s (connect, TLS, login, STAT, UIDL, QUIT)", "sessions_per_sec", "%.0f")
	}
	if want("nocache") {
		line("sessions/s without the password cache", "sessions_per_sec_no_cache", "%.1f")
	}
	if want("retr20k") {
		line("RETR MB/s, 2,000 x 20 KiB, median of 5 passes", "retr_20kib_mb_per_sec", "%.1f")
		line("  the first of those passes", "retr_20kib_first_pass_mb_per_sec", "%.1f")
		line("RETR MB/s, 2,000 x 20 KiB, pipelined 32 deep", "retr_20kib_pipelined_mb_per_sec", "%.1f")
	}
	if want("retr5m") {
		line("RETR MB/s, 50 x 5 MiB, median of 3 passes", "retr_5mib_mb_per_sec", "%.1f")
	}
	if want("submit") {
		line("submissions/s, 10 KiB over STARTTLS+AUTH, 1 client", "submit_1_client_per_sec", "%.0f")
		if res.Target == "postfix" {
			line("  all in the Maildir this long after the last 250 (s)", "submit_1_client_delivered_lag_sec", "%.2f")
		}
		line("submissions/s, 10 KiB over STARTTLS+AUTH, 16 clients", "submit_16_clients_per_sec", "%.0f")
		if res.Target == "postfix" {
			line("  all in the Maildir this long after the last 250 (s)", "submit_16_clients_delivered_lag_sec", "%.2f")
		}
	}
	if want("memory") {
		fmt.Printf("Memory, %d idle logged-in TLS sessions (PSS summed over the server's processes):\n", res.IdleSessions)
		line("processes with the sessions open", "pss_idle_processes", "%.0f")
		line("PSS at rest, KiB", "pss_base_kib", "%.0f")
		line("PSS with the sessions, after 2 s, KiB", "pss_idle_first_kib", "%.0f")
		line(fmt.Sprintf("PSS with the sessions, lowest within %s, KiB", *settle), "pss_idle_kib", "%.0f")
		line("KiB per idle session", "per_idle_session_kib", "%.1f")
		if res.Target == "mailpost" {
			line("Go heap objects + stacks per session, KiB", "go_heap_and_stacks_per_session_kib", "%.1f")
		}
	}
}

// summary holds every numeric figure's median, lowest and highest value.
type summary struct {
	n           int
	med, lo, hi map[string]float64
}

func summarize(all []results) summary {
	s := summary{n: len(all), med: map[string]float64{}, lo: map[string]float64{}, hi: map[string]float64{}}
	vals := map[string][]float64{}
	for _, r := range all {
		b, _ := json.Marshal(r)
		var m map[string]any
		json.Unmarshal(b, &m)
		for k, v := range m {
			if f, ok := v.(float64); ok {
				vals[k] = append(vals[k], f)
			}
		}
	}
	for k, v := range vals {
		s.med[k], s.lo[k], s.hi[k] = medianRange(v)
	}
	return s
}

// medianRange returns the median (the mean of the middle two for an even
// count), lowest and highest of v, which must not be empty.
func medianRange(v []float64) (med, lo, hi float64) {
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	n := len(v)
	med = v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return med, v[0], v[n-1]
}

func (s summary) show(key, format string) string {
	out := fmt.Sprintf(format, s.med[key])
	if s.n > 1 {
		out += fmt.Sprintf("  [%s–%s]", fmt.Sprintf(format, s.lo[key]), fmt.Sprintf(format, s.hi[key]))
	}
	return out
}

// The servers running now, so that an interrupt stops them: Dovecot and
// Postfix run in their own process groups, out of reach of the terminal's
// Ctrl-C.
var running struct {
	sync.Mutex
	m map[benchServer]bool
}

func track(s benchServer) {
	running.Lock()
	defer running.Unlock()
	if running.m == nil {
		running.m = map[benchServer]bool{}
	}
	running.m[s] = true
}

func untrackStop(s benchServer) {
	running.Lock()
	delete(running.m, s)
	running.Unlock()
	s.stop()
}

// stopOnSignal stops every running server on SIGINT or SIGTERM, removes
// the temp dir (unless -keep) and exits.
func stopOnSignal(dir string) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-c
		fmt.Fprintf(os.Stderr, "mailpost-bench: %v: stopping the servers\n", sig)
		running.Lock()
		for s := range running.m {
			s.stop()
		}
		running.Unlock()
		if !*keep {
			os.RemoveAll(dir)
		}
		os.Exit(130)
	}()
}

func step(s string) { fmt.Fprintln(os.Stderr, "==>", s) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
