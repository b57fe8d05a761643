package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// QueuedMessage is one outbound queue entry's metadata. Listing the queue
// reads only these, never bodies.
type QueuedMessage struct {
	ID          uint64
	From        string   // envelope sender, "" = null sender
	To          []string // recipients still to be delivered
	Account     string   // authenticated user who submitted it
	Size        int64    // exact octets of the stored (CRLF) message
	Queued      time.Time
	NextAttempt time.Time // = Queued initially
	Attempts    int
	LastError   string
}

// queue record: version(1) size(8) queued(12) next(12) attempts(8), then
// uvarint-length-prefixed from, account, last error, then a uvarint count
// of recipients, each length-prefixed.
const (
	queueRecVersion = 1
	queueRecHeader  = 1 + 8 + 12 + 12 + 8
)

func encodeQueued(q QueuedMessage) []byte {
	n := queueRecHeader + 4*binary.MaxVarintLen64 + len(q.From) + len(q.Account) + len(q.LastError)
	for _, to := range q.To {
		n += binary.MaxVarintLen64 + len(to)
	}
	b := make([]byte, queueRecHeader, n)
	b[0] = queueRecVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(q.Size))
	putTime(b[9:21], q.Queued)
	putTime(b[21:33], q.NextAttempt)
	binary.BigEndian.PutUint64(b[33:41], uint64(int64(q.Attempts)))
	for _, s := range []string{q.From, q.Account, q.LastError} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(q.To)))
	for _, to := range q.To {
		b = binary.AppendUvarint(b, uint64(len(to)))
		b = append(b, to...)
	}
	return b
}

var errCorruptQueued = errors.New("corrupt queue record")

// decodeQueued copies everything out of v, which may point into the mmap.
func decodeQueued(id uint64, v []byte) (QueuedMessage, error) {
	if len(v) < queueRecHeader || v[0] != queueRecVersion {
		return QueuedMessage{}, fmt.Errorf("queue entry %d: %w", id, errCorruptQueued)
	}
	q := QueuedMessage{
		ID:          id,
		Size:        int64(binary.BigEndian.Uint64(v[1:9])),
		Queued:      getTime(v[9:21]),
		NextAttempt: getTime(v[21:33]),
		Attempts:    int(int64(binary.BigEndian.Uint64(v[33:41]))),
	}
	rest := v[queueRecHeader:]
	// next takes one length-prefixed field off rest; ok=false on a
	// truncated or overlong record.
	next := func() (string, bool) {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", false
		}
		s := string(rest[w : w+int(n)])
		rest = rest[w+int(n):]
		return s, true
	}
	var ok [3]bool
	q.From, ok[0] = next()
	q.Account, ok[1] = next()
	q.LastError, ok[2] = next()
	count, w := binary.Uvarint(rest)
	// Each recipient takes at least one octet, which bounds count
	// before it sizes an allocation.
	if !ok[0] || !ok[1] || !ok[2] || w <= 0 || count > uint64(len(rest)-w) {
		return QueuedMessage{}, fmt.Errorf("queue entry %d: %w", id, errCorruptQueued)
	}
	rest = rest[w:]
	q.To = make([]string, count)
	for i := range q.To {
		to, ok := next()
		if !ok {
			return QueuedMessage{}, fmt.Errorf("queue entry %d: %w", id, errCorruptQueued)
		}
		q.To[i] = to
	}
	if len(rest) != 0 {
		return QueuedMessage{}, fmt.Errorf("queue entry %d: %d trailing octets: %w", id, len(rest), errCorruptQueued)
	}
	return q, nil
}

