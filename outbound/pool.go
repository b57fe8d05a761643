package outbound

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// pooledConn is an SMTP connection past EHLO (and AUTH), between
// transactions.
type pooledConn struct {
	c     *smtp.Client
	raw   net.Conn
	dc    *deadlineConn
	since time.Time // idle since
}

// pool keeps idle connections per next hop, so a burst of messages to one
// relay or MX pays for TCP, TLS and AUTH once (RFC 5321 §3.3 allows many
// transactions per session).
type pool struct {
	mu      sync.Mutex
	idle    map[string][]*pooledConn
	max     int           // idle connections kept per key
	maxIdle time.Duration // an idle connection older than this is closed
	closed  bool
}

func newPool(max int, maxIdle time.Duration) *pool {
	return &pool{idle: map[string][]*pooledConn{}, max: max, maxIdle: maxIdle}
}

// poolKey names what a connection is good for: the address, and for a
// relay the TLS mode and credentials (a reload may change them), plus our
// EHLO name.
func (h hop) poolKey(hostname string) string {
	k := h.addr + "|" + h.host + "|" + hostname
	if h.relay != nil {
		sum := sha256.Sum256([]byte(h.relay.TLS + "\x00" + h.relay.Username + "\x00" + h.relay.Password))
		k += "|" + hex.EncodeToString(sum[:8])
	}
	return k
}

// get returns a live idle connection for key, or nil. Liveness is an RSET
// (RFC 5321 §4.1.1.5), which also ends any transaction left open.
func (p *pool) get(key string) *pooledConn {
	for {
		p.mu.Lock()
		list := p.idle[key]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		pc := list[len(list)-1]
		p.idle[key] = list[:len(list)-1]
		p.mu.Unlock()
		if time.Since(pc.since) > p.maxIdle {
			pc.c.Close()
			continue
		}
		pc.dc.hard = time.Time{}
		if err := pc.c.Reset(); err != nil {
			pc.c.Close()
			continue
		}
		return pc
	}
}

// put parks pc for reuse, or closes it when the pool is full or closed.
func (p *pool) put(key string, pc *pooledConn) {
	pc.since = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[key]) >= p.max {
		p.mu.Unlock()
		pc.goodbye()
		return
	}
	p.idle[key] = append(p.idle[key], pc)
	p.mu.Unlock()
}

// prune closes connections idle longer than maxIdle.
func (p *pool) prune() {
	var old []*pooledConn
	p.mu.Lock()
	for key, list := range p.idle {
		keep := list[:0]
		for _, pc := range list {
			if time.Since(pc.since) > p.maxIdle {
				old = append(old, pc)
			} else {
				keep = append(keep, pc)
			}
		}
		if len(keep) == 0 {
			delete(p.idle, key)
		} else {
			p.idle[key] = keep
		}
	}
	p.mu.Unlock()
	for _, pc := range old {
		pc.goodbye()
	}
}

// close says goodbye on every idle connection; later puts just close.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	all := p.idle
	p.idle = map[string][]*pooledConn{}
	p.mu.Unlock()
	for _, list := range all {
		for _, pc := range list {
			pc.goodbye()
		}
	}
}

// goodbye sends QUIT (RFC 5321 §4.1.1.10), waiting a second at most for
// the reply, and closes.
func (pc *pooledConn) goodbye() {
	pc.dc.hard = time.Now().Add(time.Second)
	pc.c.Quit()
	pc.c.Close()
}
