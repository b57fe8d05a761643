package storage

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Submission is one accepted SMTP message: local mailboxes to deliver to
// and/or an outbound queue entry.
type Submission struct {
	Local    []string                            // normalized mailbox names; duplicates get one copy
	LocalOpt func(mailbox string) DeliverOptions // quota/max size per mailbox; may be nil
	Outbound *Outbound                           // nil when every recipient is local
}

// Outbound is the envelope of a message to relay to external recipients.
type Outbound struct {
	From    string   // envelope sender ("" = null sender, RFC 5321 §4.5.5)
	To      []string // external recipients; duplicates are queued once
	Account string   // authenticated user who submitted it
}

// SubmitResult reports where a submission was stored.
type SubmitResult struct {
	Local  []MessageInfo  // aligned with Submission.Local
	Queued *QueuedMessage // nil when there was no Outbound
}

// Submit spools r (CRLF-normalized exactly like Deliver), then stores it in
// every local mailbox and in the outbound queue in ONE transaction, shared
// with concurrent writers (group commit) and fsynced before Submit returns,
// so SMTP may answer 250 to DATA (RFC 5321 §4.1.1.4) as soon as it returns
// nil. All or nothing: on ErrQuotaExceeded, ErrTooLarge or any other error
// nothing is stored anywhere. MaxSize limits only apply to local copies; the
// caller enforces its own SMTP SIZE limit on r.
func (s *Store) Submit(r io.Reader, sub Submission) (SubmitResult, error) {
	if len(sub.Local) == 0 && sub.Outbound == nil {
		return SubmitResult{}, fmt.Errorf("storage: submit: no local mailboxes and no outbound recipients")
	}
	return s.store("submit", r, sub.Local, sub.LocalOpt, sub.Outbound)
}

// delivery is one message on its way into the database: destinations
// checked and deduplicated, body spooled.
type delivery struct {
	op    string // "deliver" or "submit", for error messages
	names []string
	opts  []DeliverOptions
	pos   map[string]int // mailbox name -> index in names
	out   *Outbound      // our own deduplicated copy, or nil
	sp    *spool
}

// label names the destinations for error messages.
func (d *delivery) label() string {
	l := strings.Join(d.names, ",")
	if d.out != nil {
		if l != "" {
			l += ","
		}
		l += "queue"
	}
	return l
}

// newDelivery validates and deduplicates the destinations. It reads
// nothing, so a bad call costs no network I/O.
func (s *Store) newDelivery(op string, local []string, opt func(string) DeliverOptions, out *Outbound) (*delivery, error) {
	d := &delivery{op: op, pos: make(map[string]int, len(local))}
	for _, name := range local {
		if name == "" {
			return nil, fmt.Errorf("storage: %s %q: %w", op, name, ErrInvalidName)
		}
		if _, dup := d.pos[name]; dup {
			continue
		}
		d.pos[name] = len(d.names)
		var o DeliverOptions
		if opt != nil {
			o = opt(name)
		}
		if o.UIDL != "" && (!ValidUIDL(o.UIDL) || strings.HasPrefix(o.UIDL, s.uidlPrefix)) {
			// Our own prefix is reserved so an explicit UIDL can never
			// collide with one generated later.
			return nil, fmt.Errorf("storage: %s %s: %q: %w", op, name, o.UIDL, ErrInvalidUIDL)
		}
		d.names = append(d.names, name)
		d.opts = append(d.opts, o)
	}
	if out != nil {
		to, err := cleanRecipients(out.To)
		if err != nil {
			return nil, fmt.Errorf("storage: %s queue: %w", op, err)
		}
		// A copy: the caller may reuse its slice while we wait to commit.
		d.out = &Outbound{From: out.From, To: to, Account: out.Account}
	}
	return d, nil
}

// spoolLimit is where spooling stops: the largest local MaxSize, or never
// if any local copy is unlimited or the message is also queued (the queue
// has no size limit of its own). Per-mailbox limits are checked after.
func (d *delivery) spoolLimit() int64 {
	if d.out != nil {
		return 0
	}
	var limit int64
	for _, o := range d.opts {
		if o.MaxSize <= 0 {
			return 0
		}
		limit = max(limit, o.MaxSize)
	}
	return limit
}

