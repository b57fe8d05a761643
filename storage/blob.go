package storage

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// GetBlob returns a copy of the value stored under ns/key, or (nil, nil)
// when there is none. A stored empty value comes back as a non-nil empty
// slice, so absence stays distinguishable.
func (s *Store) GetBlob(ns, key string) ([]byte, error) {
	if ns == "" || key == "" {
		return nil, fmt.Errorf("storage: get blob %s/%s: %w", ns, key, ErrInvalidName)
	}
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs).Bucket([]byte(ns))
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(key)); v != nil {
			out = make([]byte, len(v))
			copy(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: get blob %s/%s: %w", ns, key, err)
	}
	return out, nil
}

// PutBlob stores val under ns/key, creating the namespace on first use.
// The write is fsynced before PutBlob returns.
func (s *Store) PutBlob(ns, key string, val []byte) error {
	if ns == "" || key == "" {
		return fmt.Errorf("storage: put blob %s/%s: %w", ns, key, ErrInvalidName)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketBlobs).CreateBucketIfNotExists([]byte(ns))
		if err != nil {
			return err
		}
		// val is only referenced until commit, which happens before
		// we return, so no copy is needed.
		return b.Put([]byte(key), val)
	})
	if err != nil {
		return fmt.Errorf("storage: put blob %s/%s: %w", ns, key, err)
	}
	return nil
}

// DeleteBlob removes ns/key; deleting an absent blob is not an error.
func (s *Store) DeleteBlob(ns, key string) error {
	if ns == "" || key == "" {
		return fmt.Errorf("storage: delete blob %s/%s: %w", ns, key, ErrInvalidName)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs).Bucket([]byte(ns))
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("storage: delete blob %s/%s: %w", ns, key, err)
	}
	return nil
}
