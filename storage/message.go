package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MessageInfo is one message's index record. Listing a mailbox reads only
// these, never bodies.
type MessageInfo struct {
	ID      uint64
	UIDL    string
	Size    int64 // exact octets of the stored (CRLF) message
	Arrived time.Time
	// Retrieved is when a POP3 client first downloaded the whole message
	// (RETR); zero = never. Retention (RFC 2449 §6.7 EXPIRE) counts from
	// here, so mail nobody has read is never expired.
	Retrieved time.Time
}

// DeliverOptions are per-mailbox limits and overrides for a delivery.
type DeliverOptions struct {
	Quota   int64     // 0 = unlimited; ErrQuotaExceeded if current bytes + new size > Quota
	MaxSize int64     // 0 = unlimited; ErrTooLarge when the normalized message is larger
	UIDL    string    // optional explicit UIDL (kept by imports)
	Arrived time.Time // optional; zero = now
	// Imported records UIDL in the mailbox's import ledger in the same
	// transaction (see uidl.go), so a re-run of the import skips it even
	// after it is deleted here.
	Imported bool
}

// Index records. Version 1 (every record before retrieval tracking, and
// still every new delivery): version(1) size(8) arrived(12) uidl(rest).
// Version 2, written when a message is first retrieved, adds the retrieval
// time before the UIDL: version(1) size(8) arrived(12) retrieved(12)
// uidl(rest). A version 1 record reads as never retrieved.
const (
	recVersion  = 1
	recHeader   = 1 + 8 + 12
	recVersion2 = 2
	recHeader2  = recHeader + 12
)

func encodeRecord(m MessageInfo) []byte {
	if m.Retrieved.IsZero() {
		b := make([]byte, recHeader+len(m.UIDL))
		b[0] = recVersion
		binary.BigEndian.PutUint64(b[1:9], uint64(m.Size))
		putTime(b[9:21], m.Arrived)
		copy(b[recHeader:], m.UIDL)
		return b
	}
	b := make([]byte, recHeader2+len(m.UIDL))
	b[0] = recVersion2
	binary.BigEndian.PutUint64(b[1:9], uint64(m.Size))
	putTime(b[9:21], m.Arrived)
	putTime(b[21:33], m.Retrieved)
	copy(b[recHeader2:], m.UIDL)
	return b
}

// decodeRecord copies everything it needs out of v (which may point into
// the mmap and be invalid after the transaction).
func decodeRecord(id uint64, v []byte) (MessageInfo, error) {
	switch {
	case len(v) >= recHeader && v[0] == recVersion:
		return MessageInfo{
			ID:      id,
			Size:    int64(binary.BigEndian.Uint64(v[1:9])),
			Arrived: getTime(v[9:21]),
			UIDL:    string(v[recHeader:]),
		}, nil
	case len(v) >= recHeader2 && v[0] == recVersion2:
		return MessageInfo{
			ID:        id,
			Size:      int64(binary.BigEndian.Uint64(v[1:9])),
			Arrived:   getTime(v[9:21]),
			Retrieved: getTime(v[21:33]),
			UIDL:      string(v[recHeader2:]),
		}, nil
	}
	return MessageInfo{}, fmt.Errorf("corrupt index record for message %d", id)
}

func chunkKey(id uint64, n uint32) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k[0:8], id)
	binary.BigEndian.PutUint32(k[8:12], n)
	return k
}

func getUsage(mb *bolt.Bucket) (count, size uint64) {
	v := mb.Get(keyUsage)
	if len(v) != 16 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(v[0:8]), binary.BigEndian.Uint64(v[8:16])
}

func putUsage(mb *bolt.Bucket, count, size uint64) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v[0:8], count)
	binary.BigEndian.PutUint64(v[8:16], size)
	return mb.Put(keyUsage, v)
}

// ValidUIDL applies RFC 1939 §7: 1 to 70 characters in 0x21–0x7E.
func ValidUIDL(u string) bool {
	if len(u) == 0 || len(u) > 70 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < 0x21 || u[i] > 0x7e {
			return false
		}
	}
	return true
}