// store is the one write path behind Deliver, DeliverMany and Submit.
func (s *Store) store(op string, r io.Reader, local []string, opt func(string) DeliverOptions, out *Outbound) (SubmitResult, error) {
	d, err := s.newDelivery(op, local, opt, out)
	if err != nil {
		return SubmitResult{}, err
	}
	d.sp = &spool{dir: filepath.Dir(s.path), limit: d.spoolLimit()}
	defer d.sp.Close()
	norm := &crlfWriter{dst: d.sp}
	if _, err := io.CopyBuffer(norm, r, make([]byte, 32<<10)); err != nil {
		return SubmitResult{}, fmt.Errorf("storage: %s %s: %w", op, d.label(), err)
	}
	if err := norm.finish(); err != nil {
		return SubmitResult{}, fmt.Errorf("storage: %s %s: %w", op, d.label(), err)
	}
	for i, o := range d.opts {
		if o.MaxSize > 0 && d.sp.size > o.MaxSize {
			return SubmitResult{}, fmt.Errorf("storage: %s %s: %d octets > %d: %w", op, d.names[i], d.sp.size, o.MaxSize, ErrTooLarge)
		}
	}

	// Fixed before the transaction so a re-run stamps the same times.
	now := time.Now()
	var (
		infos  []MessageInfo
		queued *QueuedMessage
	)
	err = s.groupUpdate(func(tx *bolt.Tx) error {
		// Batch may run this more than once: when another writer in
		// the same batch fails, the shared transaction is rolled back
		// and retried without it. So every result is rebuilt from
		// scratch here and everything else lives in tx.
		infos, queued = make([]MessageInfo, len(d.names)), nil
		bodies := make([]*bolt.Bucket, 0, len(d.names)+1)
		keys := make([]uint64, 0, len(d.names)+1)
		for i, name := range d.names {
			m, info, err := s.addIndex(tx, name, d.sp.size, d.opts[i], now)
			if err != nil {
				return fmt.Errorf("storage: %s %s: %w", op, name, err)
			}
			infos[i] = info
			bodies, keys = append(bodies, m.body), append(keys, info.ID)
		}
		if d.out != nil {
			body, q, err := addQueued(tx, d.out, d.sp.size, now)
			if err != nil {
				return fmt.Errorf("storage: %s queue: %w", op, err)
			}
			queued = &q
			bodies, keys = append(bodies, body), append(keys, q.ID)
		}
		// Chunk-major order: each chunk is read from the spool once and
		// shared by every copy's Put.
		for c := 0; c < d.sp.chunks(); c++ {
			data, err := d.sp.chunk(c)
			if err != nil {
				return fmt.Errorf("storage: %s %s: %w", op, d.label(), err)
			}
			for i, body := range bodies {
				if err := body.Put(chunkKey(keys[i], uint32(c)), data); err != nil {
					return fmt.Errorf("storage: %s %s: %w", op, d.label(), err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return SubmitResult{}, err
	}
	res := SubmitResult{Queued: queued}
	if len(local) > 0 {
		res.Local = make([]MessageInfo, len(local))
		for i, name := range local {
			res.Local[i] = infos[d.pos[name]]
		}
	}
	return res, nil
}

// groupUpdate runs fn in a write transaction that concurrent writers share,
// so they pay for one commit and one fsync together (group commit through
// bolt.DB.Batch). A writer that finds no other writer in flight commits at
// once with Update: Batch would hold it for MaxBatchDelay waiting for
// company that is not coming. fn must be idempotent, since Batch may run it
// more than once, and must never wait on the network.
func (s *Store) groupUpdate(fn func(*bolt.Tx) error) error {
	defer s.writers.Add(-1)
	alone := s.writers.Add(1) == 1
	switch {
	case s.commitMode == commitUpdate, s.commitMode == commitAdaptive && alone:
		return s.db.Update(fn)
	default:
		return s.db.Batch(fn)
	}
}

// commitMode selects groupUpdate's strategy; only tests and benchmarks
// change it from the default, to compare the alternatives.
type commitMode uint8

const (
	commitAdaptive commitMode = iota // Update when alone, else Batch
	commitBatch                      // always Batch
	commitUpdate                     // always Update: no group commit
)
