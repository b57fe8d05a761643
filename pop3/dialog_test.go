package pop3

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDialogs runs every testdata/dialogs/*.txt script against a session
// served over net.Pipe with the fake backend. The script language:
//
//	# comment                 ignored, as are blank lines
//	@insecure                 Settings.AllowInsecureAuth = true
//	@tls                      Settings.TLSConfig set (STLS offered)
//	@maxcmd N                 Settings.MaxCommandSize = N
//	@preauth D / @auth D      PreAuthTimeout / AuthTimeout (time.ParseDuration)
//	@commit 1,3 | none        after the session: exactly one Commit of those
//	                          message numbers, or no Commit at all
//	@expire 30 | 0 USER | off Settings.Expire (default NEVER, as the server
//	                          sends when no mailbox has a retention)
//	@retrieved 2,1 | none     the maildrops' Retrieved calls, in order
//	@log TEXT / @nolog TEXT   the server log must / must not contain TEXT
//	C: line                   client sends line + CRLF
//	R: "quoted"               client sends the Go-quoted bytes as they are
//	T: starttls               client does a TLS handshake on the pipe
//	S: line                   next server line is exactly line
//	S~ prefix                 next server line starts with prefix
//	S! EOF                    the server has closed the connection
//
// A mismatch is reported as file:line.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialogs/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d dialog files", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			runDialog(t, f)
		})
	}
}

const dialogIOTimeout = 5 * time.Second

func runDialog(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")

	settings := &Settings{Hostname: "pop.test", Banner: "mailpost ready", Expire: &Expire{Days: ExpireNever}}
	var wantCommit []int
	commitSet, noCommit := false, false
	var wantRetrieved []int
	retrievedSet := false
	var wantLog, wantNoLog []string
	at := func(i int) string { return fmt.Sprintf("%s:%d", path, i+1) }

	// Directives first, wherever they are.
	for i, l := range lines {
		if !strings.HasPrefix(l, "@") {
			continue
		}
		key, val, _ := strings.Cut(l[1:], " ")
		switch key {
		case "insecure":
			settings.AllowInsecureAuth = true
		case "tls":
			settings.TLSConfig = serverTLSConfig()
		case "maxcmd":
			n, err := strconv.Atoi(val)
			if err != nil {
				t.Fatalf("%s: %v", at(i), err)
			}
			settings.MaxCommandSize = n
		case "preauth", "auth":
			d, err := time.ParseDuration(val)
			if err != nil {
				t.Fatalf("%s: %v", at(i), err)
			}
			if key == "preauth" {
				settings.PreAuthTimeout = d
			} else {
				settings.AuthTimeout = d
			}
		case "commit":
			if val == "none" {
				noCommit = true
				continue
			}
			commitSet = true
			for _, f := range strings.Split(val, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil {
					t.Fatalf("%s: %v", at(i), err)
				}
				wantCommit = append(wantCommit, n-1)
			}
		case "expire":
			if val == "off" {
				settings.Expire = nil
				continue
			}
			days, tag, _ := strings.Cut(val, " ")
			e := &Expire{Days: ExpireNever, PerUser: tag == "USER"}
			if days != "NEVER" {
				if e.Days, err = strconv.Atoi(days); err != nil {
					t.Fatalf("%s: %v", at(i), err)
				}
			}
			settings.Expire = e
		case "retrieved":
			retrievedSet = true
			if val == "none" {
				continue
			}
			for _, f := range strings.Split(val, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil {
					t.Fatalf("%s: %v", at(i), err)
				}
				wantRetrieved = append(wantRetrieved, n-1)
			}
		case "log":
			wantLog = append(wantLog, val)
		case "nolog":
			wantNoLog = append(wantNoLog, val)
		default:
			t.Fatalf("%s: unknown directive %q", at(i), key)
		}
	}

	be := newFakeBackend()
	log, logs := testLogger(t)
	srv := NewServer(be, settings, log)
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(server, false, "dialog")
	}()
	defer func() {
		client.Close()
		select {
		case <-done:
		case <-time.After(dialogIOTimeout):
			t.Errorf("%s: session did not end after the client closed", path)
		}
	}()

	var conn net.Conn = client
	br := bufio.NewReader(conn)
	readLine := func(i int) (string, error) {
		conn.SetReadDeadline(time.Now().Add(dialogIOTimeout))
		l, err := br.ReadString('\n')
		if err != nil {
			return l, err
		}
		if !strings.HasSuffix(l, "\r\n") {
			t.Fatalf("%s: server line %q does not end in CRLF", at(i), l)
		}
		return strings.TrimSuffix(l, "\r\n"), nil
	}
	// net.Pipe is synchronous, so the client writes from its own goroutine:
	// a server that replies and hangs up in the middle of a long line must
	// not deadlock the script. A failed write is only logged; the
	// expectations that follow decide whether it mattered.
	type writeOp struct {
		i int
		b []byte
	}
	writes := make(chan writeOp, 64)
	var pending sync.WaitGroup
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for op := range writes {
			c := conn // set by T: before the op was queued
			c.SetWriteDeadline(time.Now().Add(dialogIOTimeout))
			if _, err := c.Write(op.b); err != nil {
				t.Logf("%s: write: %v", at(op.i), err)
			}
			pending.Done()
		}
	}()
	defer func() {
		close(writes)
		<-writerDone
	}()
	write := func(i int, b []byte) {
		pending.Add(1)
		writes <- writeOp{i, b}
	}

	for i, l := range lines {
		if l == "" || l[0] == '#' || l[0] == '@' {
			continue
		}
		if len(l) < 3 {
			t.Fatalf("%s: bad script line %q", at(i), l)
		}
		op, arg := l[:2], strings.TrimPrefix(l[2:], " ")
		switch op {
		case "C:":
			write(i, []byte(arg+"\r\n"))
		case "R:":
			raw, err := strconv.Unquote(arg)
			if err != nil {
				t.Fatalf("%s: %v", at(i), err)
			}
			write(i, []byte(raw))
		case "T:":
			pending.Wait()
			if br.Buffered() != 0 {
				t.Fatalf("%s: unread server data before TLS", at(i))
			}
			tc := tls.Client(client, clientTLSConfig())
			tc.SetDeadline(time.Now().Add(dialogIOTimeout))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("%s: TLS handshake: %v", at(i), err)
			}
			conn = tc
			br = bufio.NewReader(conn)
		case "S:", "S~":
			got, err := readLine(i)
			if err != nil {
				t.Fatalf("%s: want %q, read error %v (got %q)", at(i), arg, err, got)
			}
			if op == "S:" && got != arg {
				t.Fatalf("%s: got %q, want %q", at(i), got, arg)
			}
			if op == "S~" && !strings.HasPrefix(got, arg) {
				t.Fatalf("%s: got %q, want prefix %q", at(i), got, arg)
			}
		case "S!":
			got, err := readLine(i)
			if !errors.Is(err, io.EOF) {
				t.Fatalf("%s: want EOF, got %q, %v", at(i), got, err)
			}
		default:
			t.Fatalf("%s: unknown op %q", at(i), op)
		}
	}

	client.Close()
	select {
	case <-done:
	case <-time.After(dialogIOTimeout):
		t.Fatalf("%s: session did not end", path)
	}
	commits, _ := be.snapshot()
	switch {
	case noCommit && len(commits) != 0:
		t.Errorf("%s: commits %v, want none", path, commits)
	case commitSet && (len(commits) != 1 || !slices.Equal(commits[0], wantCommit)):
		t.Errorf("%s: commits %v, want [%v]", path, commits, wantCommit)
	}
	if got := be.retrievals(); retrievedSet && !slices.Equal(got, wantRetrieved) {
		t.Errorf("%s: Retrieved calls %v, want %v (0-based)", path, got, wantRetrieved)
	}
	checkClosedOnce(t, be)
	out := logs.String()
	for _, w := range wantLog {
		if !strings.Contains(out, w) {
			t.Errorf("%s: log lacks %q", path, w)
		}
	}
	for _, w := range wantNoLog {
		if strings.Contains(out, w) {
			t.Errorf("%s: log contains %q", path, w)
		}
	}
	if st := srv.Stats(); st.Sessions != 0 {
		t.Errorf("%s: %d sessions still counted", path, st.Sessions)
	}
}
