// Package acme obtains and renews certificates from an ACME CA (RFC 8555)
// with golang.org/x/crypto/acme/autocert, keeping the account key and the
// certificates in mailpost's bbolt store.
//
// Unlike autocert's usual setup, nothing is issued lazily on a client's
// handshake (a POP3 client would wait or fail): a background loop per name
// asks for the certificate at start-up and after a reload, retrying with
// backoff, and handshakes only ever read what has been issued (Service
// implements certs.ACMEProvider). Renewals are autocert's own timers; the
// renewed certificate is picked up as autocert writes it to the cache.
package acme

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/acme/autocert"
)

// KV is the part of the store the cache needs; storage.Store satisfies it.
// GetBlob returns a copy of the value, or (nil, nil) when absent.
type KV interface {
	GetBlob(ns, key string) ([]byte, error)
	PutBlob(ns, key string, val []byte) error
	DeleteBlob(ns, key string) error
}

// namespace holds every ACME value: account keys, certificates with their
// private keys, and challenge tokens. The database file is 0600.
const namespace = "acme"

// cache is autocert.Cache on the store. Keys are prefixed with the
// directory URL, so that certificates from a staging CA are never served
// once the configuration moves to the production one.
type cache struct {
	kv     KV
	prefix string
	// onPut sees every value written (without the prefix), so a
	// renewal autocert stores is published at once.
	onPut func(key string, data []byte)
	// retired is set when the manager using this cache is retired: a
	// certificate or account key it might still produce (a request
	// already in flight) must not overwrite what the current manager
	// keeps under the same key.
	retired atomic.Bool
}

var _ autocert.Cache = (*cache)(nil)

func (c *cache) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := c.kv.GetBlob(namespace, c.prefix+key)
	if err != nil {
		return nil, fmt.Errorf("acme cache: get %s: %w", key, err)
	}
	if data == nil {
		return nil, autocert.ErrCacheMiss
	}
	return data, nil
}

func (c *cache) Put(ctx context.Context, key string, data []byte) error {
	if c.retired.Load() {
		return fmt.Errorf("acme cache: put %s: %w", key, errRetired)
	}
	if err := c.kv.PutBlob(namespace, c.prefix+key, data); err != nil {
		return fmt.Errorf("acme cache: put %s: %w", key, err)
	}
	if c.onPut != nil {
		c.onPut(key, data)
	}
	return nil
}

func (c *cache) Delete(ctx context.Context, key string) error {
	// autocert deletes only its challenge tokens; a retired manager may
	// still clean up its own, but nothing else.
	if c.retired.Load() && !strings.HasSuffix(key, "+token") && !strings.HasSuffix(key, "+http-01") {
		return fmt.Errorf("acme cache: delete %s: %w", key, errRetired)
	}
	if err := c.kv.DeleteBlob(namespace, c.prefix+key); err != nil {
		return fmt.Errorf("acme cache: delete %s: %w", key, err)
	}
	return nil
}
