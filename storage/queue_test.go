package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func queue(t testing.TB, s *Store, from string, to []string, body string) QueuedMessage {
	t.Helper()
	res, err := s.Submit(strings.NewReader(body), Submission{Outbound: &Outbound{From: from, To: to, Account: "acct"}})
	if err != nil {
		t.Fatal(err)
	}
	return *res.Queued
}

func TestQueueOperations(t *testing.T) {
	s := openTest(t)
	if q, err := s.Queue(); err != nil || len(q) != 0 {
		t.Fatalf("empty Queue = %+v, %v", q, err)
	}
	a := queue(t, s, "a@here", []string{"1@remote.example", "2@remote.example"}, "first\n")
	b := queue(t, s, "", []string{"bounce@remote.example"}, "second\n")
	c := queue(t, s, "c@here", []string{"3@remote.example"}, "third\n")
	// A local delivery in between uses the message id counter, not the
	// queue's.
	deliver(t, s, "local", "not queued")
	d := queue(t, s, "d@here", []string{"4@remote.example"}, "fourth\n")
	if a.ID != 1 || b.ID != 2 || c.ID != 3 || d.ID != 4 {
		t.Fatalf("queue ids %d %d %d %d, want 1..4", a.ID, b.ID, c.ID, d.ID)
	}
	list, err := s.Queue()
	if err != nil || !reflect.DeepEqual(list, []QueuedMessage{a, b, c, d}) {
		t.Fatalf("Queue = %+v, %v", list, err)
	}
	if got, err := s.QueuedMessage(b.ID); err != nil || !reflect.DeepEqual(got, b) {
		t.Errorf("QueuedMessage(%d) = %+v, %v", b.ID, got, err)
	}
	if _, err := s.QueuedMessage(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("QueuedMessage(99): %v", err)
	}
	if _, err := s.OpenQueued(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenQueued(99): %v", err)
	}
	if got := string(readQueued(t, s, c.ID)); got != "third\r\n" {
		t.Errorf("queued body %q", got)
	}

	// Record a failed attempt and drop the recipient already delivered.
	next := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	err = s.UpdateQueued(a.ID, func(q *QueuedMessage) {
		q.Attempts++
		q.LastError = "451 4.3.0 try later"
		q.NextAttempt = next
		q.To = q.To[1:]
		q.ID, q.Size = 77, 1 // ignored: they describe the stored body
	})
	if err != nil {
		t.Fatal(err)
	}
	want := a
	want.Attempts, want.LastError, want.NextAttempt, want.To = 1, "451 4.3.0 try later", next, []string{"2@remote.example"}
	if got, _ := s.QueuedMessage(a.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("after UpdateQueued: %+v, want %+v", got, want)
	}
	if got := string(readQueued(t, s, a.ID)); got != "first\r\n" {
		t.Errorf("body after UpdateQueued: %q", got)
	}
	// An update that would leave nobody to deliver to is refused whole.
	if err := s.UpdateQueued(a.ID, func(q *QueuedMessage) { q.Attempts = 50; q.To = nil }); err == nil {
		t.Errorf("UpdateQueued emptied To")
	}
	if got, _ := s.QueuedMessage(a.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("refused update changed the entry: %+v", got)
	}
	if err := s.UpdateQueued(99, func(*QueuedMessage) { t.Error("fn called for a missing entry") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateQueued(99): %v", err)
	}

	if err := s.Dequeue(b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Dequeue(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Dequeue: %v, want ErrNotFound", err)
	}
	if _, err := s.QueuedMessage(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("dequeued entry still there: %v", err)
	}
	if _, err := s.OpenQueued(b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("dequeued body still opens: %v", err)
	}
	list, _ = s.Queue()
	if !reflect.DeepEqual(list, []QueuedMessage{want, c, d}) {
		t.Errorf("Queue after dequeue = %+v", list)
	}
	if recs, chunks := queueLen(t, s); recs != 3 || chunks != 3 {
		t.Errorf("queue holds %d records, %d chunks; want 3, 3", recs, chunks)
	}
	// Dequeue removes only its own chunks.
	for _, q := range []QueuedMessage{c, d} {
		if got := string(readQueued(t, s, q.ID)); !strings.HasSuffix(got, "\r\n") {
			t.Errorf("entry %d body %q after another dequeue", q.ID, got)
		}
	}
	// Ids are not reused after a dequeue of the newest entry.
	if err := s.Dequeue(d.ID); err != nil {
		t.Fatal(err)
	}
	if e := queue(t, s, "", []string{"x@remote.example"}, "e"); e.ID != 5 {
		t.Errorf("next queue id %d, want 5", e.ID)
	}
	if list, _ := s.List("local"); len(list) != 1 {
		t.Errorf("queue operations touched a mailbox: %+v", list)
	}
}

func TestQueueDurableAcrossReopen(t *testing.T) {
	s := openTest(t)
	msg := bigMessage(2*chunkSize + 5)
	res, err := s.Submit(bytes.NewReader(msg), Submission{
		Local:    []string{"a"},
		Outbound: &Outbound{From: "a@here", To: []string{"r@remote.example", "s@remote.example"}, Account: "a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	small := queue(t, s, "", []string{"t@remote.example"}, "small")
	if err := s.UpdateQueued(small.ID, func(q *QueuedMessage) { q.Attempts, q.LastError = 3, "550 no" }); err != nil {
		t.Fatal(err)
	}
	before, err := s.Queue()
	if err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s)
	after, err := s.Queue()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || !reflect.DeepEqual(before, after) {
		t.Fatalf("queue before reopen %+v, after %+v", before, after)
	}
	if !reflect.DeepEqual(after[0], *res.Queued) || after[1].Attempts != 3 || after[1].LastError != "550 no" {
		t.Errorf("after reopen: %+v", after)
	}
	if !bytes.Equal(readQueued(t, s, res.Queued.ID), msg) {
		t.Errorf("queued body changed across reopen")
	}
	if !bytes.Equal(readMessage(t, s, "a", res.Local[0].ID), msg) {
		t.Errorf("local copy changed across reopen")
	}
	if e := queue(t, s, "", []string{"x@remote.example"}, "e"); e.ID != 3 {
		t.Errorf("queue id after reopen %d, want 3", e.ID)
	}
}

// TestOpenQueuedStreams reads a 5 MiB queued message through both Read and
// WriteTo, and shows a dequeue mid-read fails the reader instead of waiting
// for it or returning other bytes.
func TestOpenQueuedStreams(t *testing.T) {
	s := openTest(t)
	msg := bigMessage(5 << 20)
	q := queue(t, s, "", []string{"r@remote.example"}, string(msg))
	if q.Size != int64(len(msg)) {
		t.Fatalf("Size %d, want %d", q.Size, len(msg))
	}
	rc, err := s.OpenQueued(q.ID)
	if err != nil {
		t.Fatal(err)
	}
	var viaCopy bytes.Buffer
	if n, err := io.Copy(&viaCopy, rc); err != nil || n != q.Size || !bytes.Equal(viaCopy.Bytes(), msg) {
		t.Fatalf("WriteTo path: %d octets, %v", n, err)
	}
	rc.Close()
	rc, err = s.OpenQueued(q.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(rc, head); err != nil || !bytes.Equal(head, msg[:1000]) {
		t.Fatalf("first bytes: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Dequeue(q.ID) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Dequeue blocked behind an open queue reader")
	}
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, ErrNotFound) {
		t.Errorf("reading a dequeued message: %v, want ErrNotFound", err)
	}
	if recs, chunks := queueLen(t, s); recs != 0 || chunks != 0 {
		t.Errorf("after dequeue: %d records, %d chunks", recs, chunks)
	}
}

func TestQueueRecordRoundTripAndCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	str := func(n int) string {
		b := make([]byte, rng.IntN(n))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	for range 300 {
		q := QueuedMessage{
			ID:          rng.Uint64(),
			From:        str(300),
			Account:     str(20),
			LastError:   str(200),
			Size:        rng.Int64(),
			Queued:      normTime(time.Unix(rng.Int64N(1<<40), rng.Int64N(1e9))),
			NextAttempt: normTime(time.Unix(rng.Int64N(1<<40), rng.Int64N(1e9))),
			Attempts:    rng.IntN(1000),
			To:          make([]string, 1+rng.IntN(5)),
		}
		for i := range q.To {
			q.To[i] = "r" + str(150)
		}
		v := encodeQueued(q)
		got, err := decodeQueued(q.ID, v)
		if err != nil || !reflect.DeepEqual(got, q) {
			t.Fatalf("round trip of %+v: %+v, %v", q, got, err)
		}
		// Every truncation and one corrupted length must be refused,
		// never panic or allocate wildly.
		for _, n := range []int{0, 1, queueRecHeader - 1, queueRecHeader, len(v) / 2, len(v) - 1} {
			if _, err := decodeQueued(q.ID, v[:n]); !errors.Is(err, errCorruptQueued) {
				t.Fatalf("truncated to %d of %d: %v", n, len(v), err)
			}
		}
		// From's length replaced by one that runs past the end.
		_, w := binary.Uvarint(v[queueRecHeader:])
		bad := binary.AppendUvarint(append([]byte(nil), v[:queueRecHeader]...), uint64(len(v)))
		bad = append(bad, v[queueRecHeader+w:]...)
		if _, err := decodeQueued(q.ID, bad); !errors.Is(err, errCorruptQueued) {
			t.Fatalf("overlong length: %v", err)
		}
		if _, err := decodeQueued(q.ID, append(v, 0)); !errors.Is(err, errCorruptQueued) {
			t.Fatalf("trailing octet: %v", err)
		}
	}
}

// TestQueueOnOlderFile opens a file written before the queue existed (no
// queue bucket) and shows Open adds it without touching mail.
func TestQueueOnOlderFile(t *testing.T) {
	s := openTest(t)
	info := deliver(t, s, "a", "old mail")
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketQueue) }); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	if q, err := s.Queue(); err != nil || len(q) != 0 {
		t.Fatalf("Queue on upgraded file = %+v, %v", q, err)
	}
	if got := string(readMessage(t, s, "a", info.ID)); got != "old mail" {
		t.Errorf("old mail after upgrade: %q", got)
	}
	if q := queue(t, s, "", []string{"r@remote.example"}, "new"); q.ID != 1 {
		t.Errorf("first queue id on upgraded file: %d", q.ID)
	}
}
