package storage

import (
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Operations: the consistent hot copy behind `mailpost backup`. The last
// logins behind `mailpost mailbox stats` are in logins.go.

// Backup writes a consistent copy of the whole database to w while the
// store stays in use: bbolt's read transaction sees one committed state and
// writers carry on beside it (they never wait for a reader). The copy is a
// complete bbolt file; restoring is replacing mailpost.db with it while
// mailpost is stopped. It returns the bytes written.
func (s *Store) Backup(w io.Writer) (int64, error) {
	return s.BackupSized(w, nil)
}

// BackupSized is Backup, calling size (when non-nil) with the exact length
// of the copy before the first byte is written, so a server can announce
// it (Content-Length) and a client can tell a cut-off copy from a whole one.
func (s *Store) BackupSized(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("storage: backup %s: %w", s.path, err)
	}
	return n, nil
}
