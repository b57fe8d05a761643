package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123, time.UTC)

func TestExpired(t *testing.T) {
	tests := []struct {
		retrieved time.Time
		days      int
		now       time.Time
		want      bool
	}{
		{time.Time{}, 0, t0, false},                         // never retrieved: kept, even with EXPIRE 0
		{time.Time{}, 30, t0.Add(1000 * Day), false},        // never retrieved, however old
		{t0, -1, t0.Add(1000 * Day), false},                 // NEVER
		{t0, 0, t0, true},                                   // EXPIRE 0: due at once
		{t0, 30, t0.Add(30*Day - time.Nanosecond), false},   // one instant short of 30 days
		{t0, 30, t0.Add(30 * Day), true},                    // exactly 30 days
		{t0, 30, t0.Add(31 * Day), true},                    // past
		{t0, 30, t0.Add(-time.Hour), false},                 // clock went back
		{t0, 36500, t0.Add(36500*Day - time.Second), false}, // the longest retention
		{t0, 36500, t0.Add(36500 * Day), true},              //
	}
	for i, tt := range tests {
		if got := Expired(tt.retrieved, tt.days, tt.now); got != tt.want {
			t.Errorf("%d: Expired(%v, %d, %v) = %v, want %v", i, tt.retrieved, tt.days, tt.now, got, tt.want)
		}
	}
}

func listByID(t *testing.T, s *Store, mb string) map[uint64]MessageInfo {
	t.Helper()
	list, err := s.List(mb)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]MessageInfo{}
	for _, m := range list {
		out[m.ID] = m
	}
	return out
}

// TestRetrievedMarks: CommitSession records the first retrieval durably,
// keeps the first one on a later download, and deletes in the same
// transaction.
func TestRetrievedMarks(t *testing.T) {
	s := openTest(t)
	const mb = "r@example.org"
	a, b, c := deliver(t, s, mb, "one\n"), deliver(t, s, mb, "two\n"), deliver(t, s, mb, "three\n")
	if err := s.CommitSession(mb, nil, nil, t0); err != nil {
		t.Fatal(err)
	}
	for _, m := range listByID(t, s, mb) {
		if !m.Retrieved.IsZero() {
			t.Fatalf("fresh delivery %d reads as retrieved at %v", m.ID, m.Retrieved)
		}
	}
	// c is deleted and marked in the same call: the delete wins; 999 does
	// not exist.
	if err := s.CommitSession(mb, []uint64{c.ID}, []uint64{a.ID, c.ID, 999}, t0); err != nil {
		t.Fatal(err)
	}
	got := listByID(t, s, mb)
	if len(got) != 2 || !got[a.ID].Retrieved.Equal(t0) || !got[b.ID].Retrieved.IsZero() {
		t.Fatalf("after commit: %+v", got)
	}
	if n, size, _ := s.Usage(mb); n != 2 || size != int64(len("one\r\ntwo\r\n")) {
		t.Errorf("usage %d, %d", n, size)
	}
	// A second download does not restart the clock; b gets its first mark.
	later := t0.Add(10 * Day)
	if err := s.CommitSession(mb, nil, []uint64{a.ID, b.ID}, later); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	got = listByID(t, s, mb)
	if !got[a.ID].Retrieved.Equal(t0) || !got[b.ID].Retrieved.Equal(later) {
		t.Errorf("after reopen: a %v (want %v), b %v (want %v)", got[a.ID].Retrieved, t0, got[b.ID].Retrieved, later)
	}
	// Everything else about the record survives the rewrite.
	if got[a.ID].UIDL != a.UIDL || got[a.ID].Size != a.Size || !got[a.ID].Arrived.Equal(a.Arrived) {
		t.Errorf("record changed: %+v, delivered %+v", got[a.ID], a)
	}
	if string(readMessage(t, s, mb, a.ID)) != "one\r\n" {
		t.Error("body of a retrieved message changed")
	}
	if err := s.CommitSession("nobody@example.org", []uint64{1}, []uint64{2}, t0); err != nil {
		t.Errorf("unknown mailbox: %v", err)
	}
}

// TestOldRecordsReadAsNeverRetrieved writes index records exactly as the
// build before retrieval tracking did (version 1) and checks that they list,
// open, expire and get marked like new ones.
func TestOldRecordsReadAsNeverRetrieved(t *testing.T) {
	s := openTest(t)
	const mb = "old@example.org"
	info := deliver(t, s, mb, "old mail\n")
	arrived := time.Date(2019, 5, 6, 7, 8, 9, 0, time.UTC)
	// The old encoder, spelled out byte by byte.
	old := make([]byte, 1+8+12+len(info.UIDL))
	old[0] = 1
	binary.BigEndian.PutUint64(old[1:9], uint64(info.Size))
	binary.BigEndian.PutUint64(old[9:17], uint64(arrived.Unix()))
	binary.BigEndian.PutUint32(old[17:21], 0)
	copy(old[21:], info.UIDL)
	if !bytes.Equal(old, encodeRecord(MessageInfo{Size: info.Size, Arrived: arrived, UIDL: info.UIDL})) {
		t.Fatal("a never-retrieved message is no longer written in the old format")
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		m, _ := openMailbox(tx, mb)
		return m.index.Put(u64(info.ID), old)
	}); err != nil {
		t.Fatal(err)
	}
	got := listByID(t, s, mb)[info.ID]
	if !got.Retrieved.IsZero() || got.UIDL != info.UIDL || !got.Arrived.Equal(arrived) || got.Size != info.Size {
		t.Fatalf("old record reads as %+v", got)
	}
	if n, _, err := s.ExpireRetrieved(mb, 0, t0, 0); err != nil || n != 0 {
		t.Fatalf("old (unretrieved) record expired: %d, %v", n, err)
	}
	if err := s.CommitSession(mb, nil, []uint64{info.ID}, t0); err != nil {
		t.Fatal(err)
	}
	got = listByID(t, s, mb)[info.ID]
	if !got.Retrieved.Equal(t0) || got.UIDL != info.UIDL || !got.Arrived.Equal(arrived) {
		t.Fatalf("old record after marking: %+v", got)
	}
	if string(readMessage(t, s, mb, info.ID)) != "old mail\r\n" {
		t.Error("body changed")
	}

	// Records too short for their version, or of an unknown version, are
	// reported rather than misread.
	for _, v := range [][]byte{{1, 0}, append([]byte{2}, old[1:]...)[:30], append([]byte{3}, old[1:]...)} {
		if _, err := decodeRecord(7, v); err == nil {
			t.Errorf("decodeRecord(%x) accepted", v)
		}
	}
}

