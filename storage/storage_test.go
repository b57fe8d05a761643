package storage

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// openTest opens a fresh store in a per-test directory and closes it at the
// end of the test.
func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "data", DefaultFileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// reopen closes s and opens the same file again.
func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

func deliver(t testing.TB, s *Store, mb, msg string) MessageInfo {
	t.Helper()
	info, err := s.Deliver(mb, strings.NewReader(msg), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func readMessage(t testing.TB, s *Store, mb string, id uint64) []byte {
	t.Helper()
	rc, err := s.OpenMessage(mb, id)
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

func TestOpenCreatesPrivateFileAndDir(t *testing.T) {
	s := openTest(t)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("db mode = %o, want 600", got)
	}
	di, err := os.Stat(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode = %o, want 700", got)
	}
}

func TestOpenTightensLooseMode(t *testing.T) {
	s := openTest(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("db mode after reopen = %o, want 600", got)
	}
}

func TestSecondOpenTimesOut(t *testing.T) {
	s := openTest(t)
	start := time.Now()
	s2, err := Open(s.Path())
	elapsed := time.Since(start)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a file already open succeeded")
	}
	if !errors.Is(err, berrors.ErrTimeout) {
		t.Errorf("err = %v, want bbolt timeout", err)
	}
	// The Options.Timeout is 1s; allow slack for a loaded machine.
	if elapsed > 5*time.Second {
		t.Errorf("second Open gave up after %v, want about 1s", elapsed)
	}
	// The first handle is unaffected.
	deliver(t, s, "a@example.org", "still works")
}

func TestDurableAcrossReopen(t *testing.T) {
	s := openTest(t)
	a := deliver(t, s, "alice@example.org", "Subject: one\n\nbody\n")
	b := deliver(t, s, "alice@example.org", "Subject: two\r\n\r\nbody")
	deliver(t, s, "bob@example.org", "x")
	if err := s.PutBlob("certs", "mail.example.org", []byte("PEM")); err != nil {
		t.Fatal(err)
	}
	before, err := s.List("alice@example.org")
	if err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s)
	after, err := s.List("alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || len(before) != 2 {
		t.Fatalf("listing before %v, after %v", before, after)
	}
	for i := range after {
		if after[i] != before[i] {
			t.Errorf("message %d: before reopen %+v, after %+v", i, before[i], after[i])
		}
	}
	if after[0] != a || after[1] != b {
		t.Errorf("listing %+v does not match delivered %+v, %+v", after, a, b)
	}
	if got := string(readMessage(t, s, "alice@example.org", a.ID)); got != "Subject: one\r\n\r\nbody\r\n" {
		t.Errorf("body after reopen = %q", got)
	}
	if v, err := s.GetBlob("certs", "mail.example.org"); err != nil || string(v) != "PEM" {
		t.Errorf("blob after reopen = %q, %v", v, err)
	}
	mbs, err := s.Mailboxes()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(mbs, " ") != "alice@example.org bob@example.org" {
		t.Errorf("Mailboxes = %q", mbs)
	}
}

func TestUIDLStableAndNeverReused(t *testing.T) {
	s := openTest(t)
	const mb = "alice@example.org"
	first := deliver(t, s, mb, "one")
	if !ValidUIDL(first.UIDL) || !strings.HasPrefix(first.UIDL, s.uidlPrefix) || len(s.uidlPrefix) != 9 {
		t.Fatalf("generated UIDL %q (prefix %q) is not <8 hex>.<id>", first.UIDL, s.uidlPrefix)
	}
	s = reopen(t, s)
	list, err := s.List(mb)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].UIDL != first.UIDL {
		t.Fatalf("UIDL changed across reopen: %+v vs %+v", list, first)
	}

	// Deleting the newest message and delivering again must not hand
	// out its id or UIDL again, not even after a reopen in between.
	seen := map[string]bool{first.UIDL: true}
	ids := map[uint64]bool{first.ID: true}
	last := first
	for i := range 3 {
		if err := s.Delete(mb, []uint64{last.ID}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			s = reopen(t, s)
		}
		last = deliver(t, s, mb, "again")
		if seen[last.UIDL] || ids[last.ID] {
			t.Fatalf("round %d: UIDL %q / id %d reused", i, last.UIDL, last.ID)
		}
		seen[last.UIDL], ids[last.ID] = true, true
	}
	// Ids are unique across mailboxes too, so UIDLs are unique in the file.
	other := deliver(t, s, "bob@example.org", "x")
	if seen[other.UIDL] {
		t.Errorf("UIDL %q reused in another mailbox", other.UIDL)
	}
}

func TestStoreIDDiffersBetweenDatabases(t *testing.T) {
	a, b := openTest(t), openTest(t)
	if a.uidlPrefix == b.uidlPrefix {
		t.Errorf("two new databases got the same store id %q", a.uidlPrefix)
	}
}

