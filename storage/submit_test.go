package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

func readQueued(t testing.TB, s *Store, id uint64) []byte {
	t.Helper()
	rc, err := s.OpenQueued(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// queueLen counts queue records and body chunks straight from bbolt, so a
// test sees leftovers that Queue() might not show.
func queueLen(t testing.TB, s *Store) (records, chunks int) {
	t.Helper()
	tx, err := s.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	meta, body := queueBuckets(tx)
	return meta.Stats().KeyN, body.Stats().KeyN
}

// commits is the id of the last committed write transaction: the
// difference over a test is how many commits (and fsyncs) it took.
func commits(t testing.TB, s *Store) int {
	t.Helper()
	tx, err := s.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	return tx.ID()
}

func TestSubmitLocalOnly(t *testing.T) {
	s := openTest(t)
	msg := "Subject: hi\n\nlocal only\n"
	res, err := s.Submit(strings.NewReader(msg), Submission{Local: []string{"a", "b", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Queued != nil {
		t.Errorf("Queued = %+v for a local-only submission", res.Queued)
	}
	if len(res.Local) != 3 || res.Local[0] != res.Local[2] || res.Local[0].ID == res.Local[1].ID {
		t.Fatalf("Local = %+v, want aligned with [a b a], a stored once", res.Local)
	}
	for i, mb := range []string{"a", "b"} {
		list, _ := s.List(mb)
		if len(list) != 1 || list[0] != res.Local[i] {
			t.Errorf("%s lists %+v, Submit reported %+v", mb, list, res.Local[i])
		}
		if got := string(readMessage(t, s, mb, res.Local[i].ID)); got != refNormalize(msg) {
			t.Errorf("%s: %q", mb, got)
		}
	}
	if q, err := s.Queue(); err != nil || len(q) != 0 {
		t.Errorf("Queue = %+v, %v; want empty", q, err)
	}
}

func TestSubmitOutboundOnly(t *testing.T) {
	s := openTest(t)
	msg := "Subject: out\n\nto the world\n"
	before := time.Now()
	to := []string{"x@remote.example", "y@remote.example", "x@remote.example"}
	res, err := s.Submit(strings.NewReader(msg), Submission{Outbound: &Outbound{From: "", To: to, Account: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	to[0] = "changed@later" // the store keeps its own copy
	if res.Local != nil {
		t.Errorf("Local = %+v for an outbound-only submission", res.Local)
	}
	q := res.Queued
	if q == nil {
		t.Fatal("no queue entry")
	}
	if q.ID != 1 || q.From != "" || q.Account != "alice" || q.Attempts != 0 || q.LastError != "" ||
		strings.Join(q.To, " ") != "x@remote.example y@remote.example" || q.Size != int64(len(refNormalize(msg))) {
		t.Errorf("Queued = %+v", q)
	}
	if q.Queued.Before(before.Add(-time.Second)) || q.Queued.After(time.Now().Add(time.Second)) || !q.NextAttempt.Equal(q.Queued) {
		t.Errorf("Queued %v / NextAttempt %v, want now and equal", q.Queued, q.NextAttempt)
	}
	if got := string(readQueued(t, s, q.ID)); got != refNormalize(msg) {
		t.Errorf("queued body %q", got)
	}
	if mbs, _ := s.Mailboxes(); len(mbs) != 0 {
		t.Errorf("the queue shows up as mailboxes %q", mbs)
	}
	list, err := s.Queue()
	if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], *q) {
		t.Errorf("Queue = %+v, %v; want [%+v]", list, err, *q)
	}
}

func TestSubmitBoth(t *testing.T) {
	s := openTest(t)
	msg := bigMessage(2*chunkSize + 17) // spooled to a file, three chunks per copy
	res, err := s.Submit(bytes.NewReader(msg), Submission{
		Local:    []string{"a", "b"},
		LocalOpt: func(string) DeliverOptions { return DeliverOptions{Quota: 1 << 20} },
		Outbound: &Outbound{From: "a@here", To: []string{"r@remote.example"}, Account: "a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Local) != 2 || res.Queued == nil {
		t.Fatalf("res = %+v", res)
	}
	for i, mb := range []string{"a", "b"} {
		if !bytes.Equal(readMessage(t, s, mb, res.Local[i].ID), msg) {
			t.Errorf("%s: body differs", mb)
		}
		if got := countChunks(t, s, mb, res.Local[i].ID); got != 3 {
			t.Errorf("%s: %d chunks, want 3", mb, got)
		}
	}
	if !bytes.Equal(readQueued(t, s, res.Queued.ID), msg) {
		t.Errorf("queued body differs")
	}
	if recs, chunks := queueLen(t, s); recs != 1 || chunks != 3 {
		t.Errorf("queue holds %d records, %d chunks; want 1, 3", recs, chunks)
	}
}

// TestSubmitAllOrNothing shows local copies and the queue entry are one
// transaction: a failure in one mailbox leaves the queue and every other
// mailbox untouched, and burns no ids.
func TestSubmitAllOrNothing(t *testing.T) {
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
			return DeliverOptions{}
		}, ErrTooLarge},
		{"duplicate UIDL in one mailbox", func(mb string) DeliverOptions {
			return DeliverOptions{UIDL: "same"}
		}, ErrDuplicateUIDL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			full, err := s.Deliver("full", strings.NewReader("full"), DeliverOptions{UIDL: "same"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Submit(strings.NewReader("hello world"), Submission{
				Local:    []string{"first", "full", "last"},
				LocalOpt: tc.opt,
				Outbound: &Outbound{From: "f@here", To: []string{"r@remote.example"}},
			})
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), "storage: submit full") {
				t.Fatalf("err = %v, want %v naming the mailbox", err, tc.wantErr)
			}
			if recs, chunks := queueLen(t, s); recs != 0 || chunks != 0 {
				t.Errorf("failed submission left %d queue records, %d chunks", recs, chunks)
			}
			if mbs, _ := s.Mailboxes(); len(mbs) != 1 || mbs[0] != "full" {
				t.Errorf("failed submission left mailboxes behind: %q", mbs)
			}
			if list, _ := s.List("full"); len(list) != 1 || list[0] != full {
				t.Errorf("full now lists %+v", list)
			}
			// The rolled-back transaction consumed no sequence numbers.
			res, err := s.Submit(strings.NewReader("next"), Submission{
				Local:    []string{"first"},
				Outbound: &Outbound{To: []string{"r@remote.example"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Queued.ID != 1 || res.Local[0].ID != full.ID+1 {
				t.Errorf("ids after a failure: queue %d, message %d (previous message %d)", res.Queued.ID, res.Local[0].ID, full.ID)
			}
		})
	}
}

// TestSubmitMatchesDeliver: Submit normalizes and sizes exactly like
// Deliver, for local copies and the queued copy alike.
func TestSubmitMatchesDeliver(t *testing.T) {
	s := openTest(t)
	inputs := []string{
		"", "x", "\r", "a\nb\n", "a\rb\r", "a\r\nb\r\n", "a\r\nb\nc\rd\r\r\ne\n\r", ".\n..x\n. \n.",
		strings.Repeat("long line without end ", 4000),                  // > one chunk, spooled
		strings.Repeat("y", chunkSize-1) + "\r" + "\n" + "tail\r",       // CR LF across the chunk edge
		strings.Repeat("z\n", chunkSize/2) + strings.Repeat("w\r", 100), // grows past a chunk
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 20 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = "ab\r\n."[rng.IntN(5)]
		}
		inputs = append(inputs, string(b))
	}
	for i, in := range inputs {
		mb := fmt.Sprintf("case%d", i)
		want, err := s.Deliver(mb+"-deliver", strings.NewReader(in), DeliverOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantBody := readMessage(t, s, mb+"-deliver", want.ID)
		res, err := s.Submit(iotest.OneByteReader(strings.NewReader(in)), Submission{
			Local:    []string{mb + "-submit"},
			Outbound: &Outbound{To: []string{"r@remote.example"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := readMessage(t, s, mb+"-submit", res.Local[0].ID); !bytes.Equal(got, wantBody) || res.Local[0].Size != want.Size {
			t.Errorf("case %d: local copy %d octets (Size %d), Deliver stored %d (Size %d)", i, len(got), res.Local[0].Size, len(wantBody), want.Size)
		}
		if got := readQueued(t, s, res.Queued.ID); !bytes.Equal(got, wantBody) || res.Queued.Size != want.Size {
			t.Errorf("case %d: queued copy %d octets (Size %d), Deliver stored %d (Size %d)", i, len(got), res.Queued.Size, len(wantBody), want.Size)
		}
		if string(wantBody) != refNormalize(in) {
			t.Errorf("case %d: Deliver stored %q", i, wantBody)
		}
	}
}

func TestSubmitRejectsBadCalls(t *testing.T) {
	s := openTest(t)
	cases := []struct {
		name    string
		sub     Submission
		wantErr error // nil: any error
	}{
		{"nothing", Submission{}, nil},
		{"empty mailbox", Submission{Local: []string{"a", ""}}, ErrInvalidName},
		{"no outbound recipients", Submission{Local: []string{"a"}, Outbound: &Outbound{From: "x"}}, nil},
		{"empty recipient", Submission{Outbound: &Outbound{To: []string{"r@remote.example", ""}}}, ErrInvalidName},
		{"bad UIDL", Submission{Local: []string{"a"}, LocalOpt: func(string) DeliverOptions { return DeliverOptions{UIDL: "has space"} }}, ErrInvalidUIDL},
	}
	for _, tc := range cases {
		r := strings.NewReader("body")
		_, err := s.Submit(r, tc.sub)
		if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		}
		if r.Len() != len("body") {
			t.Errorf("%s: read the message before refusing the envelope", tc.name)
		}
	}
	if mbs, _ := s.Mailboxes(); len(mbs) != 0 {
		t.Errorf("refused submissions created mailboxes %q", mbs)
	}
	if recs, _ := queueLen(t, s); recs != 0 {
		t.Errorf("refused submissions queued %d entries", recs)
	}
}

// TestSubmitReaderErrorStoresNothing: a client that drops mid-DATA leaves
// no partial message in any mailbox, no queue entry and no spool file.
func TestSubmitReaderErrorStoresNothing(t *testing.T) {
	s := openTest(t)
	for _, n := range []int{10, 3 * chunkSize} {
		r := io.MultiReader(bytes.NewReader(bigMessage(n)), iotest.ErrReader(io.ErrUnexpectedEOF))
		_, err := s.Submit(r, Submission{Local: []string{"a"}, Outbound: &Outbound{To: []string{"r@remote.example"}}})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%d octets then error: %v", n, err)
		}
	}
	if mbs, _ := s.Mailboxes(); len(mbs) != 0 {
		t.Errorf("failed submissions created mailboxes %q", mbs)
	}
	if recs, chunks := queueLen(t, s); recs != 0 || chunks != 0 {
		t.Errorf("failed submissions left %d queue records, %d chunks", recs, chunks)
	}
	entries, err := os.ReadDir(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != DefaultFileName {
		t.Errorf("data dir holds %v, want only %s", entries, DefaultFileName)
	}
}

// TestSubmitConcurrent runs 16 submitters at once, as 16 SMTP clients
// would. Some submissions include a mailbox that is over quota; in a
// shared batch their failure rolls back everyone's transaction and bbolt
// re-runs the others, so this also shows the write function is idempotent:
// every good submission lands exactly once, every bad one nowhere.
func TestSubmitConcurrent(t *testing.T) {
	for _, mode := range []struct {
		name string
		mode commitMode
	}{{"adaptive", commitAdaptive}, {"always batch", commitBatch}} {
		t.Run(mode.name, func(t *testing.T) {
			s := openTest(t)
			s.commitMode = mode.mode
			if _, err := s.Deliver("full", strings.NewReader("x"), DeliverOptions{}); err != nil {
				t.Fatal(err)
			}
			opt := func(mb string) DeliverOptions {
				if mb == "full" {
					return DeliverOptions{Quota: 1}
				}
				return DeliverOptions{}
			}
			const workers, each = 16, 8
			mbs := []string{"a", "b", "c"}
			type landed struct {
				res  SubmitResult
				body string
				sub  Submission
			}
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				good  []landed
				bad   []string // bodies that must be nowhere
				errs  = make(chan error, workers*each)
				start = make(chan struct{})
				c0    = commits(t, s)
			)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for i := range each {
						body := fmt.Sprintf("worker %d message %d\r\n%s", w, i, strings.Repeat("q", (w*each+i)*100))
						sub := Submission{Local: []string{mbs[(w+i)%3]}, LocalOpt: opt}
						if i%2 == 1 {
							sub.Outbound = &Outbound{From: fmt.Sprintf("w%d@here", w), To: []string{"r@remote.example"}, Account: fmt.Sprint(w)}
						}
						failing := (w+i)%5 == 0
						if failing {
							sub.Local = append(sub.Local, "full")
						}
						res, err := s.Submit(strings.NewReader(body), sub)
						mu.Lock()
						switch {
						case failing && !errors.Is(err, ErrQuotaExceeded):
							errs <- fmt.Errorf("worker %d message %d into full: %v", w, i, err)
						case failing:
							bad = append(bad, body)
						case err != nil:
							errs <- err
						default:
							good = append(good, landed{res, body, sub})
						}
						mu.Unlock()
					}
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if len(good)+len(bad) != workers*each || len(bad) == 0 {
				t.Fatalf("%d stored and %d refused of %d", len(good), len(bad), workers*each)
			}

			// Read back everything there is, keyed by body.
			stored := map[string]int{}
			infos := map[uint64]MessageInfo{}
			for _, mb := range append(mbs, "full") {
				list, err := s.List(mb)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range list {
					stored[mb+"|"+string(readMessage(t, s, mb, m.ID))]++
					infos[m.ID] = m
				}
			}
			queue, err := s.Queue()
			if err != nil {
				t.Fatal(err)
			}
			queued := map[uint64]QueuedMessage{}
			for _, q := range queue {
				stored["queue|"+string(readQueued(t, s, q.ID))]++
				queued[q.ID] = q
			}
			wantStored := 1 // the message that filled "full"
			for _, g := range good {
				key := g.sub.Local[0] + "|" + g.body
				if stored[key] != 1 {
					t.Errorf("%q stored %d times", key, stored[key])
				}
				if infos[g.res.Local[0].ID] != g.res.Local[0] {
					t.Errorf("Submit reported %+v, List has %+v", g.res.Local[0], infos[g.res.Local[0].ID])
				}
				wantStored++
				if g.sub.Outbound == nil {
					continue
				}
				if stored["queue|"+g.body] != 1 || g.res.Queued == nil || !reflect.DeepEqual(queued[g.res.Queued.ID], *g.res.Queued) {
					t.Errorf("queued %d times; Submit reported %+v", stored["queue|"+g.body], g.res.Queued)
				}
				wantStored++
			}
			for _, b := range bad {
				for _, where := range append(mbs, "full", "queue") {
					if stored[where+"|"+b] != 0 {
						t.Errorf("a refused submission is in %s", where)
					}
				}
			}
			total := 0
			for _, n := range stored {
				total += n
			}
			if total != wantStored {
				t.Errorf("%d copies stored, want %d", total, wantStored)
			}
			// Group commit: far fewer commits than submissions. Not
			// a timing target, just proof that writers were coalesced.
			n := commits(t, s) - c0
			t.Logf("%d successful submissions in %d commits", len(good), n)
			if n > len(good)/2 {
				t.Errorf("%d successful submissions took %d commits; group commit is not coalescing", len(good), n)
			}
		})
	}
}
