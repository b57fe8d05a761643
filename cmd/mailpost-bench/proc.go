package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"mailpost/certs"
)

// treePSS sums the PSS of root and every process descending from it, so a
// server that forks per session (Dovecot) is measured the same way as one
// that doesn't (mailpost): everything the server started, nothing else. It
// also returns how many processes it counted. Processes that exit while
// being read are skipped.
func treePSS(root int) (kib int64, procs int, err error) {
	parents, err := parentMap()
	if err != nil {
		return 0, 0, err
	}
	for _, pid := range descendants(root, parents) {
		p, err := pss(pid)
		if err != nil {
			if pid == root {
				return 0, 0, fmt.Errorf("pss of %d: %w", pid, err)
			}
			continue
		}
		kib += p
		procs++
	}
	return kib, procs, nil
}

// parentMap reads every process's parent id from /proc.
func parentMap() (map[int]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	m := make(map[int]int, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone already
		}
		if ppid, ok := parseStatPPid(string(b)); ok {
			m[pid] = ppid
		}
	}
	return m, nil
}

// parseStatPPid takes the parent id out of a /proc/PID/stat line. The
// command name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatPPid(stat string) (int, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 { // state, ppid, ...
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// descendants returns root and all processes below it in parents, root
// first. A pid is visited once, so a malformed map cannot loop.
func descendants(root int, parents map[int]int) []int {
	children := make(map[int][]int)
	for pid, pp := range parents {
		children[pp] = append(children[pp], pid)
	}
	out := []int{root}
	seen := map[int]bool{root: true}
	for i := 0; i < len(out); i++ {
		for _, c := range children[out[i]] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// freePort asks the kernel for an unused loopback port. Another program
// could take it before the server binds it; the server then fails to
// start and says so.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeSelfSigned writes a certificate like mailpost's own self-signed one
// (ECDSA P-256) as cert.pem and key.pem in dir, for external servers.
func writeSelfSigned(dir string) (certPath, keyPath string, err error) {
	c, err := certs.SelfSigned([]string{"mail.bench.test", "127.0.0.1"}, time.Now(), 24*time.Hour)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return "", "", fmt.Errorf("encoding key: %w", err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// waitListening polls addr until it accepts a TCP connection, the process
// behind done exits, or the deadline passes.
func waitListening(addr string, done <-chan error, within time.Duration) error {
	for end := time.Now().Add(within); time.Now().Before(end); {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("exited before listening on %s: %v", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listening on %s after %s", addr, within)
}

// group is a child started in its own process group, so that stopping it
// also reaches whatever it forked.
type group struct {
	name    string
	cmd     *exec.Cmd
	done    chan error
	stopped sync.Once
}

func startGroup(name string, cmd *exec.Cmd, logPath string) (*group, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	g := &group{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { g.done <- cmd.Wait(); logf.Close() }()
	return g, nil
}

// stop sends SIGTERM to the leader (servers shut their children down
// themselves), waits up to 30 s, then SIGKILLs the whole group, and in any
// case sweeps the group for stragglers. Only the first call does anything.
func (g *group) stop() { g.stopped.Do(g.doStop) }

func (g *group) doStop() {
	pgid := g.cmd.Process.Pid
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		fmt.Fprintf(os.Stderr, "%s did not stop in 30 s; killing its process group\n", g.name)
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-g.done
	}
	// Children that outlived the leader (killed above, or left behind).
	for i := 0; i < 50; i++ {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		syscall.Kill(-pgid, syscall.SIGTERM)
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last n bytes of a log file, for error messages.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return strings.TrimSpace(string(b))
}

// chownTree gives dir and everything below it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