func TestBlobs(t *testing.T) {
	s := openTest(t)
	if v, err := s.GetBlob("certs", "missing"); v != nil || err != nil {
		t.Errorf("absent blob = %q, %v; want nil, nil", v, err)
	}
	if v, err := s.GetBlob("no-such-ns", "k"); v != nil || err != nil {
		t.Errorf("blob in absent namespace = %q, %v; want nil, nil", v, err)
	}
	val := []byte("secret key")
	if err := s.PutBlob("certs", "k", val); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBlob("certs", "k")
	if err != nil || !bytes.Equal(got, val) {
		t.Fatalf("GetBlob = %q, %v", got, err)
	}
	got[0] = 'X' // the caller owns the copy
	if again, _ := s.GetBlob("certs", "k"); !bytes.Equal(again, val) {
		t.Errorf("modifying a returned blob changed the store: %q", again)
	}
	if v, _ := s.GetBlob("acme", "k"); v != nil {
		t.Errorf("namespaces leak: acme/k = %q", v)
	}
	if err := s.PutBlob("certs", "empty", nil); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetBlob("certs", "empty"); v == nil || len(v) != 0 || err != nil {
		t.Errorf("empty blob = %#v, %v; want non-nil empty", v, err)
	}
	if err := s.PutBlob("certs", "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.GetBlob("certs", "k"); string(v) != "v2" {
		t.Errorf("overwrite: %q", v)
	}
	if err := s.DeleteBlob("certs", "k"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetBlob("certs", "k"); v != nil || err != nil {
		t.Errorf("after delete = %q, %v", v, err)
	}
	if err := s.DeleteBlob("certs", "k"); err != nil {
		t.Errorf("deleting an absent blob: %v", err)
	}
	if err := s.DeleteBlob("nope", "k"); err != nil {
		t.Errorf("deleting in an absent namespace: %v", err)
	}
	if err := s.PutBlob("", "k", val); !errors.Is(err, ErrInvalidName) {
		t.Errorf("empty namespace: %v", err)
	}
}

func TestRevisions(t *testing.T) {
	s := openTest(t)
	if _, err := s.LatestRevision(); !errors.Is(err, ErrNotFound) {
		t.Errorf("LatestRevision on empty log: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	src1 := []byte("listener \"pop3\" {}\n")
	r1, added, err := s.AddRevision(src1, t0)
	if err != nil || !added {
		t.Fatalf("first AddRevision = %+v, %v, %v", r1, added, err)
	}
	if r1.Seq != 1 || r1.SHA256 != "8f7e0ca99310dc0429759b7d31bb10a991cb9d8b8cc5eff5363986c973489c58" || !r1.Time.Equal(t0) {
		t.Errorf("r1 = %+v", r1)
	}
	// Same source again: no new row, the existing one comes back.
	again, added, err := s.AddRevision(append([]byte(nil), src1...), t0.Add(time.Hour))
	if err != nil || added || again.Seq != r1.Seq || !again.Time.Equal(t0) || !bytes.Equal(again.Source, src1) {
		t.Errorf("duplicate AddRevision = %+v, %v, %v", again, added, err)
	}
	src2 := []byte("listener \"pop3s\" {}\n")
	r2, added, err := s.AddRevision(src2, time.Time{})
	if err != nil || !added || r2.Seq != 2 || time.Since(r2.Time) > time.Minute {
		t.Fatalf("second AddRevision = %+v, %v, %v", r2, added, err)
	}
	// Going back to the first source is a change relative to the latest.
	r3, added, err := s.AddRevision(src1, t0.Add(2*time.Hour))
	if err != nil || !added || r3.Seq != 3 || r3.SHA256 != r1.SHA256 {
		t.Fatalf("revert AddRevision = %+v, %v, %v", r3, added, err)
	}

	s = reopen(t, s)
	revs, err := s.Revisions()
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 3 {
		t.Fatalf("Revisions = %+v", revs)
	}
	for i, want := range []Revision{r1, r2, r3} {
		got := revs[i]
		if got.Seq != want.Seq || got.SHA256 != want.SHA256 || !got.Time.Equal(want.Time) || got.Source != nil {
			t.Errorf("Revisions[%d] = %+v, want %+v without source", i, got, want)
		}
	}
	got, err := s.Revision(2)
	if err != nil || !bytes.Equal(got.Source, src2) || got.SHA256 != r2.SHA256 {
		t.Errorf("Revision(2) = %+v, %v", got, err)
	}
	if _, err := s.Revision(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("Revision(99): %v", err)
	}
	latest, err := s.LatestRevision()
	if err != nil || latest.Seq != 3 || !bytes.Equal(latest.Source, src1) {
		t.Errorf("LatestRevision = %+v, %v", latest, err)
	}
}
