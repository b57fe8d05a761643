package storage

import (
	"bytes"
	"io"
	"strings"
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
