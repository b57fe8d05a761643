package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	bolt "go.etcd.io/bbolt"
)

// refNormalize is an obviously-correct (but not streaming) statement of the
// rule: every CRLF, bare CR and bare LF is one line end, written as CRLF.
func refNormalize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func TestCRLFNormalization(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"bare LF", "a\nb\n", "a\r\nb\r\n"},
		{"bare CR", "a\rb\r", "a\r\nb\r\n"},
		{"CRLF untouched", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"mixed", "a\r\nb\nc\rd\r\r\ne\n\r", "a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\n"},
		{"no final newline", "Subject: x\n\nlast line", "Subject: x\r\n\r\nlast line"},
		{"single line no newline", "x", "x"},
		{"LF only", "\n", "\r\n"},
		{"CR only", "\r", "\r\n"},
		{"CRLF only", "\r\n", "\r\n"},
		{"LF CR is two line ends", "a\n\rb", "a\r\n\r\nb"},
		{"CR CR", "\r\r", "\r\n\r\n"},
		{"blank lines", "\n\n\n", "\r\n\r\n\r\n"},
		{"dot lines kept as is", ".\n..x\n. \n.", ".\r\n..x\r\n. \r\n."},
		{"lone dot line CRLF", "a\r\n.\r\nb\r\n", "a\r\n.\r\nb\r\n"},
		{"binary-ish bytes kept", "\x00\xff\t\n", "\x00\xff\t\r\n"},
	}
	s := openTest(t)
	readers := map[string]func(string) io.Reader{
		"whole":    func(m string) io.Reader { return strings.NewReader(m) },
		"one byte": func(m string) io.Reader { return iotest.OneByteReader(strings.NewReader(m)) },
		"half":     func(m string) io.Reader { return iotest.HalfReader(strings.NewReader(m)) },
	}
	for _, tc := range tests {
		if ref := refNormalize(tc.in); ref != tc.want {
			t.Fatalf("%s: table disagrees with reference: %q vs %q", tc.name, tc.want, ref)
		}
		for rname, mk := range readers {
			mb := tc.name + "/" + rname
			info, err := s.Deliver(mb, mk(tc.in), DeliverOptions{})
			if err != nil {
				t.Fatalf("%s: %v", mb, err)
			}
			got := readMessage(t, s, mb, info.ID)
			if string(got) != tc.want {
				t.Errorf("%s: stored %q, want %q", mb, got, tc.want)
			}
			if info.Size != int64(len(got)) {
				t.Errorf("%s: Size %d, streamed %d octets", mb, info.Size, len(got))
			}
			if _, used, _ := s.Usage(mb); used != int64(len(tc.want)) {
				t.Errorf("%s: usage %d octets, want %d", mb, used, len(tc.want))
			}
		}
	}
}

// TestCRLFWriterSplits checks the streaming normalizer against the reference
// for random inputs cut into random writes, so a CR at the end of one write
// and its LF at the start of the next is covered.
func TestCRLFWriterSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\r\n.")
	for iter := range 2000 {
		in := make([]byte, rng.IntN(40))
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		var out bytes.Buffer
		w := &crlfWriter{dst: &out}
		for rest := in; len(rest) > 0; {
			n := 1 + rng.IntN(len(rest))
			if k, err := w.Write(rest[:n]); err != nil || k != n {
				t.Fatalf("Write = %d, %v", k, err)
			}
			rest = rest[n:]
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		if want := refNormalize(string(in)); out.String() != want {
			t.Fatalf("iteration %d: %q -> %q, want %q", iter, in, out.String(), want)
		}
	}
}

