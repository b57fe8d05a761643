// Package storage keeps all of mailpost's durable state in one bbolt file:
// maildrops (message index, chunked bodies, running usage totals), the
// outbound queue (envelope records and chunked bodies), a small
// namespaced blob store and the config-revision log. It knows nothing about
// POP3 or SMTP; callers pass already-normalized mailbox names and treat
// message ids and UIDLs as opaque.
//
// Layout of the file (all top-level buckets are created by Open):
//
//	meta/        format version, random store id (UIDL prefix)
//	mailboxes/   sequence = global message id counter
//	  <name>/    "usage" = count(8) bytes(8)
//	    index/   id(8) -> record (size, arrival, UIDL); listing reads only this
//	    body/    id(8)+chunk(4) -> up to chunkSize raw CRLF bytes
//	    uidl/    UIDL -> id(8), so explicit UIDLs stay unique in a maildrop
//	queue/       sequence = queue id counter; outbound mail, never listed as a mailbox
//	  meta/      id(8) -> envelope, size, times, attempts, last error
//	  body/      id(8)+chunk(4) -> up to chunkSize raw CRLF bytes
//	blobs/<ns>/  key -> value
//	revisions/   seq(8) -> time, sha256, source
package storage

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxBatchDelay is how long a group commit waits for more writers to join
// (bbolt's default is 10 ms). Sixteen submitters that finish one commit
// together re-join within about a millisecond of CPU on 2 cores, so 2 ms
// still gathers nearly all of them (about 15.5 messages per commit) while
// the window, not the fsync, no longer dominates: about 2500 submissions/s
// against 1200 with 10 ms and 1400 with one commit per message here.
const maxBatchDelay = 2 * time.Millisecond

// DefaultFileName is the database file name inside the configured data_dir.
const DefaultFileName = "mailpost.db"

var (
	ErrNotFound      = errors.New("not found") // no such message / blob
	ErrLocked        = errors.New("mailbox is locked by another session")
	ErrQuotaExceeded = errors.New("mailbox quota exceeded")
	ErrTooLarge      = errors.New("message exceeds size limit")

	// ErrInvalidUIDL is returned for an explicit UIDL that RFC 1939 §7 would
	// not allow (1–70 characters in 0x21–0x7E) or that uses this store's own
	// generated prefix.
	ErrInvalidUIDL = errors.New("invalid UIDL")
	// ErrDuplicateUIDL is returned when an explicit UIDL is already used by a
	// message in the same mailbox (RFC 1939 §7: unique within a maildrop).
	ErrDuplicateUIDL = errors.New("UIDL already in use in this mailbox")
	// ErrInvalidName is returned for an empty mailbox, namespace or key name
	// (bbolt cannot store empty keys).
	ErrInvalidName = errors.New("empty name")
)

// formatVersion is bumped when the on-disk layout changes incompatibly.
const formatVersion = 1

var (
	bucketMeta      = []byte("meta")
	bucketMailboxes = []byte("mailboxes")
	bucketQueue     = []byte("queue")
	bucketBlobs     = []byte("blobs")
	bucketRevisions = []byte("revisions")

	keyFormat  = []byte("format")
	keyStoreID = []byte("store-id")

	keyUsage    = []byte("usage")
	bucketIndex = []byte("index")
	bucketBody  = []byte("body")
	bucketUIDL  = []byte("uidl")

	bucketQueueMeta = []byte("meta")
)

// Store is the open database. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	// uidlPrefix is "<8 hex of store id>.", fixed at database creation so
	// generated UIDLs never repeat, even across restores into a new file.
	uidlPrefix string

	mu    sync.Mutex
	locks map[string]struct{} // mailboxes held for exclusive access (RFC 1939 §3)

	writers    atomic.Int32 // goroutines inside groupUpdate
	commitMode commitMode

	logins logins // last logins not yet written (see RecordLogin)
}

// Open opens (creating if needed) the database at path. The parent directory
// is created 0700 and the file is kept 0600 because it holds private keys.
// A second Open of the same file fails after about a second instead of
// blocking forever on the file lock.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// bbolt fsyncs the file, not its directory entry; without this a
		// crash soon after first start could lose the whole new file.
		if err := syncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: open %s: %w", path, err)
		}
	}
	// An existing file may have been created or copied with looser
	// permissions; private keys live here, so tighten rather than trust it.
	if fi, err := os.Stat(path); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: open %s: chmod: %w", path, err)
		}
	}
	db.MaxBatchDelay = maxBatchDelay
	s := &Store{db: db, path: path, locks: make(map[string]struct{})}
	if err := db.Update(s.initBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	return s, nil
}

// initBuckets creates every top-level bucket and, for a new database, the
// format marker and the random store id.
func (s *Store) initBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketMailboxes, bucketQueue, bucketBlobs, bucketRevisions} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	// The queue arrived after format 1 was fixed; adding empty buckets
	// to an older file is all the upgrade it needs.
	for _, name := range [][]byte{bucketQueueMeta, bucketBody} {
		if _, err := tx.Bucket(bucketQueue).CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s/%s: %w", bucketQueue, name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyFormat); v == nil {
		if err := meta.Put(keyFormat, u64(formatVersion)); err != nil {
			return err
		}
	} else if len(v) != 8 || binary.BigEndian.Uint64(v) > formatVersion {
		return fmt.Errorf("unsupported database format %x (this build knows %d)", v, formatVersion)
	}
	id := meta.Get(keyStoreID)
	if id == nil {
		id = make([]byte, 4)
		if _, err := rand.Read(id); err != nil {
			return fmt.Errorf("store id: %w", err)
		}
		if err := meta.Put(keyStoreID, id); err != nil {
			return err
		}
	}
	if len(id) != 4 {
		return fmt.Errorf("corrupt store id %x", id)
	}
	s.uidlPrefix = hex.EncodeToString(id) + "."
	return nil
}

// Close closes the database. It waits for running transactions; message
// readers opened earlier fail on their next chunk.
func (s *Store) Close() error {
	// Last logins still in memory go out first; losing them is no reason
	// not to close.
	lerr := s.closeLogins()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close %s: %w", s.path, err)
	}
	return lerr
}

// Path returns the database file path given to Open.
func (s *Store) Path() string { return s.path }

// u64 encodes v as a big-endian key so bbolt's byte order is numeric order.
func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// putTime and getTime store a time as Unix seconds + nanoseconds (12 bytes),
// which, unlike UnixNano, covers every year a caller could pass.
func putTime(b []byte, t time.Time) {
	binary.BigEndian.PutUint64(b[0:8], uint64(t.Unix()))
	binary.BigEndian.PutUint32(b[8:12], uint32(t.Nanosecond()))
}

func getTime(b []byte) time.Time {
	return time.Unix(int64(binary.BigEndian.Uint64(b[0:8])), int64(binary.BigEndian.Uint32(b[8:12]))).UTC()
}

// normTime returns t as it will read back from the database, so values
// returned at write time equal those returned later by List or Revisions.
func normTime(t time.Time) time.Time {
	return time.Unix(t.Unix(), int64(t.Nanosecond())).UTC()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