// mailbox is the set of buckets for one maildrop inside a transaction.
type mailbox struct {
	b, index, body, uidl *bolt.Bucket
}

// openMailbox returns the maildrop's buckets, or ok=false when the mailbox
// has never received mail (read-only transactions cannot create it).
func openMailbox(tx *bolt.Tx, name string) (mailbox, bool) {
	b := tx.Bucket(bucketMailboxes).Bucket([]byte(name))
	if b == nil {
		return mailbox{}, false
	}
	m := mailbox{b: b, index: b.Bucket(bucketIndex), body: b.Bucket(bucketBody), uidl: b.Bucket(bucketUIDL)}
	return m, m.index != nil && m.body != nil && m.uidl != nil
}

func createMailbox(tx *bolt.Tx, name string) (mailbox, error) {
	b, err := tx.Bucket(bucketMailboxes).CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return mailbox{}, err
	}
	var m mailbox
	m.b = b
	for _, p := range []struct {
		dst  **bolt.Bucket
		name []byte
	}{{&m.index, bucketIndex}, {&m.body, bucketBody}, {&m.uidl, bucketUIDL}} {
		if *p.dst, err = b.CreateBucketIfNotExists(p.name); err != nil {
			return mailbox{}, err
		}
	}
	// Ids only grow, so inserts append at the right edge; fuller pages
	// make the file and List's scan smaller.
	m.index.FillPercent = 0.9
	m.body.FillPercent = 0.9
	return m, nil
}

// Deliver normalizes the message read from r to CRLF and stores it in
// mailbox. The message is spooled first (in memory up to one chunk, else an
// unlinked temp file beside the database), then written with all its chunks
// in one fsynced transaction shared with concurrent writers (see Submit), so
// it appears atomically and durably or not at all. On ErrTooLarge r is not
// drained.
func (s *Store) Deliver(mailbox string, r io.Reader, opt DeliverOptions) (MessageInfo, error) {
	infos, err := s.DeliverMany([]string{mailbox}, r, func(string) DeliverOptions { return opt })
	if err != nil {
		return MessageInfo{}, err
	}
	return infos[0], nil
}

// DeliverMany stores the same message into every mailbox in one
// transaction: all or none (SMTP may answer 250 only once every local
// recipient has it). The result is aligned with mailboxes; a mailbox listed
// twice gets one copy and both positions report it. opt may be nil.
func (s *Store) DeliverMany(mailboxes []string, r io.Reader, opt func(mailbox string) DeliverOptions) ([]MessageInfo, error) {
	if len(mailboxes) == 0 {
		return nil, fmt.Errorf("storage: deliver: no mailboxes")
	}
	res, err := s.store("deliver", r, mailboxes, opt, nil)
	if err != nil {
		return nil, err
	}
	return res.Local, nil
}

// addIndex checks the quota, allocates the id and writes the index record,
// UIDL entry and usage for one message of the given size.
func (s *Store) addIndex(tx *bolt.Tx, name string, size int64, o DeliverOptions, now time.Time) (mailbox, MessageInfo, error) {
	m, err := createMailbox(tx, name)
	if err != nil {
		return m, MessageInfo{}, err
	}
	count, used := getUsage(m.b)
	if o.Quota > 0 && int64(used)+size > o.Quota {
		return m, MessageInfo{}, fmt.Errorf("%d + %d octets > %d: %w", used, size, o.Quota, ErrQuotaExceeded)
	}
	// One counter for the whole database: an id, and so a generated
	// UIDL, is never reused in any mailbox, even after deletion.
	id, err := tx.Bucket(bucketMailboxes).NextSequence()
	if err != nil {
		return m, MessageInfo{}, err
	}
	info := MessageInfo{ID: id, Size: size, UIDL: o.UIDL, Arrived: o.Arrived}
	if info.UIDL == "" {
		info.UIDL = s.uidlPrefix + strconv.FormatUint(id, 10)
	}
	if info.Arrived.IsZero() {
		info.Arrived = now
	}
	info.Arrived = normTime(info.Arrived)
	if m.uidl.Get([]byte(info.UIDL)) != nil {
		return m, MessageInfo{}, fmt.Errorf("%q: %w", info.UIDL, ErrDuplicateUIDL)
	}
	key := u64(id)
	if err := m.index.Put(key, encodeRecord(info)); err != nil {
		return m, MessageInfo{}, err
	}
	if err := m.uidl.Put([]byte(info.UIDL), key); err != nil {
		return m, MessageInfo{}, err
	}
	if err := putUsage(m.b, count+1, used+uint64(size)); err != nil {
		return m, MessageInfo{}, err
	}
	if o.Imported {
		if err := recordImported(m.b, info.UIDL, now); err != nil {
			return m, MessageInfo{}, err
		}
	}
	return m, info, nil
}

