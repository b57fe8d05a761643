package outbound

import "sync/atomic"

// Stats are the runner's totals since New, per recipient, for metrics.
type Stats struct {
	Delivered uint64 // the next hop answered 2xx
	Failed    uint64 // failed for good (5xx, or retried past max_attempts_for) and bounced
	Deferred  uint64 // failed for now; another attempt is scheduled
	InFlight  int    // queue entries being delivered now
}

type stats struct {
	delivered, failed, deferred atomic.Uint64
}

// Stats returns the current totals.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	n := len(r.inflight)
	r.mu.Unlock()
	return Stats{Delivered: r.stats.delivered.Load(), Failed: r.stats.failed.Load(),
		Deferred: r.stats.deferred.Load(), InFlight: n}
}
