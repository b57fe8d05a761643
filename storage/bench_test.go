package storage

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// seedMailbox adds n small messages in ONE Update (one fsync), through the
// same addIndex path Deliver uses, so the fixture takes seconds, not n
// fsyncs.
func seedMailbox(b *testing.B, s *Store, mb string, n int, body []byte) {
	b.Helper()
	now := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for range n {
			m, info, err := s.addIndex(tx, mb, int64(len(body)), DeliverOptions{}, now)
			if err != nil {
				return err
			}
			if err := m.body.Put(chunkKey(info.ID, 0), body); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func BenchmarkList100k(b *testing.B) {
	s := openTest(b)
	const n = 100_000
	seedMailbox(b, s, "big@example.org", n, []byte("Subject: x\r\n\r\nhello\r\n"))
	b.ReportAllocs()
	for b.Loop() {
		list, err := s.List("big@example.org")
		if err != nil {
			b.Fatal(err)
		}
		if len(list) != n {
			b.Fatalf("listed %d, want %d", len(list), n)
		}
	}
}

func BenchmarkDeliver20KiB(b *testing.B) {
	s := openTest(b)
	// LF line ends, so normalization does real work.
	line := strings.Repeat("x", 75) + "\n"
	msg := []byte(strings.Repeat(line, 20<<10/len(line)+1)[:20<<10])
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Deliver("bench@example.org", bytes.NewReader(msg), DeliverOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead5MiB(b *testing.B) {
	s := openTest(b)
	msg := bigMessage(5 << 20)
	info, err := s.Deliver("bench@example.org", bytes.NewReader(msg), DeliverOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(info.Size)
	b.ReportAllocs()
	for b.Loop() {
		rc, err := s.OpenMessage("bench@example.org", info.ID)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != info.Size {
			b.Fatalf("read %d of %d: %v", n, info.Size, err)
		}
	}
}

// submitMessage is 10 KiB with LF line ends, so normalization does work.
func submitMessage() []byte {
	line := strings.Repeat("s", 75) + "\n"
	return []byte(strings.Repeat(line, 10<<10/len(line)+1)[:10<<10])
}

// benchSubmit runs b.N submissions spread over workers goroutines, each
// like one authenticated SMTP client sending to one local mailbox and one
// external recipient (so every message is written twice: mailbox and
// queue). It reports messages per second and how many messages shared
// each commit (fsync).
func benchSubmit(b *testing.B, mode commitMode, workers int) {
	s := openTest(b)
	s.commitMode = mode
	msg := submitMessage()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	c0 := commits(b, s)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	b.ResetTimer()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user%d@example.org", w)
			sub := Submission{
				Local:    []string{user},
				LocalOpt: func(string) DeliverOptions { return DeliverOptions{Quota: 1 << 40} },
				Outbound: &Outbound{From: user, To: []string{"rcpt@remote.example"}, Account: user},
			}
			for next.Add(1) <= int64(b.N) {
				if _, err := s.Submit(bytes.NewReader(msg), sub); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(commits(b, s)-c0), "msgs/commit")
}

// BenchmarkSubmit10KiBParallel is the throughput target: 16 concurrent
// submitters, each durable before it returns. "group" is what the store
// does; "batch" always goes through DB.Batch; "update" gives every message
// its own commit, to show what group commit buys.
func BenchmarkSubmit10KiBParallel(b *testing.B) {
	for _, m := range []struct {
		name string
		mode commitMode
	}{{"group", commitAdaptive}, {"batch", commitBatch}, {"update", commitUpdate}} {
		b.Run(m.name, func(b *testing.B) { benchSubmit(b, m.mode, 16) })
	}
}

// BenchmarkSubmit10KiBSerial is one submitter: the latency a lone SMTP
// client sees, which group commit must not make worse.
func BenchmarkSubmit10KiBSerial(b *testing.B) {
	for _, m := range []struct {
		name string
		mode commitMode
	}{{"group", commitAdaptive}, {"batch", commitBatch}} {
		b.Run(m.name, func(b *testing.B) { benchSubmit(b, m.mode, 1) })
	}
}

// BenchmarkRecordLoginParallel is the cost a POP3 or submission login pays
// for last-login tracking: a map update under a mutex, the write happening
// later in the background.
func BenchmarkRecordLoginParallel(b *testing.B) {
	s := openTest(b)
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprintf("user%d@example.com", i)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.RecordLogin(LoginEvent{Mailbox: names[i%len(names)], Login: Login{IP: "192.0.2.1", Proto: "pop3", Time: time.Now()}})
			i++
		}
	})
}
