package outbound

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkQueueThroughput delivers b.N queued 10 KiB messages to a
// loopback relay with 16 deliveries in flight, from the runner's start to
// an empty queue; msgs/s is the figure to watch.
func BenchmarkQueueThroughput(b *testing.B) {
	for _, mode := range []struct {
		name string
		tls  string
		hop  hopMode
	}{{"plain", "none", plainHop}, {"starttls", "starttls", startTLSHop}} {
		b.Run(mode.name, func(b *testing.B) {
			cert, roots := hopCert(b)
			hop := startHop(b, mode.hop, &cert, nil)
			st := openStore(b)
			body := "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: bench\r\n\r\n" +
				strings.Repeat(strings.Repeat("x", 78)+"\r\n", 10<<10/80)
			// Fill the queue first, in parallel so commits are shared.
			var wg sync.WaitGroup
			per := (b.N + 15) / 16
			for w := 0; w < 16; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := w * per; i < min((w+1)*per, b.N); i++ {
						enqueue(b, st, "alice@example.com", []string{"bob@example.net"}, body)
					}
				}(w)
			}
			wg.Wait()
			s := baseSettings()
			s.Relay = &Relay{Address: hop.addr, TLS: mode.tls}
			opt := fastOptions(noResolver{b}, 0, roots)
			opt.MaxConcurrent, opt.MaxPerDestination = 16, 16
			opt.SessionTimeout = time.Minute
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			startRunner(b, st, s, opt)
			for queueLen(b, st) > 0 {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			if n := len(hop.messages()); n != b.N {
				b.Fatalf("delivered %d of %d", n, b.N)
			}
		})
	}
}
