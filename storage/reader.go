package storage

import (
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// OpenMessage returns a reader over the message's stored octets. Each chunk
// is fetched in its own short View and copied out, so no transaction is
// open while the caller writes to the network and memory stays at one
// chunk whatever the message size. ErrNotFound if the message does not
// exist.
func (s *Store) OpenMessage(mailbox string, id uint64) (io.ReadCloser, error) {
	var info MessageInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		m, ok := openMailbox(tx, mailbox)
		if !ok {
			return ErrNotFound
		}
		v := m.index.Get(u64(id))
		if v == nil {
			return ErrNotFound
		}
		var err error
		info, err = decodeRecord(id, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: open message %s/%d: %w", mailbox, id, err)
	}
	body := func(tx *bolt.Tx) *bolt.Bucket {
		if m, ok := openMailbox(tx, mailbox); ok {
			return m.body
		}
		return nil
	}
	return &messageReader{s: s, body: body, what: fmt.Sprintf("message %s/%d", mailbox, id), id: id, left: info.Size}, nil
}

var _ io.WriterTo = (*messageReader)(nil)

// messageReader streams a chunked body, from a mailbox or the queue.
type messageReader struct {
	s     *Store
	body  func(*bolt.Tx) *bolt.Bucket // the chunks' bucket, nil if gone
	what  string                      // names the message in errors
	id    uint64
	next  uint32 // next chunk number to fetch
	left  int64  // octets not yet fetched from the database
	buf   []byte // fetched, not yet returned
	store []byte // backing array reused for every chunk
	err   error  // sticky
}

// fill fetches the next chunk into r.buf.
func (r *messageReader) fill() error {
	err := r.s.db.View(func(tx *bolt.Tx) error {
		body := r.body(tx)
		if body == nil {
			return ErrNotFound
		}
		v := body.Get(chunkKey(r.id, r.next))
		if v == nil {
			// Deleted while being read (ids are never reused, so
			// this cannot mix two messages).
			return ErrNotFound
		}
		if int64(len(v)) > r.left {
			return fmt.Errorf("chunk %d: %d octets, only %d expected", r.next, len(v), r.left)
		}
		r.store = append(r.store[:0], v...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: read %s: %w", r.what, err)
	}
	r.buf = r.store
	r.left -= int64(len(r.buf))
	r.next++
	return nil
}

func (r *messageReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(r.buf) == 0 {
		if r.left == 0 {
			return 0, io.EOF
		}
		if err := r.fill(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// WriteTo lets io.Copy hand each chunk straight to w without an extra
// copy through its own buffer.
func (r *messageReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if r.err != nil {
			return total, r.err
		}
		if len(r.buf) == 0 {
			if r.left == 0 {
				return total, nil
			}
			if err := r.fill(); err != nil {
				r.err = err
				return total, err
			}
		}
		n, err := w.Write(r.buf)
		total += int64(n)
		r.buf = r.buf[n:]
		if err != nil {
			return total, err
		}
	}
}

var errReaderClosed = errors.New("storage: message reader closed")

func (r *messageReader) Close() error {
	r.err = errReaderClosed
	r.buf, r.store = nil, nil
	return nil
}
