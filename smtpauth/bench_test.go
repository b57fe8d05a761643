package smtpauth

import (
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// discardBackend accepts everyone and drops every message after reading it.
type discardBackend struct{}

func (discardBackend) Login(ctx context.Context, ci ConnInfo, user, pass string) (*Account, error) {
	if pass != "pw" {
		return nil, ErrAuthFailed
	}
	return &Account{Name: user, SendAs: []string{user}}, nil
}

func (discardBackend) Recipient(ctx context.Context, ci ConnInfo, acct *Account, rcpt string, hint int64) error {
	return nil
}

func (discardBackend) Deliver(ctx context.Context, ci ConnInfo, env *Envelope, msg io.Reader) error {
	_, err := io.Copy(io.Discard, msg)
	return err
}

// BenchmarkSubmitSTARTTLS measures whole submissions: connect, STARTTLS
// (full handshake, no resumption), AUTH PLAIN, one 10 KiB message, QUIT,
// from 16 concurrent clients.
func BenchmarkSubmitSTARTTLS(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := submissionSettings()
	s.MaxMessageBytes = 1 << 20
	srv := NewServer(discardBackend{}, s, slog.New(slog.DiscardHandler))
	go srv.Serve(l, false, "bench")
	b.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()

	line := strings.Repeat("x", 78) + "\r\n"
	body := "Subject: bench\r\n\r\n" + strings.Repeat(line, 10240/len(line))
	b.SetBytes(int64(len(body)))
	b.SetParallelism(max(1, 16/ncpu()))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := smtp.DialStartTLS(addr, clientTLS())
			if err != nil {
				b.Error(err)
				return
			}
			err = c.Auth(sasl.NewPlainClient("", "u@example.org", "pw"))
			if err == nil {
				err = c.SendMail("u@example.org", []string{"r@example.org"}, strings.NewReader(body))
			}
			if err == nil {
				err = c.Quit()
			}
			c.Close()
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func ncpu() int { return runtime.GOMAXPROCS(0) }