// bigMessage returns n bytes of CRLF-terminated printable lines, so
// normalization leaves it unchanged.
func bigMessage(n int) []byte {
	rng := rand.New(rand.NewPCG(42, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		switch i % 78 {
		case 76:
			b[i] = '\r'
		case 77:
			b[i] = '\n'
		default:
			b[i] = byte(0x21 + rng.IntN(94))
		}
	}
	return b
}

// countChunks counts the body keys of one message straight from bbolt.
func countChunks(t *testing.T, s *Store, mb string, id uint64) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mb)
		if !ok {
			return nil
		}
		prefix := u64(id)
		c := m.body.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFiveMiBRoundTrip(t *testing.T) {
	s := openTest(t)
	const mb = "big@example.org"
	msg := bigMessage(5 << 20)
	info, err := s.Deliver(mb, bytes.NewReader(msg), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(msg)) {
		t.Fatalf("Size = %d, want %d", info.Size, len(msg))
	}
	if got, want := countChunks(t, s, mb, info.ID), (len(msg)+chunkSize-1)/chunkSize; got != want {
		t.Errorf("stored in %d chunks, want %d", got, want)
	}

	// Through Read with an odd buffer size that never lines up with chunks.
	rc, err := s.OpenMessage(mb, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	var viaRead bytes.Buffer
	buf := make([]byte, 1000)
	// Bounded: one short read per chunk boundary at most, plus EOF.
	for range len(msg)/len(buf) + len(msg)/chunkSize + 3 {
		n, err := rc.Read(buf)
		viaRead.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	rc.Close()
	if !bytes.Equal(viaRead.Bytes(), msg) {
		t.Fatalf("Read path: got %d octets, not identical to the %d delivered", viaRead.Len(), len(msg))
	}

	// Through io.Copy, which uses WriteTo.
	rc, err = s.OpenMessage(mb, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	var viaCopy bytes.Buffer
	n, err := io.Copy(&viaCopy, rc)
	rc.Close()
	if err != nil || n != info.Size || !bytes.Equal(viaCopy.Bytes(), msg) {
		t.Fatalf("WriteTo path: %d octets, %v, identical=%v", n, err, bytes.Equal(viaCopy.Bytes(), msg))
	}

	// The spool file was unlinked: only the database is in data_dir.
	entries, err := os.ReadDir(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != DefaultFileName {
		t.Errorf("data dir holds %v, want only %s", entries, DefaultFileName)
	}

	// Deleting removes every chunk and the usage.
	if err := s.Delete(mb, []uint64{info.ID}); err != nil {
		t.Fatal(err)
	}
	if got := countChunks(t, s, mb, info.ID); got != 0 {
		t.Errorf("%d chunks left after delete", got)
	}
	if c, b, _ := s.Usage(mb); c != 0 || b != 0 {
		t.Errorf("usage after delete = %d, %d", c, b)
	}
}

func TestOpenMessageErrors(t *testing.T) {
	s := openTest(t)
	if _, err := s.OpenMessage("nobody", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown mailbox: %v", err)
	}
	info := deliver(t, s, "a", "hello")
	if _, err := s.OpenMessage("a", info.ID+1); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	// A message is private to its mailbox even though ids are global.
	if _, err := s.OpenMessage("b", info.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("other mailbox's id: %v", err)
	}
	rc, err := s.OpenMessage("a", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := rc.Read(make([]byte, 10)); err == nil || err == io.EOF {
		t.Errorf("Read after Close = %v, want an error", err)
	}
}

// TestReaderHoldsNoTransaction deletes a message while a reader is half
// way: the delete must not wait for the reader (no transaction is held
// between chunks), and the reader must then fail, not return other bytes.
func TestReaderHoldsNoTransaction(t *testing.T) {
	s := openTest(t)
	msg := bigMessage(3 * chunkSize)
	info, err := s.Deliver("a", bytes.NewReader(msg), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenMessage("a", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	first := make([]byte, 10)
	if _, err := io.ReadFull(rc, first); err != nil || !bytes.Equal(first, msg[:10]) {
		t.Fatalf("first bytes %q, %v", first, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Delete("a", []uint64{info.ID}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Delete blocked behind an open message reader")
	}
	_, err = io.Copy(io.Discard, rc)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("reading a deleted message: %v, want ErrNotFound", err)
	}
}

func TestQuotaAndMaxSize(t *testing.T) {
	s := openTest(t)
	const mb = "q@example.org"
	q := DeliverOptions{Quota: 100}
	if _, err := s.Deliver(mb, strings.NewReader(strings.Repeat("x", 60)), q); err != nil {
		t.Fatal(err)
	}
	_, err := s.Deliver(mb, strings.NewReader(strings.Repeat("x", 41)), q)
	if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "storage: deliver "+mb) {
		t.Errorf("over quota: %v", err)
	}
	// Quota is on normalized octets: 39 x's + LF is 41 octets stored.
	if _, err := s.Deliver(mb, strings.NewReader(strings.Repeat("x", 39)+"\n"), q); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("over quota after normalization: %v", err)
	}
	if _, err := s.Deliver(mb, strings.NewReader(strings.Repeat("x", 40)), q); err != nil {
		t.Errorf("exactly at quota: %v", err)
	}
	if c, b, _ := s.Usage(mb); c != 2 || b != 100 {
		t.Errorf("usage = %d, %d; want 2, 100", c, b)
	}

	if _, err := s.Deliver(mb, strings.NewReader("12345\n"), DeliverOptions{MaxSize: 7}); err != nil {
		t.Errorf("at MaxSize: %v", err)
	}
	if _, err := s.Deliver(mb, strings.NewReader("12345\n"), DeliverOptions{MaxSize: 6}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one octet over MaxSize after CRLF: %v", err)
	}
	// A large message is refused while streaming, without reading it all.
	big := bytes.NewReader(bigMessage(1 << 20))
	if _, err := s.Deliver(mb, big, DeliverOptions{MaxSize: 100 << 10}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1 MiB with 100 KiB limit: %v", err)
	}
	if big.Len() == 0 {
		t.Errorf("oversized message was read to the end before refusing")
	}
	if c, _, _ := s.Usage(mb); c != 3 {
		t.Errorf("refused messages were counted: %d messages", c)
	}
}

func TestExplicitUIDLAndArrival(t *testing.T) {
	s := openTest(t)
	arrived := time.Date(2019, 5, 6, 7, 8, 9, 123456789, time.UTC)
	info, err := s.Deliver("a", strings.NewReader("x"), DeliverOptions{UIDL: "imported-1", Arrived: arrived})
	if err != nil {
		t.Fatal(err)
	}
	if info.UIDL != "imported-1" || !info.Arrived.Equal(arrived) {
		t.Errorf("info = %+v", info)
	}
	list, _ := s.List("a")
	if len(list) != 1 || list[0] != info {
		t.Errorf("List = %+v, want [%+v]", list, info)
	}
	if _, err := s.Deliver("a", strings.NewReader("y"), DeliverOptions{UIDL: "imported-1"}); !errors.Is(err, ErrDuplicateUIDL) {
		t.Errorf("duplicate UIDL in one mailbox: %v", err)
	}
	if _, err := s.Deliver("b", strings.NewReader("y"), DeliverOptions{UIDL: "imported-1"}); err != nil {
		t.Errorf("same UIDL in another mailbox: %v", err)
	}
	if err := s.Delete("a", []uint64{info.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver("a", strings.NewReader("z"), DeliverOptions{UIDL: "imported-1"}); err != nil {
		t.Errorf("caller re-importing a deleted UIDL: %v", err)
	}
	for _, bad := range []string{"has space", strings.Repeat("u", 71), "tab\there", "del\x7f", "é", s.uidlPrefix + "999"} {
		if _, err := s.Deliver("a", strings.NewReader("x"), DeliverOptions{UIDL: bad}); !errors.Is(err, ErrInvalidUIDL) {
			t.Errorf("UIDL %q: %v, want ErrInvalidUIDL", bad, err)
		}
	}
	if _, err := s.Deliver("a", strings.NewReader("x"), DeliverOptions{UIDL: strings.Repeat("!", 70)}); err != nil {
		t.Errorf("70-char UIDL: %v", err)
	}
	now := time.Now()
	gen := deliver(t, s, "a", "x")
	if gen.Arrived.Before(now.Add(-time.Second)) || gen.Arrived.After(time.Now().Add(time.Second)) {
		t.Errorf("default arrival %v is not now (%v)", gen.Arrived, now)
	}
	if _, err := s.Deliver("", strings.NewReader("x"), DeliverOptions{}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("empty mailbox name: %v", err)
	}
}

func TestDeliverMany(t *testing.T) {
	s := openTest(t)
	msg := "Subject: hi\n\nto all\n"
	infos, err := s.DeliverMany([]string{"a", "b", "a", "c"}, strings.NewReader(msg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 4 || infos[0] != infos[2] || infos[0].ID == infos[1].ID || infos[1].ID == infos[3].ID {
		t.Fatalf("infos = %+v", infos)
	}
	for i, mb := range []string{"a", "b", "a", "c"} {
		if got := string(readMessage(t, s, mb, infos[i].ID)); got != refNormalize(msg) {
			t.Errorf("%s: %q", mb, got)
		}
		if c, _, _ := s.Usage(mb); c != 1 {
			t.Errorf("%s has %d messages, want 1 (duplicates stored once)", mb, c)
		}
	}
}

func TestDeliverManyAllOrNothing(t *testing.T) {
	cases := []struct {
		name    string
		opt     func(mb string) DeliverOptions
		wantErr error
	}{
		{"quota in one mailbox", func(mb string) DeliverOptions {
			if mb == "full" {
				return DeliverOptions{Quota: 5}
			}
			return DeliverOptions{}
		}, ErrQuotaExceeded},
		{"max size in one mailbox", func(mb string) DeliverOptions {
			if mb == "full" {
				return DeliverOptions{MaxSize: 5}
			}
			return DeliverOptions{Quota: 1000}
		}, ErrTooLarge},
		{"duplicate UIDL in one mailbox", func(mb string) DeliverOptions {
			return DeliverOptions{UIDL: "same"}
		}, ErrDuplicateUIDL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			// "full" already holds 4 octets with UIDL "same".
			if _, err := s.Deliver("full", strings.NewReader("full"), DeliverOptions{UIDL: "same"}); err != nil {
				t.Fatal(err)
			}
			_, err := s.DeliverMany([]string{"first", "full", "last"}, strings.NewReader("hello world"), tc.opt)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), "full") {
				t.Fatalf("err = %v, want %v naming the mailbox", err, tc.wantErr)
			}
			for _, mb := range []string{"first", "full", "last"} {
				want := 0
				if mb == "full" {
					want = 1
				}
				if c, _, _ := s.Usage(mb); c != want {
					t.Errorf("%s has %d messages after a failed DeliverMany, want %d", mb, c, want)
				}
			}
			if mbs, _ := s.Mailboxes(); len(mbs) != 1 || mbs[0] != "full" {
				t.Errorf("failed delivery left mailboxes behind: %q", mbs)
			}
		})
	}
}

func TestListAndDelete(t *testing.T) {
	s := openTest(t)
	const mb = "d@example.org"
	if list, err := s.List(mb); err != nil || len(list) != 0 {
		t.Fatalf("unknown mailbox List = %v, %v", list, err)
	}
	if err := s.Delete(mb, []uint64{1}); err != nil {
		t.Errorf("Delete in unknown mailbox: %v", err)
	}
	var ids []uint64
	for i := range 5 {
		ids = append(ids, deliver(t, s, mb, fmt.Sprintf("message %d\n", i)).ID)
	}
	deliver(t, s, "other", "unrelated")

	// A mix of present, missing and repeated ids in one Delete.
	if err := s.Delete(mb, []uint64{ids[1], 999999, ids[3], ids[1]}); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(mb)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, m := range list {
		got = append(got, m.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint([]uint64{ids[0], ids[2], ids[4]}) {
		t.Errorf("after Delete, List ids = %v (delivered %v)", got, ids)
	}
	if c, b, _ := s.Usage(mb); c != 3 || b != 3*int64(len("message 0\r\n")) {
		t.Errorf("usage = %d, %d", c, b)
	}
	if _, err := s.OpenMessage(mb, ids[1]); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted message still opens: %v", err)
	}
	if c, _, _ := s.Usage("other"); c != 1 {
		t.Errorf("Delete touched another mailbox")
	}

	// All or nothing: a corrupt record makes the transaction fail, and the
	// good message deleted earlier in the same call must come back.
	err = s.db.Update(func(tx *bolt.Tx) error {
		m, _ := openMailbox(tx, mb)
		return m.index.Put(u64(ids[4]), []byte{0xff})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(mb, []uint64{ids[0], ids[4]}); err == nil || !strings.Contains(err.Error(), "storage: delete "+mb) {
		t.Fatalf("Delete over a corrupt record: %v", err)
	}
	if c, _, _ := s.Usage(mb); c != 3 {
		t.Errorf("partial Delete committed: %d messages left, want 3", c)
	}
	if got := string(readMessage(t, s, mb, ids[0])); got != "message 0\r\n" {
		t.Errorf("message 0 after rolled-back Delete: %q", got)
	}

	// The mailbox bucket stays even when empty.
	if err := s.Delete(mb, []uint64{ids[0], ids[2]}); err != nil {
		t.Fatal(err)
	}
	if mbs, _ := s.Mailboxes(); strings.Join(mbs, ",") != "d@example.org,other" {
		t.Errorf("Mailboxes = %q", mbs)
	}
}

func TestLock(t *testing.T) {
	s := openTest(t)
	unlockA, err := s.Lock("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock("a"); !errors.Is(err, ErrLocked) {
		t.Errorf("second Lock(a) = %v, want ErrLocked", err)
	}
	unlockB, err := s.Lock("b")
	if err != nil {
		t.Errorf("Lock(b) while a is held: %v", err)
	}
	unlockB()
	unlockA()
	unlockA2, err := s.Lock("a")
	if err != nil {
		t.Fatalf("Lock(a) after unlock: %v", err)
	}
	// A stale unlock from the first holder must not free the new holder.
	unlockA()
	if _, err := s.Lock("a"); !errors.Is(err, ErrLocked) {
		t.Errorf("stale unlock released the new holder: %v", err)
	}
	unlockA2()

	// Many sessions racing for one mailbox: exactly one wins each round.
	for range 20 {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []func()
		)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if u, err := s.Lock("race"); err == nil {
					mu.Lock()
					winners = append(winners, u)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d sessions hold the same lock", len(winners))
		}
		winners[0]()
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	s := openTest(t)
	const workers, each = 8, 8
	mbs := []string{"x@example.org", "y@example.org"}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[uint64]MessageInfo{}
		errs = make(chan error, workers*each+workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mb := mbs[(w+i)%2]
				body := fmt.Sprintf("from %d msg %d\n%s", w, i, strings.Repeat("z", w*3000*i)) // up to ~150 KB: some spool to disk
				info, err := s.Deliver(mb, strings.NewReader(body), DeliverOptions{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen[info.ID] = info
				mu.Unlock()
			}
		}()
	}
	// Readers running alongside the writers.
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				for _, mb := range mbs {
					list, err := s.List(mb)
					if err != nil {
						errs <- err
						return
					}
					for _, m := range list {
						rc, err := s.OpenMessage(mb, m.ID)
						if err != nil {
							errs <- err
							return
						}
						n, err := io.Copy(io.Discard, rc)
						rc.Close()
						if err != nil || n != m.Size {
							errs <- fmt.Errorf("read %d of %d octets: %v", n, m.Size, err)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != workers*each {
		t.Fatalf("%d distinct ids for %d deliveries", len(seen), workers*each)
	}
	total := 0
	for _, mb := range mbs {
		list, err := s.List(mb)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		uidls := map[string]bool{}
		for _, m := range list {
			if seen[m.ID] != m {
				t.Errorf("listed %+v, delivered %+v", m, seen[m.ID])
			}
			uidls[m.UIDL] = true
			sum += m.Size
		}
		if len(uidls) != len(list) {
			t.Errorf("%s: duplicate UIDLs", mb)
		}
		if c, b, _ := s.Usage(mb); c != len(list) || b != sum {
			t.Errorf("%s: usage %d/%d, listing %d/%d", mb, c, b, len(list), sum)
		}
		total += len(list)
	}
	if total != workers*each {
		t.Errorf("%d messages listed, %d delivered", total, workers*each)
	}
}

// TestReaderErrorStoresNothing: a client that drops mid-DATA must not leave
// a partial message, small or spooled to disk.
func TestReaderErrorStoresNothing(t *testing.T) {
	s := openTest(t)
	for _, n := range []int{10, 3 * chunkSize} {
		r := io.MultiReader(bytes.NewReader(bigMessage(n)), iotest.ErrReader(io.ErrUnexpectedEOF))
		if _, err := s.Deliver("a", r, DeliverOptions{}); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%d octets then error: %v", n, err)
		}
	}
	if c, b, _ := s.Usage("a"); c != 0 || b != 0 {
		t.Errorf("usage after failed deliveries = %d, %d", c, b)
	}
	if mbs, _ := s.Mailboxes(); len(mbs) != 0 {
		t.Errorf("failed deliveries created mailboxes %q", mbs)
	}
}
