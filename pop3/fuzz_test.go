package pop3

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// errorCounter counts Error-level records: a recovered panic logs one, and
// the fuzzer must treat it as a crash.
type errorCounter struct {
	n    *atomic.Int64
	msgs chan string
}

func (h errorCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h errorCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		h.n.Add(1)
	}
	return nil
}
func (h errorCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errorCounter) WithGroup(string) slog.Handler      { return h }

// FuzzSession throws arbitrary client bytes at a session over net.Pipe with
// the fake backend. It must not panic (recovered or not) or hang.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"USER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nLIST 1\r\nUIDL\r\nUIDL 2\r\nRETR 2\r\nTOP 5 1\r\nDELE 1\r\nRSET\r\nNOOP\r\nLAST\r\nQUIT\r\n",
		"CAPA\r\nAUTH\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nSTAT\r\nQUIT\r\n",
		"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nRETR 3\r\nTOP 4 0\r\n",
		"AUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\nAUTH LOGIN\r\n",
		"STLS\r\nUSER alice\r\n",
		"USER locked\r\nPASS x\r\nUSER disabled\r\nPASS x\r\nUSER broken\r\nPASS x\r\n",
		"USER flaky\r\nPASS x\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"USER a\x00b\r\n\xff\r\n\r\n   \r\nRETR 99999999999999999999\r\n",
		"USER alice\nPASS secret\nTOP 1 99999999999\nTOP 1 -1\nLIST 0\nDELE 7\n",
		"APOP x y\r\nLAST\r\nQUIT extra\r\n",
		strings.Repeat("A", 600) + "\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var panics atomic.Int64
		log := slog.New(errorCounter{n: &panics})
		srv := NewServer(newFakeBackend(), &Settings{
			AllowInsecureAuth: true,
			TLSConfig:         serverTLSConfig(),
			PreAuthTimeout:    200 * time.Millisecond,
			AuthTimeout:       200 * time.Millisecond,
		}, log)
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(server, false, "fuzz")
		}()
		go io.Copy(io.Discard, client) // drain replies so the server never blocks
		client.SetWriteDeadline(time.Now().Add(time.Second))
		client.Write(in)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("session hung on %q", in)
		}
		if panics.Load() != 0 {
			t.Fatalf("handler panicked on %q", in)
		}
	})
}
