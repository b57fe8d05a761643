package pop3

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchMessage makes a size-octet message of 76-character lines, every
// tenth starting with "." so the stuffer has work to do.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Subject: benchmark\r\nFrom: a@example.org\r\n\r\n")
	line := strings.Repeat("abcdefghij", 8)[:76]
	for i := 0; b.Len() < size; i++ {
		if i%10 == 0 {
			b.WriteString("." + line[1:])
		} else {
			b.WriteString(line)
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()[:size]
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n>>10) + "KiB"
}

// memBackend serves one maildrop holding one message, to anybody.
type memBackend struct{ msg []byte }

func (m memBackend) Login(context.Context, ConnInfo, string, string) (Maildrop, error) {
	return memDrop(m), nil
}

type memDrop struct{ msg []byte }

func (d memDrop) Messages() []MessageInfo {
	return []MessageInfo{{Size: int64(len(d.msg)), UIDL: "bench"}}
}
func (d memDrop) Open(int) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d.msg)), nil }
func (d memDrop) Commit([]int) error              { return nil }
func (d memDrop) Close() error                    { return nil }

func BenchmarkRETR20KiB(b *testing.B) { benchRETR(b, 20<<10) }
func BenchmarkRETR5MiB(b *testing.B)  { benchRETR(b, 5<<20) }

// benchRETR retrieves one message repeatedly over loopback implicit TLS.
// The client only looks for the terminator, so the figure is mostly the
// server's framing and TLS.
func benchRETR(b *testing.B, size int) {
	msg := benchMessage(size)
	srv := NewServer(memBackend{msg}, &Settings{TLSConfig: serverTLSConfig()}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l, true, "bench")
	b.Cleanup(func() { srv.Close() })

	c, err := tls.Dial("tcp", l.Addr().String(), clientTLSConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	buf := make([]byte, 64<<10)
	// readUntil reads until the data read so far ends with end; replies
	// are not pipelined, so the end marker is always last.
	var tail []byte
	readUntil := func(end string) {
		tail = tail[:0]
		for {
			n, err := c.Read(buf)
			if err != nil {
				b.Fatalf("read: %v", err)
			}
			tail = append(tail, buf[max(0, n-len(end)):n]...)
			if len(tail) > len(end) {
				tail = tail[len(tail)-len(end):]
			}
			if string(tail) == end {
				return
			}
		}
	}
	readUntil("\r\n")
	fmt.Fprintf(c, "USER bench\r\nPASS bench\r\n")
	readUntil("octets)\r\n")

	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.WriteString(c, "RETR 1\r\n"); err != nil {
			b.Fatal(err)
		}
		readUntil("\r\n.\r\n")
	}
}

// BenchmarkIdleTLSSession reports the memory held per idle, logged-in
// implicit-TLS session. Client and server run in this process, so the
// figure covers both ends of each connection: an upper bound for the
// server's share.
func BenchmarkIdleTLSSession(b *testing.B) {
	const n = 200
	srv := NewServer(memBackend{[]byte("x\r\n")}, &Settings{TLSConfig: serverTLSConfig()}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l, true, "bench")
	b.Cleanup(func() { srv.Close() })
	for b.Loop() {
		b.StopTimer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]*tls.Conn, 0, n)
		buf := make([]byte, 512)
		for range n {
			c, err := tls.Dial("tcp", l.Addr().String(), clientTLSConfig())
			if err != nil {
				b.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(time.Minute))
			io.WriteString(c, "USER u\r\nPASS p\r\n")
			for got := ""; strings.Count(got, "\r\n") < 3; {
				k, err := c.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				got += string(buf[:k])
			}
			conns = append(conns, c)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
		b.ReportMetric(float64(used)/n, "B/session(both-ends)")
		for _, c := range conns {
			c.Close()
		}
		b.StartTimer()
	}
}
