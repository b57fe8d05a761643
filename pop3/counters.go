package pop3

import (
	"net"
	"sync/atomic"
)

// counters are a Server's running totals, read by Stats (for metrics) at
// any time while sessions add to them.
type counters struct {
	commands atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	// logins by result; see Stats.
	loginOK, loginFailed, loginRefused, loginError atomic.Uint64
	retrieved                                      atomic.Uint64
	deleted                                        atomic.Uint64
}

// countingConn counts the octets on the wire (TLS records included: what
// the network carried) into the server's totals and the session's own.
type countingConn struct {
	net.Conn
	srv     *counters
	in, out atomic.Int64 // this session's
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.in.Add(int64(n))
		c.srv.bytesIn.Add(uint64(n))
	}
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.out.Add(int64(n))
		c.srv.bytesOut.Add(uint64(n))
	}
	return n, err
}

// CloseWrite passes the half-close through, which linger relies on.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return net.ErrClosed
}
