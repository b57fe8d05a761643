package storage

import (
	"strings"
	"testing"
)

// The ledger remembers imported UIDLs after their messages are deleted;
// plain deliveries and explicit UIDLs without Imported never enter it.
func TestKnownUIDLsAndLedger(t *testing.T) {
	s := openTest(t)
	a, err := s.Deliver("a", strings.NewReader("one"), DeliverOptions{UIDL: "old-1", Imported: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver("a", strings.NewReader("two"), DeliverOptions{UIDL: "old-2", Imported: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver("a", strings.NewReader("three"), DeliverOptions{UIDL: "kept-3"}); err != nil {
		t.Fatal(err)
	}
	gen, err := s.Deliver("a", strings.NewReader("four"), DeliverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ask := []string{"old-1", "old-2", "kept-3", gen.UIDL, "new-5", ""}
	check := func(ledger bool, want ...string) {
		t.Helper()
		got, err := s.KnownUIDLs("a", ask, ledger)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("ledger=%v: known %v, want %v", ledger, got, want)
		}
		for _, u := range want {
			if !got[u] {
				t.Errorf("ledger=%v: %q not known (got %v)", ledger, u, got)
			}
		}
	}
	check(true, "old-1", "old-2", "kept-3", gen.UIDL)
	if err := s.Delete("a", []uint64{a.ID}); err != nil {
		t.Fatal(err)
	}
	check(true, "old-1", "old-2", "kept-3", gen.UIDL)
	check(false, "old-2", "kept-3", gen.UIDL)
	if n, err := s.ImportedCount("a"); err != nil || n != 2 {
		t.Errorf("ImportedCount = %d, %v; want 2", n, err)
	}
	// Deleted, so the mailbox itself takes the UIDL again (an import with
	// -include-deleted does this).
	if _, err := s.Deliver("a", strings.NewReader("one"), DeliverOptions{UIDL: "old-1", Imported: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.KnownUIDLs("nobody", ask, true); err != nil || len(got) != 0 {
		t.Errorf("unknown mailbox: %v, %v", got, err)
	}
}

// A failed import delivery (quota) leaves no ledger entry behind.
func TestLedgerRollsBackWithDelivery(t *testing.T) {
	s := openTest(t)
	if _, err := s.Deliver("a", strings.NewReader("too big for the quota"), DeliverOptions{UIDL: "u1", Imported: true, Quota: 5}); err == nil {
		t.Fatal("over-quota delivery accepted")
	}
	if got, _ := s.KnownUIDLs("a", []string{"u1"}, true); got["u1"] {
		t.Error("ledger kept the UIDL of a refused message")
	}
	// And the ledger survives a reopen.
	if _, err := s.Deliver("a", strings.NewReader("ok"), DeliverOptions{UIDL: "u2", Imported: true}); err != nil {
		t.Fatal(err)
	}
	s2 := reopen(t, s)
	if got, _ := s2.KnownUIDLs("a", []string{"u2"}, true); !got["u2"] {
		t.Error("ledger lost on reopen")
	}
}