// TestExpireRetrieved: only retrieved messages at least the retention old
// go; usage follows; survivors keep their UIDLs and new mail never gets an
// old one.
func TestExpireRetrieved(t *testing.T) {
	s := openTest(t)
	const mb = "x@example.org"
	var all []MessageInfo
	for i := range 6 {
		all = append(all, deliver(t, s, mb, fmt.Sprintf("message %d\n", i)))
	}
	// 0,1 retrieved at t0; 2 retrieved 5 days later; 3,4,5 never.
	must(t, s.CommitSession(mb, nil, []uint64{all[0].ID, all[1].ID}, t0))
	must(t, s.CommitSession(mb, nil, []uint64{all[2].ID}, t0.Add(5*Day)))

	if n, more, err := s.ExpireRetrieved(mb, 30, t0.Add(30*Day-time.Second), 0); err != nil || n != 0 || more {
		t.Fatalf("before 30 days: %d, %v, %v", n, more, err)
	}
	if n, more, err := s.ExpireRetrieved(mb, -1, t0.Add(1000*Day), 0); err != nil || n != 0 || more {
		t.Fatalf("NEVER: %d, %v, %v", n, more, err)
	}
	// Bounded: one at a time, with "more" while any is due.
	n, more, err := s.ExpireRetrieved(mb, 30, t0.Add(31*Day), 1)
	if err != nil || n != 1 || !more {
		t.Fatalf("limit 1: %d, %v, %v", n, more, err)
	}
	n, more, err = s.ExpireRetrieved(mb, 30, t0.Add(31*Day), 1)
	if err != nil || n != 1 || more {
		t.Fatalf("limit 1, second: %d, %v, %v", n, more, err)
	}
	got := listByID(t, s, mb)
	if len(got) != 4 {
		t.Fatalf("left %d messages, want 4", len(got))
	}
	for _, m := range all[2:] {
		if got[m.ID].UIDL != m.UIDL {
			t.Errorf("survivor %d UIDL %q, was %q", m.ID, got[m.ID].UIDL, m.UIDL)
		}
	}
	if c, b, _ := s.Usage(mb); c != 4 || b != 4*int64(len("message 0\r\n")) {
		t.Errorf("usage %d, %d", c, b)
	}
	// Message 2 goes five days later; EXPIRE 0 would take it at once.
	if n, _, _ := s.ExpireRetrieved(mb, 0, t0.Add(5*Day), 0); n != 1 {
		t.Errorf("EXPIRE 0 removed %d, want 1", n)
	}
	fresh := deliver(t, s, mb, "new\n")
	for _, m := range all {
		if fresh.UIDL == m.UIDL || fresh.ID == m.ID {
			t.Errorf("new message reuses %d/%q", m.ID, m.UIDL)
		}
	}
	if n, _, err := s.ExpireRetrieved("nobody@example.org", 0, t0, 0); err != nil || n != 0 {
		t.Errorf("unknown mailbox: %d, %v", n, err)
	}
}

func TestListExpiring(t *testing.T) {
	s := openTest(t)
	const mb = "l@example.org"
	var all []MessageInfo
	for i := range 5 {
		all = append(all, deliver(t, s, mb, fmt.Sprintf("m%d\n", i)))
	}
	must(t, s.CommitSession(mb, nil, []uint64{all[0].ID, all[1].ID, all[2].ID}, t0))

	list, n, err := s.ListExpiring(mb, 30, t0.Add(29*Day), 0)
	if err != nil || n != 0 || len(list) != 5 {
		t.Fatalf("29 days: %d listed, %d expired, %v", len(list), n, err)
	}
	// With a limit of 2, one due message stays listed for next time.
	list, n, err = s.ListExpiring(mb, 30, t0.Add(31*Day), 2)
	if err != nil || n != 2 || len(list) != 3 {
		t.Fatalf("31 days, limit 2: %d listed, %d expired, %v", len(list), n, err)
	}
	if list[0].ID != all[2].ID || list[1].ID != all[3].ID || list[2].ID != all[4].ID {
		t.Errorf("listed %v", list)
	}
	// The listing matches what is stored.
	stored, _ := s.List(mb)
	if fmt.Sprint(stored) != fmt.Sprint(list) {
		t.Errorf("ListExpiring %v, List %v", list, stored)
	}
	list, n, _ = s.ListExpiring(mb, -1, t0.Add(1000*Day), 0)
	if n != 0 || len(list) != 3 {
		t.Errorf("NEVER: %d listed, %d expired", len(list), n)
	}
	list, n, _ = s.ListExpiring(mb, 30, t0.Add(31*Day), 0)
	if n != 1 || len(list) != 2 {
		t.Errorf("rest: %d listed, %d expired", len(list), n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
