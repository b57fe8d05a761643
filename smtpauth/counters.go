package smtpauth

import "sync/atomic"

// counters are a Server's running totals, read by Stats (for metrics) at
// any time while connections add to them.
type counters struct {
	commands atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	// logins by result; see Stats.
	loginOK, loginFailed, loginRefused, loginError atomic.Uint64
}

// connCounters are one connection's, for its session-end log line. BDAT
// runs Data beside the connection's goroutine, hence atomics.
type connCounters struct {
	commands atomic.Int64
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	messages atomic.Int64           // messages accepted
	user     atomic.Pointer[string] // the account logged in
}

// command counts one command that reached the session: AUTH, MAIL, RCPT,
// DATA or BDAT. go-smtp answers EHLO, NOOP, RSET, VRFY and QUIT itself
// and does not tell us about them.
func (c *conn) command() {
	c.counts.commands.Add(1)
	c.srv.counters.commands.Add(1)
}

func (c *conn) countIn(n int) {
	if n > 0 {
		c.counts.bytesIn.Add(int64(n))
		c.srv.counters.bytesIn.Add(uint64(n))
	}
}

func (c *conn) countOut(n int) {
	if n > 0 {
		c.counts.bytesOut.Add(int64(n))
		c.srv.counters.bytesOut.Add(uint64(n))
	}
}
