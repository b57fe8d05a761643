package storage

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The import ledger: every UIDL `mailpost import` has stored in a mailbox,
// kept after the message itself is deleted. Without it a message imported,
// downloaded and deleted by a POP3 client would come back on the next run
// of the same import; with it, a re-run copies only what is new at the
// source. It lives in the mailbox's own bucket (mailboxes/<name>/imported:
// UIDL -> time imported, 12 bytes), created by the first import, so older
// files need no upgrade step. It grows by at most one key per imported
// message (under 100 bytes each).
var bucketImported = []byte("imported")

// recordImported notes uidl in the mailbox's ledger, inside the delivery's
// own transaction (see addIndex), so message and ledger entry commit
// together.
func recordImported(mb *bolt.Bucket, uidl string, now time.Time) error {
	b, err := mb.CreateBucketIfNotExists(bucketImported)
	if err != nil {
		return err
	}
	v := make([]byte, 12)
	putTime(v, now)
	return b.Put([]byte(uidl), v)
}

// KnownUIDLs reports which of uidls the mailbox holds now and, when
// withLedger is set, which it was ever given by an import (so deleted ones
// count as known). Only UIDLs found are in the result. An unknown mailbox
// knows nothing. Read-only: one short View, no message read.
func (s *Store) KnownUIDLs(mailbox string, uidls []string, withLedger bool) (map[string]bool, error) {
	out := make(map[string]bool)
	err := s.db.View(func(tx *bolt.Tx) error {
		mbs := tx.Bucket(bucketMailboxes)
		mb := mbs.Bucket([]byte(mailbox))
		if mb == nil {
			return nil
		}
		present := mb.Bucket(bucketUIDL)
		var ledger *bolt.Bucket
		if withLedger {
			ledger = mb.Bucket(bucketImported)
		}
		for _, u := range uidls {
			if u == "" {
				continue // bbolt has no empty keys
			}
			k := []byte(u)
			if (present != nil && present.Get(k) != nil) || (ledger != nil && ledger.Get(k) != nil) {
				out[u] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: known UIDLs %s: %w", mailbox, err)
	}
	return out, nil
}

// ImportedCount is the number of UIDLs in the mailbox's import ledger.
func (s *Store) ImportedCount(mailbox string) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		if mb := tx.Bucket(bucketMailboxes).Bucket([]byte(mailbox)); mb != nil {
			if b := mb.Bucket(bucketImported); b != nil {
				n = b.Stats().KeyN
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("storage: import ledger %s: %w", mailbox, err)
	}
	return n, nil
}
