package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"mailpost/config"
	"mailpost/pop3"
	"mailpost/storage"
)

// Retention (config retention = "30d", RFC 2449 §6.7 EXPIRE): a message is
// removed once it was first retrieved at least that many days ago. Three
// places apply it: QUIT under retention 0 (the pop3 engine's implicit DELE),
// each POP3 login (listForLogin, before the snapshot) and the background
// sweep here, for mailboxes whose owners stopped logging in.

// expirePolicy is the EXPIRE line CAPA shows before login: the retention
// all POP3 mailboxes share, or, when they differ, the lowest of them (NEVER
// counting as the longest) with the USER tag, since EXPIRE states a minimum
// every user gets. After login the session shows the mailbox's own value.
func expirePolicy(cfg *config.Config) *pop3.Expire {
	e := &pop3.Expire{Days: pop3.ExpireNever}
	first := true
	for _, mb := range cfg.Mailboxes {
		if !mb.POP3 {
			continue
		}
		d := max(mb.RetentionDays, pop3.ExpireNever)
		switch {
		case first:
			e.Days, first = d, false
		case d != e.Days:
			e.PerUser = true
			if d >= 0 && (e.Days < 0 || d < e.Days) {
				e.Days = d
			}
		}
	}
	return e
}

// Sweep pacing. An hour is fine-grained enough for a policy counted in
// days; a sweep that hits its budget comes back sooner to work off a
// backlog without one long burst of writes.
const (
	sweepInterval   = time.Hour
	sweepCatchUp    = time.Minute
	sweepBudget     = 10000 // messages removed per sweep, over all mailboxes
	sweepFirstDelay = time.Minute
)

// sweeper runs the background retention sweep between Start and Shutdown.
type sweeper struct {
	mu     sync.Mutex // one sweep at a time; guards next
	next   int        // mailbox to start with, so a budget-limited sweep does not starve the later ones
	cancel context.CancelFunc
	done   chan struct{}
}

// sweepResult counts one sweep, for its log line and tests.
type sweepResult struct {
	Mailboxes int  // mailboxes with a retention, looked at
	Expired   int  // messages removed
	Locked    int  // mailboxes skipped: a POP3 session holds them (its next login expires them)
	Failed    int  // mailboxes whose expiry failed (logged)
	More      bool // the budget ran out with messages still due
}

func (s *Server) startSweep() {
	ctx, cancel := context.WithCancel(context.Background())
	sw := &sweeper{cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.sweep = sw
	s.mu.Unlock()
	go func() {
		defer close(sw.done)
		t := time.NewTimer(sweepFirstDelay)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			res := s.sweepRetention(ctx, sw, sweepBudget)
			if res.More {
				t.Reset(sweepCatchUp)
			} else {
				t.Reset(sweepInterval)
			}
		}
	}()
}

// stopSweep cancels the sweep and waits for it; a mailbox in the middle of
// its transaction finishes it.
func (s *Server) stopSweep() {
	s.mu.Lock()
	sw := s.sweep
	s.sweep = nil
	s.mu.Unlock()
	if sw != nil {
		sw.cancel()
		<-sw.done
	}
}

// sweepRetention removes, from every configured mailbox with a retention
// that no session holds, the messages due at s.now(), at most budget in all,
// and logs one line with the counts.
func (s *Server) sweepRetention(ctx context.Context, sw *sweeper, budget int) sweepResult {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	start := time.Now()
	var mbs []*config.Mailbox
	for _, mb := range s.cur.Load().cfg.Mailboxes {
		if mb.RetentionDays >= 0 {
			mbs = append(mbs, mb)
		}
	}
	var res sweepResult
	if len(mbs) == 0 {
		return res
	}
	now := s.now()
	first := sw.next % len(mbs)
	for k := range mbs {
		if ctx.Err() != nil {
			break
		}
		i := (first + k) % len(mbs)
		if budget <= 0 {
			res.More, sw.next = true, i
			break
		}
		mb := mbs[i]
		res.Mailboxes++
		// Under the POP3 lock, so no session's snapshot loses a message;
		// a held mailbox is skipped, never waited for.
		unlock, err := s.store.Lock(mb.Address)
		if errors.Is(err, storage.ErrLocked) {
			res.Locked++
			continue
		}
		if err != nil {
			res.Failed++
			s.log.Error("retention sweep", "user", mb.Address, slog.Any("err", err))
			continue
		}
		n, more, err := s.store.ExpireRetrieved(mb.Address, mb.RetentionDays, now, budget)
		unlock()
		if err != nil {
			res.Failed++
			s.log.Error("retention sweep", "user", mb.Address, slog.Any("err", err))
			continue
		}
		res.Expired += n
		budget -= n
		if more {
			res.More, sw.next = true, i
			break
		}
	}
	s.prom.expired.Add(uint64(res.Expired))
	s.log.Info("retention sweep", "mailboxes", res.Mailboxes, "expired", res.Expired, "skipped_locked", res.Locked,
		"failed", res.Failed, "more", res.More, "duration", time.Since(start).Round(time.Millisecond))
	return res
}
