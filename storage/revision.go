package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Revision is one accepted config file, kept so a reload can be audited
// and rolled back.
type Revision struct {
	Seq    uint64
	SHA256 string // lowercase hex of Source
	Time   time.Time
	Source []byte // nil from Revisions
}

// revision record: time(12) sha256(32) source(rest)
const revHeader = 12 + sha256.Size

func decodeRevision(k, v []byte, withSource bool) (Revision, error) {
	if len(k) != 8 || len(v) < revHeader {
		return Revision{}, fmt.Errorf("corrupt revision record %x", k)
	}
	r := Revision{
		Seq:    binary.BigEndian.Uint64(k),
		Time:   getTime(v[0:12]),
		SHA256: hex.EncodeToString(v[12:revHeader]),
	}
	if withSource {
		r.Source = append(make([]byte, 0, len(v)-revHeader), v[revHeader:]...)
	}
	return r, nil
}

// AddRevision appends src as a new revision at time t (zero = now) unless
// the latest revision has the same hash; then it returns that one and
// false, so re-saving an unchanged file does not grow the log.
func (s *Store) AddRevision(src []byte, t time.Time) (Revision, bool, error) {
	sum := sha256.Sum256(src)
	if t.IsZero() {
		t = time.Now()
	}
	var (
		rev   Revision
		added bool
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRevisions)
		if k, v := b.Cursor().Last(); k != nil && len(v) >= revHeader && bytes.Equal(v[12:revHeader], sum[:]) {
			var err error
			rev, err = decodeRevision(k, v, true)
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		v := make([]byte, revHeader+len(src))
		putTime(v[0:12], t)
		copy(v[12:revHeader], sum[:])
		copy(v[revHeader:], src)
		if err := b.Put(u64(seq), v); err != nil {
			return err
		}
		rev = Revision{Seq: seq, SHA256: hex.EncodeToString(sum[:]), Time: normTime(t),
			Source: append(make([]byte, 0, len(src)), src...)}
		added = true
		return nil
	})
	if err != nil {
		return Revision{}, false, fmt.Errorf("storage: add revision: %w", err)
	}
	return rev, added, nil
}

// Revisions lists every revision in ascending order, metadata only.
func (s *Store) Revisions() ([]Revision, error) {
	var out []Revision
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevisions).ForEach(func(k, v []byte) error {
			r, err := decodeRevision(k, v, false)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: revisions: %w", err)
	}
	return out, nil
}

// Revision returns revision seq with its source, or ErrNotFound.
func (s *Store) Revision(seq uint64) (Revision, error) {
	var rev Revision
	err := s.db.View(func(tx *bolt.Tx) error {
		k := u64(seq)
		v := tx.Bucket(bucketRevisions).Get(k)
		if v == nil {
			return ErrNotFound
		}
		var err error
		rev, err = decodeRevision(k, v, true)
		return err
	})
	if err != nil {
		return Revision{}, fmt.Errorf("storage: revision %d: %w", seq, err)
	}
	return rev, nil
}

// LatestRevision returns the newest revision with its source, or
// ErrNotFound when none was ever added.
func (s *Store) LatestRevision() (Revision, error) {
	var rev Revision
	err := s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketRevisions).Cursor().Last()
		if k == nil {
			return ErrNotFound
		}
		var err error
		rev, err = decodeRevision(k, v, true)
		return err
	})
	if err != nil {
		return Revision{}, fmt.Errorf("storage: latest revision: %w", err)
	}
	return rev, nil
}