// cleanRecipients returns to without duplicates, in first-seen order. An
// empty list or an empty address is an error: a queue entry exists to be
// delivered to someone.
func cleanRecipients(to []string) ([]string, error) {
	if len(to) == 0 {
		return nil, fmt.Errorf("no outbound recipients")
	}
	out := make([]string, 0, len(to))
	seen := make(map[string]bool, len(to))
	for _, r := range to {
		if r == "" {
			return nil, fmt.Errorf("outbound recipient: %w", ErrInvalidName)
		}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// queueBuckets returns the queue's record and body buckets, which Open
// creates.
func queueBuckets(tx *bolt.Tx) (meta, body *bolt.Bucket) {
	q := tx.Bucket(bucketQueue)
	return q.Bucket(bucketQueueMeta), q.Bucket(bucketBody)
}

// addQueued allocates a queue id and writes the record for a message of
// the given size; the caller writes the chunks into the returned bucket.
func addQueued(tx *bolt.Tx, out *Outbound, size int64, now time.Time) (*bolt.Bucket, QueuedMessage, error) {
	meta, body := queueBuckets(tx)
	// Ids only grow, so inserts append at the right edge.
	meta.FillPercent, body.FillPercent = 0.9, 0.9
	id, err := tx.Bucket(bucketQueue).NextSequence()
	if err != nil {
		return nil, QueuedMessage{}, err
	}
	now = normTime(now)
	q := QueuedMessage{
		ID:          id,
		From:        out.From,
		To:          append([]string(nil), out.To...),
		Account:     out.Account,
		Size:        size,
		Queued:      now,
		NextAttempt: now,
	}
	if err := meta.Put(u64(id), encodeQueued(q)); err != nil {
		return nil, QueuedMessage{}, err
	}
	return body, q, nil
}

// Queue returns every queue entry in ascending id order (which is also
// submission order), from the records alone.
func (s *Store) Queue() ([]QueuedMessage, error) {
	var out []QueuedMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		meta, _ := queueBuckets(tx)
		return meta.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("corrupt queue key %x", k)
			}
			q, err := decodeQueued(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			out = append(out, q)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: queue: %w", err)
	}
	return out, nil
}

// QueuedMessage returns one queue entry's metadata, or ErrNotFound.
func (s *Store) QueuedMessage(id uint64) (QueuedMessage, error) {
	var q QueuedMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		q, err = getQueued(tx, id)
		return err
	})
	if err != nil {
		return QueuedMessage{}, fmt.Errorf("storage: queued message %d: %w", id, err)
	}
	return q, nil
}

func getQueued(tx *bolt.Tx, id uint64) (QueuedMessage, error) {
	meta, _ := queueBuckets(tx)
	v := meta.Get(u64(id))
	if v == nil {
		return QueuedMessage{}, ErrNotFound
	}
	return decodeQueued(id, v)
}

// OpenQueued returns a reader over a queued message's stored octets. Like
// OpenMessage it holds no transaction between chunks, so a delivery attempt
// may stream to a slow remote server; if the entry is dequeued meanwhile,
// the next chunk read fails with ErrNotFound.
func (s *Store) OpenQueued(id uint64) (io.ReadCloser, error) {
	var q QueuedMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		q, err = getQueued(tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: open queued %d: %w", id, err)
	}
	body := func(tx *bolt.Tx) *bolt.Bucket {
		_, b := queueBuckets(tx)
		return b
	}
	return &messageReader{s: s, body: body, what: fmt.Sprintf("queued message %d", id), id: id, left: q.Size}, nil
}

// UpdateQueued changes one entry's metadata in one Update, for example to
// record a delivery attempt or drop the recipients already delivered. fn
// gets a copy and runs inside the transaction, so it must be quick and must
// not do network I/O. ID and Size describe the stored body and are kept
// whatever fn does; To is deduplicated and must stay non-empty (Dequeue a
// finished entry). ErrNotFound if the entry does not exist.
func (s *Store) UpdateQueued(id uint64, fn func(*QueuedMessage)) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		q, err := getQueued(tx, id)
		if err != nil {
			return err
		}
		size := q.Size
		fn(&q)
		q.ID, q.Size = id, size
		if q.To, err = cleanRecipients(q.To); err != nil {
			return err
		}
		q.Queued, q.NextAttempt = normTime(q.Queued), normTime(q.NextAttempt)
		meta, _ := queueBuckets(tx)
		return meta.Put(u64(id), encodeQueued(q))
	})
	if err != nil {
		return fmt.Errorf("storage: update queued %d: %w", id, err)
	}
	return nil
}

// Dequeue removes an entry and its body in one Update. ErrNotFound if it
// is already gone, so two delivery workers racing for one entry can tell
// which of them finished it.
func (s *Store) Dequeue(id uint64) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, body := queueBuckets(tx)
		key := u64(id)
		if meta.Get(key) == nil {
			return ErrNotFound
		}
		if err := meta.Delete(key); err != nil {
			return err
		}
		return deleteChunks(body, key)
	})
	if err != nil {
		return fmt.Errorf("storage: dequeue %d: %w", id, err)
	}
	return nil
}
