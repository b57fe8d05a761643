package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailpost/server"
)

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

// sessionRate measures full sessions per second with n clients for d.
// With warm, every client first logs in once untimed, so the figure is the
// steady state a server with a password cache reaches (clients that poll),
// not the first argon2id computation of each account.
func sessionRate(addr string, n int, d time.Duration, warm bool) (float64, error) {
	user := func(i int) string { return fmt.Sprintf("rate%d@bench.test", i) }
	if warm {
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- oneSession(addr, user(i)) }()
		}
		for range n {
			if err := <-errs; err != nil {
				return 0, fmt.Errorf("warming up: %w", err)
			}
		}
	}
	perSec, _, err := closedLoop(n, d, func(i int) error { return oneSession(addr, user(i)) })
	return perSec, err
}

// closedLoop runs n clients, client i calling op back to back until d has
// passed, and returns the completed operations per second and in all. The
// first error stops every client and is returned.
func closedLoop(n int, d time.Duration, op func(client int) error) (perSec float64, done int, err error) {
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	begin := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := op(i); err != nil {
					once.Do(func() { firstErr = err })
					cancel()
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	return float64(count.Load()) / time.Since(begin).Seconds(), int(count.Load()), nil
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

func memory(srv benchServer, res *results) error {
	// Warm up: one login so the password cache and TLS paths are set up.
	if err := oneSession(srv.pop3Addr(), "idle0@bench.test"); err != nil {
		return err
	}
	// The server hands argon2's 64 MiB back a second after the last hash.
	time.Sleep(3 * time.Second)
	base, _, err := treePSS(srv.pid())
	if err != nil {
		return err
	}
	conns, err := openIdle(srv.pop3Addr(), *idle)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.c.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	after, procs, err := treePSS(srv.pid())
	if err != nil {
		return err
	}
	res.PSSIdleFirstKiB = after
	if mp, ok := srv.(*proc); ok {
		client := server.NewClient(filepath.Join(mp.dir, "data"))
		if st, err := client.Status(); err == nil {
			res.GoHeapPerSessionKiB = float64(st.Memory.HeapLive+st.Memory.Stacks) / 1024 / float64(*idle)
			res.GoGoroutines = st.Memory.Goroutines
		}
	}
	// The first figure holds handshake garbage the collector has not yet
	// returned; a long-lived server with idle sessions settles lower.
	for end := time.Now().Add(*settle); time.Now().Before(end); {
		time.Sleep(5 * time.Second)
		if p, n, err := treePSS(srv.pid()); err == nil && p < after {
			after, procs = p, n
		}
	}
	for _, c := range conns {
		c.cmd("QUIT")
	}
	res.IdleSessions = *idle
	res.PSSBaseKiB, res.PSSIdleKiB, res.PSSIdleProcesses = base, after, procs
	res.PerIdleSessionKiB = float64(after-base) / float64(*idle)
	return nil
}

// openIdle opens n logged-in sessions as idle0..idle(n-1), four logins at
// a time (a server that hashes every login, like Dovecot, would otherwise
// take minutes). On error the sessions opened so far are returned too, for
// the caller to close.
func openIdle(addr string, n int) ([]*conn, error) {
	conns := make([]*conn, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dial(addr)
				if err == nil {
					conns[i] = c
					err = c.login(fmt.Sprintf("idle%d@bench.test", i))
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("idle session %d: %w", i, err) })
					failed.Store(true)
					return
				}
				// Let go of the client's big read buffer; only the server counts.
				c.r = bufio.NewReaderSize(c.c, 512)
			}
		}()
	}
	wg.Wait()
	return conns, firstErr
}

// submitRate runs n clients, each sending 10 KiB messages on a fresh
// connection every time (connect, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA,
// QUIT), for d; a message counts once the server said 250 after DATA,
// which mailpost only says once it is on disk.
func submitRate(addr string, n int, d time.Duration) (perSec float64, accepted int, err error) {
	msg := message(10<<10, rand.New(rand.NewPCG(3, 4)))
	return closedLoop(n, d, func(i int) error {
		user := fmt.Sprintf("rate%d@bench.test", i%*clients)
		c, err := smtp.DialStartTLS(addr, clientTLS)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", user, benchPassword)); err != nil {
			return err
		}
		if err := c.SendMail(user, []string{user}, bytes.NewReader(msg)); err != nil {
			return err
		}
		return c.Quit()
	})
}