// List returns the mailbox's messages in ascending id order from the index
// alone. An unknown mailbox is an empty list.
func (s *Store) List(mailbox string) ([]MessageInfo, error) {
	var out []MessageInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return nil
		}
		// The running count sizes the slice in one allocation; the
		// bound only guards against a corrupt counter.
		count, _ := getUsage(m.b)
		out = make([]MessageInfo, 0, min(count, 1<<20))
		c := m.index.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("corrupt index key %x", k)
			}
			info, err := decodeRecord(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: list %s: %w", mailbox, err)
	}
	return out, nil
}

// Usage returns the mailbox's running totals in O(1).
func (s *Store) Usage(mailbox string) (count int, bytes int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if m, ok := openMailbox(tx, mailbox); ok {
			c, b := getUsage(m.b)
			count, bytes = int(c), int64(b)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("storage: usage %s: %w", mailbox, err)
	}
	return count, bytes, nil
}

// Delete removes the given messages in one Update (RFC 1939 §6: the UPDATE
// state commits all DELEs together). Ids that no longer exist are ignored.
// The mailbox bucket itself is never removed.
func (s *Store) Delete(mailbox string, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return nil
		}
		_, err := deleteMessages(m, ids)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: delete %s: %w", mailbox, err)
	}
	return nil
}

// deleteMessages removes ids (index record, UIDL entry, body chunks) and
// updates the usage totals; it returns how many existed. UIDLs are not
// reused afterwards: ids only grow, and generated UIDLs come from ids.
func deleteMessages(m mailbox, ids []uint64) (int, error) {
	count, used := getUsage(m.b)
	n := 0
	for _, id := range ids {
		key := u64(id)
		v := m.index.Get(key)
		if v == nil {
			continue
		}
		info, err := decodeRecord(id, v)
		if err != nil {
			return n, err
		}
		if err := m.index.Delete(key); err != nil {
			return n, err
		}
		if err := m.uidl.Delete([]byte(info.UIDL)); err != nil {
			return n, err
		}
		if err := deleteChunks(m.body, key); err != nil {
			return n, err
		}
		count--
		used -= uint64(info.Size)
		n++
	}
	if n == 0 {
		return 0, nil
	}
	return n, putUsage(m.b, count, used)
}

// deleteChunks removes every body key starting with prefix. It finds them
// by prefix rather than by computed count so it does not depend on the
// chunk size the message was written with. Re-seeking after each delete
// avoids bbolt's cursor skipping an element after Cursor.Delete.
func deleteChunks(body *bolt.Bucket, prefix []byte) error {
	c := body.Cursor()
	// Bounded: each pass deletes one key of a finite bucket.
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Mailboxes returns every mailbox that has a bucket, in byte order. Mail is
// never deleted with a mailbox's configuration, so this may include
// mailboxes no longer configured.
func (s *Store) Mailboxes() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMailboxes).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: mailboxes: %w", err)
	}
	return out, nil
}
