package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"mailpost/server"
	"mailpost/storage"
)

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
	dir    string
	cmd    *exec.Cmd
	addr   string // pop3s
	submit string // submission with STARTTLS
	done   chan error
	once   sync.Once
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
					p.submit = l.Addr
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

func (p *proc) pop3Addr() string   { return p.addr }
func (p *proc) submitAddr() string { return p.submit }
func (p *proc) pid() int           { return p.cmd.Process.Pid }

// stop is SIGTERM (mailpost drains), SIGKILL after 30 s; only the first
// call does anything.
func (p *proc) stop() { p.once.Do(p.doStop) }

func (p *proc) doStop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}
